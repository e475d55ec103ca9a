"""`securefl demo`: hospitals train a breast-cancer classifier together.

The Wisconsin breast-cancer data (bundled with scikit-learn) is split unevenly across the
hospitals. Each round every hospital trains locally from the current global model, then calls
`client.aggregate(state_dict, weight=n_samples)`. The same training runs twice on the same
split and seeds: once through the secure scheme, once as plaintext FedAvg (the `plain` scheme
on the same services), so accuracy, time and bytes can be compared round by round. Features
are log-transformed (a public, per-value step), and the statistics that standardise them are
themselves securely aggregated first: no hospital reveals its own."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from .client import Client
from .schemes import PLAIN, SECAGG
from .simulation import LocalFederation, SecAggSettings, SimulatedDropout

LOCAL_EPOCHS, BATCH_SIZE, LEARNING_RATE = 2, 16, 0.05
# With secagg, some hospitals vanish mid-round: round -> (hospital, stage it never reaches).
# A hospital that vanishes before unmasking already sent its input, so it still counts.
DROPOUTS = {2: (4, "share_keys"), 5: (2, "submit"), 8: (0, "unmask")}
STAGE_WORDS = {"share_keys": "sharing its keys", "submit": "sending its masked input", "unmask": "unmasking"}
STAGE_TIMEOUT = 3.0
VALUE_BOUND = 10.0  # every model value and (relative) feature statistic of the demo lies within it
# The demo's model (1,218 values) fits one BFV ciphertext however many values share a slot, so it
# takes a whole slot per value (k = 1, 33-37 bits) at no cost in bytes; bench/demo_accuracy.py
# also measures the default 12-bit floor (k = 2, 16 bits at five hospitals).
PRECISION_BITS = 20


def demo_settings(hospitals: list[Hospital], bounds: tuple[float, float] | None = None,
                  precision_bits: int | None = None) -> SecAggSettings:
    """The federation's security parameters: bounds (value_bound, max_weight) by default as tight
    as an operator who knows the sites would set them, since fixed-point schemes (bfv, secagg)
    resolve values relative to value_bound·max_weight and loose bounds cost accuracy
    (bench/demo_accuracy.py measures it)."""
    value_bound, max_weight = bounds or (VALUE_BOUND, float(max(len(h.labels) for h in hospitals)))
    return SecAggSettings(stage_timeout=STAGE_TIMEOUT, value_bound=value_bound, max_weight=max_weight,
                          precision_bits=precision_bits or PRECISION_BITS)


@dataclass
class Hospital:
    features: np.ndarray
    labels: np.ndarray


@dataclass
class RunResult:
    scheme: str
    accuracy: list[float] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    protect_seconds: list[float] = field(default_factory=list)
    bytes_per_client: list[int] = field(default_factory=list)


def split_data(n_clients: int, seed: int) -> tuple[list[Hospital], np.ndarray, np.ndarray]:
    """A stratified 75/25 train/test split; training rows dealt to hospitals in uneven shares."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    x = np.log1p(x)  # all features are non-negative and heavily skewed
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)
    rng = np.random.default_rng(seed)
    shares = np.linspace(2.0, 1.0, n_clients) ** 2  # the largest hospital has ~4x the smallest's data
    bounds = np.round(np.cumsum(shares / shares.sum()) * len(y_train)).astype(int)
    order = rng.permutation(len(y_train))
    hospitals = [Hospital(x_train[idx], y_train[idx]) for idx in np.split(order, bounds[:-1])]
    return hospitals, x_test, y_test


def make_model(seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(30, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))


def secure_standardizer(clients: list[Client], hospitals: list[Hospital]) -> tuple[np.ndarray, np.ndarray]:
    """Global feature mean and std from two securely averaged rounds: the local means, then the
    local mean squared deviations from the global mean, relative to it. Relative deviations keep
    every feature in the same range whatever its units (fixed-point schemes resolve values
    relative to the federation's value bound), and E[x²] - mean² is avoided: it cancels
    catastrophically for features whose spread is small beside their mean."""
    def average(make) -> np.ndarray:
        with ThreadPoolExecutor(len(clients)) as pool:
            return list(pool.map(lambda i: clients[i].aggregate(make(hospitals[i].features),
                                                                weight=len(hospitals[i].labels)),
                                 range(len(clients))))[0]

    mean = average(lambda x: x.mean(0))
    scale = np.maximum(np.abs(mean), 1e-3)
    relative_variance = average(lambda x: (((x - mean) / scale) ** 2).mean(0))
    return mean, scale * np.sqrt(np.maximum(relative_variance, 1e-12))


def train_locally(model, hospital: Hospital, mean: np.ndarray, std: np.ndarray, seed: int) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed)  # per call: clients train in parallel threads
    x = torch.tensor((hospital.features - mean) / std, dtype=torch.float32)
    y = torch.tensor(hospital.labels, dtype=torch.long)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9)
    model.train()
    for _ in range(LOCAL_EPOCHS):
        for batch in torch.randperm(len(y), generator=generator).split(BATCH_SIZE):
            if len(batch) < 2:  # BatchNorm needs two samples
                continue
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()


