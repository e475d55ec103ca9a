"""What the bfv and ckks codecs share: the client's protection of an update under a per-round
mask, and the key-holder's reveal of a decrypted sum (`bfv.py`, `ckks.py` say why a sum that
is not honest fails it)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import tenseal as ts

from .codec import HEVector, parse_chunk
from .pool import Encryptor
from .presets import Preset


class MaskedCodec(Protocol):
    scheme: str
    slots: int
    chunk_values: int  # update values per ciphertext
    result_dtype: np.dtype  # what the published average needs to carry the scheme's precision

    def chunk_count(self, vector_length: int) -> int: ...

    def check(self, vector: np.ndarray, weight: float) -> None:
        """Raise InvalidInput if `(vector, weight)` cannot be protected (before any round)."""

    def protect(self, encryptor: Encryptor, vector: np.ndarray, weight: float, seed: bytes) -> list[bytes]: ...

    def parse_chunk(self, context: ts.Context, data: bytes) -> HEVector: ...

    def reveal(self, decrypted: np.ndarray, seeds: list[bytes], vector_length: int,
               randomness: bytes = b"") -> np.ndarray:
        """Unmask the receipted clients' seeds, range-check (ReleaseCheckFailed), and return the
        weighted sum, weight sum last; any noise the release adds is expanded from `randomness`."""


class WholeCiphertexts:
    """Masked plaintexts fill whole ciphertexts of the preset: `protect` encrypts them (on the
    pool when large), `parse_chunk` accepts only full, fresh ciphertexts."""

    scheme: str
    preset: Preset

    @property
    def slots(self) -> int:
        return self.preset.slots

    def masked_plaintext(self, vector: np.ndarray, weight: float, seed: bytes) -> np.ndarray:
        raise NotImplementedError

    def protect(self, encryptor: Encryptor, vector: np.ndarray, weight: float, seed: bytes) -> list[bytes]:
        return encryptor.encrypt(self.masked_plaintext(vector, weight, seed), self.slots, self.scheme)

    def parse_chunk(self, context: ts.Context, data: bytes) -> HEVector:
        return parse_chunk(context, self.preset, data, self.slots)
