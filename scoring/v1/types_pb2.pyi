import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_FILTER: _ClassVar[Stage]
    STAGE_ENSEMBLE: _ClassVar[Stage]
    STAGE_NONE: _ClassVar[Stage]
STAGE_UNSPECIFIED: Stage
STAGE_FILTER: Stage
STAGE_ENSEMBLE: Stage
STAGE_NONE: Stage

class Transaction(_message.Message):
    __slots__ = ("transaction_id", "timestamp", "customer_id", "terminal_id", "amount")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    timestamp: _timestamp_pb2.Timestamp
    customer_id: str
    terminal_id: str
    amount: float
    def __init__(self, transaction_id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., customer_id: _Optional[str] = ..., terminal_id: _Optional[str] = ..., amount: _Optional[float] = ...) -> None: ...

class EventError(_message.Message):
    __slots__ = ("code", "field", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    field: str
    message: str
    def __init__(self, code: _Optional[int] = ..., field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("transaction_id", "score", "stage", "degraded", "degraded_reason", "model_version", "error", "filter_score")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FILTER_SCORE_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    score: float
    stage: Stage
    degraded: bool
    degraded_reason: str
    model_version: str
    error: EventError
    filter_score: float
    def __init__(self, transaction_id: _Optional[str] = ..., score: _Optional[float] = ..., stage: _Optional[_Union[Stage, str]] = ..., degraded: _Optional[bool] = ..., degraded_reason: _Optional[str] = ..., model_version: _Optional[str] = ..., error: _Optional[_Union[EventError, _Mapping]] = ..., filter_score: _Optional[float] = ...) -> None: ...

class LabelReport(_message.Message):
    __slots__ = ("transaction_id", "fraud")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    FRAUD_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    fraud: bool
    def __init__(self, transaction_id: _Optional[str] = ..., fraud: _Optional[bool] = ...) -> None: ...
