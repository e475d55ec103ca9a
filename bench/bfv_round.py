"""Packed BFV (and hardened CKKS) at the core level: 1,000,000 parameters, 10 clients; and
NVIDIA FLARE's TenSEAL path as an anchor, in the same run.

Components, each timed alone in one process (no network; the services come in phase 2), on
the core-level round of the tests (`tests/he_rounds.py`):

* client protection of 1M parameters on the 2-worker encryption pool: quantize, pack, mask,
  encrypt, seal the seed (`protect_update`);
* bytes per client against float32;
* aggregator work per submission: validate every chunk and add it in place;
* key-holder decryption + unmasking + range checks of the sum (`decrypt_chunks` +
  `codec.reveal`), and the whole release (`KeyHolderCore.release`: receipts, seals, the durable
  round record, decryption, checks);
* the error of the released average against the exact weighted average, and its bound.

FLARE anchor: its HE filters encrypt each layer with `ts.ckks_vector(context, layer)` under its
provisioning defaults (N = 8192, coefficient moduli [60, 40, 40], scale 2^40), on one core.

Run: python bench/bfv_round.py [--params N] [--clients N] [--out PATH] [--markdown PATH]"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import tenseal as ts


from securefl.benchmark.harness import benchmark_parser, envelope, median_seconds, publish
from securefl.benchmark.numbers import byte_size, count, duration, scientific
from securefl.benchmark.tables import Table, compared
from securefl.he.codec import decrypt_chunks
from securefl.he.epochs import protect_update
from securefl.he.masks import open_seed
from securefl.he.pool import EncryptionPool
from securefl.rounds.plain import plain_chunks
from tests.he_rounds import he_federation, weighted_sum

HERE = Path(__file__).resolve().parent
VALUE_BOUND, MAX_WEIGHT = 10.0, 10.0
CONFIGURATIONS = {  # name: (scheme, preset, precision_bits)
    "bfv k=2": ("bfv", "bfv-8192", 12),
    "bfv k=3": ("bfv", "bfv-8192", 9),
    "ckks (masked)": ("ckks", "add-only-8192", 12),
}


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def scheme_components(name: str, params: int, clients: int, repeat: int, workdir: Path) -> dict:
    scheme, preset, precision = CONFIGURATIONS[name]
    federation = he_federation(workdir / f"{name.replace(' ', '_')}.bin", scheme, preset, clients=clients,
                               value_bound=VALUE_BOUND, max_weight=MAX_WEIGHT, precision_bits=precision)
    rng = np.random.default_rng(0)
    vectors = [rng.normal(scale=3.0, size=params).astype(np.float32) for _ in range(clients)]
    weights = [float(i % MAX_WEIGHT) + 1.0 for i in range(clients)]
    epoch = federation.epoch("r1")
    pool = EncryptionPool(epoch.public_context)
    try:
        protect_update(epoch, "r1", "warm-up", vectors[0][: 16 * epoch.codec.slots], 1.0, pool)  # start the workers
        protect_s, protected = median_seconds(
            lambda: protect_update(epoch, "r1", federation.identities[0].client_id, vectors[0], weights[0], pool), repeat)
        submissions = federation.submit_all("r1", vectors, weights, pool)
    finally:
        pool.shutdown()

    chunk_lists = [s.chunks for s in submissions]
    sums, add_s = timed(lambda: federation.add_up("r1", chunk_lists))
    aggregate = [total.serialize() for total in sums]

    keystore_epoch = federation.keystore.epoch_of_round("r1")
    codec = keystore_epoch.codec(federation.keystore.policy.rotate_every)
    parsed = [codec.parse_chunk(keystore_epoch.secret.context, c) for c in aggregate]
    seeds = [open_seed(s.receipt.sealed_seed, keystore_epoch.sealing_key, "r1", s.receipt.client_id, keystore_epoch.number)
             for s in submissions]
    decrypted, decrypt_s = timed(lambda: decrypt_chunks(keystore_epoch.secret.context, parsed))
    _, reveal_s = timed(lambda: codec.reveal(decrypted, seeds, params + 1))
    released, release_s = timed(lambda: federation.release("r1", params + 1, submissions, aggregate))

    exact = weighted_sum([v.astype(np.float64) for v in vectors], weights, VALUE_BOUND)
    average_error = float(np.abs(released[:-1] / released[-1] - exact[:-1] / exact[-1]).max())
    if scheme == "bfv":
        bound = clients / codec.plan.scale / sum(weights) * (1 + VALUE_BOUND)  # one step per client and field
        packing = {"values_per_slot": codec.plan.values_per_slot, "client_bits": codec.plan.client_bits,
                   "frac_bits": codec.plan.frac_bits}
    else:
        bound = 6 * (codec.flooding_sigma(clients, params + 1) + codec.tolerance(clients)) / sum(weights) * (1 + VALUE_BOUND)
        packing = {"mask_bound": codec.mask_bound, "flooding_sigma": codec.flooding_sigma(clients, params + 1)}
    protected_bytes = sum(map(len, protected.chunks))
    return {
        "ciphertexts_per_client": len(protected.chunks),
        **packing,
        "client_protect_seconds": protect_s,
        "bytes_per_client": protected_bytes,
        "bytes_ratio_to_float32": protected_bytes / (4 * (params + 1)),
        "aggregator_seconds_per_submission": add_s / clients,
        "keyholder_decrypt_unmask_seconds": decrypt_s + reveal_s,
        "keyholder_decrypt_seconds": decrypt_s,
        "keyholder_unmask_check_seconds": reveal_s,
        "keyholder_whole_release_seconds": release_s,
        "max_average_error": average_error,
        "average_error_bound": bound,
    }


def flare_anchor(params: int, clients: int, repeat: int) -> dict:
    """FLARE's TenSEAL path: one ckks_vector per layer, provisioning defaults, one core."""
    context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40])
    context.global_scale = 2.0**40
    public = ts.context_from(context.serialize(save_secret_key=False))
    rng = np.random.default_rng(0)
    layers = [rng.normal(scale=3.0, size=params).astype(np.float32) for _ in range(clients)]
    encrypt_s, first = median_seconds(lambda: ts.ckks_vector(public, layers[0] * 3.0), repeat)
    serialized = [first.serialize()] + [ts.ckks_vector(public, layer * 3.0).serialize() for layer in layers[1:]]
    total, add_s = timed(lambda: _flare_sum(public, serialized))
    total.link_context(context)
    _, decrypt_s = timed(total.decrypt)
    return {
        "parameters": "N=8192, coeff_mod_bit_sizes=[60, 40, 40], scale 2^40",
        "client_encrypt_seconds_one_core": encrypt_s,
        "bytes_per_client": len(serialized[0]),
        "bytes_ratio_to_float32": len(serialized[0]) / (4 * params),
        "aggregator_seconds_per_submission": add_s / clients,
        "keyholder_decrypt_seconds": decrypt_s,
    }


