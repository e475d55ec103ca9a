"""One HE round (bfv or ckks) in this process, on the schemes' own halves and the key-holder's
release core, with no transport: what `bench/bfv_round.py` and `bench/ckks_round.py` time.

The client halves come from the scheme registry (`schemes.client_scheme`) and protect on the
process-wide encryption pool, the server half (`schemes.server_scheme`) validates, adds in place
and reveals through `KeyHolderCore` itself (the core is a `KeyHolderLink`), whose keystore lives
in a temporary file: every step a deployment runs, minus gRPC, TLS and the round store."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..federation import Federation, PartyKey, SecurityParameters
from ..he.codec import decrypt_chunks
from ..he.epochs import EpochSettings
from ..he.keystore import KeyStore, RotationPolicy
from ..he.masks import open_seed
from ..he.pool import DecryptionPool, Decryptor
from ..he.release import KeyHolderCore
from ..identity import Identity
from ..rounds.chunks import chunk_length
from ..rounds.scheme import Protected, RoundConfig, ServerScheme, signed_receipt
from ..schemes import ClientPins, ServerOptions, client_scheme, server_scheme, session_of
from ..v1 import aggregator_pb2, common_pb2
from .harness import median_seconds

SPEC_HASH = bytes(32)
ROUND = "r1"


class _NoAudit:
    """Benchmarks keep no audit log."""

    def audit(self, round_id: str | None, decision: str, detail: str, requester: str = "") -> None:
        return None


@dataclass
class HeRoundSetup:
    scheme: str
    identities: list[Identity]
    federation: Federation
    keystore: KeyStore
    core: KeyHolderCore
    server: ServerScheme
    session: aggregator_pb2.Session

    @classmethod
    def create(cls, workdir: Path, scheme: str, clients: int, value_bound: float, max_weight: float,
               precision_bits: int | None = None, preset: str | None = None) -> HeRoundSetup:
        identities = [Identity.generate(f"site-{i}") for i in range(clients)]
        keyholder = Identity.generate("keyholder")
        security = SecurityParameters(value_bound=value_bound, max_weight=max_weight, precision_bits=precision_bits)
        federation = dataclasses.replace(Federation.in_process(identities, security),
                                         keyholder=PartyKey(keyholder.client_id, keyholder.public_bytes))
        settings = EpochSettings.for_federation(federation, scheme, preset, precision_bits)
        keystore = KeyStore.create(workdir / f"{scheme}-{os.getpid()}-{time.monotonic_ns()}.keystore",
                                   "benchmark passphrase", keyholder, settings, RotationPolicy())
        core = KeyHolderCore(keystore, federation.roster, clients, _NoAudit())
        server = server_scheme(scheme, ServerOptions(federation, clients, keyholder=core))
        session = session_of(server, federation.roster)
        return cls(scheme, identities, federation, keystore, core, server, session)

    def close(self) -> None:
        self.keystore.close()


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def measure(setup: HeRoundSetup, vectors: list[np.ndarray], weights: list[float], repeat: int) -> dict[str, Any]:
    """Times each component of one round of `setup` over these clients' updates, and the error
    of the released average against the exact weighted average."""
    length = vectors[0].size + 1
    server_round = setup.server.new_round(ROUND, RoundConfig(len(vectors), len(vectors)), 0.0, time.time)
    stage = server_round.stage_for(setup.identities[0].client_id, False)  # registers the round: its key epoch
    clients = [client_scheme(setup.session, identity, ClientPins(setup.federation)) for identity in setup.identities]

    def protect(i: int) -> Protected:
        return clients[i].start(ROUND, vectors[i], weights[i]).protect(stage)

    protect(0)  # starts the encryption workers and loads the context in them
    protect_seconds, _ = median_seconds(lambda: protect(0), repeat)
    protected = [protect(i) for i in range(len(vectors))]
    receipts = [signed_receipt(identity, ROUND, setup.scheme, SPEC_HASH, p)
                for identity, p in zip(setup.identities, protected)]

    accumulator = setup.server.new_accumulator()

    def add_all() -> None:
        for receipt, update in zip(receipts, protected):
            server_round.admit(receipt)
            accumulator.add([setup.server.parse_chunk(i, chunk, chunk_length(i, length, setup.server.chunk_values))
                             for i, chunk in enumerate(update.chunks)])

    _, add_seconds = timed(add_all)
    decrypt_seconds, pooled_seconds, unmask_seconds = _keyholder_components(setup, accumulator.snapshot(), receipts,
                                                                            length, repeat)
    released, release_seconds = timed(lambda: server_round.reveal(accumulator, length, SPEC_HASH, receipts))

    clipped = [np.clip(v.astype(np.float64), -setup.federation.security.value_bound,
                       setup.federation.security.value_bound) for v in vectors]
    exact = sum(v * w for v, w in zip(clipped, weights)) / sum(weights)
    upload = sum(map(len, protected[0].chunks))
    return {
        "ciphertexts_per_client": len(protected[0].chunks),
        "client_protect_seconds": protect_seconds,
        "bytes_per_client": upload,
        "bytes_ratio_to_float32": upload / (4 * length),
        "aggregator_seconds_per_submission": add_seconds / len(vectors),
        "keyholder_decrypt_seconds": decrypt_seconds,
        "keyholder_decrypt_seconds_on_2_workers": pooled_seconds,
        "keyholder_unmask_check_seconds": unmask_seconds,
        "keyholder_decrypt_unmask_seconds": decrypt_seconds + unmask_seconds,
        "keyholder_whole_release_seconds": release_seconds,
        "max_average_error": float(np.abs(released[:-1] / released[-1] - exact).max()),
        "average_error_bound": error_bound(setup, len(vectors), length, sum(weights)),
    }


def _keyholder_components(setup: HeRoundSetup, sums: list[bytes], receipts: list[common_pb2.Receipt],
                          length: int, repeat: int) -> tuple[float, float, float]:
    """The key-holder's decryption (in its process, and on two decryption workers), and its
    unmasking and range checks, timed apart (on copies: the release that follows decrypts the
    round for real)."""
    epoch = setup.keystore.epoch_of_round(ROUND)
    codec = epoch.codec(setup.keystore.policy.rotate_every)
    parsed = [codec.parse_chunk(epoch.secret.context, total) for total in sums]
    seeds = [open_seed(r.sealed_seed, epoch.sealing_key, ROUND, r.client_id, epoch.number) for r in receipts]
    decrypted, decrypt_seconds = timed(lambda: decrypt_chunks(epoch.secret.context, parsed))
    pool = DecryptionPool(workers=2)
    try:
        on_workers = Decryptor(pool)
        if not np.array_equal(on_workers.decrypt(epoch.secret, setup.scheme, sums, parsed), decrypted):  # workers up
            raise RuntimeError("the decryption workers disagree with the key-holder's own decryption")
        pooled_seconds, _ = median_seconds(lambda: on_workers.decrypt(epoch.secret, setup.scheme, sums, parsed), repeat)
    finally:
        pool.shutdown()
    _, unmask_seconds = timed(lambda: codec.reveal(decrypted, seeds, length))
    return decrypt_seconds, pooled_seconds, unmask_seconds


def error_bound(setup: HeRoundSetup, clients: int, length: int, total_weight: float) -> float:
    """The stated bound on any averaged value: bfv, one quantization step per client in the
    weighted sum and in the weight sum (stochastic rounding); ckks, six standard deviations of
    the flooding plus the decryption tolerance. Relative to (1 + value_bound) / total weight."""
    codec = EpochSettings.of(setup.session.he_epoch).codec(setup.keystore.policy.rotate_every)
    per_sum = (clients / codec.plan.scale if codec.scheme == "bfv"
               else 6 * codec.flooding_sigma(clients, length) + codec.tolerance(clients))
    return per_sum * (1 + setup.federation.security.value_bound) / total_weight


def he_components(workdir: Path, scheme: str, params: int, clients: int, value_bound: float, max_weight: float,
                  repeat: int, precision_bits: int | None = None) -> dict[str, Any]:
    """`measure` on a fresh setup, with normal updates (σ = value_bound / 3) and weights 1, 2, …
    up to max_weight; the packing or masking parameters the round used come along."""
    setup = HeRoundSetup.create(workdir, scheme, clients, value_bound, max_weight, precision_bits)
    try:
        rng = np.random.default_rng(0)
        vectors = [rng.normal(scale=value_bound / 3, size=params).astype(np.float32) for _ in range(clients)]
        weights = [float(i % int(max_weight)) + 1.0 for i in range(clients)]
        result = measure(setup, vectors, weights, repeat)
        codec = EpochSettings.of(setup.session.he_epoch).codec(setup.keystore.policy.rotate_every)
        if codec.scheme == "bfv":
            result.update(values_per_slot=codec.plan.values_per_slot, client_bits=codec.plan.client_bits,
                          frac_bits=codec.plan.frac_bits)
        else:
            result.update(mask_bound=codec.mask_bound, flooding_sigma=codec.flooding_sigma(clients, params + 1))
        result["preset"] = setup.session.he_epoch.preset
        return result
    finally:
        setup.close()
