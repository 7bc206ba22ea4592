from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_FLOW_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_REQUEST_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_RUN_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_RUN_FINISHED: _ClassVar[ErrorReason]
    ERROR_REASON_REQUEST_ID_REUSED: _ClassVar[ErrorReason]
    ERROR_REASON_ADAPTER_DISABLED: _ClassVar[ErrorReason]
    ERROR_REASON_GATE_NOT_PENDING: _ClassVar[ErrorReason]
    ERROR_REASON_GATE_ALREADY_RESOLVED: _ClassVar[ErrorReason]
    ERROR_REASON_SERVER_DRAINING: _ClassVar[ErrorReason]
    ERROR_REASON_INTERNAL: _ClassVar[ErrorReason]
    ERROR_REASON_UNAUTHENTICATED: _ClassVar[ErrorReason]
    ERROR_REASON_PAGE_TOKEN_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_FILTER_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_AFTER_SEQ_BEYOND_END: _ClassVar[ErrorReason]
    ERROR_REASON_DATABASE_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_OVERLOADED: _ClassVar[ErrorReason]
    ERROR_REASON_PERMISSION_DENIED: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_FLOW_INVALID: ErrorReason
ERROR_REASON_REQUEST_INVALID: ErrorReason
ERROR_REASON_RUN_NOT_FOUND: ErrorReason
ERROR_REASON_RUN_FINISHED: ErrorReason
ERROR_REASON_REQUEST_ID_REUSED: ErrorReason
ERROR_REASON_ADAPTER_DISABLED: ErrorReason
ERROR_REASON_GATE_NOT_PENDING: ErrorReason
ERROR_REASON_GATE_ALREADY_RESOLVED: ErrorReason
ERROR_REASON_SERVER_DRAINING: ErrorReason
ERROR_REASON_INTERNAL: ErrorReason
ERROR_REASON_UNAUTHENTICATED: ErrorReason
ERROR_REASON_PAGE_TOKEN_INVALID: ErrorReason
ERROR_REASON_FILTER_INVALID: ErrorReason
ERROR_REASON_AFTER_SEQ_BEYOND_END: ErrorReason
ERROR_REASON_DATABASE_UNAVAILABLE: ErrorReason
ERROR_REASON_OVERLOADED: ErrorReason
ERROR_REASON_PERMISSION_DENIED: ErrorReason
