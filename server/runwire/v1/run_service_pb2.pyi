import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from runwire.v1 import events_pb2 as _events_pb2
from runwire.v1 import flow_pb2 as _flow_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GateKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GATE_KIND_UNSPECIFIED: _ClassVar[GateKind]
    GATE_KIND_CONFIRMATION: _ClassVar[GateKind]
    GATE_KIND_APPROVAL: _ClassVar[GateKind]
    GATE_KIND_REVIEW: _ClassVar[GateKind]

class StreamStart(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_START_UNSPECIFIED: _ClassVar[StreamStart]
    STREAM_START_LATEST: _ClassVar[StreamStart]
    STREAM_START_EARLIEST: _ClassVar[StreamStart]
GATE_KIND_UNSPECIFIED: GateKind
GATE_KIND_CONFIRMATION: GateKind
GATE_KIND_APPROVAL: GateKind
GATE_KIND_REVIEW: GateKind
STREAM_START_UNSPECIFIED: StreamStart
STREAM_START_LATEST: StreamStart
STREAM_START_EARLIEST: StreamStart

class Run(_message.Message):
    __slots__ = ("run_id", "flow_name", "flow_digest", "status", "create_time", "update_time", "end_time", "node_count", "succeeded_node_count", "failed_node_count", "skipped_node_count", "last_seq", "labels", "pending_gates", "request_id", "inputs", "error")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_NAME_FIELD_NUMBER: _ClassVar[int]
    FLOW_DIGEST_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    NODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_NODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILED_NODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_NODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PENDING_GATES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    flow_name: str
    flow_digest: str
    status: _events_pb2.RunStatus
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    node_count: int
    succeeded_node_count: int
    failed_node_count: int
    skipped_node_count: int
    last_seq: int
    labels: _containers.ScalarMap[str, str]
    pending_gates: _containers.RepeatedCompositeFieldContainer[PendingGate]
    request_id: str
    inputs: _struct_pb2.Struct
    error: _events_pb2.ErrorSummary
    def __init__(self, run_id: _Optional[str] = ..., flow_name: _Optional[str] = ..., flow_digest: _Optional[str] = ..., status: _Optional[_Union[_events_pb2.RunStatus, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., node_count: _Optional[int] = ..., succeeded_node_count: _Optional[int] = ..., failed_node_count: _Optional[int] = ..., skipped_node_count: _Optional[int] = ..., last_seq: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., pending_gates: _Optional[_Iterable[_Union[PendingGate, _Mapping]]] = ..., request_id: _Optional[str] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[_Union[_events_pb2.ErrorSummary, _Mapping]] = ...) -> None: ...

class PendingGate(_message.Message):
    __slots__ = ("node_id", "kind", "message", "create_time", "expire_time", "item_index", "tool_call_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    kind: GateKind
    message: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    item_index: int
    tool_call_id: str
    def __init__(self, node_id: _Optional[str] = ..., kind: _Optional[_Union[GateKind, str]] = ..., message: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., item_index: _Optional[int] = ..., tool_call_id: _Optional[str] = ...) -> None: ...

class StartRunRequest(_message.Message):
    __slots__ = ("flow", "inputs", "request_id", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FLOW_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    flow: _flow_pb2.Flow
    inputs: _struct_pb2.Struct
    request_id: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, flow: _Optional[_Union[_flow_pb2.Flow, _Mapping]] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StartRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("run_id", "after_seq", "filter")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    after_seq: int
    filter: EventFilter
    def __init__(self, run_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., filter: _Optional[_Union[EventFilter, _Mapping]] = ...) -> None: ...

class EventFilter(_message.Message):
    __slots__ = ("kinds", "node_ids")
    KINDS_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kinds: _Optional[_Iterable[str]] = ..., node_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RunEventsFilter(_message.Message):
    __slots__ = ("flow_name", "labels", "run_statuses", "events")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FLOW_NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    RUN_STATUSES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    flow_name: str
    labels: _containers.ScalarMap[str, str]
    run_statuses: _containers.RepeatedScalarFieldContainer[_events_pb2.RunStatus]
    events: EventFilter
    def __init__(self, flow_name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., run_statuses: _Optional[_Iterable[_Union[_events_pb2.RunStatus, str]]] = ..., events: _Optional[_Union[EventFilter, _Mapping]] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("cursor", "start", "filter")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    start: StreamStart
    filter: RunEventsFilter
    def __init__(self, cursor: _Optional[str] = ..., start: _Optional[_Union[StreamStart, str]] = ..., filter: _Optional[_Union[RunEventsFilter, _Mapping]] = ...) -> None: ...

class WatchEventsResponse(_message.Message):
    __slots__ = ("events", "cursor")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.RunEvent]
    cursor: str
    def __init__(self, events: _Optional[_Iterable[_Union[_events_pb2.RunEvent, _Mapping]]] = ..., cursor: _Optional[str] = ...) -> None: ...

class WatchRunResponse(_message.Message):
    __slots__ = ("events", "stream_end", "resume_after_seq")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    STREAM_END_FIELD_NUMBER: _ClassVar[int]
    RESUME_AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.RunEvent]
    stream_end: StreamEnd
    resume_after_seq: int
    def __init__(self, events: _Optional[_Iterable[_Union[_events_pb2.RunEvent, _Mapping]]] = ..., stream_end: _Optional[_Union[StreamEnd, _Mapping]] = ..., resume_after_seq: _Optional[int] = ...) -> None: ...

class StreamEnd(_message.Message):
    __slots__ = ("last_seq", "status")
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    last_seq: int
    status: _events_pb2.RunStatus
    def __init__(self, last_seq: _Optional[int] = ..., status: _Optional[_Union[_events_pb2.RunStatus, str]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "filter")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    filter: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PauseRunRequest(_message.Message):
    __slots__ = ("run_id", "reason")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    reason: str
    def __init__(self, run_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PauseRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class ResumeRunRequest(_message.Message):
    __slots__ = ("run_id", "reason")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    reason: str
    def __init__(self, run_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResumeRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class CancelRunRequest(_message.Message):
    __slots__ = ("run_id", "reason")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    reason: str
    def __init__(self, run_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class ConfirmActionRequest(_message.Message):
    __slots__ = ("run_id", "node_id", "approve", "comment", "item_index", "tool_call_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    ITEM_INDEX_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    node_id: str
    approve: bool
    comment: str
    item_index: int
    tool_call_id: str
    def __init__(self, run_id: _Optional[str] = ..., node_id: _Optional[str] = ..., approve: _Optional[bool] = ..., comment: _Optional[str] = ..., item_index: _Optional[int] = ..., tool_call_id: _Optional[str] = ...) -> None: ...

class ConfirmActionResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class ResolveApprovalRequest(_message.Message):
    __slots__ = ("run_id", "node_id", "approve", "comment")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    node_id: str
    approve: bool
    comment: str
    def __init__(self, run_id: _Optional[str] = ..., node_id: _Optional[str] = ..., approve: _Optional[bool] = ..., comment: _Optional[str] = ...) -> None: ...

class ResolveApprovalResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class ResolveReviewRequest(_message.Message):
    __slots__ = ("run_id", "node_id", "approve", "comment", "output_json")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    node_id: str
    approve: bool
    comment: str
    output_json: str
    def __init__(self, run_id: _Optional[str] = ..., node_id: _Optional[str] = ..., approve: _Optional[bool] = ..., comment: _Optional[str] = ..., output_json: _Optional[str] = ...) -> None: ...

class ResolveReviewResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class ValidateFlowRequest(_message.Message):
    __slots__ = ("flow", "inputs")
    FLOW_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    flow: _flow_pb2.Flow
    inputs: _struct_pb2.Struct
    def __init__(self, flow: _Optional[_Union[_flow_pb2.Flow, _Mapping]] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ValidateFlowResponse(_message.Message):
    __slots__ = ("flow_digest", "node_count", "root_node_ids")
    FLOW_DIGEST_FIELD_NUMBER: _ClassVar[int]
    NODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ROOT_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    flow_digest: str
    node_count: int
    root_node_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, flow_digest: _Optional[str] = ..., node_count: _Optional[int] = ..., root_node_ids: _Optional[_Iterable[str]] = ...) -> None: ...
