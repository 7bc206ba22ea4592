import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUN_STATUS_PENDING: _ClassVar[RunStatus]
    RUN_STATUS_RUNNING: _ClassVar[RunStatus]
    RUN_STATUS_PAUSED: _ClassVar[RunStatus]
    RUN_STATUS_SUCCEEDED: _ClassVar[RunStatus]
    RUN_STATUS_FAILED: _ClassVar[RunStatus]
    RUN_STATUS_CANCELLED: _ClassVar[RunStatus]
    RUN_STATUS_PARTIAL: _ClassVar[RunStatus]

class GateDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GATE_DECISION_UNSPECIFIED: _ClassVar[GateDecision]
    GATE_DECISION_APPROVED: _ClassVar[GateDecision]
    GATE_DECISION_REJECTED: _ClassVar[GateDecision]
    GATE_DECISION_EXPIRED: _ClassVar[GateDecision]
    GATE_DECISION_CANCELLED: _ClassVar[GateDecision]

class LogStream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_STREAM_UNSPECIFIED: _ClassVar[LogStream]
    LOG_STREAM_STDOUT: _ClassVar[LogStream]
    LOG_STREAM_STDERR: _ClassVar[LogStream]
    LOG_STREAM_SYSTEM: _ClassVar[LogStream]

class SandboxViolationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SANDBOX_VIOLATION_KIND_UNSPECIFIED: _ClassVar[SandboxViolationKind]
    SANDBOX_VIOLATION_KIND_PATH: _ClassVar[SandboxViolationKind]
    SANDBOX_VIOLATION_KIND_LIMIT: _ClassVar[SandboxViolationKind]
    SANDBOX_VIOLATION_KIND_NETWORK: _ClassVar[SandboxViolationKind]
    SANDBOX_VIOLATION_KIND_PROGRAM: _ClassVar[SandboxViolationKind]

