"""Enrolment for a local simulation only.

In a deployment each site keeps its own `*.identity.json` (from `securefl enrol`) and gives
its path and the roster through `flower-supernode --node-config`; nobody else ever sees the
identity key. A local simulation runs every node on this machine from one run config, so the
ServerApp creates one identity per simulated node here (files 0600) before the first round,
the first time or when the number of nodes changes."""

from __future__ import annotations

from pathlib import Path

from securefl.identity import Identity, Roster


def enrol_simulated_sites(directory: Path, nodes: int) -> None:
    roster_path = directory / "roster.json"
    if roster_path.exists() and len(Roster.load(roster_path)) == nodes:
        return
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    identities = [Identity.generate(f"site-{i}") for i in range(nodes)]
    for identity in identities:
        identity.save(directory / f"{identity.client_id}.identity.json")
    Roster.of(identities).save(roster_path)
