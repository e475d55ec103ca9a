"""Enrolment: the federation CA, each party's keys and certificate, and federation.json.

Two ways, one result:

* central (`securefl enrol SITE...`): the federation operator creates everything and hands each
  party its files (keys encrypted under the operator's passphrase);
* at the site (`securefl enrol request` there, `securefl enrol sign` at the operator): the site
  generates its Ed25519 identity and TLS key locally and sends only a request (a CSR and its
  Ed25519 public key, signed by both keys); the operator checks both signatures, issues the
  certificate and adds the public key to federation.json. Private keys never travel.

Files of a party `<id>`: `<id>.identity.json` (Ed25519, encrypted), `<id>.tls.key` (ECDSA P-256,
encrypted PKCS#8), `<id>.tls.crt`; of the operator: `ca.key` (encrypted), `ca.crt`,
`federation.json`. Every private file is created 0600 and never overwritten."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import InvalidInput, VerificationFailed
from .federation import Federation, PartyKey, SecurityParameters
from .identity import Identity, Roster
from .keyfiles import read_private, write_private
from .pki import (
    AGGREGATOR, KEYHOLDER, OPERATOR, SITE, PartyName, create_ca, issue, load_certificates, load_signing_request,
    new_tls_key, pem, signing_request,
)
from .tls import TlsConfig

_REQUEST_TAG = b"securefl/enrolment-request/v1"
CA_KEY, CA_CERT, FEDERATION_FILE = "ca.key", "ca.crt", "federation.json"


@dataclass
class EnrolledParty:
    """One party's private material, as created (in memory)."""

    name: PartyName
    identity: Identity
    tls_key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: x509.Certificate

    def tls(self, ca: x509.Certificate) -> TlsConfig:
        return TlsConfig.of(self.certificate, self.tls_key, ca)

    def files(self, directory: Path) -> list[Path]:
        return [directory / f"{self.name.party_id}.{suffix}" for suffix in ("identity.json", "tls.key", "tls.crt")]


@dataclass
class NewFederation:
    ca: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey = field(repr=False)
    federation: Federation
    parties: list[EnrolledParty]

    def party(self, role: str, party_id: str) -> EnrolledParty:
        return next(p for p in self.parties if p.name == PartyName(role, party_id))


def create_federation(site_ids: list[str], *, name: str = "securefl", aggregator_id: str = "aggregator",
                      keyholder_id: str | None = "keyholder", operator_ids: tuple[str, ...] = ("operator",),
                      security: SecurityParameters = SecurityParameters()) -> NewFederation:
    """A CA, and keys and a certificate for every site, the aggregator, the key-holder and the
    operators, with the federation that pins them."""
    names = [PartyName(SITE, s) for s in site_ids] + [PartyName(AGGREGATOR, aggregator_id)]
    names += [PartyName(KEYHOLDER, keyholder_id)] if keyholder_id else []
    names += [PartyName(OPERATOR, o) for o in operator_ids]
    ca_key = new_tls_key()
    ca = create_ca(name, ca_key)
    parties = []
    for party in names:
        identity, tls_key = Identity.generate(party.party_id), new_tls_key()
        parties.append(EnrolledParty(party, identity, tls_key, issue(ca, ca_key, party, tls_key.public_key())))

    def key_of(role: str, party_id: str) -> PartyKey:
        return PartyKey(party_id, next(p.identity.public_bytes for p in parties if p.name == PartyName(role, party_id)))

    federation = Federation(
        name=name, sites=Roster.of([p.identity for p in parties if p.name.role == SITE]),
        aggregator=key_of(AGGREGATOR, aggregator_id), keyholder=key_of(KEYHOLDER, keyholder_id) if keyholder_id else None,
        operators={p.name.party_id: p.identity.public_bytes for p in parties if p.name.role == OPERATOR},
        ca_certificate=pem(ca), security=security,
    )
    return NewFederation(ca, ca_key, federation, parties)


