from securefl.v1 import secagg_pb2 as _secagg_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HeldShares(_message.Message):
    __slots__ = ("owner", "seed_share", "key_share")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SEED_SHARE_FIELD_NUMBER: _ClassVar[int]
    KEY_SHARE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    seed_share: bytes
    key_share: bytes
    def __init__(self, owner: _Optional[str] = ..., seed_share: _Optional[bytes] = ..., key_share: _Optional[bytes] = ...) -> None: ...

class SecAggClientState(_message.Message):
    __slots__ = ("round_id", "cipher_private_key", "mask_private_key", "self_seed", "adverts", "shared", "held", "encoded_input", "answered")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHER_PRIVATE_KEY_FIELD_NUMBER: _ClassVar[int]
    MASK_PRIVATE_KEY_FIELD_NUMBER: _ClassVar[int]
    SELF_SEED_FIELD_NUMBER: _ClassVar[int]
    ADVERTS_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    ENCODED_INPUT_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    cipher_private_key: bytes
    mask_private_key: bytes
    self_seed: bytes
    adverts: _containers.RepeatedCompositeFieldContainer[_secagg_pb2.KeyAdvertisement]
    shared: _containers.RepeatedScalarFieldContainer[str]
    held: _containers.RepeatedCompositeFieldContainer[HeldShares]
    encoded_input: bytes
    answered: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, round_id: _Optional[str] = ..., cipher_private_key: _Optional[bytes] = ..., mask_private_key: _Optional[bytes] = ..., self_seed: _Optional[bytes] = ..., adverts: _Optional[_Iterable[_Union[_secagg_pb2.KeyAdvertisement, _Mapping]]] = ..., shared: _Optional[_Iterable[str]] = ..., held: _Optional[_Iterable[_Union[HeldShares, _Mapping]]] = ..., encoded_input: _Optional[bytes] = ..., answered: _Optional[_Iterable[str]] = ...) -> None: ...
