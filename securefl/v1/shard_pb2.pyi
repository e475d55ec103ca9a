from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ReadyRequest(_message.Message):
    __slots__ = ("round_id", "client_id", "shard")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    client_id: str
    shard: int
    def __init__(self, round_id: _Optional[str] = ..., client_id: _Optional[str] = ..., shard: _Optional[int] = ...) -> None: ...

class ReadyReply(_message.Message):
    __slots__ = ("commit",)
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    commit: bool
    def __init__(self, commit: bool = ...) -> None: ...

class CloseRequest(_message.Message):
    __slots__ = ("round_id",)
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    def __init__(self, round_id: _Optional[str] = ...) -> None: ...

class CloseDecision(_message.Message):
    __slots__ = ("decided", "contributors")
    DECIDED_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    decided: bool
    contributors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, decided: bool = ..., contributors: _Optional[_Iterable[str]] = ...) -> None: ...
