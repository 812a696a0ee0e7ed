from scoring.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FeatureSchema(_message.Message):
    __slots__ = ("scenario", "hash", "definition_version", "feature_names", "sequence_features", "sequence_length")
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FEATURES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    scenario: str
    hash: str
    definition_version: int
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    sequence_features: _containers.RepeatedScalarFieldContainer[str]
    sequence_length: int
    def __init__(self, scenario: _Optional[str] = ..., hash: _Optional[str] = ..., definition_version: _Optional[int] = ..., feature_names: _Optional[_Iterable[str]] = ..., sequence_features: _Optional[_Iterable[str]] = ..., sequence_length: _Optional[int] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("schemas",)
    SCHEMAS_FIELD_NUMBER: _ClassVar[int]
    schemas: _containers.RepeatedCompositeFieldContainer[FeatureSchema]
    def __init__(self, schemas: _Optional[_Iterable[_Union[FeatureSchema, _Mapping]]] = ...) -> None: ...

class FeatureRequest(_message.Message):
    __slots__ = ("transaction_id", "event_time_us", "customer_id", "terminal_id", "amount", "fold_only", "ticks")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    FOLD_ONLY_FIELD_NUMBER: _ClassVar[int]
    TICKS_FIELD_NUMBER: _ClassVar[int]
    transaction_id: _containers.RepeatedScalarFieldContainer[str]
    event_time_us: _containers.RepeatedScalarFieldContainer[int]
    customer_id: _containers.RepeatedScalarFieldContainer[str]
    terminal_id: _containers.RepeatedScalarFieldContainer[str]
    amount: _containers.RepeatedScalarFieldContainer[float]
    fold_only: bool
    ticks: TickColumns
    def __init__(self, transaction_id: _Optional[_Iterable[str]] = ..., event_time_us: _Optional[_Iterable[int]] = ..., customer_id: _Optional[_Iterable[str]] = ..., terminal_id: _Optional[_Iterable[str]] = ..., amount: _Optional[_Iterable[float]] = ..., fold_only: _Optional[bool] = ..., ticks: _Optional[_Union[TickColumns, _Mapping]] = ...) -> None: ...

class TickColumns(_message.Message):
    __slots__ = ("tick_id", "symbol", "sequence", "event_time_us", "bid_price", "bid_size", "ask_price", "ask_size", "last_price", "last_size", "last_side")
    TICK_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    BID_PRICE_FIELD_NUMBER: _ClassVar[int]
    BID_SIZE_FIELD_NUMBER: _ClassVar[int]
    ASK_PRICE_FIELD_NUMBER: _ClassVar[int]
    ASK_SIZE_FIELD_NUMBER: _ClassVar[int]
    LAST_PRICE_FIELD_NUMBER: _ClassVar[int]
    LAST_SIZE_FIELD_NUMBER: _ClassVar[int]
    LAST_SIDE_FIELD_NUMBER: _ClassVar[int]
    tick_id: _containers.RepeatedScalarFieldContainer[str]
    symbol: _containers.RepeatedScalarFieldContainer[str]
    sequence: _containers.RepeatedScalarFieldContainer[int]
    event_time_us: _containers.RepeatedScalarFieldContainer[int]
    bid_price: _containers.RepeatedScalarFieldContainer[float]
    bid_size: _containers.RepeatedScalarFieldContainer[float]
    ask_price: _containers.RepeatedScalarFieldContainer[float]
    ask_size: _containers.RepeatedScalarFieldContainer[float]
    last_price: _containers.RepeatedScalarFieldContainer[float]
    last_size: _containers.RepeatedScalarFieldContainer[float]
    last_side: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, tick_id: _Optional[_Iterable[str]] = ..., symbol: _Optional[_Iterable[str]] = ..., sequence: _Optional[_Iterable[int]] = ..., event_time_us: _Optional[_Iterable[int]] = ..., bid_price: _Optional[_Iterable[float]] = ..., bid_size: _Optional[_Iterable[float]] = ..., ask_price: _Optional[_Iterable[float]] = ..., ask_size: _Optional[_Iterable[float]] = ..., last_price: _Optional[_Iterable[float]] = ..., last_size: _Optional[_Iterable[float]] = ..., last_side: _Optional[_Iterable[int]] = ...) -> None: ...

class FeatureResponse(_message.Message):
    __slots__ = ("rows", "features", "feature_names", "sequences", "seq_len", "seq_feature_count", "fold_status")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    SEQ_LEN_FIELD_NUMBER: _ClassVar[int]
    SEQ_FEATURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FOLD_STATUS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    features: bytes
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    sequences: bytes
    seq_len: int
    seq_feature_count: int
    fold_status: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, rows: _Optional[int] = ..., features: _Optional[bytes] = ..., feature_names: _Optional[_Iterable[str]] = ..., sequences: _Optional[bytes] = ..., seq_len: _Optional[int] = ..., seq_feature_count: _Optional[int] = ..., fold_status: _Optional[_Iterable[int]] = ...) -> None: ...

class LabelBatch(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[_types_pb2.LabelReport]
    def __init__(self, labels: _Optional[_Iterable[_Union[_types_pb2.LabelReport, _Mapping]]] = ...) -> None: ...

class LabelAck(_message.Message):
    __slots__ = ("accepted", "unknown")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    unknown: int
    def __init__(self, accepted: _Optional[int] = ..., unknown: _Optional[int] = ...) -> None: ...
