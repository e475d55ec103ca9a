from securefl.v1 import common_pb2 as _common_pb2
from securefl.v1 import secagg_pb2 as _secagg_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Session(_message.Message):
    __slots__ = ("scheme", "chunk_values", "max_abs_sum", "max_clients", "secagg", "he_epoch", "chunk_run_bytes", "receipt_digest")
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_VALUES_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_SUM_FIELD_NUMBER: _ClassVar[int]
    MAX_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    HE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CHUNK_RUN_BYTES_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    scheme: str
    chunk_values: int
    max_abs_sum: float
    max_clients: int
    secagg: _secagg_pb2.SecAggConfig
    he_epoch: _common_pb2.PublicEpoch
    chunk_run_bytes: int
    receipt_digest: str
    def __init__(self, scheme: _Optional[str] = ..., chunk_values: _Optional[int] = ..., max_abs_sum: _Optional[float] = ..., max_clients: _Optional[int] = ..., secagg: _Optional[_Union[_secagg_pb2.SecAggConfig, _Mapping]] = ..., he_epoch: _Optional[_Union[_common_pb2.PublicEpoch, _Mapping]] = ..., chunk_run_bytes: _Optional[int] = ..., receipt_digest: _Optional[str] = ...) -> None: ...

class RoundConfig(_message.Message):
    __slots__ = ("min_clients", "expected_clients", "timeout_seconds", "vector_length")
    MIN_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_LENGTH_FIELD_NUMBER: _ClassVar[int]
    min_clients: int
    expected_clients: int
    timeout_seconds: float
    vector_length: int
    def __init__(self, min_clients: _Optional[int] = ..., expected_clients: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., vector_length: _Optional[int] = ...) -> None: ...

class OpenRoundRequest(_message.Message):
    __slots__ = ("round_id", "config")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    config: RoundConfig
    def __init__(self, round_id: _Optional[str] = ..., config: _Optional[_Union[RoundConfig, _Mapping]] = ...) -> None: ...

class JoinRoundRequest(_message.Message):
    __slots__ = ("client_id", "round_id")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    round_id: str
    def __init__(self, client_id: _Optional[str] = ..., round_id: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("header", "chunk", "chunks")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    header: SubmissionHeader
    chunk: _common_pb2.Chunk
    chunks: _common_pb2.ChunkRun
    def __init__(self, header: _Optional[_Union[SubmissionHeader, _Mapping]] = ..., chunk: _Optional[_Union[_common_pb2.Chunk, _Mapping]] = ..., chunks: _Optional[_Union[_common_pb2.ChunkRun, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("round_id", "vector_length", "total_weight", "contributors", "chunk_count", "dtype", "contributor_ids")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTOR_IDS_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    vector_length: int
    total_weight: float
    contributors: int
    chunk_count: int
    dtype: str
    contributor_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, round_id: _Optional[str] = ..., vector_length: _Optional[int] = ..., total_weight: _Optional[float] = ..., contributors: _Optional[int] = ..., chunk_count: _Optional[int] = ..., dtype: _Optional[str] = ..., contributor_ids: _Optional[_Iterable[str]] = ...) -> None: ...

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

class StageMessage(_message.Message):
    __slots__ = ("round_id", "client_id", "stage", "body", "await_next")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    AWAIT_NEXT_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    client_id: str
    stage: str
    body: bytes
    await_next: bool
    def __init__(self, round_id: _Optional[str] = ..., client_id: _Optional[str] = ..., stage: _Optional[str] = ..., body: _Optional[bytes] = ..., await_next: bool = ...) -> None: ...

class StageAck(_message.Message):
    __slots__ = ("stage", "next")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    stage: str
    next: StageMessage
    def __init__(self, stage: _Optional[str] = ..., next: _Optional[_Union[StageMessage, _Mapping]] = ...) -> None: ...
