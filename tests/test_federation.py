"""The federation file, enrolment (central and at the site) and secret files at rest."""

from __future__ import annotations

import json
import os
import stat

import pytest

from securefl.enrolment import (
    CA_CERT, FEDERATION_FILE, create_federation, revoke, sign_request, write_federation, write_request,
)
from securefl.errors import InvalidInput, VerificationFailed
from securefl.federation import Federation, SecurityParameters
from securefl.he.keys import SecretContext
from securefl.he.presets import get_preset
from securefl.identity import Identity, Roster
from securefl.keyfiles import write_private
from securefl.masking.client import SecAggParticipant
from securefl.masking.policy import secagg_config
from securefl.pki import SITE, PartyName, load_certificates, party_of
from securefl.rounds.store import KeyHolderStore, RoundStore
from securefl.tls import TlsConfig
from securefl.v1 import secagg_pb2
from tests.conftest import securefl_cli

PASSPHRASE = "test passphrase"


@pytest.fixture(scope="module")
def operator_dir(tmp_path_factory):
    """A central enrolment written to disk, as `securefl enrol` does."""
    directory = tmp_path_factory.mktemp("enrolment")
    write_federation(directory, create_federation(["hospital-a", "hospital-b"]), PASSPHRASE)
    return directory


# -- the federation file -------------------------------------------------------------------------


def test_the_federation_file_round_trips(operator_dir):
    federation = Federation.load(operator_dir / FEDERATION_FILE)
    assert Federation.from_json(json.loads(json.dumps(federation.to_json()))).to_json() == federation.to_json()
    assert federation.security == SecurityParameters(0.1, 0.1, 10.0, 1000.0, 2, None)


def _mutations():
    base = create_federation(["hospital-a", "Hospital-B"]).federation.to_json()
    key = base["sites"]["hospital-a"]

    def edit(change):
        data = json.loads(json.dumps(base))
        change(data)
        return data

    return {
        "version": (edit(lambda d: d.update(version=2)), "'version'"),
        "no sites": (edit(lambda d: d.update(sites={})), "'sites'"),
        "short key": (edit(lambda d: d["sites"].update({"hospital-a": key[:-2]})), "'sites.hospital-a'"),
        "bad site id": (edit(lambda d: d["sites"].update({"../x": key})), "'sites'"),
        "aggregator": (edit(lambda d: d.update(aggregator={"id": "aggregator"})), "'aggregator'"),
        "negative bound": (edit(lambda d: d["security"].update(value_bound=-1)), "'security.value_bound'"),
        "string fraction": (edit(lambda d: d["security"].update(dropout_fraction="0.1")), "'security.dropout_fraction'"),
        "fraction too large": (edit(lambda d: d["security"].update(corrupt_fraction=0.5)), "'security.corrupt_fraction'"),
        "one participant": (edit(lambda d: d["security"].update(min_participants=1)), "'security.min_participants'"),
        "unknown parameter": (edit(lambda d: d["security"].update(threshold=3)), "'security.threshold'"),
        "precision": (edit(lambda d: d["security"].update(precision_bits=99)), "'security.precision_bits'"),
        "ca": (edit(lambda d: d.update(ca_certificate="not a certificate")), "'ca_certificate'"),
        "revoked": (edit(lambda d: d.update(revoked_certificates=["xyz"])), "'revoked_certificates'"),
        "same id twice": (edit(lambda d: d["sites"].update({"hospital-b": key})), "used twice"),
    }


