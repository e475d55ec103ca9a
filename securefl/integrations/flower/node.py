"""What a node takes from its own configuration: its identity file and its pins.

In a deployment they belong in the node config (`flower-supernode --node-config
"securefl-identity='…' securefl-roster='…'"`): the run config comes from whoever starts the run,
which may be the aggregator's operator, and a pin chosen by the aggregator protects nothing. A
local simulation has no per-node config, so there the run config may name them, with
`{partition-id}` standing for the node's partition (one identity file per simulated node)."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context

from ...errors import InvalidInput
from ...identity import Identity, Roster
from ...schemes import ClientPins

IDENTITY = "securefl-identity"
ROSTER = "securefl-roster"
KEYHOLDER_FINGERPRINT = "securefl-keyholder-fingerprint"
ALLOW_PLAIN = "securefl-allow-plain"  # true: accept the unprotected plain scheme (measurements only)
_NODE_CONFIG_HINT = "flower-supernode --node-config \"{key}='…'\" (or the run config of a local simulation)"


def _raw(context: Context, key: str) -> object:
    for config in (context.node_config, context.run_config):
        if config.get(key) not in (None, ""):
            return config[key]
    return None


def _setting(context: Context, key: str) -> str | None:
    value = _raw(context, key)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"{key} must be a string, got {type(value).__name__}")
    return value.replace("{partition-id}", str(context.node_config.get("partition-id", ""))) if value else None


def _path(context: Context, key: str, what: str) -> Path | None:
    value = _setting(context, key)
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise InvalidInput(f"{key} names {path}, which is not a file ({what})")
    return path


def identity(context: Context) -> Identity:
    path = _path(context, IDENTITY, "this site's *.identity.json from `securefl enrol`")
    if path is None:
        raise InvalidInput(f"securefl_mod needs this node's identity file: set {IDENTITY} with "
                           + _NODE_CONFIG_HINT.format(key=IDENTITY))
    return Identity.load(path)


def pins(context: Context) -> ClientPins:
    """The pins this node has; the scheme refuses a session a needed pin is missing for, and
    `missing_pin_hint` says which setting provides it."""
    roster = _path(context, ROSTER, "the roster.json of enrolled sites")
    fingerprint = _setting(context, KEYHOLDER_FINGERPRINT)
    try:
        pin = bytes.fromhex(fingerprint) if fingerprint is not None else None
    except ValueError:
        raise InvalidInput(f"{KEYHOLDER_FINGERPRINT} must be hex (printed by `securefl keyholder serve`)") from None
    return ClientPins(keyholder_fingerprint=pin, roster=Roster.load(roster) if roster else None,
                      allow_plain=_raw(context, ALLOW_PLAIN) in (True, "true"))


def missing_pin_hint(pinned: ClientPins) -> str:
    """How to give this node the pins it lacks, for an error message."""
    missing = [key for key, value in ((ROSTER, pinned.roster), (KEYHOLDER_FINGERPRINT, pinned.keyholder_fingerprint))
               if value is None]
    if not missing:
        return ""
    return "; set " + " and ".join(_NODE_CONFIG_HINT.format(key=key) for key in missing)
