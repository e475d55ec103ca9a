"""What a node takes from its own configuration: its identity file and its pins.

In a deployment they belong in the node config (`flower-supernode --node-config
"securefl-identity='…' securefl-federation='…'"`): the run config comes from whoever starts the
run, which may be the aggregator's operator, and a pin chosen by the aggregator protects
nothing. A local simulation has no per-node config, so there the run config may name them, with
`{partition-id}` standing for the node's partition (one identity file per simulated node). The
identity file is encrypted; its passphrase comes from SECUREFL_IDENTITY_PASSPHRASE, as for
every securefl party.

The opened identity and the parsed federation file are kept in this process between messages
(a simulation runs many messages in one worker process; opening an identity costs a key
derivation): the identity key is in this process's memory while it handles messages anyway,
and it never enters Flower's context."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context

from ...errors import InvalidInput
from ...federation import Federation
from ...identity import Identity
from ...schemes import ClientPins

IDENTITY = "securefl-identity"
FEDERATION = "securefl-federation"
ALLOW_PLAIN = "securefl-allow-plain"  # true: accept the unprotected plain scheme (measurements only)
_HINT = "flower-supernode --node-config \"{key}='…'\" (or the run config of a local simulation)"
_opened: dict[tuple[Path, int], Identity | Federation] = {}


def _raw(context: Context, key: str) -> object:
    for config in (context.node_config, context.run_config):
        if config.get(key) not in (None, ""):
            return config[key]
    return None


def _path(context: Context, key: str, what: str) -> Path:
    value = _raw(context, key)
    if value is None:
        raise InvalidInput(f"securefl_mod needs {what}: set {key} with " + _HINT.format(key=key))
    if not isinstance(value, str):
        raise InvalidInput(f"{key} must be a string, got {type(value).__name__}")
    path = Path(value.replace("{partition-id}", str(context.node_config.get("partition-id", "")))).expanduser()
    if not path.is_file():
        raise InvalidInput(f"{key} names {path}, which is not a file ({what})")
    return path


def _opened_once(path: Path, load):  # noqa: ANN001, ANN202
    key = (path.resolve(), path.stat().st_mtime_ns)
    if key not in _opened:
        _opened[key] = load(path)
    return _opened[key]


def identity(context: Context) -> Identity:
    return _opened_once(_path(context, IDENTITY, "this site's identity file (securefl enrol)"), Identity.load)


def pins(context: Context) -> ClientPins:
    """What this node pins: the federation file (roster, the aggregator's and the key-holder's
    keys, security parameters), and whether it accepts the plain scheme."""
    federation = _opened_once(_path(context, FEDERATION, "the federation file it pins (federation.json)"),
                              Federation.load)
    return ClientPins(federation=federation, allow_plain=_raw(context, ALLOW_PLAIN) in (True, "true"))