def _flare_sum(context, serialized: list[bytes]):
    total = ts.ckks_vector_from(context, serialized[0])
    for data in serialized[1:]:
        total.add_(ts.ckks_vector_from(context, data))
    return total


def tables(report: dict) -> list[Table]:
    """Each HE configuration's costs beside plaintext, and FLARE's TenSEAL path, from one run."""
    rows = []
    for name, r in report["schemes"].items():
        rows += [
            compared(f"{name}: client protection", r["client_protect_seconds"], report["plain_protect_seconds"], duration),
            compared(f"{name}: bytes sent per client", r["bytes_per_client"], r["bytes_per_client"] / r["bytes_ratio_to_float32"],
                     byte_size),
            compared(f"{name}: aggregator add per submission", r["aggregator_seconds_per_submission"], None, duration),
            compared(f"{name}: key-holder decrypt + unmask + checks", r["keyholder_decrypt_unmask_seconds"], None, duration),
            compared(f"{name}: max error of the average (bound {scientific(r['average_error_bound'])})",
                     r["max_average_error"], None, scientific),
        ]
    flare = report["flare_anchor"]
    rows += [
        compared("FLARE TenSEAL path: client encryption (one core)", flare["client_encrypt_seconds_one_core"],
                 report["plain_protect_seconds"], duration),
        compared("FLARE TenSEAL path: bytes sent per client", flare["bytes_per_client"],
                 flare["bytes_per_client"] / flare["bytes_ratio_to_float32"], byte_size),
        compared("FLARE TenSEAL path: aggregator add per submission", flare["aggregator_seconds_per_submission"], None,
                 duration),
        compared("FLARE TenSEAL path: decryption", flare["keyholder_decrypt_seconds"], None, duration),
    ]
    caption = (f"{count(report['params'])} parameters, {report['clients']} clients, values clipped to "
               f"±{report['value_bound']:g}, weights up to {report['max_weight']:g}; plaintext is the float32 update. "
               f"FLARE: {flare['parameters']}.")
    if report.get("note"):
        caption += f" {report['note'][:1].upper()}{report['note'][1:]}."
    return [Table("bfv_round", ("measure", "HE", "plaintext", "ratio"), rows, caption)]


def main() -> None:
    parser = benchmark_parser(__doc__, HERE / "results" / "bfv_round.json")
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--note", default="", help="Conditions of the run (e.g. other load on the machine).")
    args = parser.parse_args()

    plain_s, _ = median_seconds(lambda: plain_chunks(np.zeros(args.params + 1, dtype=np.float32)), args.repeat)
    result = envelope("bfv_round")
    result.update(params=args.params, clients=args.clients, value_bound=VALUE_BOUND, max_weight=MAX_WEIGHT,
                  plain_protect_seconds=plain_s, note=args.note, schemes={})
    with tempfile.TemporaryDirectory() as workdir:
        for name in CONFIGURATIONS:
            result["schemes"][name] = scheme_components(name, args.params, args.clients, args.repeat, Path(workdir))
    result["flare_anchor"] = flare_anchor(args.params, args.clients, args.repeat)
    publish(result, tables, args)


if __name__ == "__main__":
    main()
