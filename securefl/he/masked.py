"""What the bfv and ckks codecs share: the client's protection of an update under a per-round
mask, and the key-holder's reveal of a decrypted sum (`bfv.py`, `ckks.py` say why a sum that
is not honest fails it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import tenseal as ts

from .codec import HEVector, parse_chunk
from .pool import EncryptionPool, encrypt_vector
from .presets import Preset


class MaskedCodec(Protocol):
    scheme: str
    slots: int

    def chunk_count(self, vector_length: int) -> int: ...

    def protect(self, context: ts.Context, vector: np.ndarray, weight: float, seed: bytes,
                pool: EncryptionPool | None = None) -> list[bytes]: ...

    def parse_chunk(self, context: ts.Context, data: bytes) -> HEVector: ...

    def reveal(self, decrypted: np.ndarray, seeds: list[bytes], vector_length: int) -> np.ndarray:
        """Unmask the receipted clients' seeds, range-check (ReleaseCheckFailed), and return the
        weighted sum, weight sum last."""


class WholeCiphertexts:
    """Masked plaintexts fill whole ciphertexts of the preset: `protect` encrypts them (on the
    pool when large), `parse_chunk` accepts only full, fresh ciphertexts."""

    preset: Preset
    encrypt: Callable[[ts.Context, np.ndarray, int], list[bytes]]

    @property
    def slots(self) -> int:
        return self.preset.slots

    def masked_plaintext(self, vector: np.ndarray, weight: float, seed: bytes) -> np.ndarray:
        raise NotImplementedError

    def protect(self, context: ts.Context, vector: np.ndarray, weight: float, seed: bytes,
                pool: EncryptionPool | None = None) -> list[bytes]:
        return encrypt_vector(context, self.masked_plaintext(vector, weight, seed), self.slots, type(self).encrypt, pool)

    def parse_chunk(self, context: ts.Context, data: bytes) -> HEVector:
        return parse_chunk(context, self.preset, data, self.slots)