def issue_credentials(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, party: PartyName) -> TlsConfig:
    """A new TLS key and its certificate for `party`, in memory."""
    key = new_tls_key()
    return TlsConfig.of(issue(ca, ca_key, party, key.public_key()), key, ca)


def ephemeral_credentials(*parties: PartyName) -> list[TlsConfig]:
    """A throwaway CA and TLS material for each party, in memory only: for runs on localhost
    (securefl.simulation.local_psi) that should still take the deployed, mutually authenticated path."""
    ca_key = new_tls_key()
    ca = create_ca("ephemeral", ca_key)
    return [issue_credentials(ca, ca_key, party) for party in parties]


def encrypted_pem(key: ec.EllipticCurvePrivateKey, passphrase: str) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(passphrase.encode()))


def write_party(directory: Path, party: EnrolledParty, passphrase: str) -> list[Path]:
    identity_file, key_file, certificate_file = party.files(directory)
    party.identity.save(identity_file, passphrase)
    write_private(key_file, encrypted_pem(party.tls_key, passphrase))
    _write_public(certificate_file, pem(party.certificate))
    return [identity_file, key_file, certificate_file]


def write_federation(directory: Path, new: NewFederation, passphrase: str) -> None:
    """Everything of a central enrolment: the operator's CA files, federation.json, every
    party's files."""
    directory.mkdir(parents=True, exist_ok=True)
    write_private(directory / CA_KEY, encrypted_pem(new.ca_key, passphrase))
    _write_public(directory / CA_CERT, pem(new.ca))
    for party in new.parties:
        write_party(directory, party, passphrase)
    new.federation.save(directory / FEDERATION_FILE)


# -- enrolment at the site ---------------------------------------------------------------------


def _request_message(party: PartyName, identity_key: bytes, csr_der: bytes) -> bytes:
    fields = [party.role.encode(), party.party_id.encode(), identity_key, csr_der]
    return _REQUEST_TAG + b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def write_request(directory: Path, party: PartyName, passphrase: str) -> Path:
    """At the site: create its identity and TLS key (kept here, encrypted) and a request to send
    to the federation operator, signed with both keys."""
    directory.mkdir(parents=True, exist_ok=True)
    identity, tls_key = Identity.generate(party.party_id), new_tls_key()
    csr = signing_request(party, tls_key)
    csr_der = csr.public_bytes(serialization.Encoding.DER)
    request = {
        "role": party.role, "id": party.party_id, "identity_public_key": identity.public_bytes.hex(),
        "csr": pem(csr).decode(),
        "signature": identity.sign(_request_message(party, identity.public_bytes, csr_der)).hex(),
    }
    identity.save(directory / f"{party.party_id}.identity.json", passphrase)
    write_private(directory / f"{party.party_id}.tls.key", encrypted_pem(tls_key, passphrase))
    path = directory / f"{party.party_id}.request.json"
    _write_public(path, json.dumps(request, indent=2).encode())
    return path