class AiRoute(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AI_ROUTE_UNSPECIFIED: _ClassVar[AiRoute]
    AI_ROUTE_MODEL: _ClassVar[AiRoute]
    AI_ROUTE_AUTO_APPROVE: _ClassVar[AiRoute]
    AI_ROUTE_HUMAN_REVIEW: _ClassVar[AiRoute]
    AI_ROUTE_SUPPRESS: _ClassVar[AiRoute]
    AI_ROUTE_CONTRACT_VIOLATION: _ClassVar[AiRoute]
RUN_STATUS_UNSPECIFIED: RunStatus
RUN_STATUS_PENDING: RunStatus
RUN_STATUS_RUNNING: RunStatus
RUN_STATUS_PAUSED: RunStatus
RUN_STATUS_SUCCEEDED: RunStatus
RUN_STATUS_FAILED: RunStatus
RUN_STATUS_CANCELLED: RunStatus
RUN_STATUS_PARTIAL: RunStatus
GATE_DECISION_UNSPECIFIED: GateDecision
GATE_DECISION_APPROVED: GateDecision
GATE_DECISION_REJECTED: GateDecision
GATE_DECISION_EXPIRED: GateDecision
GATE_DECISION_CANCELLED: GateDecision
LOG_STREAM_UNSPECIFIED: LogStream
LOG_STREAM_STDOUT: LogStream
LOG_STREAM_STDERR: LogStream
LOG_STREAM_SYSTEM: LogStream
SANDBOX_VIOLATION_KIND_UNSPECIFIED: SandboxViolationKind
SANDBOX_VIOLATION_KIND_PATH: SandboxViolationKind
SANDBOX_VIOLATION_KIND_LIMIT: SandboxViolationKind
SANDBOX_VIOLATION_KIND_NETWORK: SandboxViolationKind
SANDBOX_VIOLATION_KIND_PROGRAM: SandboxViolationKind
AI_ROUTE_UNSPECIFIED: AiRoute
AI_ROUTE_MODEL: AiRoute
AI_ROUTE_AUTO_APPROVE: AiRoute
AI_ROUTE_HUMAN_REVIEW: AiRoute
AI_ROUTE_SUPPRESS: AiRoute
AI_ROUTE_CONTRACT_VIOLATION: AiRoute

class RunEvent(_message.Message):
    __slots__ = ("run_id", "seq", "event_time", "node_id", "iteration", "attempt", "trace_id", "span_id", "item_index", "item_key", "run_started", "run_status_changed", "run_paused", "run_resumed", "run_completed", "node_started", "node_succeeded", "node_failed", "node_skipped", "node_retrying", "iteration_capped", "node_log", "node_token", "node_heartbeat", "tool_call", "awaiting_confirmation", "confirmation_resolved", "approval_requested", "approval_resolved", "ai_invocation", "ai_routing_decision", "ai_review_required", "ai_review_resolved", "sandbox_violation")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    ITEM_KEY_FIELD_NUMBER: _ClassVar[int]
    RUN_STARTED_FIELD_NUMBER: _ClassVar[int]
    RUN_STATUS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    RUN_PAUSED_FIELD_NUMBER: _ClassVar[int]
    RUN_RESUMED_FIELD_NUMBER: _ClassVar[int]
    RUN_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    NODE_STARTED_FIELD_NUMBER: _ClassVar[int]
    NODE_SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    NODE_FAILED_FIELD_NUMBER: _ClassVar[int]
    NODE_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    NODE_RETRYING_FIELD_NUMBER: _ClassVar[int]
    ITERATION_CAPPED_FIELD_NUMBER: _ClassVar[int]
    NODE_LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NODE_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    AWAITING_CONFIRMATION_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATION_RESOLVED_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_RESOLVED_FIELD_NUMBER: _ClassVar[int]
    AI_INVOCATION_FIELD_NUMBER: _ClassVar[int]
    AI_ROUTING_DECISION_FIELD_NUMBER: _ClassVar[int]
    AI_REVIEW_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    AI_REVIEW_RESOLVED_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_VIOLATION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    seq: int
    event_time: _timestamp_pb2.Timestamp
    node_id: str
    iteration: int
    attempt: int
    trace_id: str
    span_id: str
    item_index: int
    item_key: str
    run_started: RunStarted
    run_status_changed: RunStatusChanged
    run_paused: RunPaused
    run_resumed: RunResumed
    run_completed: RunCompleted
    node_started: NodeStarted
    node_succeeded: NodeSucceeded
    node_failed: NodeFailed
    node_skipped: NodeSkipped
    node_retrying: NodeRetrying
    iteration_capped: IterationCapped
    node_log: NodeLog
    node_token: NodeToken
    node_heartbeat: NodeHeartbeat
    tool_call: ToolCall
    awaiting_confirmation: AwaitingConfirmation
    confirmation_resolved: ConfirmationResolved
    approval_requested: ApprovalRequested
    approval_resolved: ApprovalResolved
    ai_invocation: AiInvocation
    ai_routing_decision: AiRoutingDecision
    ai_review_required: AiReviewRequired
    ai_review_resolved: AiReviewResolved
    sandbox_violation: SandboxViolation
    def __init__(self, run_id: _Optional[str] = ..., seq: _Optional[int] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., node_id: _Optional[str] = ..., iteration: _Optional[int] = ..., attempt: _Optional[int] = ..., trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., item_index: _Optional[int] = ..., item_key: _Optional[str] = ..., run_started: _Optional[_Union[RunStarted, _Mapping]] = ..., run_status_changed: _Optional[_Union[RunStatusChanged, _Mapping]] = ..., run_paused: _Optional[_Union[RunPaused, _Mapping]] = ..., run_resumed: _Optional[_Union[RunResumed, _Mapping]] = ..., run_completed: _Optional[_Union[RunCompleted, _Mapping]] = ..., node_started: _Optional[_Union[NodeStarted, _Mapping]] = ..., node_succeeded: _Optional[_Union[NodeSucceeded, _Mapping]] = ..., node_failed: _Optional[_Union[NodeFailed, _Mapping]] = ..., node_skipped: _Optional[_Union[NodeSkipped, _Mapping]] = ..., node_retrying: _Optional[_Union[NodeRetrying, _Mapping]] = ..., iteration_capped: _Optional[_Union[IterationCapped, _Mapping]] = ..., node_log: _Optional[_Union[NodeLog, _Mapping]] = ..., node_token: _Optional[_Union[NodeToken, _Mapping]] = ..., node_heartbeat: _Optional[_Union[NodeHeartbeat, _Mapping]] = ..., tool_call: _Optional[_Union[ToolCall, _Mapping]] = ..., awaiting_confirmation: _Optional[_Union[AwaitingConfirmation, _Mapping]] = ..., confirmation_resolved: _Optional[_Union[ConfirmationResolved, _Mapping]] = ..., approval_requested: _Optional[_Union[ApprovalRequested, _Mapping]] = ..., approval_resolved: _Optional[_Union[ApprovalResolved, _Mapping]] = ..., ai_invocation: _Optional[_Union[AiInvocation, _Mapping]] = ..., ai_routing_decision: _Optional[_Union[AiRoutingDecision, _Mapping]] = ..., ai_review_required: _Optional[_Union[AiReviewRequired, _Mapping]] = ..., ai_review_resolved: _Optional[_Union[AiReviewResolved, _Mapping]] = ..., sandbox_violation: _Optional[_Union[SandboxViolation, _Mapping]] = ...) -> None: ...

class ErrorSummary(_message.Message):
    __slots__ = ("reason", "message", "exit_code")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    exit_code: int
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ..., exit_code: _Optional[int] = ...) -> None: ...

