"""SecAgg+ vs plaintext aggregation: 100 clients x 1,000,000 parameters, 5 % dropouts.

Two parts, in the same run:

* components, in one process without the network: each client's local work per stage, the
  aggregator's work (adding masked inputs, then unmasking with 5 clients dropped after sharing
  keys, the case that needs pairwise-mask recovery), bytes per client; and the same for
  plaintext (float32 serialisation and summation);
* whole rounds through LocalFederation (aggregator process, real gRPC, 100 client threads):
  without dropouts, and with 5 clients vanishing after sharing keys; the plaintext round loses
  the same 5 clients. Dropouts are only noticed at a deadline, so those rounds include it.

Run: python bench/secagg_round.py [--clients N] [--params N] [--out PATH] [--markdown PATH]"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from securefl.benchmark.harness import benchmark_parser, envelope, publish
from securefl.benchmark.numbers import MISSING, byte_size, duration, plural, scientific
from securefl.benchmark.tables import Table, compared
from securefl.identity import Identity, Roster
from securefl.masking.client import SecAggParticipant
from securefl.masking.graph import choose_params
from securefl.masking.server import ADVERTISE, MASKED, SHARE, UNMASK, SecAggScheme, secagg_config
from securefl.schemes import PlainScheme, plain_chunks
from securefl.simulation import LocalFederation, SecAggSettings, SimulatedDropout

HERE = Path(__file__).resolve().parent
VALUE_BOUND, MAX_WEIGHT = 10.0, 100.0


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def components(n: int, params: int, dropped: int) -> dict:
    identities = [Identity.generate(f"site-{i:03d}") for i in range(n)]
    roster = Roster.of(identities)
    config = secagg_config(n, VALUE_BOUND, MAX_WEIGHT)
    scheme = SecAggScheme(config, roster, min_clients=2, stage_timeout=3600)
    scheme.open("bench", n)
    clients = [SecAggParticipant(i, roster, config, "bench") for i in identities]
    ids = sorted(c.client_id for c in clients)
    gone = set(ids[:: n // dropped][:dropped])
    rng = np.random.default_rng(0)
    vector = rng.uniform(-1, 1, size=params).astype(np.float32)
    stage_times = {stage: [] for stage in (ADVERTISE, SHARE, MASKED, UNMASK)}

    for c in clients:
        advert, seconds = timed(c.advertisement)
        stage_times[ADVERTISE].append(seconds)
        scheme.advertise(advert)
    for c in clients:
        c.accept_participants(scheme.participants("bench", c.client_id, 0))
    for c in clients:
        request, seconds = timed(c.share_keys)
        stage_times[SHARE].append(seconds)
        scheme.share_keys(request)
    for c in clients:
        _, seconds = timed(c.accept_shares, scheme.incoming_shares("bench", c.client_id, 0))
        stage_times[SHARE][-1] += seconds
    accumulator, aggregate_seconds = scheme.new_accumulator(), 0.0
    survivors = [c for c in clients if c.client_id not in gone]
    for c in survivors:
        masked, seconds = timed(c.masked_input, vector, 3.0)
        stage_times[MASKED].append(seconds)
        data = masked.tobytes()
        _, seconds = timed(lambda: accumulator.add([scheme.parse_chunk(0, data, params + 1)]))
        aggregate_seconds += seconds
    state = scheme.begin_unmask("bench", [c.client_id for c in survivors])
    for c in survivors:
        response, seconds = timed(c.unmask, scheme.unmask_request("bench", c.client_id, 0))
        stage_times[UNMASK].append(seconds)
        scheme.unmask(response)
    total, unmask_seconds = timed(scheme.unmasked_total, state, accumulator)
    decoded = scheme.encoding.decode(total)
    error = float(np.abs(decoded[:-1] / decoded[-1] - vector).max())

    plain = PlainScheme()
    plain_payload = np.append(vector * 3.0, 3.0)
    chunks, plain_protect = timed(plain_chunks, plain_payload)
    plain_accumulator, plain_add = plain.new_accumulator(), 0.0
    for _ in survivors:
        _, seconds = timed(lambda: plain_accumulator.add(
            [plain.parse_chunk(i, c, min(65536, plain_payload.size - i * 65536)) for i, c in enumerate(chunks)]))
        plain_add += seconds
    degree, threshold = choose_params(n, config.dropout_fraction, config.corrupt_fraction)
    client_total = sum(statistics.mean(times) for times in stage_times.values())
    return {
        "degree": degree, "threshold": threshold, "dropped_after_sharing_keys": dropped,
        "client_seconds_per_stage": {stage: statistics.mean(times) for stage, times in stage_times.items()},
        "client_seconds_total": client_total,
        "plain_client_seconds": plain_protect,
        "aggregator_seconds": {"add_all_inputs": aggregate_seconds, "unmask": unmask_seconds,
                               "total": aggregate_seconds + unmask_seconds},
        "plain_aggregator_seconds": plain_add,
        "bytes_per_client": {"secagg_masked_input": 4 * (params + 1), "plain": sum(map(len, chunks)),
                             "ratio": 4 * (params + 1) / sum(map(len, chunks))},
        "max_abs_error_of_average": error,
    }


def end_to_end(scheme: str, n: int, params: int, dropped: int, timeout: float) -> dict:
    rng = np.random.default_rng(1)
    updates = [rng.uniform(-1, 1, size=params).astype(np.float32) for _ in range(n)]
    settings = SecAggSettings(stage_timeout=timeout, value_bound=VALUE_BOUND, max_weight=MAX_WEIGHT)
    with LocalFederation(n, scheme=scheme, min_clients=n - dropped, round_timeout=timeout if dropped else None,
                         secagg=settings) as federation:
        def one(i: int, round_id: str):
            drop = i % (n // dropped) == 0 and i // (n // dropped) < dropped if dropped else False
            if drop and scheme != "secagg":
                return None
            try:
                federation.clients[i].aggregate(updates[i], weight=1.0, round_id=round_id,
                                                simulate_dropout="masked_input" if drop else None)
            except SimulatedDropout:
                return None
            return federation.clients[i].last_stats

        with ThreadPoolExecutor(n) as pool:
            # A dry round with everyone first: channels and sessions are set up outside the timing.
            list(pool.map(lambda i: federation.clients[i].aggregate(np.zeros(8, np.float32), round_id="warm-up"), range(n)))
            started = time.perf_counter()
            stats = [s for s in pool.map(lambda i: one(i, "measured"), range(n)) if s]
            wall = time.perf_counter() - started
    return {"round_seconds": wall, "clients_finished": len(stats),
            "bytes_per_client": statistics.mean(s.bytes_sent for s in stats)}


def tables(report: dict) -> list[Table]:
    """One table: each cost of SecAgg+ beside plaintext, and their ratio, from the same run."""
    c, rounds = report["components"], report["end_to_end"]
    aggregator, uploaded = c["aggregator_seconds"], c["bytes_per_client"]
    dropped, degree = c["dropped_after_sharing_keys"], c["degree"]
    survivors = report["clients"] - dropped
    deadline = f"a {report['dropout_timeout']:g} s deadline" if "dropout_timeout" in report else "the stage deadline"

    def whole_round(label: str, measure: str) -> list[str]:
        secagg, plain = rounds[label]["secagg"]["round_seconds"], rounds[label]["plain"]["round_seconds"]
        return compared(measure, secagg, plain, duration)

    rows = [
        compared("bytes uploaded per client", uploaded["secagg_masked_input"], uploaded["plain"], byte_size),
        ["client work: advertise / share keys / masked input / unmask",
         " / ".join(duration(seconds) for seconds in c["client_seconds_per_stage"].values()), MISSING, MISSING],
        compared("client work per round, all stages", c["client_seconds_total"], c["plain_client_seconds"], duration),
        compared(f"aggregator: add {survivors} inputs", aggregator["add_all_inputs"], c["plain_aggregator_seconds"],
                 duration),
        compared(f"aggregator: unmask ({survivors} self masks, {dropped} × {degree} recovered pairwise masks)",
                 aggregator["unmask"], None, duration),
        compared("aggregator: total", aggregator["total"], c["plain_aggregator_seconds"], duration),
        whole_round("no_dropouts", f"whole round, no dropouts, {report['clients']} client threads on this machine"),
        whole_round("dropouts", f"whole round, {plural(dropped, 'dropout')} noticed at {deadline}"),
        compared("max error of the average (fixed-point resolution)", c["max_abs_error_of_average"], None, scientific),
    ]
    caption = (f"{report['clients']} clients × {report['params']:,} parameters; neighbour graph k = {degree}, "
               f"threshold t = {c['threshold']}; {plural(dropped, 'client')} dropped after sharing keys.")
    return [Table("secagg_round", ("measure", "SecAgg+", "plaintext", "ratio"), rows, caption)]


def main() -> None:
    parser = benchmark_parser(__doc__, HERE / "results" / "secagg_round.json")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--dropout-timeout", type=float, default=20.0)
    args = parser.parse_args()
    dropped = max(1, args.clients // 20)
    result = envelope("secagg_round")
    result.update(clients=args.clients, params=args.params, dropout_timeout=args.dropout_timeout,
                  components=components(args.clients, args.params, dropped))
    rounds = {}
    for label, drops in (("no_dropouts", 0), ("dropouts", dropped)):
        secagg = end_to_end("secagg", args.clients, args.params, drops, args.dropout_timeout)
        plain = end_to_end("plain", args.clients, args.params, drops, args.dropout_timeout)
        rounds[label] = {"secagg": secagg, "plain": plain, "ratio": secagg["round_seconds"] / plain["round_seconds"]}
        print(f"{label}: secagg {secagg['round_seconds']:.1f} s, plain {plain['round_seconds']:.1f} s "
              f"({rounds[label]['ratio']:.2f}x)")
    result["end_to_end"] = rounds
    publish(result, tables, args)


if __name__ == "__main__":
    main()
