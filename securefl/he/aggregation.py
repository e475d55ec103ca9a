"""The aggregator's side of CKKS: validate ciphertext chunks, add them into the running sum in
place, and have the key-holder decrypt the final sum. The aggregator holds only the public
context; `load_public_context` refuses a context with a secret key."""

from __future__ import annotations

import tenseal as ts
import numpy as np

from ..schemes import CKKS, SingleStageScheme
from ..v1 import common_pb2
from .codec import parse_chunk
from .keys import load_public_context
from .presets import get_preset


class CkksAccumulator:
    def __init__(self) -> None:
        self.sums: list[ts.CKKSVector] | None = None

    def add(self, chunks: list[ts.CKKSVector]) -> None:
        if self.sums is None:
            self.sums = chunks  # the first submission becomes the sum: no copy
            return
        for total, chunk in zip(self.sums, chunks):
            total.add_(chunk)  # in place: a copy costs ~300x an add


class CkksScheme(SingleStageScheme):
    name = CKKS

    def __init__(self, public_context: bytes, preset_name: str, keyholder) -> None:
        self.public_context = public_context
        self.context = load_public_context(public_context)
        self.preset = get_preset(preset_name)
        self.chunk_values = self.preset.slots
        self.max_abs_sum = self.preset.max_abs_sum
        self._keyholder = keyholder

    def new_accumulator(self) -> CkksAccumulator:
        return CkksAccumulator()

    def parse_chunk(self, index: int, data: bytes, expected_values: int) -> ts.CKKSVector:
        return parse_chunk(self.context, self.preset, data, expected_values)

    def reveal(self, accumulator: CkksAccumulator, round_id: str, vector_length: int, spec_hash: bytes,
               receipts: list[common_pb2.Receipt]) -> np.ndarray:
        assert accumulator.sums is not None
        return self._keyholder.decrypt(
            round_id, vector_length, spec_hash, receipts, [total.serialize() for total in accumulator.sums]
        )