class RunStarted(_message.Message):
    __slots__ = ("flow_name", "flow_digest", "trigger", "principal", "node_count", "inputs_json", "request_id")
    FLOW_NAME_FIELD_NUMBER: _ClassVar[int]
    FLOW_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    NODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_JSON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    flow_name: str
    flow_digest: str
    trigger: str
    principal: str
    node_count: int
    inputs_json: str
    request_id: str
    def __init__(self, flow_name: _Optional[str] = ..., flow_digest: _Optional[str] = ..., trigger: _Optional[str] = ..., principal: _Optional[str] = ..., node_count: _Optional[int] = ..., inputs_json: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RunStatusChanged(_message.Message):
    __slots__ = ("previous_status", "new_status", "reason", "principal")
    PREVIOUS_STATUS_FIELD_NUMBER: _ClassVar[int]
    NEW_STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    previous_status: RunStatus
    new_status: RunStatus
    reason: str
    principal: str
    def __init__(self, previous_status: _Optional[_Union[RunStatus, str]] = ..., new_status: _Optional[_Union[RunStatus, str]] = ..., reason: _Optional[str] = ..., principal: _Optional[str] = ...) -> None: ...

class RunPaused(_message.Message):
    __slots__ = ("principal", "reason")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    principal: str
    reason: str
    def __init__(self, principal: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RunResumed(_message.Message):
    __slots__ = ("principal", "reason", "paused_duration")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PAUSED_DURATION_FIELD_NUMBER: _ClassVar[int]
    principal: str
    reason: str
    paused_duration: _duration_pb2.Duration
    def __init__(self, principal: _Optional[str] = ..., reason: _Optional[str] = ..., paused_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RunCompleted(_message.Message):
    __slots__ = ("status", "succeeded_node_count", "failed_node_count", "skipped_node_count", "input_token_count", "output_token_count", "cost_micros", "duration", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_NODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILED_NODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_NODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: RunStatus
    succeeded_node_count: int
    failed_node_count: int
    skipped_node_count: int
    input_token_count: int
    output_token_count: int
    cost_micros: int
    duration: _duration_pb2.Duration
    error: ErrorSummary
    def __init__(self, status: _Optional[_Union[RunStatus, str]] = ..., succeeded_node_count: _Optional[int] = ..., failed_node_count: _Optional[int] = ..., skipped_node_count: _Optional[int] = ..., input_token_count: _Optional[int] = ..., output_token_count: _Optional[int] = ..., cost_micros: _Optional[int] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., error: _Optional[_Union[ErrorSummary, _Mapping]] = ...) -> None: ...

class NodeStarted(_message.Message):
    __slots__ = ("adapter", "action", "params_json")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    adapter: str
    action: str
    params_json: str
    def __init__(self, adapter: _Optional[str] = ..., action: _Optional[str] = ..., params_json: _Optional[str] = ...) -> None: ...

class NodeSucceeded(_message.Message):
    __slots__ = ("output_json", "duration")
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    output_json: str
    duration: _duration_pb2.Duration
    def __init__(self, output_json: _Optional[str] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class NodeFailed(_message.Message):
    __slots__ = ("error", "duration", "will_retry", "output_json")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    WILL_RETRY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    error: ErrorSummary
    duration: _duration_pb2.Duration
    will_retry: bool
    output_json: str
    def __init__(self, error: _Optional[_Union[ErrorSummary, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., will_retry: _Optional[bool] = ..., output_json: _Optional[str] = ...) -> None: ...

class NodeSkipped(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class NodeRetrying(_message.Message):
    __slots__ = ("next_attempt", "backoff", "max_attempts", "error")
    NEXT_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    next_attempt: int
    backoff: _duration_pb2.Duration
    max_attempts: int
    error: ErrorSummary
    def __init__(self, next_attempt: _Optional[int] = ..., backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_attempts: _Optional[int] = ..., error: _Optional[_Union[ErrorSummary, _Mapping]] = ...) -> None: ...

class IterationCapped(_message.Message):
    __slots__ = ("max_visits", "source_node_id")
    MAX_VISITS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    max_visits: int
    source_node_id: str
    def __init__(self, max_visits: _Optional[int] = ..., source_node_id: _Optional[str] = ...) -> None: ...

class NodeLog(_message.Message):
    __slots__ = ("stream", "line", "line_number", "truncated")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    LINE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    stream: LogStream
    line: str
    line_number: int
    truncated: bool
    def __init__(self, stream: _Optional[_Union[LogStream, str]] = ..., line: _Optional[str] = ..., line_number: _Optional[int] = ..., truncated: _Optional[bool] = ...) -> None: ...

class NodeToken(_message.Message):
    __slots__ = ("delta", "token_index")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    TOKEN_INDEX_FIELD_NUMBER: _ClassVar[int]
    delta: str
    token_index: int
    def __init__(self, delta: _Optional[str] = ..., token_index: _Optional[int] = ...) -> None: ...

class NodeHeartbeat(_message.Message):
    __slots__ = ("elapsed", "output_bytes", "stagnant_count")
    ELAPSED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    STAGNANT_COUNT_FIELD_NUMBER: _ClassVar[int]
    elapsed: _duration_pb2.Duration
    output_bytes: int
    stagnant_count: int
    def __init__(self, elapsed: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., output_bytes: _Optional[int] = ..., stagnant_count: _Optional[int] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("tool_call_id", "tool_name", "summary", "arguments_json")
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    tool_call_id: str
    tool_name: str
    summary: str
    arguments_json: str
    def __init__(self, tool_call_id: _Optional[str] = ..., tool_name: _Optional[str] = ..., summary: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class AwaitingConfirmation(_message.Message):
    __slots__ = ("action_summary", "adapter", "action", "params_json", "tool_call_id")
    ACTION_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    action_summary: str
    adapter: str
    action: str
    params_json: str
    tool_call_id: str
    def __init__(self, action_summary: _Optional[str] = ..., adapter: _Optional[str] = ..., action: _Optional[str] = ..., params_json: _Optional[str] = ..., tool_call_id: _Optional[str] = ...) -> None: ...

class ConfirmationResolved(_message.Message):
    __slots__ = ("decision", "principal", "comment", "tool_call_id")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    decision: GateDecision
    principal: str
    comment: str
    tool_call_id: str
    def __init__(self, decision: _Optional[_Union[GateDecision, str]] = ..., principal: _Optional[str] = ..., comment: _Optional[str] = ..., tool_call_id: _Optional[str] = ...) -> None: ...

class ApprovalRequested(_message.Message):
    __slots__ = ("message", "expire_time")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    message: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, message: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ApprovalResolved(_message.Message):
    __slots__ = ("decision", "principal", "comment")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    decision: GateDecision
    principal: str
    comment: str
    def __init__(self, decision: _Optional[_Union[GateDecision, str]] = ..., principal: _Optional[str] = ..., comment: _Optional[str] = ...) -> None: ...

class AiInvocation(_message.Message):
    __slots__ = ("provider", "model", "input_token_count", "output_token_count", "cost_micros", "latency", "finish_reason", "turn", "input_preview", "contract_version")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    INPUT_PREVIEW_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    input_token_count: int
    output_token_count: int
    cost_micros: int
    latency: _duration_pb2.Duration
    finish_reason: str
    turn: int
    input_preview: str
    contract_version: str
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., input_token_count: _Optional[int] = ..., output_token_count: _Optional[int] = ..., cost_micros: _Optional[int] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., finish_reason: _Optional[str] = ..., turn: _Optional[int] = ..., input_preview: _Optional[str] = ..., contract_version: _Optional[str] = ...) -> None: ...

class AiRoutingDecision(_message.Message):
    __slots__ = ("requested_model", "provider", "model", "reason", "route", "confidence", "threshold", "contract_version")
    REQUESTED_MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    requested_model: str
    provider: str
    model: str
    reason: str
    route: AiRoute
    confidence: float
    threshold: str
    contract_version: str
    def __init__(self, requested_model: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., reason: _Optional[str] = ..., route: _Optional[_Union[AiRoute, str]] = ..., confidence: _Optional[float] = ..., threshold: _Optional[str] = ..., contract_version: _Optional[str] = ...) -> None: ...

class AiReviewRequired(_message.Message):
    __slots__ = ("reason", "output_json", "violations", "confidence", "reasoning")
    REASON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    reason: str
    output_json: str
    violations: _containers.RepeatedScalarFieldContainer[str]
    confidence: float
    reasoning: str
    def __init__(self, reason: _Optional[str] = ..., output_json: _Optional[str] = ..., violations: _Optional[_Iterable[str]] = ..., confidence: _Optional[float] = ..., reasoning: _Optional[str] = ...) -> None: ...

class AiReviewResolved(_message.Message):
    __slots__ = ("decision", "principal", "comment", "output_json")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    decision: GateDecision
    principal: str
    comment: str
    output_json: str
    def __init__(self, decision: _Optional[_Union[GateDecision, str]] = ..., principal: _Optional[str] = ..., comment: _Optional[str] = ..., output_json: _Optional[str] = ...) -> None: ...

class SandboxViolation(_message.Message):
    __slots__ = ("kind", "adapter", "target", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: SandboxViolationKind
    adapter: str
    target: str
    detail: str
    def __init__(self, kind: _Optional[_Union[SandboxViolationKind, str]] = ..., adapter: _Optional[str] = ..., target: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...
