"""Charts of `securefl bench`: round-time overhead against plain."""

from __future__ import annotations

from pathlib import Path

from ..schemes import PLAIN
from .grid import Grid, Measurement


def plot(results: list[Measurement], grid: Grid, directory: Path) -> list[Path]:
    """Round-time overhead against plain, versus model size and versus number of clients."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    charts = []
    for name, x_label, select, x_of, log_x in (
        ("overhead_vs_model_size.png", "parameters", lambda m: m.clients == grid.size_sweep_clients, lambda m: m.params, True),
        ("overhead_vs_clients.png", "clients", lambda m: m.size == grid.client_sweep_size, lambda m: m.clients, False),
    ):
        figure, axis = plt.subplots(figsize=(6, 4))
        for scheme in grid.schemes:
            points = sorted((x_of(m), m.ratios.get("round", float("nan"))) for m in results if m.scheme == scheme and select(m))
            if points and scheme != PLAIN:
                axis.plot(*zip(*points), marker="o", label=scheme)
        axis.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="plain")
        if log_x:
            axis.set_xscale("log")
        axis.set_xlabel(x_label)
        axis.set_ylabel("round time / plain round time")
        title = (f"{grid.size_sweep_clients} clients" if log_x else f"{grid.client_sweep_size} model")
        axis.set_title(f"Overhead of secure aggregation ({title})")
        axis.legend()
        figure.tight_layout()
        path = directory / name
        figure.savefig(path, dpi=110)
        plt.close(figure)
        charts.append(path)
    return charts
