"""The federation's certificates: a CA, party certificates that bind a securefl id and role,
certificate signing requests, and reading the party back out of a peer's certificate.

Every party certificate carries two names, both derived from its (role, id):

* the URI `securefl://<role>/<id>`: what a server reads from the TLS peer to know who calls;
* the DNS name `<id>.<role>.securefl`: what a client checks the server's certificate against
  (gRPC's hostname check, with the target name set to it), so a client that dials "the
  aggregator" refuses any other party of the same CA, whatever address it dialled.

Keys are ECDSA P-256 (accepted by gRPC's BoringSSL in TLS 1.2 and 1.3); the CA signs with
SHA-256. The CA builds each certificate itself from the public key of a request whose
signature it checked: nothing else of a CSR (its names, its extensions) is copied."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import InvalidInput
from .identity import check_identifier

SITE, AGGREGATOR, KEYHOLDER, OPERATOR = "site", "aggregator", "keyholder", "operator"
ROLES = (SITE, AGGREGATOR, KEYHOLDER, OPERATOR)
URI_SCHEME = "securefl"
_URI = re.compile(r"^securefl://([a-z]+)/([A-Za-z0-9][A-Za-z0-9._-]{0,63})$")
CA_DAYS, PARTY_DAYS = 3650, 825


@dataclass(frozen=True)
class PartyName:
    """Who a certificate names: a role of ROLES and a securefl id."""

    role: str
    party_id: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}, got {self.role!r:.40}")
        check_identifier(self.party_id, f"{self.role} id")

    @property
    def uri(self) -> str:
        return f"{URI_SCHEME}://{self.role}/{self.party_id}"

    @property
    def dns_name(self) -> str:
        return f"{self.party_id}.{self.role}.securefl"

    def __str__(self) -> str:
        return f"{self.role} {self.party_id}"


def new_tls_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def create_ca(name: str, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """A self-signed CA that may sign party certificates only (path length 0)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"securefl federation CA {name}")])
    now = _now()
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def issue(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, party: PartyName, public_key,
          days: int = PARTY_DAYS) -> x509.Certificate:
    """A certificate for `party`'s TLS key, usable as TLS server and client."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
        raise InvalidInput("party TLS keys must be ECDSA P-256")
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party.party_id),
                                 x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, party.role)]))
        .issuer_name(ca.subject).public_key(public_key).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(party.uri),
                                                    x509.DNSName(party.dns_name)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def party_of(certificate: x509.Certificate) -> PartyName:
    """The securefl party a certificate names (its one `securefl://` URI)."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise InvalidInput("the certificate names no securefl party (no subject alternative name)") from None
    uris = [u for u in names.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(f"{URI_SCHEME}:")]
    if len(uris) != 1 or not (match := _URI.match(uris[0])):
        raise InvalidInput(f"the certificate must name exactly one party as securefl://<role>/<id>, got {uris!r:.120}")
    return PartyName(match.group(1), match.group(2))


def signing_request(party: PartyName, key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party.party_id)]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(party.uri)]), critical=False)
        .sign(key, hashes.SHA256())
    )


def load_signing_request(pem: bytes) -> x509.CertificateSigningRequest:
    """Parse a CSR and check that it is signed by the key it carries (proof of possession)."""
    try:
        request = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise InvalidInput(f"not a PEM certificate signing request: {exc}") from None
    if not request.is_signature_valid:
        raise InvalidInput("the certificate signing request's signature does not verify")
    return request


def load_certificates(pem: bytes, what: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise InvalidInput(f"{what} is not a PEM certificate") from None
    return certificates


def pem(certificate: x509.Certificate | x509.CertificateSigningRequest) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
