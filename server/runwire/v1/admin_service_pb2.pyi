import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PruneRunsRequest(_message.Message):
    __slots__ = ("older_than", "dry_run")
    OLDER_THAN_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    older_than: _duration_pb2.Duration
    dry_run: bool
    def __init__(self, older_than: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class PruneRunsResponse(_message.Message):
    __slots__ = ("run_count", "dropped_partition_count", "removed_workspace_count")
    RUN_COUNT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_PARTITION_COUNT_FIELD_NUMBER: _ClassVar[int]
    REMOVED_WORKSPACE_COUNT_FIELD_NUMBER: _ClassVar[int]
    run_count: int
    dropped_partition_count: int
    removed_workspace_count: int
    def __init__(self, run_count: _Optional[int] = ..., dropped_partition_count: _Optional[int] = ..., removed_workspace_count: _Optional[int] = ...) -> None: ...
