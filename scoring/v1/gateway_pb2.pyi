from scoring.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoreRequest(_message.Message):
    __slots__ = ("transaction", "tick")
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    TICK_FIELD_NUMBER: _ClassVar[int]
    transaction: _types_pb2.Transaction
    tick: _types_pb2.MarketTick
    def __init__(self, transaction: _Optional[_Union[_types_pb2.Transaction, _Mapping]] = ..., tick: _Optional[_Union[_types_pb2.MarketTick, _Mapping]] = ...) -> None: ...

class ScoreBatchRequest(_message.Message):
    __slots__ = ("transactions", "events")
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[_types_pb2.Transaction]
    events: _containers.RepeatedCompositeFieldContainer[ScoreRequest]
    def __init__(self, transactions: _Optional[_Iterable[_Union[_types_pb2.Transaction, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[ScoreRequest, _Mapping]]] = ...) -> None: ...

class ScoreBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[_types_pb2.ScoreResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[_types_pb2.ScoreResponse, _Mapping]]] = ...) -> None: ...

class ColumnarScoreRequest(_message.Message):
    __slots__ = ("transaction_id", "event_time_us", "customer_id", "terminal_id", "amount")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    transaction_id: _containers.RepeatedScalarFieldContainer[str]
    event_time_us: _containers.RepeatedScalarFieldContainer[int]
    customer_id: _containers.RepeatedScalarFieldContainer[str]
    terminal_id: _containers.RepeatedScalarFieldContainer[str]
    amount: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, transaction_id: _Optional[_Iterable[str]] = ..., event_time_us: _Optional[_Iterable[int]] = ..., customer_id: _Optional[_Iterable[str]] = ..., terminal_id: _Optional[_Iterable[str]] = ..., amount: _Optional[_Iterable[float]] = ...) -> None: ...

class ColumnarScoreResponse(_message.Message):
    __slots__ = ("score", "filter_score", "stage", "degraded", "reason_index", "reasons", "model_index", "model_versions", "release_index", "releases", "error_rows", "errors")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    FILTER_SCORE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    REASON_INDEX_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_INDEX_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_INDEX_FIELD_NUMBER: _ClassVar[int]
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    ERROR_ROWS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    score: _containers.RepeatedScalarFieldContainer[float]
    filter_score: _containers.RepeatedScalarFieldContainer[float]
    stage: _containers.RepeatedScalarFieldContainer[_types_pb2.Stage]
    degraded: _containers.RepeatedScalarFieldContainer[bool]
    reason_index: _containers.RepeatedScalarFieldContainer[int]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    model_index: _containers.RepeatedScalarFieldContainer[int]
    model_versions: _containers.RepeatedScalarFieldContainer[str]
    release_index: _containers.RepeatedScalarFieldContainer[int]
    releases: _containers.RepeatedScalarFieldContainer[str]
    error_rows: _containers.RepeatedScalarFieldContainer[int]
    errors: _containers.RepeatedCompositeFieldContainer[_types_pb2.EventError]
    def __init__(self, score: _Optional[_Iterable[float]] = ..., filter_score: _Optional[_Iterable[float]] = ..., stage: _Optional[_Iterable[_Union[_types_pb2.Stage, str]]] = ..., degraded: _Optional[_Iterable[bool]] = ..., reason_index: _Optional[_Iterable[int]] = ..., reasons: _Optional[_Iterable[str]] = ..., model_index: _Optional[_Iterable[int]] = ..., model_versions: _Optional[_Iterable[str]] = ..., release_index: _Optional[_Iterable[int]] = ..., releases: _Optional[_Iterable[str]] = ..., error_rows: _Optional[_Iterable[int]] = ..., errors: _Optional[_Iterable[_Union[_types_pb2.EventError, _Mapping]]] = ...) -> None: ...

class ReportLabelsRequest(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[_types_pb2.LabelReport]
    def __init__(self, labels: _Optional[_Iterable[_Union[_types_pb2.LabelReport, _Mapping]]] = ...) -> None: ...

class ReportLabelsResponse(_message.Message):
    __slots__ = ("accepted", "unknown")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    unknown: int
    def __init__(self, accepted: _Optional[int] = ..., unknown: _Optional[int] = ...) -> None: ...
