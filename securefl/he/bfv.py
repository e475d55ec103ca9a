"""The bfv scheme's codec: packed fixed-point updates under a per-round mask, BFV-encrypted;
and the key-holder's unmasking and range checks of a decrypted sum.

Client: p = pack(quantize(w·x, w)) (`packing.py`), r = PRG(seed) uniform on Z_t^S
(`masks.uniform_mod`), encrypt p + r mod t. The seed is fresh per round and sealed to the
key-holder inside the client's signed receipt.

Key-holder: D = Dec(aggregate); U = D - Σ_{i in R} PRG(seed_i) mod t over exactly the receipted
clients R; unpack U and range-check every field (`PackingPlan.unpack_sum`).

Why any ciphertext other than the honest sum of R's ciphertexts releases nothing. Let H be
the honest clients in R (at least one, as long as min_clients exceeds the number of clients
that may collude with the aggregator, which holds no receipt of its own). Each r_h is uniform on
Z_t^S and independent of everything the adversary sees: the seed is sealed (X25519 + HKDF +
AES-GCM) to the key-holder, and Enc(p_h + r_h) is IND-CPA under RLWE. BFV is linear modulo t,
so whatever the adversary submits decrypts to D = Σ_h a_h·(p_h + r_h) + E, where a_h in Z_t
(per slot) says how it used ct_h and E is whatever the rest contributes; E cannot depend on
r_h. Then U = Σ_h (a_h - 1)·r_h + Σ_h a_h·p_h + E - Σ_{i in R, not in H} r_i. In every slot where
some a_h != 1 (a single client's ciphertext with several receipts: a_h = 0 for the others; a
subset: 0 for the missing ones; a scaled sum: 2; a slot selection: 0 in some slots; (0, K)
alone: all 0), U is uniform on Z_t, since t is prime and a_h - 1 is invertible, and independent
of every update and of the key: pass or fail, such a slot carries nothing about them. A uniform
slot passes the checks with probability < 0.51 (2^39/t), so a change in n slots is refused
except with probability < 0.51^n (< 2^-7900 for one whole ciphertext), and a refusal is the
same whatever the key, so it tells the adversary nothing about s.

If every a_h = 1 (the honest sum plus something: a client's c1 + K, or sum + (0, K)), the
masks cancel and U = Σ p + E where E = round(t/q · (K·s + noise)) is the only
key-dependent term. Either E = 0 (the release is the honest sum, and the adversary learns the
one bit that its perturbation rounded away) or E is a nonzero polynomial fixed by the unknown
key, whose batching (an NTT modulo t) spreads it over all 8,192 slots at full size: steering it
into the narrow accepted box in every slot would require knowing s. Any refusal retires the key
epoch, and an epoch serves at most `rotate_every` rounds, so an adversary learns at most one
accept/refuse bit per decryption and meets at most one refusal per key — far from the
thousands of decryption-failure queries reaction attacks on RLWE need.

Not covered, as in any aggregation scheme: the release is the sum over R, so if every client
of R but one colludes, the sum reveals that one (hence min_clients above the number of
colluders); and an adversary can shift the released sum by values it chooses (adding an
encryption of δ releases Σp + δ): the range checks bound δ, integrity beyond that is not
claimed."""

from __future__ import annotations

import numpy as np

from .codec import encrypt_bfv_chunks
from .masked import WholeCiphertexts
from .masks import uniform_mod
from .packing import PackingPlan
from .presets import BfvPreset


class BfvCodec(WholeCiphertexts):
    scheme = "bfv"
    encrypt = encrypt_bfv_chunks

    def __init__(self, preset: BfvPreset, plan: PackingPlan) -> None:
        self.preset = preset
        self.plan = plan

    def chunk_count(self, vector_length: int) -> int:
        return self.plan.chunk_count(vector_length)

    def masked_plaintext(self, vector: np.ndarray, weight: float, seed: bytes) -> np.ndarray:
        """pack(w·x, w) + PRG(seed) mod t, for whole ciphertexts."""
        packed = self.plan.encode(vector, weight)
        masked = packed + uniform_mod(seed, packed.size, self.preset.plain_modulus)  # < 2^39 + t: no overflow
        return np.where(masked >= self.preset.plain_modulus, masked - np.uint64(self.preset.plain_modulus), masked)

    def reveal(self, decrypted: np.ndarray, seeds: list[bytes], vector_length: int) -> np.ndarray:
        """Remove the receipted clients' masks and range-check; ReleaseCheckFailed if not honest."""
        t = self.preset.plain_modulus
        masks = np.zeros(decrypted.size, dtype=np.uint64)
        for seed in seeds:  # each < 2^40: the sum cannot overflow before 2^24 clients
            masks += uniform_mod(seed, decrypted.size, t)
        masks %= np.uint64(t)
        packed = np.mod(decrypted - masks.astype(np.int64), t).astype(np.uint64)  # decrypted lies in (-t/2, t/2]
        return self.plan.unpack_sum(packed, len(seeds), vector_length)
