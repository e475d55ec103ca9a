"""SecAgg+ vs plaintext aggregation: 100 clients x 1,000,000 parameters, 5 % dropouts.

Two parts, in the same run:

* components, in one process without the network: each client's local work per stage, the
  aggregator's work (adding masked inputs, then unmasking with 5 clients dropped after sharing
  keys, the case that needs pairwise-mask recovery), bytes per client; and the same for
  plaintext (float32 serialisation and summation);
* whole rounds through LocalFederation (aggregator process, real gRPC, 100 client threads):
  without dropouts, and with 5 clients vanishing after sharing keys; the plaintext round loses
  the same 5 clients. Dropouts are only noticed at a deadline, so those rounds include it.

With `--before PATH` (this script's JSON from an earlier commit, run just before on the same
machine), the table also shows that commit's whole rounds: the cost of a change, measured
under the same conditions.

Run: python bench/secagg_round.py [--clients N] [--params N] [--before PATH] [--out PATH] [--markdown PATH]"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from securefl.benchmark.harness import benchmark_parser, envelope, publish
from securefl.benchmark.numbers import MISSING, byte_size, duration, plural, scientific
from securefl.benchmark.tables import Table, compared
from securefl.federation import Federation, SecurityParameters
from securefl.identity import Identity
from securefl.masking.client import SecAggClient
from securefl.masking.graph import choose_params
from securefl.masking.policy import secagg_config
from securefl.masking.server import ADVERTISE, CONFIRM, MASK_SET, MASKED, SHARE, UNMASK, SecAggServer
from securefl.rounds.chunks import chunk_length
from securefl.rounds.inprocess import ManualClock
from securefl.rounds.plain import PlainClient, PlainServer
from securefl.rounds.scheme import SUBMIT, RoundConfig, Stage
from securefl.simulation import LocalFederation, SecAggSettings, SimulatedDropout
from securefl.v1 import aggregator_pb2, secagg_pb2

HERE = Path(__file__).resolve().parent
VALUE_BOUND, MAX_WEIGHT = 10.0, 100.0


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def verification_seconds(participant, stage) -> float:
    """A client's checks of an unmask request (the confirmation quorum and the survivors' mask
    sets), the part of its unmask work the consistency stage adds."""
    request = secagg_pb2.UnmaskRequest.FromString(stage.body)
    survivors = frozenset(request.survivors)
    started = time.perf_counter()
    participant._check_confirmations(participant.view, survivors, request.confirmations)
    participant._check_mask_sets(participant.view, survivors, request.mask_sets)
    return time.perf_counter() - started


def components(n: int, params: int, dropped: int) -> dict:
    """Every client's stages and the aggregator's work, through the scheme's two halves."""
    identities = [Identity.generate(f"site-{i:03d}") for i in range(n)]
    federation = Federation.in_process(identities, SecurityParameters(value_bound=VALUE_BOUND, max_weight=MAX_WEIGHT))
    roster = federation.roster
    config = secagg_config(federation.security, n)
    clock = ManualClock()
    server = SecAggServer(config, roster, stage_timeout=3600, clock=clock)
    session = aggregator_pb2.Session(scheme=server.name)
    server.describe(session)
    round_ = server.new_round("bench", RoundConfig(2, n), clock())
    rng = np.random.default_rng(0)
    vector = rng.uniform(-1, 1, size=params).astype(np.float32)
    jobs = {i.client_id: SecAggClient(session, i, federation).start("bench", vector, 3.0) for i in identities}
    ids = sorted(jobs)
    gone = set(ids[:: n // dropped][:dropped])
    survivors = [cid for cid in ids if cid not in gone]
    stage_times = {stage: [] for stage in (ADVERTISE, SHARE, MASK_SET, MASKED, CONFIRM, UNMASK)}
    server_checks = {MASK_SET: 0.0, CONFIRM: 0.0, UNMASK: 0.0}  # verifying signatures and commitments

    def play(cid: str, submitted: bool) -> None:
        stage = round_.stage_for(cid, submitted)
        body, seconds = timed(jobs[cid].answer, stage)
        stage_times[stage.name].append(seconds)
        _, seconds = timed(round_.answer, cid, stage.name, body)
        server_checks[stage.name] = server_checks.get(stage.name, 0.0) + seconds

    for cid in ids + ids:  # advertise, then share keys
        play(cid, False)
    for cid in survivors:  # the others vanish after sharing keys
        play(cid, False)
    accumulator, aggregate_seconds = server.new_accumulator(), 0.0
    for cid in survivors:
        protected, seconds = timed(jobs[cid].protect, round_.stage_for(cid, False))
        stage_times[MASKED].append(seconds)
        _, seconds = timed(lambda: accumulator.add([
            server.parse_chunk(i, c, chunk_length(i, params + 1, server.chunk_values)) for i, c in enumerate(protected.chunks)]))
        aggregate_seconds += seconds
    round_.begin_reveal(survivors)
    for cid in survivors:
        play(cid, True)
    verify_times = [verification_seconds(jobs[cid].participant, round_.stage_for(cid, True)) for cid in survivors]
    for cid in survivors:
        play(cid, True)
    decoded, unmask_seconds = timed(round_.reveal, accumulator, params + 1, b"", [])
    error = float(np.abs(decoded[:-1] / decoded[-1] - vector).max())
    consistency_client = statistics.mean(stage_times[CONFIRM]) + statistics.mean(verify_times)
    consistency_aggregator = server_checks[CONFIRM]

    plain = PlainServer()
    plain_job = PlainClient().start("bench", vector, 3.0)
    protected_plain, plain_protect = timed(plain_job.protect, Stage(SUBMIT))
    plain_accumulator, plain_add = plain.new_accumulator(), 0.0
    for _ in survivors:
        _, seconds = timed(lambda: plain_accumulator.add([
            plain.parse_chunk(i, c, chunk_length(i, params + 1, plain.chunk_values))
            for i, c in enumerate(protected_plain.chunks)]))
        plain_add += seconds
    plain_bytes = sum(map(len, protected_plain.chunks))
    degree, threshold = choose_params(n, config.dropout_fraction, config.corrupt_fraction)
    client_total = sum(statistics.mean(times) for times in stage_times.values())
    return {
        "degree": degree, "threshold": threshold, "dropped_after_sharing_keys": dropped,
        "confirmation_quorum": round_.view.quorum,
        "consistency_seconds": {"client": consistency_client, "aggregator": consistency_aggregator,
                                "client_verifying_unmask_request": statistics.mean(verify_times),
                                "aggregator_checking_mask_sets": server_checks[MASK_SET],
                                "aggregator_checking_revealed_shares": server_checks[UNMASK]},
        "client_seconds_per_stage": {stage: statistics.mean(times) for stage, times in stage_times.items()},
        "client_seconds_total": client_total,
        "plain_client_seconds": plain_protect,
        "aggregator_seconds": {"add_all_inputs": aggregate_seconds, "unmask": unmask_seconds,
                               "total": aggregate_seconds + unmask_seconds},
        "plain_aggregator_seconds": plain_add,
        "bytes_per_client": {"secagg_masked_input": 4 * (params + 1), "plain": plain_bytes,
                             "ratio": 4 * (params + 1) / plain_bytes},
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
                                                simulate_dropout=MASKED if drop else None)
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

    stages = c["client_seconds_per_stage"]
    consistency = c["consistency_seconds"]
    n = report["clients"]
    consistency_cpu = n * consistency["client"] + consistency["aggregator"]
    round_cpu = report["machine"]["cpus"] * rounds["no_dropouts"]["secagg"]["round_seconds"]
    rows = [
        compared("bytes uploaded per client", uploaded["secagg_masked_input"], uploaded["plain"], byte_size),
        [f"client work: {' / '.join(name.replace('_', ' ') for name in stages)}",
         " / ".join(duration(seconds) for seconds in stages.values()), MISSING, MISSING],
        compared("client work per round, all stages", c["client_seconds_total"], c["plain_client_seconds"], duration),
        compared(f"aggregator: add {survivors} inputs", aggregator["add_all_inputs"], c["plain_aggregator_seconds"],
                 duration),
        compared(f"aggregator: unmask ({survivors} self masks, {dropped} × {degree} recovered pairwise masks)",
                 aggregator["unmask"], None, duration),
        compared("aggregator: total", aggregator["total"], c["plain_aggregator_seconds"], duration),
        compared(f"consistency stage, per client: confirm, then check {survivors} confirmations (quorum "
                 f"{c['confirmation_quorum']}) and {degree} mask sets", consistency["client"], None, duration),
        compared(f"consistency stage, aggregator: check {survivors} confirmations", consistency["aggregator"], None,
                 duration),
        [f"consistency stage, CPU of all clients and the aggregator, share of the round's CPU "
         f"({report['machine']['cpus']} cores × whole round)",
         f"{duration(consistency_cpu)} ({100 * consistency_cpu / round_cpu:.1f} %)", MISSING, MISSING],
        whole_round("no_dropouts", f"whole round, no dropouts, {report['clients']} client threads on this machine"),
        whole_round("dropouts", f"whole round, {plural(dropped, 'dropout')} noticed at {deadline}"),
        compared("max error of the average (fixed-point resolution)", c["max_abs_error_of_average"], None, scientific),
    ]
    before = report.get("before")
    if before:  # the same measurement of the code before the malicious-server checks, run just before
        for label, measure in (("no_dropouts", "no dropouts"), ("dropouts", plural(dropped, "dropout"))):
            rows.append(compared(f"whole round, {measure}, before the malicious-server checks "
                                 f"(commit {before['commit'][:7]})", before["end_to_end"][label]["secagg"]["round_seconds"],
                                 rounds[label]["plain"]["round_seconds"], duration))
    caption = (f"{report['clients']} clients × {report['params']:,} parameters; neighbour graph k = {degree}, "
               f"threshold t = {c['threshold']}; {plural(dropped, 'client')} dropped after sharing keys.")
    return [Table("secagg_round", ("measure", "SecAgg+", "plaintext", "ratio"), rows, caption)]


def main() -> None:
    parser = benchmark_parser(__doc__, HERE / "results" / "secagg_round.json")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--dropout-timeout", type=float, default=20.0)
    parser.add_argument("--before", type=Path, help="JSON of this benchmark run on an earlier commit, just before "
                                                    "this run, to show beside it")
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
    if args.before:
        earlier = json.loads(args.before.read_text())
        result["before"] = {"commit": earlier["machine"].get("git_commit", "unknown"), "recorded": earlier["recorded"],
                            "load_average_1min": earlier["machine"].get("load_average_1min"),
                            "end_to_end": earlier["end_to_end"], "components": earlier["components"]}
    publish(result, tables, args)


if __name__ == "__main__":
    main()
