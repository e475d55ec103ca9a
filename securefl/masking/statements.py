"""What SecAgg+ clients sign and commit to: canonical, length-prefixed byte strings, each with
a label of its own, so a signature or commitment made for one purpose, round or participant
view never verifies for another.

* The **participant view** digest binds the round id and every participant's id and round
  keys. Shares, mask sets and survivor confirmations are bound to it: a client that was shown
  a different participant list (a different graph) is in a different instance of the protocol,
  and nothing it signs or decrypts carries over.
* **Share commitments** are SHA-256 over (label, round, view, dealer, holder, share). The dealer
  signs them (in its share message) and binds them to the encrypted share (AES-GCM associated
  data), so the holder knows the aggregator holds the same commitment it checked, and the
  aggregator can check every revealed share: a holder that reveals a different share is
  caught and named. Shares are uniformly random 521-bit field elements; their hashes reveal
  nothing useful.
* The **self-seed commitment** (SHA-256 of the 32-byte random seed) lets the aggregator check a
  reconstructed seed, so a dealer whose shares do not reconstruct its seed is named instead of
  silently corrupting the sum. Mask keys need no extra commitment: the reconstructed private
  key must match the advertised public key."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from ..identity import length_prefixed
from ..v1 import secagg_pb2

_PREFIX = b"securefl/secagg/v2/"
SEED_SHARE, KEY_SHARE = b"seed-share", b"key-share"


def _tagged(label: bytes, round_id: str, view: bytes, *fields: bytes) -> bytes:
    return length_prefixed(_PREFIX + label, round_id.encode(), view, *fields)


def _ids(ids: Iterable[str]) -> list[bytes]:
    return [cid.encode() for cid in sorted(ids)]


def view_digest(round_id: str, adverts: Iterable[secagg_pb2.KeyAdvertisement]) -> bytes:
    """SHA-256 over the round id and each participant's (id, cipher key, mask key), by id."""
    fields = []
    for advert in sorted(adverts, key=lambda a: a.client_id):
        fields += [advert.client_id.encode(), advert.cipher_public_key, advert.mask_public_key]
    return hashlib.sha256(length_prefixed(_PREFIX + b"view", round_id.encode(), *fields)).digest()


def share_commitment(kind: bytes, round_id: str, view: bytes, dealer: str, holder: str, share: bytes) -> bytes:
    return hashlib.sha256(_tagged(kind, round_id, view, dealer.encode(), holder.encode(), share)).digest()


def self_seed_commitment(round_id: str, view: bytes, client_id: str, seed: bytes) -> bytes:
    return hashlib.sha256(_tagged(b"self-seed", round_id, view, client_id.encode(), seed)).digest()


def share_associated_data(round_id: str, view: bytes, share: secagg_pb2.EncryptedShare) -> bytes:
    """What AES-GCM authenticates beside a share: who sent it to whom, and its commitments."""
    return _tagged(b"share", round_id, view, share.sender.encode(), share.recipient.encode(),
                   share.seed_commitment, share.key_commitment)


def mask_set_message(round_id: str, view: bytes, client_id: str, masked_with: Iterable[str]) -> bytes:
    """What a client signs to state which neighbours' pairwise masks its input carries."""
    return _tagged(b"mask-set", round_id, view, client_id.encode(), *_ids(masked_with))


def survivors_message(round_id: str, view: bytes, client_id: str, survivors: Iterable[str]) -> bytes:
    """What a client signs in the consistency stage: the survivor set it was shown."""
    return _tagged(b"survivors", round_id, view, client_id.encode(), *_ids(survivors))


def unsigned(message) -> bytes:
    """Deterministic bytes of a stage message without its signature: what the client signs."""
    copy = type(message)()
    copy.CopyFrom(message)
    copy.signature = b""
    return b"securefl/secagg/v1/" + type(message).__name__.encode() + copy.SerializeToString(deterministic=True)


def sign_stage_message(message, sign) -> None:
    message.signature = sign(unsigned(message))
