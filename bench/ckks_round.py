"""CKKS vs plaintext aggregation for one round: 1,000,000 parameters, 10 clients.

Two parts, both in the same run so ratios compare like with like:

* components, each timed alone on this machine: client protection (CKKS encryption on the
  process pool vs float32 serialisation), bytes per client, aggregator work per submission
  (validate + add in place), key-holder decryption of the sum;
* the whole round end to end through LocalFederation (real key-holder and aggregator processes,
  real gRPC), all clients submitting concurrently.

Run: python bench/ckks_round.py [--params N] [--clients N] [--out PATH] [--markdown PATH]"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from securefl.benchmark.harness import benchmark_parser, envelope, median_seconds, publish
from securefl.benchmark.numbers import byte_size, count, duration, scientific
from securefl.benchmark.tables import Table, compared
from securefl.he.aggregation import CkksServer
from securefl.he.codec import decrypt_chunks
from securefl.he.keys import SecretContext
from securefl.he.pool import EncryptionPool
from securefl.he.presets import DEFAULT_PRESET, get_preset
from securefl.rounds.chunks import chunk_length
from securefl.rounds.plain import PlainServer, plain_chunks
from securefl.simulation import LocalFederation
from securefl.v1 import keyholder_pb2

HERE = Path(__file__).resolve().parent


def aggregator_seconds_per_submission(scheme, submissions: list[list[bytes]], length: int) -> tuple[float, object]:
    """Validate every chunk of each submission and add it into the running sum in place."""
    accumulator = scheme.new_accumulator()
    started = time.perf_counter()
    for chunks in submissions:
        accumulator.add([scheme.parse_chunk(i, c, chunk_length(i, length, scheme.chunk_values)) for i, c in enumerate(chunks)])
    return (time.perf_counter() - started) / len(submissions), accumulator


class PublicContextOnly:
    """The key-holder's public context, handed over without a network: the aggregator's
    cryptographic work is measured alone."""

    def __init__(self, secret: SecretContext) -> None:
        self._secret = secret

    def public_context(self) -> keyholder_pb2.PublicContext:
        return keyholder_pb2.PublicContext(context=self._secret.public_bytes, fingerprint=self._secret.fingerprint,
                                           preset=self._secret.preset.name)

    def decrypt(self, *args) -> np.ndarray:
        raise NotImplementedError("the components benchmark decrypts with the secret context itself")


def components(params: int, clients: int, repeat: int) -> dict:
    preset = get_preset(DEFAULT_PRESET)
    secret = SecretContext.generate(preset)
    rng = np.random.default_rng(0)
    payloads = [np.append(rng.normal(size=params).astype(np.float32) * 3.0, 3.0) for _ in range(clients)]
    length = payloads[0].size

    pool = EncryptionPool(secret.public_bytes)
    pool.encrypt(payloads[0][: preset.slots * 4], preset.slots)  # start the workers
    encrypt_s, _ = median_seconds(lambda: pool.encrypt(payloads[0], preset.slots), repeat)
    ciphertexts = [pool.encrypt(p, preset.slots) for p in payloads]
    pool.shutdown()
    plain_protect_s, _ = median_seconds(lambda: plain_chunks(payloads[0]), repeat)
    plain_submissions = [plain_chunks(p) for p in payloads]

    ckks = CkksServer(PublicContextOnly(secret))
    ckks_aggregate_s, accumulator = aggregator_seconds_per_submission(ckks, ciphertexts, length)
    plain_aggregate_s, plain_accumulator = aggregator_seconds_per_submission(PlainServer(), plain_submissions, length)
    serialized_sum = accumulator.snapshot()
    parsed_sum = [ckks.parse_chunk(i, c, chunk_length(i, length, preset.slots)) for i, c in enumerate(serialized_sum)]
    decrypt_s, total = median_seconds(lambda: decrypt_chunks(secret.context, parsed_sum), 1)
    expected = np.sum(payloads, axis=0, dtype=np.float64)
    relative_error = float(np.linalg.norm(total - expected) / np.linalg.norm(expected))

    ckks_bytes = sum(map(len, ciphertexts[0]))
    plain_bytes = sum(map(len, plain_submissions[0]))
    return {
        "preset": preset.name,
        "ciphertexts_per_client": len(ciphertexts[0]),
        "client_protect_seconds": {"ckks": encrypt_s, "plain": plain_protect_s},
        "client_encrypt_seconds_per_million_params": encrypt_s * 1e6 / params,
        "bytes_per_client": {"ckks": ckks_bytes, "plain": plain_bytes, "ratio": ckks_bytes / plain_bytes},
        "aggregator_seconds_per_submission": {
            "ckks": ckks_aggregate_s, "plain": plain_aggregate_s, "ratio": ckks_aggregate_s / plain_aggregate_s,
        },
        "keyholder_decrypt_seconds": decrypt_s,
        "decrypted_sum_relative_error": relative_error,
        "plain_sum_matches": bool(np.allclose(plain_accumulator.concatenated(), expected, rtol=1e-5)),
    }


def end_to_end(scheme: str, params: int, clients: int) -> dict:
    rng = np.random.default_rng(1)
    updates = [{"w": rng.normal(size=params).astype(np.float32)} for _ in range(clients)]
    with LocalFederation(clients, scheme=scheme) as federation:
        with ThreadPoolExecutor(clients) as pool:
            # A full dry round first: starts the encryption pool and channels outside the timing.
            list(pool.map(lambda i: federation.clients[i].aggregate(updates[i]), range(clients)))
            started = time.perf_counter()
            list(pool.map(lambda i: federation.clients[i].aggregate(updates[i], weight=1.0 + i), range(clients)))
            round_s = time.perf_counter() - started
        stats = [c.last_stats for c in federation.clients]
    return {
        "round_seconds": round_s,
        "mean_client_protect_seconds_under_contention": float(np.mean([s.protect_seconds for s in stats])),
        "bytes_per_client": stats[0].bytes_sent,
    }


def tables(report: dict) -> list[Table]:
    """One table: each cost of CKKS beside plaintext, and their ratio, from the same run."""
    c, rounds = report["components"], report["end_to_end"]
    protect, sent, added = c["client_protect_seconds"], c["bytes_per_client"], c["aggregator_seconds_per_submission"]
    cpus = report["machine"]["cpus"]

    rows = [
        compared(f"client protection of {count(report['params'])} parameters (encryption pool, {cpus} CPUs)",
            protect["ckks"], protect["plain"], duration),
        compared("bytes sent per client", sent["ckks"], sent["plain"], byte_size),
        compared("aggregator work per submission (validate + add in place)", added["ckks"], added["plain"], duration),
        compared("key-holder decryption of the sum", c["keyholder_decrypt_seconds"], None, duration),
        compared(f"whole round, {report['clients']} clients on this one machine (LocalFederation)",
            rounds["ckks"]["round_seconds"], rounds["plain"]["round_seconds"], duration),
        compared("mean client protection within that round (all clients share the CPUs)",
            rounds["ckks"]["mean_client_protect_seconds_under_contention"],
            rounds["plain"]["mean_client_protect_seconds_under_contention"], duration),
        compared("relative error of the decrypted sum", c["decrypted_sum_relative_error"], None, scientific),
    ]
    caption = (f"Preset `{c['preset']}`, {c['ciphertexts_per_client']} ciphertexts per client; "
               f"plaintext is the float32 update.")
    return [Table("ckks_round", ("measure", "CKKS", "plaintext", "ratio"), rows, caption)]


def main() -> None:
    parser = benchmark_parser(__doc__, HERE / "results" / "ckks_round.json")
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    result = envelope("ckks_round")
    result.update(params=args.params, clients=args.clients, components=components(args.params, args.clients, args.repeat))
    ckks, plain = end_to_end("ckks", args.params, args.clients), end_to_end("plain", args.params, args.clients)
    result["end_to_end"] = {"ckks": ckks, "plain": plain, "round_ratio": ckks["round_seconds"] / plain["round_seconds"]}
    publish(result, tables, args)


if __name__ == "__main__":
    main()
