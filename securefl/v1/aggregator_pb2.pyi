from securefl.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Session(_message.Message):
    __slots__ = ("scheme", "he_context", "he_fingerprint", "he_preset", "chunk_values", "max_abs_sum", "max_clients", "secagg")
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    HE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    HE_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    HE_PRESET_FIELD_NUMBER: _ClassVar[int]
    CHUNK_VALUES_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_SUM_FIELD_NUMBER: _ClassVar[int]
    MAX_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    scheme: str
    he_context: bytes
    he_fingerprint: bytes
    he_preset: str
    chunk_values: int
    max_abs_sum: float
    max_clients: int
    secagg: SecAggConfig
    def __init__(self, scheme: _Optional[str] = ..., he_context: _Optional[bytes] = ..., he_fingerprint: _Optional[bytes] = ..., he_preset: _Optional[str] = ..., chunk_values: _Optional[int] = ..., max_abs_sum: _Optional[float] = ..., max_clients: _Optional[int] = ..., secagg: _Optional[_Union[SecAggConfig, _Mapping]] = ...) -> None: ...

class SecAggConfig(_message.Message):
    __slots__ = ("value_bound", "max_weight", "bits", "frac_bits", "dropout_fraction", "corrupt_fraction")
    VALUE_BOUND_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CORRUPT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    value_bound: float
    max_weight: float
    bits: int
    frac_bits: int
    dropout_fraction: float
    corrupt_fraction: float
    def __init__(self, value_bound: _Optional[float] = ..., max_weight: _Optional[float] = ..., bits: _Optional[int] = ..., frac_bits: _Optional[int] = ..., dropout_fraction: _Optional[float] = ..., corrupt_fraction: _Optional[float] = ...) -> None: ...

