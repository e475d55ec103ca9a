"""Packed BFV and hardened CKKS, one round of 1,000,000 parameters and 10 clients on the
schemes' own halves; and NVIDIA FLARE's TenSEAL path as an anchor, in the same run.

Components, each timed alone in one process (`securefl.benchmark.he_round`: the registry's
client and server halves, the key-holder's release core and keystore, no gRPC):

* client protection of 1M parameters on the encryption pool (2 worker processes here): quantize,
  pack, mask, encrypt, seal the seed (the client half's `protect`);
* bytes per client against float32;
* aggregator work per submission: admit the receipt, validate every chunk, add it in place;
* key-holder decryption (in its process, and on 2 decryption workers: `decryption_workers`), and
  unmasking + range checks of the sum, apart; and the whole release
  (`KeyHolderCore.release`: receipts, seals, the durable round record, decryption, checks);
* the error of the released average against the exact weighted average, and its bound.

FLARE anchor: its HE filters encrypt each layer with `ts.ckks_vector(context, layer)` under its
provisioning defaults (N = 8192, coefficient moduli [60, 40, 40], scale 2^40), on one core.

Run: python bench/bfv_round.py [--params N] [--clients N] [--out PATH] [--markdown PATH]"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import tenseal as ts

from securefl.benchmark.harness import benchmark_parser, envelope, median_seconds, publish
from securefl.benchmark.he_round import he_components, timed
from securefl.benchmark.numbers import byte_size, count, duration, scientific
from securefl.benchmark.tables import Table, compared
from securefl.rounds.plain import plain_chunks

HERE = Path(__file__).resolve().parent
VALUE_BOUND, MAX_WEIGHT = 10.0, 10.0
CONFIGURATIONS = {  # name: (scheme, precision_bits)
    "bfv k=2": ("bfv", 12),
    "bfv k=3": ("bfv", 9),
    "ckks (masked)": ("ckks", None),
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
            compared(f"{name}: key-holder decryption alone, in its process", r["keyholder_decrypt_seconds"], None,
                     duration),
            compared(f"{name}: key-holder decryption alone, on 2 decryption workers",
                     r["keyholder_decrypt_seconds_on_2_workers"], None, duration),
            compared(f"{name}: key-holder decrypt + unmask + checks", r["keyholder_decrypt_unmask_seconds"], None, duration),
            compared(f"{name}: key-holder whole release (receipts, seals, durable record, decrypt, checks)",
                     r["keyholder_whole_release_seconds"], None, duration),
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
        for name, (scheme, precision_bits) in CONFIGURATIONS.items():
            result["schemes"][name] = he_components(Path(workdir), scheme, args.params, args.clients, VALUE_BOUND,
                                                    MAX_WEIGHT, args.repeat, precision_bits)
    result["flare_anchor"] = flare_anchor(args.params, args.clients, args.repeat)
    publish(result, tables, args)


if __name__ == "__main__":
    main()