def accuracy(model, x: np.ndarray, y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        predicted = model(torch.tensor((x - mean) / std, dtype=torch.float32)).argmax(1).numpy()
    return float((predicted == y).mean())


def federated_run(scheme: str, n_clients: int, rounds: int, seed: int, progress: Progress,
                  dropouts: dict[int, tuple[int, str]], bounds: tuple[float, float] | None = None,
                  precision_bits: int | None = None) -> RunResult:
    """Train for `rounds`; in a round listed in `dropouts`, that hospital vanishes at that
    stage (with plain FedAvg it simply does not contribute, unless it vanished after sending)."""
    import torch

    torch.set_num_threads(1)
    hospitals, x_test, y_test = split_data(n_clients, seed)
    result = RunResult(scheme)
    task = progress.add_task(f"{scheme:>6}: starting services", total=rounds)
    timeout = STAGE_TIMEOUT if dropouts else None
    min_clients = n_clients - 1 if dropouts else None
    with LocalFederation(n_clients, scheme=scheme, min_clients=min_clients, round_timeout=timeout,
                         secagg=demo_settings(hospitals, bounds, precision_bits)) as federation:
        clients = federation.clients
        mean, std = secure_standardizer(clients, hospitals)
        global_model = make_model(seed)
        local_models = [make_model(seed) for _ in range(n_clients)]

        def client_round(i: int, round_index: int):
            local_models[i].load_state_dict(global_model.state_dict())
            train_locally(local_models[i], hospitals[i], mean, std, seed * 1000 + round_index * 100 + i)
            dropped, stage = dropouts.get(round_index, (None, None))
            if i == dropped and scheme != SECAGG and stage != "unmask":
                return None
            try:
                averaged = clients[i].aggregate(local_models[i].state_dict(), weight=len(hospitals[i].labels),
                                                simulate_dropout=stage if i == dropped and scheme == SECAGG else None)
            except SimulatedDropout:
                return None
            return averaged, clients[i].last_stats

        with ThreadPoolExecutor(n_clients) as pool:
            for round_index in range(rounds):
                progress.update(task, description=f"{scheme:>6}: round {round_index + 1}/{rounds}")
                started = time.perf_counter()
                outcomes = [o for o in pool.map(lambda i: client_round(i, round_index), range(n_clients)) if o]
                result.round_seconds.append(time.perf_counter() - started)
                global_model.load_state_dict(outcomes[0][0])
                result.protect_seconds.append(statistics.mean(s.protect_seconds for _, s in outcomes))
                result.bytes_per_client.append(outcomes[0][1].bytes_sent)
                result.accuracy.append(accuracy(global_model, x_test, y_test, mean, std))
                progress.advance(task)
    progress.update(task, description=f"{scheme:>6}: done")
    return result


def run_demo(scheme: str, n_clients: int, rounds: int, seed: int, console: Console,
             bounds: tuple[float, float] | None = None, precision_bits: int | None = None) -> tuple[RunResult, RunResult]:
    """The secure run and the plaintext run; `bounds` overrides the federation's (value_bound,
    max_weight), `precision_bits` bfv's precision."""
    console.print(f"[bold]securefl demo[/bold]: {n_clients} hospitals, {rounds} rounds, breast-cancer data, "
                  f"scheme [cyan]{scheme}[/cyan] vs plaintext FedAvg")
    dropouts = {r: d for r, d in DROPOUTS.items() if r < rounds and d[0] < n_clients} if scheme == SECAGG else {}
    for round_index, (hospital, stage) in sorted(dropouts.items()):
        console.print(f"round {round_index + 1}: hospital {hospital + 1} will drop out before {STAGE_WORDS[stage]}")
    with Progress(console=console, transient=False) as progress:
        secure = federated_run(scheme, n_clients, rounds, seed, progress, dropouts, bounds, precision_bits)
        plain = federated_run(PLAIN, n_clients, rounds, seed, progress, dropouts, bounds, precision_bits)

    table = Table(title="Test accuracy of the global model")
    table.add_column("round", justify="right")
    table.add_column(f"secure ({scheme})", justify="right")
    table.add_column("plaintext FedAvg", justify="right")
    table.add_column("difference (pp)", justify="right")
    for i, (a, b) in enumerate(zip(secure.accuracy, plain.accuracy), start=1):
        table.add_row(str(i), f"{a:.2%}", f"{b:.2%}", f"{(a - b) * 100:+.2f}")
    console.print(table)

    cost = Table(title="Cost per round (mean over rounds)")
    for column in ("", "round time (s)", "client protect time (s)", "bytes sent per client"):
        cost.add_column(column, justify="right")
    for run in (secure, plain):
        cost.add_row(run.scheme, f"{statistics.mean(run.round_seconds):.3f}",
                     f"{statistics.mean(run.protect_seconds):.4f}", f"{statistics.mean(run.bytes_per_client):,.0f}")
    cost.add_row("ratio", f"{statistics.mean(secure.round_seconds) / statistics.mean(plain.round_seconds):.1f}x", "",
                 f"{statistics.mean(secure.bytes_per_client) / statistics.mean(plain.bytes_per_client):.1f}x")
    console.print(cost)
    console.print(f"final accuracy: secure {secure.accuracy[-1]:.2%}, plaintext {plain.accuracy[-1]:.2%}")
    return secure, plain