class RoundConfig(_message.Message):
    __slots__ = ("min_clients", "expected_clients", "timeout_seconds")
    MIN_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    min_clients: int
    expected_clients: int
    timeout_seconds: float
    def __init__(self, min_clients: _Optional[int] = ..., expected_clients: _Optional[int] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class OpenRoundRequest(_message.Message):
    __slots__ = ("round_id", "config")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    config: RoundConfig
    def __init__(self, round_id: _Optional[str] = ..., config: _Optional[_Union[RoundConfig, _Mapping]] = ...) -> None: ...

class JoinRoundRequest(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    def __init__(self, client_id: _Optional[str] = ...) -> None: ...

class RoundRequest(_message.Message):
    __slots__ = ("round_id",)
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    def __init__(self, round_id: _Optional[str] = ...) -> None: ...

class RoundInfo(_message.Message):
    __slots__ = ("round_id", "state", "config", "contributors", "vector_length", "spec_hash", "error", "aggregation_seconds", "reveal_seconds")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SPEC_HASH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REVEAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    state: str
    config: RoundConfig
    contributors: int
    vector_length: int
    spec_hash: bytes
    error: str
    aggregation_seconds: float
    reveal_seconds: float
    def __init__(self, round_id: _Optional[str] = ..., state: _Optional[str] = ..., config: _Optional[_Union[RoundConfig, _Mapping]] = ..., contributors: _Optional[int] = ..., vector_length: _Optional[int] = ..., spec_hash: _Optional[bytes] = ..., error: _Optional[str] = ..., aggregation_seconds: _Optional[float] = ..., reveal_seconds: _Optional[float] = ...) -> None: ...

class SubmissionHeader(_message.Message):
    __slots__ = ("receipt", "chunk_count")
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    receipt: _common_pb2.Receipt
    chunk_count: int
    def __init__(self, receipt: _Optional[_Union[_common_pb2.Receipt, _Mapping]] = ..., chunk_count: _Optional[int] = ...) -> None: ...

class SubmitMessage(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: SubmissionHeader
    chunk: _common_pb2.Chunk
    def __init__(self, header: _Optional[_Union[SubmissionHeader, _Mapping]] = ..., chunk: _Optional[_Union[_common_pb2.Chunk, _Mapping]] = ...) -> None: ...

class SubmitAck(_message.Message):
    __slots__ = ("round_id", "client_id", "contributors", "aggregator_key", "aggregator_signature")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_KEY_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    client_id: str
    contributors: int
    aggregator_key: bytes
    aggregator_signature: bytes
    def __init__(self, round_id: _Optional[str] = ..., client_id: _Optional[str] = ..., contributors: _Optional[int] = ..., aggregator_key: _Optional[bytes] = ..., aggregator_signature: _Optional[bytes] = ...) -> None: ...

class ResultHeader(_message.Message):
    __slots__ = ("round_id", "vector_length", "total_weight", "contributors", "chunk_count")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    vector_length: int
    total_weight: float
    contributors: int
    chunk_count: int
    def __init__(self, round_id: _Optional[str] = ..., vector_length: _Optional[int] = ..., total_weight: _Optional[float] = ..., contributors: _Optional[int] = ..., chunk_count: _Optional[int] = ...) -> None: ...

class ResultMessage(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ResultHeader
    chunk: _common_pb2.Chunk
    def __init__(self, header: _Optional[_Union[ResultHeader, _Mapping]] = ..., chunk: _Optional[_Union[_common_pb2.Chunk, _Mapping]] = ...) -> None: ...

class StageRequest(_message.Message):
    __slots__ = ("round_id", "client_id")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    client_id: str
    def __init__(self, round_id: _Optional[str] = ..., client_id: _Optional[str] = ...) -> None: ...

class StageAck(_message.Message):
    __slots__ = ("stage",)
    STAGE_FIELD_NUMBER: _ClassVar[int]
    stage: str
    def __init__(self, stage: _Optional[str] = ...) -> None: ...

class KeyAdvertisement(_message.Message):
    __slots__ = ("round_id", "client_id", "cipher_public_key", "mask_public_key", "signature")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    MASK_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    client_id: str
    cipher_public_key: bytes
    mask_public_key: bytes
    signature: bytes
    def __init__(self, round_id: _Optional[str] = ..., client_id: _Optional[str] = ..., cipher_public_key: _Optional[bytes] = ..., mask_public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Participants(_message.Message):
    __slots__ = ("clients", "degree", "threshold")
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    DEGREE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    clients: _containers.RepeatedCompositeFieldContainer[KeyAdvertisement]
    degree: int
    threshold: int
    def __init__(self, clients: _Optional[_Iterable[_Union[KeyAdvertisement, _Mapping]]] = ..., degree: _Optional[int] = ..., threshold: _Optional[int] = ...) -> None: ...

class EncryptedShare(_message.Message):
    __slots__ = ("sender", "recipient", "ciphertext")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    sender: str
    recipient: str
    ciphertext: bytes
    def __init__(self, sender: _Optional[str] = ..., recipient: _Optional[str] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class ShareKeysRequest(_message.Message):
    __slots__ = ("round_id", "client_id", "shares", "signature")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    client_id: str
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    signature: bytes
    def __init__(self, round_id: _Optional[str] = ..., client_id: _Optional[str] = ..., shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class IncomingShares(_message.Message):
    __slots__ = ("shared", "shares")
    SHARED_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    shared: _containers.RepeatedScalarFieldContainer[str]
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    def __init__(self, shared: _Optional[_Iterable[str]] = ..., shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ...) -> None: ...

class UnmaskRequest(_message.Message):
    __slots__ = ("survivors", "dropped")
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    survivors: _containers.RepeatedScalarFieldContainer[str]
    dropped: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, survivors: _Optional[_Iterable[str]] = ..., dropped: _Optional[_Iterable[str]] = ...) -> None: ...

class RevealedShare(_message.Message):
    __slots__ = ("owner", "share")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    share: bytes
    def __init__(self, owner: _Optional[str] = ..., share: _Optional[bytes] = ...) -> None: ...

class UnmaskResponse(_message.Message):
    __slots__ = ("round_id", "client_id", "seed_shares", "key_shares", "signature")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_SHARES_FIELD_NUMBER: _ClassVar[int]
    KEY_SHARES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    client_id: str
    seed_shares: _containers.RepeatedCompositeFieldContainer[RevealedShare]
    key_shares: _containers.RepeatedCompositeFieldContainer[RevealedShare]
    signature: bytes
    def __init__(self, round_id: _Optional[str] = ..., client_id: _Optional[str] = ..., seed_shares: _Optional[_Iterable[_Union[RevealedShare, _Mapping]]] = ..., key_shares: _Optional[_Iterable[_Union[RevealedShare, _Mapping]]] = ..., signature: _Optional[bytes] = ...) -> None: ...
