"""The federation file: what every party pins out of band, and loads instead of trusting the
aggregator.

    {"version": 1, "name": "...",
     "sites": {"hospital-a": "<Ed25519 public key, hex>", ...},
     "aggregator": {"id": "aggregator", "public_key": "<hex>"},
     "keyholder": {"id": "keyholder", "public_key": "<hex>"},      (absent: no key-holder)
     "operators": {"operator": "<hex>"},
     "ca_certificate": "-----BEGIN CERTIFICATE-----...",            (absent: an existing PKI)
     "security": {"dropout_fraction": 0.1, "corrupt_fraction": 0.1, "value_bound": 10.0,
                  "max_weight": 1000.0, "min_participants": 2, "precision_bits": null},
     "revoked_certificates": ["<serial, hex>", ...]}

Security: the roster decides whose signatures count; the aggregator key makes an
acknowledgement a proof (a client checks it against this key, never against one the aggregator
sends); the key-holder key signs its key epochs, so clients follow its key rotations without
re-pinning and never take a key the aggregator made up; the security parameters size the
masking graph and the fixed-point range, so they come from here and never from the aggregator.
A party id is unique in the federation, case-insensitively (certificate names compare so)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import InvalidInput, PermissionDenied
from .identity import Identity, Roster, check_identifier, raw_public_key, signature_valid
from .pki import AGGREGATOR, KEYHOLDER, OPERATOR, SITE, PartyName

FORMAT_VERSION = 1


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SecurityParameters:
    """Parameters that decide what a malicious aggregator or coalition can learn. SecAgg+:
    tolerated dropout and corrupt fractions (size the neighbour graph and the Shamir threshold),
    the clipping bound of update values and the largest weight (fix the fixed-point range), and
    the fewest participants a client takes part with. The HE schemes' key-holder takes the same
    bounds, and `precision_bits` (bits of each client's value in bfv's packing; None: its
    default, 12)."""

    dropout_fraction: float = 0.1
    corrupt_fraction: float = 0.1
    value_bound: float = 10.0
    max_weight: float = 1000.0
    min_participants: int = 2
    precision_bits: int | None = None

    def __post_init__(self) -> None:
        for name in ("dropout_fraction", "corrupt_fraction"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value < 0.5:
                raise InvalidInput(f"field 'security.{name}' must be a number in [0, 0.5), got {value!r:.40}")
        for name in ("value_bound", "max_weight"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 < value < 1e12:
                raise InvalidInput(f"field 'security.{name}' must be a positive number below 1e12, got {value!r:.40}")
        if not _is_int(self.min_participants) or self.min_participants < 2:
            raise InvalidInput(f"field 'security.min_participants' must be an integer of at least 2, "
                               f"got {self.min_participants!r:.40}")
        if self.precision_bits is not None and not (_is_int(self.precision_bits) and 1 <= self.precision_bits <= 62):
            raise InvalidInput(f"field 'security.precision_bits' must be null or an integer in [1, 62], "
                               f"got {self.precision_bits!r:.40}")

    @classmethod
    def from_json(cls, data: Any) -> SecurityParameters:
        if not isinstance(data, dict):
            raise InvalidInput("field 'security' must be an object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"field 'security.{unknown[0]}' is not a security parameter "
                               f"(known: {', '.join(sorted(known))})")
        return cls(**data)


@dataclass(frozen=True)
class PartyKey:
    """A service party (aggregator, key-holder) and its long-term Ed25519 public key."""

    party_id: str
    public_key: bytes

    def verify(self, signature: bytes, message: bytes) -> bool:
        return signature_valid(self.public_key, signature, message)

    def matches(self, identity: Identity) -> bool:
        return identity.client_id == self.party_id and identity.public_bytes == self.public_key


@dataclass(frozen=True)
class Federation:
    name: str
    sites: Roster
    aggregator: PartyKey
    keyholder: PartyKey | None = None
    operators: dict[str, bytes] = field(default_factory=dict)
    ca_certificate: bytes | None = None
    security: SecurityParameters = SecurityParameters()
    revoked_certificates: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        ids = [*self.sites.ids(), self.aggregator.party_id, *self.operators]
        if self.keyholder is not None:
            ids.append(self.keyholder.party_id)
        seen: set[str] = set()
        for party_id in ids:
            if party_id.lower() in seen:
                raise InvalidInput(f"party id {party_id!r} is used twice (ids are unique, case-insensitively)")
            seen.add(party_id.lower())

    @classmethod
    def in_process(cls, sites: list[Identity], security: SecurityParameters = SecurityParameters()) -> Federation:
        """These sites with a throwaway aggregator key: for runs without a network or an
        enrolment (in-process protocol runs, benchmarks of a scheme's cryptography)."""
        aggregator = Identity.generate("aggregator")
        return cls("in-process", Roster.of(sites), PartyKey(aggregator.client_id, aggregator.public_bytes),
                   security=security)

    @property
    def roster(self) -> Roster:
        return self.sites

    def party(self, role: str) -> PartyName:
        """The name of the aggregator or key-holder, as their certificates carry it."""
        key = {AGGREGATOR: self.aggregator, KEYHOLDER: self.keyholder}[role]
        if key is None:
            raise InvalidInput(f"this federation has no {role}")
        return PartyName(role, key.party_id)

    def check_peer(self, party: PartyName, serial: int) -> None:
        """Raise PermissionDenied unless `party` is enrolled in this role and its certificate
        (by serial number) was not revoked."""
        if serial in self.revoked_certificates:
            raise PermissionDenied(f"the certificate of {party} (serial {serial:x}) is revoked")
        enrolled = {
            SITE: party.party_id in self.sites,
            AGGREGATOR: party.party_id == self.aggregator.party_id,
            KEYHOLDER: self.keyholder is not None and party.party_id == self.keyholder.party_id,
            OPERATOR: party.party_id in self.operators,
        }[party.role]
        if not enrolled:
            raise PermissionDenied(f"{party} is not enrolled in this federation")

    # -- the file ----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> Federation:
        """Parse and validate; any problem raises InvalidInput naming the file and the field."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidInput(f"{path}: cannot read the federation file: {exc.strerror}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"{path}: not a JSON federation file: {str(exc).splitlines()[0]}") from None
        try:
            return cls.from_json(data)
        except InvalidInput as exc:
            raise InvalidInput(f"{path}: {exc}") from None

    @classmethod
    def from_json(cls, data: Any) -> Federation:
        if not isinstance(data, dict):
            raise InvalidInput("a federation file holds a JSON object")
        if data.get("version") != FORMAT_VERSION:
            raise InvalidInput(f"field 'version' must be {FORMAT_VERSION}, got {data.get('version')!r:.20}")
        ca = data.get("ca_certificate")
        if ca is not None and (not isinstance(ca, str) or "BEGIN CERTIFICATE" not in ca):
            raise InvalidInput("field 'ca_certificate' must be a PEM certificate or absent")
        revoked = data.get("revoked_certificates", [])
        if not isinstance(revoked, list) or not all(isinstance(s, str) for s in revoked):
            raise InvalidInput("field 'revoked_certificates' must be a list of hex serial numbers")
        name = data.get("name", "")
        if not isinstance(name, str):
            raise InvalidInput("field 'name' must be a string")
        return cls(
            name=name,
            sites=Roster(_key_map(data.get("sites"), "sites", required=True)),
            aggregator=_party_key(data.get("aggregator"), "aggregator"),
            keyholder=_party_key(data["keyholder"], "keyholder") if data.get("keyholder") is not None else None,
            operators=_key_map(data.get("operators", {}), "operators"),
            ca_certificate=ca.encode() if ca else None,
            security=SecurityParameters.from_json(data.get("security", {})),
            revoked_certificates=frozenset(_hex_int(s, "revoked_certificates") for s in revoked),
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": FORMAT_VERSION, "name": self.name,
            "sites": {cid: key.hex() for cid, key in self.sites.public_keys().items()},
            "aggregator": {"id": self.aggregator.party_id, "public_key": self.aggregator.public_key.hex()},
        }
        if self.keyholder is not None:
            data["keyholder"] = {"id": self.keyholder.party_id, "public_key": self.keyholder.public_key.hex()}
        data["operators"] = {oid: key.hex() for oid, key in self.operators.items()}
        if self.ca_certificate is not None:
            data["ca_certificate"] = self.ca_certificate.decode()
        data["security"] = dataclasses.asdict(self.security)
        data["revoked_certificates"] = [f"{serial:x}" for serial in sorted(self.revoked_certificates)]
        return data

    def save(self, path: Path) -> None:
        """Public data: written atomically, readable by all."""
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        partial.replace(path)


def _public_key(value: Any, where: str) -> bytes:
    try:
        key = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        key = None
    if key is None or len(key) != 32:
        raise InvalidInput(f"field '{where}' must be a 32-byte Ed25519 public key in hex")
    try:
        return raw_public_key(Ed25519PublicKey.from_public_bytes(key))
    except ValueError:
        raise InvalidInput(f"field '{where}' is not a valid Ed25519 public key") from None


def _key_map(value: Any, where: str, required: bool = False) -> dict[str, bytes]:
    if not isinstance(value, dict) or (required and not value):
        raise InvalidInput(f"field '{where}' must be a {'non-empty ' if required else ''}object of id -> public key")
    keys = {}
    for party_id, key in value.items():
        try:
            check_identifier(party_id, "id")
        except InvalidInput as exc:
            raise InvalidInput(f"field '{where}': {exc}") from None
        keys[party_id] = _public_key(key, f"{where}.{party_id}")
    return keys


def _party_key(value: Any, where: str) -> PartyKey:
    if not isinstance(value, dict) or set(value) != {"id", "public_key"}:
        raise InvalidInput(f"field '{where}' must be an object with 'id' and 'public_key'")
    try:
        party_id = check_identifier(value["id"], "id")
    except InvalidInput as exc:
        raise InvalidInput(f"field '{where}.id': {exc}") from None
    return PartyKey(party_id, _public_key(value["public_key"], f"{where}.public_key"))


def _hex_int(value: str, where: str) -> int:
    try:
        return int(value, 16)
    except ValueError:
        raise InvalidInput(f"field '{where}' holds {value!r:.40}, not a hex serial number") from None
