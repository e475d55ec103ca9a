from securefl.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EpochRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegisterRoundRequest(_message.Message):
    __slots__ = ("round_id",)
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    def __init__(self, round_id: _Optional[str] = ...) -> None: ...

class DecryptHeader(_message.Message):
    __slots__ = ("round_id", "vector_length", "spec_hash", "chunk_count", "receipts")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SPEC_HASH_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    vector_length: int
    spec_hash: bytes
    chunk_count: int
    receipts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Receipt]
    def __init__(self, round_id: _Optional[str] = ..., vector_length: _Optional[int] = ..., spec_hash: _Optional[bytes] = ..., chunk_count: _Optional[int] = ..., receipts: _Optional[_Iterable[_Union[_common_pb2.Receipt, _Mapping]]] = ...) -> None: ...

class DecryptMessage(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: DecryptHeader
    chunk: _common_pb2.Chunk
    def __init__(self, header: _Optional[_Union[DecryptHeader, _Mapping]] = ..., chunk: _Optional[_Union[_common_pb2.Chunk, _Mapping]] = ...) -> None: ...
