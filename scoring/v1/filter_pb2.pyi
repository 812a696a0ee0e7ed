from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class FilterRequest(_message.Message):
    __slots__ = ("rows", "cols", "features", "self_contained_only", "scenario", "release")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SELF_CONTAINED_ONLY_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    rows: int
    cols: int
    features: bytes
    self_contained_only: bool
    scenario: str
    release: str
    def __init__(self, rows: _Optional[int] = ..., cols: _Optional[int] = ..., features: _Optional[bytes] = ..., self_contained_only: _Optional[bool] = ..., scenario: _Optional[str] = ..., release: _Optional[str] = ...) -> None: ...

class FilterResponse(_message.Message):
    __slots__ = ("scores", "threshold", "model_version", "class_probabilities", "classes")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLASS_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    scores: bytes
    threshold: float
    model_version: str
    class_probabilities: bytes
    classes: int
    def __init__(self, scores: _Optional[bytes] = ..., threshold: _Optional[float] = ..., model_version: _Optional[str] = ..., class_probabilities: _Optional[bytes] = ..., classes: _Optional[int] = ...) -> None: ...