@pytest.mark.parametrize("case", _mutations())
def test_a_malformed_federation_file_gives_one_line_naming_the_file_and_the_field(tmp_path, case):
    data, field = _mutations()[case]
    path = tmp_path / "federation.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidInput) as refused:
        Federation.load(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and field in message and "\n" not in message


@pytest.mark.parametrize("text", ["{", "[]", "", "\xff"])
def test_a_federation_file_that_is_not_a_json_object_is_refused_in_one_line(tmp_path, text):
    path = tmp_path / "federation.json"
    path.write_text(text, encoding="latin-1")
    with pytest.raises(InvalidInput) as refused:
        Federation.load(path)
    assert str(refused.value).startswith(f"{path}: ") and "\n" not in str(refused.value)


def test_the_cli_reports_a_malformed_federation_file_in_one_line(tmp_path, operator_dir):
    data = json.loads((operator_dir / FEDERATION_FILE).read_text())
    data["security"]["max_weight"] = 0
    (tmp_path / "federation.json").write_text(json.dumps(data))
    result = securefl_cli("keyholder", "serve", "--federation", str(tmp_path / "federation.json"), "--insecure")
    assert result.returncode == 2
    error = result.stderr.strip()
    assert error.startswith("error:") and "federation.json: field 'security.max_weight'" in " ".join(error.split())


def test_clients_take_secagg_parameters_and_the_smallest_round_from_the_federation():
    identities = [Identity.generate(f"c{i}") for i in range(3)]
    roster = Roster.of(identities)
    config = secagg_config(SecurityParameters(), 3)
    participant = SecAggParticipant(identities[0], roster, config, SecurityParameters(min_participants=4), "r1")
    adverts = [SecAggParticipant(i, roster, config, SecurityParameters(), "r1").advertisement() for i in identities[1:]]
    participants = secagg_pb2.Participants(clients=[participant.advertisement(), *adverts])
    with pytest.raises(VerificationFailed, match="at least 4"):
        participant.accept_participants(participants)


# -- enrolment ----------------------------------------------------------------------------------


def test_central_enrolment_binds_each_certificate_to_its_party(operator_dir):
    for party_id, role in (("hospital-a", "site"), ("aggregator", "aggregator"), ("keyholder", "keyholder"),
                           ("operator", "operator")):
        certificate = load_certificates((operator_dir / f"{party_id}.tls.crt").read_bytes(), "certificate")[0]
        assert party_of(certificate) == PartyName(role, party_id)
        certificate.verify_directly_issued_by(load_certificates((operator_dir / CA_CERT).read_bytes(), "ca")[0])


def test_site_side_enrolment_sends_no_private_key_and_gets_a_certificate(tmp_path, operator_dir):
    site_dir = tmp_path / "site"
    request = write_request(site_dir, PartyName(SITE, "clinic-c"), "site passphrase")
    assert "PRIVATE" not in request.read_text()
    operator = tmp_path / "operator"
    operator.mkdir()
    for name in ("ca.key", "ca.crt", FEDERATION_FILE):
        (operator / name).write_bytes((operator_dir / name).read_bytes())
    (operator / "ca.key").chmod(0o600)
    certificate_path = sign_request(request, operator, PASSPHRASE)
    federation = Federation.load(operator / FEDERATION_FILE)
    identity = Identity.load(site_dir / "clinic-c.identity.json", "site passphrase")
    assert federation.roster.public_keys()["clinic-c"] == identity.public_bytes
    tls = TlsConfig.from_files(certificate_path, site_dir / "clinic-c.tls.key", operator / CA_CERT, "site passphrase")
    assert tls.party == PartyName(SITE, "clinic-c")

    with pytest.raises(InvalidInput, match="already enrolled"):  # a second request for the same id
        sign_request(write_request(tmp_path / "other", PartyName(SITE, "clinic-c"), "x"), operator, PASSPHRASE)
    old_serial = load_certificates(certificate_path.read_bytes(), "c")[0].serial_number
    sign_request(tmp_path / "other" / "clinic-c.request.json", operator, PASSPHRASE, replace=True)  # lost key
    replaced = Federation.load(operator / FEDERATION_FILE)
    assert old_serial in replaced.revoked_certificates
    assert replaced.roster.public_keys()["clinic-c"] != identity.public_bytes

    revoke(operator, PartyName(SITE, "clinic-c"))
    final = Federation.load(operator / FEDERATION_FILE)
    assert "clinic-c" not in final.roster and len(final.revoked_certificates) == 2


def test_a_request_whose_identity_key_was_swapped_is_refused(tmp_path, operator_dir):
    request = write_request(tmp_path, PartyName(SITE, "clinic-d"), "p")
    data = json.loads(request.read_text())
    data["identity_public_key"] = Identity.generate("clinic-d").public_bytes.hex()
    request.write_text(json.dumps(data))
    with pytest.raises(VerificationFailed, match="not signed by the identity key"):
        sign_request(request, operator_dir, PASSPHRASE)


# -- secrets at rest ------------------------------------------------------------------------------


@pytest.fixture
def open_umask():
    """Even with umask 000, secret files are created 0600."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_key_and_result_files_are_created_0600(tmp_path, open_umask):
    write_federation(tmp_path / "enrolment", create_federation(["hospital-a"]), PASSPHRASE)
    SecretContext.generate(get_preset("add-only-4096")).save(tmp_path / "keys.bin", PASSPHRASE)
    RoundStore(tmp_path / "aggregator.db").close()
    KeyHolderStore(tmp_path / "keyholder.db").close()
    secret_files = [tmp_path / "keys.bin", tmp_path / "aggregator.db", tmp_path / "keyholder.db",
                    tmp_path / "enrolment" / "ca.key"]
    secret_files += [tmp_path / "enrolment" / f"{party}.{suffix}" for party in ("hospital-a", "aggregator", "keyholder",
                     "operator") for suffix in ("identity.json", "tls.key")]
    for path in secret_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_key_file_is_never_overwritten(tmp_path):
    write_private(tmp_path / "key", b"first")
    with pytest.raises(InvalidInput, match="refusing to overwrite"):
        Identity.generate("alice").save(tmp_path / "key", PASSPHRASE)
    assert (tmp_path / "key").read_bytes() == b"first"


def test_world_readable_key_files_are_refused_at_load(operator_dir, tmp_path):
    for name in ("hospital-a.identity.json", "hospital-a.tls.key"):
        (tmp_path / name).write_bytes((operator_dir / name).read_bytes())
        (tmp_path / name).chmod(0o644)
    with pytest.raises(InvalidInput, match="accessible by group or others.*chmod 600"):
        Identity.load(tmp_path / "hospital-a.identity.json", PASSPHRASE)
    with pytest.raises(InvalidInput, match="accessible by group or others"):
        TlsConfig.from_files(operator_dir / "hospital-a.tls.crt", tmp_path / "hospital-a.tls.key",
                             operator_dir / CA_CERT, PASSPHRASE)
    SecretContext.generate(get_preset("add-only-4096")).save(tmp_path / "keys.bin", PASSPHRASE)
    (tmp_path / "keys.bin").chmod(0o640)
    with pytest.raises(InvalidInput, match="accessible by group or others"):
        SecretContext.load(tmp_path / "keys.bin", PASSPHRASE)
    (tmp_path / "round.db").touch(mode=0o644)
    (tmp_path / "round.db").chmod(0o644)
    with pytest.raises(InvalidInput, match="accessible by group or others"):
        RoundStore(tmp_path / "round.db")


def test_a_service_refuses_to_start_on_a_world_readable_identity(operator_dir, tmp_path):
    identity = tmp_path / "aggregator.identity.json"
    identity.write_bytes((operator_dir / "aggregator.identity.json").read_bytes())
    identity.chmod(0o644)
    result = securefl_cli("aggregator", "serve", "--federation", str(operator_dir / FEDERATION_FILE), "--identity",
                          str(identity), "--scheme", "plain", "--insecure", "--port", "0", "--db", str(tmp_path / "a.db"))
    assert result.returncode == 2 and "chmod 600" in result.stderr
