import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ItemFailurePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_FAILURE_POLICY_UNSPECIFIED: _ClassVar[ItemFailurePolicy]
    ITEM_FAILURE_POLICY_FAIL_FAST: _ClassVar[ItemFailurePolicy]
    ITEM_FAILURE_POLICY_FAIL_AT_END: _ClassVar[ItemFailurePolicy]
    ITEM_FAILURE_POLICY_CONTINUE: _ClassVar[ItemFailurePolicy]

class AiOperation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AI_OPERATION_UNSPECIFIED: _ClassVar[AiOperation]
    AI_OPERATION_GENERATE: _ClassVar[AiOperation]
    AI_OPERATION_CLASSIFY: _ClassVar[AiOperation]
    AI_OPERATION_EMBED: _ClassVar[AiOperation]

class EdgeCondition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EDGE_CONDITION_UNSPECIFIED: _ClassVar[EdgeCondition]
    EDGE_CONDITION_SUCCESS: _ClassVar[EdgeCondition]
    EDGE_CONDITION_FAILURE: _ClassVar[EdgeCondition]
    EDGE_CONDITION_ALWAYS: _ClassVar[EdgeCondition]
ITEM_FAILURE_POLICY_UNSPECIFIED: ItemFailurePolicy
ITEM_FAILURE_POLICY_FAIL_FAST: ItemFailurePolicy
ITEM_FAILURE_POLICY_FAIL_AT_END: ItemFailurePolicy
ITEM_FAILURE_POLICY_CONTINUE: ItemFailurePolicy
AI_OPERATION_UNSPECIFIED: AiOperation
AI_OPERATION_GENERATE: AiOperation
AI_OPERATION_CLASSIFY: AiOperation
AI_OPERATION_EMBED: AiOperation
EDGE_CONDITION_UNSPECIFIED: EdgeCondition
EDGE_CONDITION_SUCCESS: EdgeCondition
EDGE_CONDITION_FAILURE: EdgeCondition
EDGE_CONDITION_ALWAYS: EdgeCondition

class Flow(_message.Message):
    __slots__ = ("name", "nodes", "edges", "settings")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    edges: _containers.RepeatedCompositeFieldContainer[Edge]
    settings: FlowSettings
    def __init__(self, name: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[Edge, _Mapping]]] = ..., settings: _Optional[_Union[FlowSettings, _Mapping]] = ...) -> None: ...

class FlowSettings(_message.Message):
    __slots__ = ("max_parallel", "default_retry_policy", "default_timeout", "confirm_destructive")
    MAX_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_DESTRUCTIVE_FIELD_NUMBER: _ClassVar[int]
    max_parallel: int
    default_retry_policy: RetryPolicy
    default_timeout: _duration_pb2.Duration
    confirm_destructive: bool
    def __init__(self, max_parallel: _Optional[int] = ..., default_retry_policy: _Optional[_Union[RetryPolicy, _Mapping]] = ..., default_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., confirm_destructive: _Optional[bool] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "description", "timeout", "retry_policy", "max_visits", "for_each", "action", "ai", "approval")
    ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_VISITS_FIELD_NUMBER: _ClassVar[int]
    FOR_EACH_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    AI_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    id: str
    description: str
    timeout: _duration_pb2.Duration
    retry_policy: RetryPolicy
    max_visits: int
    for_each: ForEach
    action: ActionNode
    ai: AiNode
    approval: ApprovalNode
    def __init__(self, id: _Optional[str] = ..., description: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retry_policy: _Optional[_Union[RetryPolicy, _Mapping]] = ..., max_visits: _Optional[int] = ..., for_each: _Optional[_Union[ForEach, _Mapping]] = ..., action: _Optional[_Union[ActionNode, _Mapping]] = ..., ai: _Optional[_Union[AiNode, _Mapping]] = ..., approval: _Optional[_Union[ApprovalNode, _Mapping]] = ...) -> None: ...

class ForEach(_message.Message):
    __slots__ = ("items", "max_parallel", "failure_policy", "key_field")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    FAILURE_POLICY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_FIELD_NUMBER: _ClassVar[int]
    items: str
    max_parallel: int
    failure_policy: ItemFailurePolicy
    key_field: str
    def __init__(self, items: _Optional[str] = ..., max_parallel: _Optional[int] = ..., failure_policy: _Optional[_Union[ItemFailurePolicy, str]] = ..., key_field: _Optional[str] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_attempts", "initial_backoff", "backoff_multiplier", "max_backoff")
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    initial_backoff: _duration_pb2.Duration
    backoff_multiplier: float
    max_backoff: _duration_pb2.Duration
    def __init__(self, max_attempts: _Optional[int] = ..., initial_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., backoff_multiplier: _Optional[float] = ..., max_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ActionNode(_message.Message):
    __slots__ = ("adapter", "action", "params")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    adapter: str
    action: str
    params: _struct_pb2.Struct
    def __init__(self, adapter: _Optional[str] = ..., action: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class AiNode(_message.Message):
    __slots__ = ("provider", "model", "prompt", "task", "tools", "contract", "max_turns", "operation", "labels", "contract_version", "review_policy")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_FIELD_NUMBER: _ClassVar[int]
    MAX_TURNS_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    REVIEW_POLICY_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    prompt: str
    task: str
    tools: _containers.RepeatedScalarFieldContainer[str]
    contract: _struct_pb2.Struct
    max_turns: int
    operation: AiOperation
    labels: _containers.RepeatedScalarFieldContainer[str]
    contract_version: str
    review_policy: AiReviewPolicy
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., prompt: _Optional[str] = ..., task: _Optional[str] = ..., tools: _Optional[_Iterable[str]] = ..., contract: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., max_turns: _Optional[int] = ..., operation: _Optional[_Union[AiOperation, str]] = ..., labels: _Optional[_Iterable[str]] = ..., contract_version: _Optional[str] = ..., review_policy: _Optional[_Union[AiReviewPolicy, _Mapping]] = ...) -> None: ...

class AiReviewPolicy(_message.Message):
    __slots__ = ("confidence_pointer", "approve_at", "suppress_below", "escalate_pointer", "review_timeout")
    CONFIDENCE_POINTER_FIELD_NUMBER: _ClassVar[int]
    APPROVE_AT_FIELD_NUMBER: _ClassVar[int]
    SUPPRESS_BELOW_FIELD_NUMBER: _ClassVar[int]
    ESCALATE_POINTER_FIELD_NUMBER: _ClassVar[int]
    REVIEW_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    confidence_pointer: str
    approve_at: float
    suppress_below: float
    escalate_pointer: str
    review_timeout: _duration_pb2.Duration
    def __init__(self, confidence_pointer: _Optional[str] = ..., approve_at: _Optional[float] = ..., suppress_below: _Optional[float] = ..., escalate_pointer: _Optional[str] = ..., review_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ApprovalNode(_message.Message):
    __slots__ = ("message", "timeout")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    message: str
    timeout: _duration_pb2.Duration
    def __init__(self, message: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Edge(_message.Message):
    __slots__ = ("source", "target", "condition")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    source: str
    target: str
    condition: EdgeCondition
    def __init__(self, source: _Optional[str] = ..., target: _Optional[str] = ..., condition: _Optional[_Union[EdgeCondition, str]] = ...) -> None: ...
