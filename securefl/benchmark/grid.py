"""`securefl bench`: what privacy costs, measured on the real services, and its tables.

Every configuration runs real rounds through LocalFederation (key-holder and aggregator
processes, gRPC over localhost, all clients submitting concurrently from threads) and is
compared with the plain scheme at the same model size and client count, in the same run."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from ..schemes import BFV, CKKS, PLAIN, SECAGG
from ..simulation import LocalFederation, SecAggSettings
from .numbers import MISSING, byte_size, compact_count, duration, ratio, significant
from .process import DiskWrites, PeakMemory, ingest_mb_per_s
from .table import Table

# Parameter counts of real architectures: the PyTorch tutorial CIFAR-10 CNN and torchvision's ResNet-18.
MODEL_SIZES = {"10k": 10_000, "small-cnn": 62_006, "1M": 1_000_000, "resnet18": 11_689_512}
WARM_UP_PARAMS = 200_000  # large enough that HE clients (bfv packs 16,384 values per ciphertext) start their pool


@dataclass(frozen=True)
class Grid:
    """Model sizes swept at `size_sweep_clients`, client counts swept at `client_sweep_size`."""

    schemes: tuple[str, ...]
    sizes: tuple[str, ...]
    size_sweep_clients: int
    clients: tuple[int, ...]
    client_sweep_size: str
    repeat: int = 1

    def configurations(self) -> list[tuple[str, int, str]]:
        pairs = [(self.size_sweep_clients, size) for size in self.sizes]
        pairs += [(n, self.client_sweep_size) for n in self.clients if (n, self.client_sweep_size) not in pairs]
        ordered = sorted(set(pairs), key=lambda p: (p[0], MODEL_SIZES[p[1]]))
        return [(scheme, n, size) for scheme in self.schemes for n, size in ordered]


QUICK = Grid((PLAIN, BFV, CKKS, SECAGG), ("10k", "small-cnn"), 3, (2, 3), "10k")
DEFAULT = Grid((PLAIN, BFV, CKKS, SECAGG), ("10k", "small-cnn", "1M", "resnet18"), 4, (2, 10, 50, 100), "small-cnn")


@dataclass
class Measurement:
    scheme: str
    size: str
    params: int
    clients: int
    round_seconds: float
    client_seconds: float
    aggregator_seconds: float
    reveal_seconds: float
    bytes_per_client: float
    aggregator_peak_mb: float
    ingest_mb_per_s: float = float("nan")  # the round's uploads over their time window, at the aggregator
    disk_bytes: float = float("nan")  # the aggregator wrote to disk during the round
    ratios: dict[str, float] = field(default_factory=dict)


def _round(federation: LocalFederation, pool: ThreadPoolExecutor, params: int, round_id: str) -> Measurement:
    rng = np.random.default_rng(len(round_id))
    updates = [rng.uniform(-1, 1, size=params).astype(np.float32) for _ in federation.clients]
    with PeakMemory(federation.aggregator.pid) as memory, DiskWrites(federation.aggregator.pid) as disk:
        started = time.perf_counter()
        list(pool.map(lambda i: federation.clients[i].aggregate(updates[i], weight=1.0 + i, round_id=round_id),
                      range(len(updates))))
        wall = time.perf_counter() - started
    stats = [c.last_stats for c in federation.clients]
    info = federation.clients[0].round_info(round_id)
    return Measurement(
        federation.scheme, "", params, len(updates), wall,
        client_seconds=statistics.mean(s.protect_seconds for s in stats),
        aggregator_seconds=info.aggregation_seconds / max(1, info.contributors),
        reveal_seconds=info.reveal_seconds,
        bytes_per_client=statistics.mean(s.bytes_sent for s in stats),
        aggregator_peak_mb=memory.peak_mb, ingest_mb_per_s=ingest_mb_per_s(stats), disk_bytes=disk.bytes,
    )


def run(grid: Grid, on_progress=None) -> list[Measurement]:
    """Measure every configuration of the grid; returns medians over `grid.repeat` rounds."""
    results: list[Measurement] = []
    configurations = grid.configurations()
    by_federation: dict[tuple[str, int], list[str]] = {}
    for scheme, n, size in configurations:
        by_federation.setdefault((scheme, n), []).append(size)
    for (scheme, n), sizes in by_federation.items():
        settings = SecAggSettings(stage_timeout=120.0, value_bound=10.0, max_weight=float(n + 1))
        with LocalFederation(n, scheme=scheme, secagg=settings) as federation, ThreadPoolExecutor(n) as pool:
            _round(federation, pool, WARM_UP_PARAMS, "warm-up")  # connections, sessions, encryption pools
            for size in sizes:
                rounds = [_round(federation, pool, MODEL_SIZES[size], f"{size}-{i}") for i in range(grid.repeat)]
                best = sorted(rounds, key=lambda m: m.round_seconds)[len(rounds) // 2]
                best.size = size
                results.append(best)
                if on_progress is not None:
                    on_progress(best)
    _add_ratios(results)
    return results


def _add_ratios(results: list[Measurement]) -> None:
    plain = {(m.size, m.clients): m for m in results if m.scheme == PLAIN}
    for m in results:
        base = plain.get((m.size, m.clients))
        if base is None:
            continue
        m.ratios = {
            "round": m.round_seconds / base.round_seconds,
            "client": m.client_seconds / base.client_seconds if base.client_seconds else float("nan"),
            "aggregator": m.aggregator_seconds / base.aggregator_seconds if base.aggregator_seconds else float("nan"),
            "bytes": m.bytes_per_client / base.bytes_per_client,
        }


def report_results(results: list[Measurement], grid: Grid) -> dict:
    """The measured part of the report (`harness.envelope` supplies the rest)."""
    return {"grid": asdict(grid), "model_sizes": MODEL_SIZES, "results": [asdict(m) for m in results]}


def tables(report: dict) -> list[Table]:
    """Two tables: every scheme across model sizes, and across client counts. Ratios are to
    plain at the same model size and client count in the same run."""
    grid = report["grid"]
    scheme_order = {scheme: i for i, scheme in enumerate(grid["schemes"])}
    rows = report["results"]
    columns = ("scheme", "model", "clients", "client protect", "aggregator / submission", "reveal", "upload / client",
               "bytes ×", "round", "round ×", "aggregator peak", "ingest", "disk / round")

    def row(m: dict) -> list[str]:
        ratios = m.get("ratios", {})
        model = m["size"] if m["size"] == compact_count(m["params"]) else f"{m['size']} ({compact_count(m['params'])})"
        return [m["scheme"], model, str(m["clients"]), duration(m["client_seconds"]), duration(m["aggregator_seconds"]),
                duration(m["reveal_seconds"]), byte_size(m["bytes_per_client"]), ratio(ratios.get("bytes")),
                duration(m["round_seconds"]), ratio(ratios.get("round")), f"{significant(m['aggregator_peak_mb'])} MiB",
                _measured(m.get("ingest_mb_per_s"), lambda v: f"{significant(v)} MB/s"),
                _measured(m.get("disk_bytes"), byte_size)]

    def table(name: str, caption: str, selected: list[dict]) -> Table:
        ordered = sorted(selected, key=lambda m: (m["params"], m["clients"], scheme_order.get(m["scheme"], 99)))
        return Table(name, columns, [row(m) for m in ordered], caption, text_columns=2)

    n, model = grid["size_sweep_clients"], grid["client_sweep_size"]
    return [
        table("model-size", f"Across model sizes, {n} clients:", [m for m in rows if m["clients"] == n]),
        table("clients", f"Across client counts, model {model}:", [m for m in rows if m["size"] == model]),
    ]


def _measured(value: float | None, show) -> str:
    """Results recorded before a column existed show a dash."""
    return MISSING if value is None or value != value else show(value)
