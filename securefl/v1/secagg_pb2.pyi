from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SecAggConfig(_message.Message):
    __slots__ = ("value_bound", "max_weight", "bits", "frac_bits", "dropout_fraction", "corrupt_fraction", "min_participants")
    VALUE_BOUND_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    FRAC_BITS_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CORRUPT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MIN_PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    value_bound: float
    max_weight: float
    bits: int
    frac_bits: int
    dropout_fraction: float
    corrupt_fraction: float
    min_participants: int
    def __init__(self, value_bound: _Optional[float] = ..., max_weight: _Optional[float] = ..., bits: _Optional[int] = ..., frac_bits: _Optional[int] = ..., dropout_fraction: _Optional[float] = ..., corrupt_fraction: _Optional[float] = ..., min_participants: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("sender", "recipient", "ciphertext", "seed_commitment", "key_commitment")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    SEED_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    KEY_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    sender: str
    recipient: str
    ciphertext: bytes
    seed_commitment: bytes
    key_commitment: bytes
    def __init__(self, sender: _Optional[str] = ..., recipient: _Optional[str] = ..., ciphertext: _Optional[bytes] = ..., seed_commitment: _Optional[bytes] = ..., key_commitment: _Optional[bytes] = ...) -> None: ...

class ShareKeysRequest(_message.Message):
    __slots__ = ("round_id", "client_id", "shares", "signature", "self_seed_commitment")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SELF_SEED_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    client_id: str
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    signature: bytes
    self_seed_commitment: bytes
    def __init__(self, round_id: _Optional[str] = ..., client_id: _Optional[str] = ..., shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ..., signature: _Optional[bytes] = ..., self_seed_commitment: _Optional[bytes] = ...) -> None: ...

class IncomingShares(_message.Message):
    __slots__ = ("shared", "shares")
    SHARED_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    shared: _containers.RepeatedScalarFieldContainer[str]
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    def __init__(self, shared: _Optional[_Iterable[str]] = ..., shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ...) -> None: ...

class MaskSet(_message.Message):
    __slots__ = ("round_id", "client_id", "masked_with", "signature")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    MASKED_WITH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    client_id: str
    masked_with: _containers.RepeatedScalarFieldContainer[str]
    signature: bytes
    def __init__(self, round_id: _Optional[str] = ..., client_id: _Optional[str] = ..., masked_with: _Optional[_Iterable[str]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SurvivorSet(_message.Message):
    __slots__ = ("survivors",)
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    survivors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, survivors: _Optional[_Iterable[str]] = ...) -> None: ...

class SurvivorConfirmation(_message.Message):
    __slots__ = ("round_id", "client_id", "signature")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    client_id: str
    signature: bytes
    def __init__(self, round_id: _Optional[str] = ..., client_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class UnmaskRequest(_message.Message):
    __slots__ = ("survivors", "confirmations", "mask_sets")
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATIONS_FIELD_NUMBER: _ClassVar[int]
    MASK_SETS_FIELD_NUMBER: _ClassVar[int]
    survivors: _containers.RepeatedScalarFieldContainer[str]
    confirmations: _containers.RepeatedCompositeFieldContainer[SurvivorConfirmation]
    mask_sets: _containers.RepeatedCompositeFieldContainer[MaskSet]
    def __init__(self, survivors: _Optional[_Iterable[str]] = ..., confirmations: _Optional[_Iterable[_Union[SurvivorConfirmation, _Mapping]]] = ..., mask_sets: _Optional[_Iterable[_Union[MaskSet, _Mapping]]] = ...) -> None: ...

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
