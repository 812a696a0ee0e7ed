import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TradeSide(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRADE_SIDE_NONE: _ClassVar[TradeSide]
    TRADE_SIDE_BUY: _ClassVar[TradeSide]
    TRADE_SIDE_SELL: _ClassVar[TradeSide]

class Signal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNAL_UNSPECIFIED: _ClassVar[Signal]
    SIGNAL_DOWN: _ClassVar[Signal]
    SIGNAL_FLAT: _ClassVar[Signal]
    SIGNAL_UP: _ClassVar[Signal]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_FILTER: _ClassVar[Stage]
    STAGE_ENSEMBLE: _ClassVar[Stage]
    STAGE_NONE: _ClassVar[Stage]
TRADE_SIDE_NONE: TradeSide
TRADE_SIDE_BUY: TradeSide
TRADE_SIDE_SELL: TradeSide
SIGNAL_UNSPECIFIED: Signal
SIGNAL_DOWN: Signal
SIGNAL_FLAT: Signal
SIGNAL_UP: Signal
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

class MarketTick(_message.Message):
    __slots__ = ("tick_id", "symbol", "sequence", "timestamp", "bid_price", "bid_size", "ask_price", "ask_size", "last_price", "last_size", "last_side")
    TICK_ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    BID_PRICE_FIELD_NUMBER: _ClassVar[int]
    BID_SIZE_FIELD_NUMBER: _ClassVar[int]
    ASK_PRICE_FIELD_NUMBER: _ClassVar[int]
    ASK_SIZE_FIELD_NUMBER: _ClassVar[int]
    LAST_PRICE_FIELD_NUMBER: _ClassVar[int]
    LAST_SIZE_FIELD_NUMBER: _ClassVar[int]
    LAST_SIDE_FIELD_NUMBER: _ClassVar[int]
    tick_id: str
    symbol: str
    sequence: int
    timestamp: _timestamp_pb2.Timestamp
    bid_price: float
    bid_size: float
    ask_price: float
    ask_size: float
    last_price: float
    last_size: float
    last_side: TradeSide
    def __init__(self, tick_id: _Optional[str] = ..., symbol: _Optional[str] = ..., sequence: _Optional[int] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bid_price: _Optional[float] = ..., bid_size: _Optional[float] = ..., ask_price: _Optional[float] = ..., ask_size: _Optional[float] = ..., last_price: _Optional[float] = ..., last_size: _Optional[float] = ..., last_side: _Optional[_Union[TradeSide, str]] = ...) -> None: ...

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
    __slots__ = ("transaction_id", "score", "stage", "degraded", "degraded_reason", "model_version", "error", "filter_score", "tick_id", "signal", "p_down", "p_flat", "p_up", "release")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FILTER_SCORE_FIELD_NUMBER: _ClassVar[int]
    TICK_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    P_DOWN_FIELD_NUMBER: _ClassVar[int]
    P_FLAT_FIELD_NUMBER: _ClassVar[int]
    P_UP_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    score: float
    stage: Stage
    degraded: bool
    degraded_reason: str
    model_version: str
    error: EventError
    filter_score: float
    tick_id: str
    signal: Signal
    p_down: float
    p_flat: float
    p_up: float
    release: str
    def __init__(self, transaction_id: _Optional[str] = ..., score: _Optional[float] = ..., stage: _Optional[_Union[Stage, str]] = ..., degraded: _Optional[bool] = ..., degraded_reason: _Optional[str] = ..., model_version: _Optional[str] = ..., error: _Optional[_Union[EventError, _Mapping]] = ..., filter_score: _Optional[float] = ..., tick_id: _Optional[str] = ..., signal: _Optional[_Union[Signal, str]] = ..., p_down: _Optional[float] = ..., p_flat: _Optional[float] = ..., p_up: _Optional[float] = ..., release: _Optional[str] = ...) -> None: ...

class LabelReport(_message.Message):
    __slots__ = ("transaction_id", "fraud")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    FRAUD_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    fraud: bool
    def __init__(self, transaction_id: _Optional[str] = ..., fraud: _Optional[bool] = ...) -> None: ...
