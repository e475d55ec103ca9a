from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Receipt(_message.Message):
    __slots__ = ("round_id", "client_id", "scheme", "spec_hash", "vector_length", "digest", "signature", "key_epoch", "sealed_seed")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    SPEC_HASH_FIELD_NUMBER: _ClassVar[int]
    VECTOR_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEALED_SEED_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    client_id: str
    scheme: str
    spec_hash: bytes
    vector_length: int
    digest: bytes
    signature: bytes
    key_epoch: int
    sealed_seed: bytes
    def __init__(self, round_id: _Optional[str] = ..., client_id: _Optional[str] = ..., scheme: _Optional[str] = ..., spec_hash: _Optional[bytes] = ..., vector_length: _Optional[int] = ..., digest: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., key_epoch: _Optional[int] = ..., sealed_seed: _Optional[bytes] = ...) -> None: ...

class PublicEpoch(_message.Message):
    __slots__ = ("epoch", "scheme", "preset", "context", "sealing_public_key", "max_clients", "precision_bits", "value_bound", "max_weight", "signature")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SEALING_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_BITS_FIELD_NUMBER: _ClassVar[int]
    VALUE_BOUND_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    scheme: str
    preset: str
    context: bytes
    sealing_public_key: bytes
    max_clients: int
    precision_bits: int
    value_bound: float
    max_weight: float
    signature: bytes
    def __init__(self, epoch: _Optional[int] = ..., scheme: _Optional[str] = ..., preset: _Optional[str] = ..., context: _Optional[bytes] = ..., sealing_public_key: _Optional[bytes] = ..., max_clients: _Optional[int] = ..., precision_bits: _Optional[int] = ..., value_bound: _Optional[float] = ..., max_weight: _Optional[float] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("index", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    data: bytes
    def __init__(self, index: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ChunkRun(_message.Message):
    __slots__ = ("first_index", "data")
    FIRST_INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    first_index: int
    data: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, first_index: _Optional[int] = ..., data: _Optional[_Iterable[bytes]] = ...) -> None: ...
