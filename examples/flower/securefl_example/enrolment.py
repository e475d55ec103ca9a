"""Enrolment for a local simulation only.

In a deployment each site keeps its own `*.identity.json` (from `securefl enrol`) and gives
its path and the roster through `flower-supernode --node-config`; nobody else ever sees the
identity key. A local simulation runs every node on this machine from one run config, so the
ServerApp creates identities for up to `sites` simulated nodes here (files 0600) before the
first round, the first time or when that number changes. A simulated node beyond them has no
identity file and is left out, with an error saying which setting it lacks."""

from __future__ import annotations

from pathlib import Path

from securefl.identity import Roster
from securefl.simulation import enrol


def enrol_simulated_sites(directory: Path, sites: int) -> None:
    roster = directory / "roster.json"
    if not (roster.exists() and len(Roster.load(roster)) == sites):
        enrol(directory, [f"site-{i}" for i in range(sites)])