def read_request(path: Path) -> tuple[PartyName, bytes, x509.CertificateSigningRequest]:
    """Check a request: the CSR is signed by its TLS key, and the whole by the identity key."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read the request: {exc.strerror}") from None
    except ValueError:
        raise InvalidInput(f"{path}: not an enrolment request (not JSON)") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: an enrolment request holds a JSON object")
    fields = ("role", "id", "identity_public_key", "csr", "signature")
    for field in fields:
        if not isinstance(data.get(field), str):
            raise InvalidInput(f"{path}: field '{field}' must be a string")
    try:
        party = PartyName(data["role"], data["id"])
        identity_key = bytes.fromhex(data["identity_public_key"])
        csr = load_signing_request(data["csr"].encode())
        signature = bytes.fromhex(data["signature"])
    except (InvalidInput, ValueError) as exc:
        raise InvalidInput(f"{path}: not a valid enrolment request: {exc}") from None
    roster = Roster({party.party_id: identity_key})
    try:
        roster.verify(party.party_id, _request_message(party, identity_key, csr.public_bytes(serialization.Encoding.DER)),
                      signature)
    except VerificationFailed:
        raise VerificationFailed(f"{path}: the request is not signed by the identity key it carries") from None
    return party, identity_key, csr


def sign_request(request_path: Path, directory: Path, passphrase: str, replace: bool = False) -> Path:
    """At the operator: issue the certificate for a checked request and enrol its identity key
    in `directory`/federation.json. A party already enrolled with another key is refused unless
    `replace` (a lost key: its old certificate is revoked)."""
    party, identity_key, csr = read_request(request_path)
    federation = Federation.load(directory / FEDERATION_FILE)
    ca = load_certificates((directory / CA_CERT).read_bytes(), str(directory / CA_CERT))[0]
    ca_key = _load_ca_key(directory / CA_KEY, passphrase)
    current = _enrolled_key(federation, party)
    certificate_path = directory / f"{party.party_id}.tls.crt"
    if current is not None and current != identity_key and not replace:
        raise InvalidInput(f"{party} is already enrolled with another key; pass --replace to revoke the old "
                           "certificate and enrol the new key")
    if current is not None and certificate_path.exists():
        federation = revoked(federation, load_certificates(certificate_path.read_bytes(), str(certificate_path))[0])
    certificate = issue(ca, ca_key, party, csr.public_key())
    _write_public(certificate_path, pem(certificate), replace=True)
    _enrol(federation, party, identity_key).save(directory / FEDERATION_FILE)
    return certificate_path


def revoke(directory: Path, party: PartyName) -> Federation:
    """Remove a party from federation.json and revoke its certificate (by serial)."""
    federation = Federation.load(directory / FEDERATION_FILE)
    if _enrolled_key(federation, party) is None:
        raise InvalidInput(f"{party} is not enrolled")
    if party.role in (AGGREGATOR, KEYHOLDER):
        raise InvalidInput(f"the {party.role} cannot be removed, only replaced: enrol a new key with --replace")
    certificate_path = directory / f"{party.party_id}.tls.crt"
    if certificate_path.exists():
        federation = revoked(federation, load_certificates(certificate_path.read_bytes(), str(certificate_path))[0])
    if party.role == SITE:
        keys = {k: v for k, v in federation.sites.public_keys().items() if k != party.party_id}
        federation = dataclasses.replace(federation, sites=Roster(keys))
    else:
        federation = dataclasses.replace(
            federation, operators={k: v for k, v in federation.operators.items() if k != party.party_id})
    federation.save(directory / FEDERATION_FILE)
    return federation


def revoked(federation: Federation, certificate: x509.Certificate) -> Federation:
    return dataclasses.replace(
        federation, revoked_certificates=federation.revoked_certificates | {certificate.serial_number})


def _enrolled_key(federation: Federation, party: PartyName) -> bytes | None:
    if party.role == SITE:
        return federation.sites.public_keys().get(party.party_id)
    if party.role == OPERATOR:
        return federation.operators.get(party.party_id)
    key = federation.aggregator if party.role == AGGREGATOR else federation.keyholder
    return key.public_key if key is not None and key.party_id == party.party_id else None


def _enrol(federation: Federation, party: PartyName, identity_key: bytes) -> Federation:
    if party.role == SITE:
        return dataclasses.replace(federation, sites=Roster({**federation.sites.public_keys(), party.party_id: identity_key}))
    if party.role == OPERATOR:
        return dataclasses.replace(federation, operators={**federation.operators, party.party_id: identity_key})
    return dataclasses.replace(federation, **{party.role: PartyKey(party.party_id, identity_key)})


def _load_ca_key(path: Path, passphrase: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(read_private(path), password=passphrase.encode())
    except (ValueError, TypeError):
        raise VerificationFailed(f"cannot open {path}: wrong passphrase or corrupted file") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput(f"{path} is not an ECDSA CA key")
    return key


def _write_public(path: Path, data: bytes, replace: bool = False) -> None:
    if path.exists() and not replace:
        raise InvalidInput(f"{path} already exists; refusing to overwrite it")
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.replace(path)

