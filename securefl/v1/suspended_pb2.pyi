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
    __slots__ = ("round_id", "cipher_private_key", "mask_private_key", "self_seed", "view", "shared", "has_mask_set", "masked_with", "held", "submitted", "has_confirmed", "confirmed", "share_message", "mask_set", "answered_request", "answered_response")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHER_PRIVATE_KEY_FIELD_NUMBER: _ClassVar[int]
    MASK_PRIVATE_KEY_FIELD_NUMBER: _ClassVar[int]
    SELF_SEED_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    HAS_MASK_SET_FIELD_NUMBER: _ClassVar[int]
    MASKED_WITH_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    HAS_CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    SHARE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MASK_SET_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_REQUEST_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    cipher_private_key: bytes
    mask_private_key: bytes
    self_seed: bytes
    view: _secagg_pb2.Participants
    shared: _containers.RepeatedScalarFieldContainer[str]
    has_mask_set: bool
    masked_with: _containers.RepeatedScalarFieldContainer[str]
    held: _containers.RepeatedCompositeFieldContainer[HeldShares]
    submitted: bool
    has_confirmed: bool
    confirmed: _containers.RepeatedScalarFieldContainer[str]
    share_message: _secagg_pb2.ShareKeysRequest
    mask_set: _secagg_pb2.MaskSet
    answered_request: bytes
    answered_response: _secagg_pb2.UnmaskResponse
    def __init__(self, round_id: _Optional[str] = ..., cipher_private_key: _Optional[bytes] = ..., mask_private_key: _Optional[bytes] = ..., self_seed: _Optional[bytes] = ..., view: _Optional[_Union[_secagg_pb2.Participants, _Mapping]] = ..., shared: _Optional[_Iterable[str]] = ..., has_mask_set: bool = ..., masked_with: _Optional[_Iterable[str]] = ..., held: _Optional[_Iterable[_Union[HeldShares, _Mapping]]] = ..., submitted: bool = ..., has_confirmed: bool = ..., confirmed: _Optional[_Iterable[str]] = ..., share_message: _Optional[_Union[_secagg_pb2.ShareKeysRequest, _Mapping]] = ..., mask_set: _Optional[_Union[_secagg_pb2.MaskSet, _Mapping]] = ..., answered_request: _Optional[bytes] = ..., answered_response: _Optional[_Union[_secagg_pb2.UnmaskResponse, _Mapping]] = ...) -> None: ...
