from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateReleaseRequest(_message.Message):
    __slots__ = ("name", "source", "by")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    source: str
    by: str
    def __init__(self, name: _Optional[str] = ..., source: _Optional[str] = ..., by: _Optional[str] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("name", "by")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    by: str
    def __init__(self, name: _Optional[str] = ..., by: _Optional[str] = ...) -> None: ...

class CanaryRequest(_message.Message):
    __slots__ = ("name", "steps", "by")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    steps: _containers.RepeatedScalarFieldContainer[float]
    by: str
    def __init__(self, name: _Optional[str] = ..., steps: _Optional[_Iterable[float]] = ..., by: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("by", "reason")
    BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    by: str
    reason: str
    def __init__(self, by: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListReleasesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReleaseInfo(_message.Message):
    __slots__ = ("name", "scenario", "created_at", "created_by", "triton_model", "triton_version", "feature_schema_hash", "threshold", "role")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    TRITON_MODEL_FIELD_NUMBER: _ClassVar[int]
    TRITON_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SCHEMA_HASH_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    scenario: str
    created_at: float
    created_by: str
    triton_model: str
    triton_version: int
    feature_schema_hash: str
    threshold: float
    role: str
    def __init__(self, name: _Optional[str] = ..., scenario: _Optional[str] = ..., created_at: _Optional[float] = ..., created_by: _Optional[str] = ..., triton_model: _Optional[str] = ..., triton_version: _Optional[int] = ..., feature_schema_hash: _Optional[str] = ..., threshold: _Optional[float] = ..., role: _Optional[str] = ...) -> None: ...

class ListReleasesResponse(_message.Message):
    __slots__ = ("releases",)
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    releases: _containers.RepeatedCompositeFieldContainer[ReleaseInfo]
    def __init__(self, releases: _Optional[_Iterable[_Union[ReleaseInfo, _Mapping]]] = ...) -> None: ...

class ReleaseStatus(_message.Message):
    __slots__ = ("scenario", "champion", "candidate", "mode", "canary_fraction", "steps", "step", "previous", "detail_json")
    SCENARIO_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CANARY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    scenario: str
    champion: str
    candidate: str
    mode: str
    canary_fraction: float
    steps: _containers.RepeatedScalarFieldContainer[float]
    step: int
    previous: str
    detail_json: str
    def __init__(self, scenario: _Optional[str] = ..., champion: _Optional[str] = ..., candidate: _Optional[str] = ..., mode: _Optional[str] = ..., canary_fraction: _Optional[float] = ..., steps: _Optional[_Iterable[float]] = ..., step: _Optional[int] = ..., previous: _Optional[str] = ..., detail_json: _Optional[str] = ...) -> None: ...
