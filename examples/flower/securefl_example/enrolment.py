"""Enrolment for a local simulation only.

In a deployment each site keeps its own identity and TLS files (from `securefl enrol`) and
gives their paths and the federation file through `flower-supernode --node-config`; nobody else
ever sees its keys. A local simulation runs every node on this machine from one run config, so
the ServerApp enrols up to `sites` simulated sites (and the aggregator and key-holder parties a
bfv or ckks run needs) the first time, as `securefl enrol federation` would: private files 0600,
encrypted under SECUREFL_IDENTITY_PASSPHRASE. A simulated node beyond them has no identity file
and is left out, with an error saying which setting it lacks."""

from __future__ import annotations

import os
from pathlib import Path

from securefl.enrolment import FEDERATION_FILE, create_federation, write_federation
from securefl.errors import InvalidInput
from securefl.federation import Federation
from securefl.keyfiles import passphrase


def enrol_simulated_sites(directory: Path, sites: int) -> Path:
    """The federation file of the simulated sites, enrolled on the first run."""
    federation = directory / FEDERATION_FILE
    if federation.exists():
        if len(Federation.load(federation).roster) != sites:
            raise InvalidInput(f"{directory} enrols another number of sites; remove it to enrol {sites}")
        return federation
    if directory.exists() and any(directory.iterdir()):
        raise InvalidInput(f"{directory} holds files but no {FEDERATION_FILE} (an older or interrupted enrolment); "
                           "remove it to enrol the simulated sites anew")
    try:
        secret = passphrase("the simulated sites' enrolment")
    except InvalidInput as error:  # the variable is read where Flower's local SuperLink started
        raise InvalidInput(f"{error} before Flower's local SuperLink starts (a running one keeps the "
                           "environment it started with: stop it, then run again)") from None
    # Enrolled beside it, then renamed into place: an interrupted run leaves no half enrolment.
    partial = directory.with_name(f"{directory.name}.partial-{os.getpid()}")
    write_federation(partial, create_federation([f"site-{i}" for i in range(sites)], name="flower-example"), secret)
    partial.replace(directory)
    return federation
