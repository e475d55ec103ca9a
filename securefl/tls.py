"""TLS material of one party: its certificate, its private key and the CA it trusts.

Used for mutual TLS on every channel (services/rpc.py turns it into gRPC credentials). The
private key file may be encrypted (as `securefl enrol` writes it; the passphrase comes from
SECUREFL_IDENTITY_PASSPHRASE or a prompt) or plain PEM from an existing PKI; either way it must
be readable by its owner only. The decrypted key lives in memory only: a TlsConfig refuses to
be pickled and never shows the key in its repr."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import InvalidInput, VerificationFailed
from .keyfiles import passphrase as ask_passphrase
from .keyfiles import read_private
from .pki import PartyName, load_certificates, party_of, pem


@dataclass(frozen=True, repr=False)
class TlsConfig:
    """PEM bytes. `server_name` overrides the name a client checks in a server's certificate
    (by default the securefl name of the party it means to reach, `<id>.<role>.securefl`)."""

    certificate: bytes
    private_key: bytes = field(repr=False)
    ca: bytes
    server_name: str | None = None

    def __post_init__(self) -> None:
        load_certificates(self.certificate, "the TLS certificate")
        load_certificates(self.ca, "the TLS CA")

    @classmethod
    def from_files(cls, certificate: Path, key: Path, ca: Path | bytes, passphrase: str | None = None,
                   server_name: str | None = None) -> TlsConfig:
        """Load PEM files; `ca` may be PEM bytes (e.g. the federation file's CA)."""
        try:
            certificate_pem = Path(certificate).read_bytes()
            ca_pem = ca if isinstance(ca, bytes) else Path(ca).read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {exc.filename}: {exc.strerror}") from None
        load_certificates(certificate_pem, str(certificate))
        load_certificates(ca_pem, "the federation file's CA" if isinstance(ca, bytes) else str(ca))
        key_pem = read_private(key)
        if b"ENCRYPTED" in key_pem:
            secret = passphrase or ask_passphrase(f"TLS key {key}")
            try:
                private = serialization.load_pem_private_key(key_pem, password=secret.encode())
            except (ValueError, TypeError):
                raise VerificationFailed(f"cannot open {key}: wrong passphrase or corrupted file") from None
        else:
            try:
                private = serialization.load_pem_private_key(key_pem, password=None)
            except (ValueError, TypeError):
                raise InvalidInput(f"{key}: not a PEM private key") from None
        return cls(certificate_pem, unencrypted_pem(private), ca_pem, server_name)

    @classmethod
    def of(cls, certificate, key: ec.EllipticCurvePrivateKey, ca) -> TlsConfig:
        """From in-memory objects (x509.Certificate and key), e.g. a freshly enrolled party."""
        return cls(pem(certificate), unencrypted_pem(key), pem(ca))

    @property
    def party(self) -> PartyName:
        """Whom the certificate names."""
        return party_of(load_certificates(self.certificate, "the TLS certificate")[0])

    def __reduce__(self):
        raise TypeError("TLS private keys cannot be pickled")

    def __repr__(self) -> str:
        return "TlsConfig(<certificate>, <key>, <ca>)"


def unencrypted_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as gRPC takes it. Only ever held in memory."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
