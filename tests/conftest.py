from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tenseal as ts

from securefl.client import Client
from securefl.he.keys import SecretContext, load_public_context


def run_round(clients: list[Client], updates: list[Any], weights: list[float], **kwargs: Any) -> list[Any]:
    """Every client aggregates concurrently, as sites would; returns each client's result."""
    with ThreadPoolExecutor(len(clients)) as pool:
        futures = [pool.submit(c.aggregate, u, weight=w, **kwargs) for c, u, w in zip(clients, updates, weights)]
        return [f.result() for f in futures]


def weighted_average(arrays: list[np.ndarray], weights: list[float]) -> np.ndarray:
    return sum(w * a.astype(np.float64) for a, w in zip(arrays, weights)) / sum(weights)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


PASSPHRASE_ENV = {**os.environ, "SECUREFL_IDENTITY_PASSPHRASE": "test passphrase"}


def securefl_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `securefl ...` as a user would (with the test passphrase in the environment)."""
    return subprocess.run([sys.executable, "-m", "securefl", *args], capture_output=True, text=True, timeout=timeout,
                          env=PASSPHRASE_ENV if env is None else env)


def enrol_with_cli(out: Path, *site_ids: str) -> Path:
    """`securefl enrol SITE... --out out`: a CA, every party's files and federation.json."""
    result = securefl_cli("enrol", *site_ids, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def tls_args(enrolment: Path, party_id: str) -> list[str]:
    return ["--tls-cert", str(enrolment / f"{party_id}.tls.crt"), "--tls-key", str(enrolment / f"{party_id}.tls.key"),
            "--tls-ca", str(enrolment / "ca.crt")]
@pytest.fixture(scope="module")
def secret(request) -> SecretContext:
    """An HE key for the test module's `PRESET`."""
    return SecretContext.generate(request.module.PRESET)


@pytest.fixture(scope="module")
def public(secret) -> ts.Context:
    return load_public_context(secret.public_bytes)
