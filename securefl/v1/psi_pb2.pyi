from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class PsiStart(_message.Message):
    __slots__ = ("joiner_size", "cardinality_only")
    JOINER_SIZE_FIELD_NUMBER: _ClassVar[int]
    CARDINALITY_ONLY_FIELD_NUMBER: _ClassVar[int]
    joiner_size: int
    cardinality_only: bool
    def __init__(self, joiner_size: _Optional[int] = ..., cardinality_only: bool = ...) -> None: ...

class PsiSession(_message.Message):
    __slots__ = ("session_id", "server_size")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_SIZE_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    server_size: int
    def __init__(self, session_id: _Optional[bytes] = ..., server_size: _Optional[int] = ...) -> None: ...

class PsiSessionRef(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    def __init__(self, session_id: _Optional[bytes] = ...) -> None: ...

class PointBatch(_message.Message):
    __slots__ = ("session_id", "points")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    points: bytes
    def __init__(self, session_id: _Optional[bytes] = ..., points: _Optional[bytes] = ...) -> None: ...

class PsiMatches(_message.Message):
    __slots__ = ("session_id", "server_positions", "cardinality")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    CARDINALITY_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    server_positions: _containers.RepeatedScalarFieldContainer[int]
    cardinality: int
    def __init__(self, session_id: _Optional[bytes] = ..., server_positions: _Optional[_Iterable[int]] = ..., cardinality: _Optional[int] = ...) -> None: ...

class PsiFinished(_message.Message):
    __slots__ = ("cardinality",)
    CARDINALITY_FIELD_NUMBER: _ClassVar[int]
    cardinality: int
    def __init__(self, cardinality: _Optional[int] = ...) -> None: ...
