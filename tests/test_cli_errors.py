"""Every `securefl` subcommand, given each kind of bad input a user meets (a missing, unreadable
or malformed file, a wrong field type, an unknown scheme, a bad port, a missing or wrong
passphrase, a port in use, an unreachable service): no traceback, the documented exit code
(securefl.exitcodes), and a message naming the file and the field when a file is at fault."""

from __future__ import annotations

import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from securefl.exitcodes import CREDENTIALS, UNAVAILABLE, USAGE
from tests.conftest import PASSPHRASE_ENV, enrol_with_cli, securefl_cli

NO_PASSPHRASE = {k: v for k, v in PASSPHRASE_ENV.items() if not k.endswith("_PASSPHRASE")}


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    code: int
    says: tuple[str, ...]  # fragments of the error output
    env: dict | None = None


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """An enrolment, and next to it every kind of bad file."""
    root = tmp_path_factory.mktemp("cli")
    enrolment = enrol_with_cli(root / "enrolment", "hospital-a", "hospital-b")
    (root / "a-directory").mkdir()
    (root / "not-json.json").write_text("{ this is not json")
    federation = json.loads((enrolment / "federation.json").read_text())
    federation["security"]["value_bound"] = "ten"
    (root / "wrong-type.json").write_text(json.dumps(federation))
    for name, content in (("no-key.identity.json", {"client_id": "hospital-a"}),
                          ("bad-id.identity.json", {"client_id": 5, "key": "x"})):
        fd = os.open(root / name, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, json.dumps(content).encode())
        os.close(fd)
    (root / "bad.toml").write_text("port = \n")
    (root / "wrong-type.toml").write_text('federation = "enrolment/federation.json"\nmin_clients = "two"\n')
    (root / "not-pem.crt").write_text("not a certificate\n")
    (root / "request.json").write_text(json.dumps({"role": "site", "id": "hospital-d"}))
    (root / "ids.txt").write_text("a\nb\n")
    (root / "bad-ids.txt").write_bytes(b"a\n\xff\xfe\n")
    return root


def cases(root: Path, busy_port: int) -> list[Case]:
    e = root / "enrolment"
    fed = ("--federation", str(e / "federation.json"))
    agg_tls = ("--tls-cert", str(e / "aggregator.tls.crt"), "--tls-key", str(e / "aggregator.tls.key"))
    kh_tls = ("--tls-cert", str(e / "keyholder.tls.crt"), "--tls-key", str(e / "keyholder.tls.key"))
    site_tls = ("--tls-cert", str(e / "hospital-a.tls.crt"), "--tls-key", str(e / "hospital-a.tls.key"),
                "--tls-ca", str(e / "ca.crt"))
    aggregator = ("aggregator", "serve", *fed, "--identity", str(e / "aggregator.identity.json"), "--scheme", "plain",
                  "--port", "0", "--db", str(root / "agg.db"))
    keyholder = ("keyholder", "serve", "--port", "0", "--db", str(root / "kh.db"))
    psi_serve = ("psi", "serve", "--ids", str(root / "ids.txt"), "--out", str(root / "out.idx"), "--peer", "hospital-b",
                 "--port", "0")
    psi_join = ("psi", "join", "127.0.0.1:1", "--ids", str(root / "ids.txt"), "--out", str(root / "join.idx"),
                "--peer", "hospital-b")
    return [
        # aggregator serve
        Case("aggregator: missing federation file", ("aggregator", "serve", "--federation", str(root / "missing.json"),
             "--insecure"), USAGE, ("missing.json", "does not exist")),
        Case("aggregator: a directory for a file", ("aggregator", "serve", "--federation", str(root / "a-directory"),
             "--insecure"), USAGE, ("a-directory", "is a directory")),
        Case("aggregator: malformed JSON", ("aggregator", "serve", "--federation", str(root / "not-json.json"),
             "--identity", str(e / "aggregator.identity.json"), "--insecure"), USAGE, ("not-json.json", "not a JSON")),
        Case("aggregator: wrong field type", ("aggregator", "serve", "--federation", str(root / "wrong-type.json"),
             "--identity", str(e / "aggregator.identity.json"), "--insecure"), USAGE,
             ("wrong-type.json", "field 'security.value_bound'")),
        Case("aggregator: identity without its key", (*aggregator[:4], "--identity", str(root / "no-key.identity.json"),
             "--insecure"), USAGE, ("no-key.identity.json", "field 'key'")),
        Case("aggregator: identity with a wrong type", (*aggregator[:4], "--identity",
             str(root / "bad-id.identity.json"), "--insecure"), USAGE, ("bad-id.identity.json", "field 'client_id'")),
        Case("aggregator: malformed TOML", ("aggregator", "serve", "--config", str(root / "bad.toml")), USAGE,
             ("bad.toml", "not a valid TOML")),
        Case("aggregator: config field of the wrong type", ("aggregator", "serve", "--config",
             str(root / "wrong-type.toml"), "--insecure"), USAGE, ("wrong-type.toml", "field 'min_clients'")),
        Case("aggregator: unknown scheme", (*aggregator[:4], "--scheme", "rot13", "--insecure"), USAGE,
             ("--scheme", "rot13")),
        Case("aggregator: bad port", (*aggregator, "--port", "70000", "--insecure"), USAGE, ("--port",)),
        Case("aggregator: port not a number", (*aggregator, "--port", "seven", "--insecure"), USAGE, ("--port",)),
        Case("aggregator: neither TLS nor --insecure", aggregator, USAGE, ("--tls-cert", "--insecure")),
        Case("aggregator: a certificate that is not PEM", (*aggregator, "--tls-cert", str(root / "not-pem.crt"),
             "--tls-key", str(e / "aggregator.tls.key")), USAGE, ("not-pem.crt", "not a PEM certificate")),
        Case("aggregator: missing passphrase", (*aggregator, "--insecure"), USAGE,
             ("SECUREFL_IDENTITY_PASSPHRASE",), NO_PASSPHRASE),
        Case("aggregator: wrong passphrase", (*aggregator, "--insecure"), CREDENTIALS,
             ("aggregator.identity.json", "wrong passphrase"), {**PASSPHRASE_ENV,
                                                              "SECUREFL_IDENTITY_PASSPHRASE": "wrong"}),
        Case("aggregator: port in use", (*aggregator, *agg_tls, "--port", str(busy_port)), UNAVAILABLE,
             (f"{busy_port}",)),
        Case("aggregator: ckks without a key-holder", (*aggregator[:-6], "--port", "0", "--insecure"), USAGE,
             ("key-holder",)),
        # keyholder serve
        Case("keyholder: missing federation", (*keyholder, "--insecure"), USAGE, ("field 'federation' is required",)),
        Case("keyholder: malformed JSON", (*keyholder, "--federation", str(root / "not-json.json"), "--insecure"),
             USAGE, ("not-json.json",)),
        Case("keyholder: unknown preset", (*keyholder, *fed, "--preset", "huge", "--insecure"), USAGE, ("--preset",)),
        Case("keyholder: key file without passphrase", (*keyholder, *fed, "--key-file", str(root / "kh.key"),
             "--insecure"), USAGE, ("SECUREFL_KEY_PASSPHRASE",), NO_PASSPHRASE),
        Case("keyholder: key file that is not one", (*keyholder, *fed, "--key-file", str(root / "ids.txt"),
             "--insecure"), USAGE, ("ids.txt",), {**PASSPHRASE_ENV, "SECUREFL_KEY_PASSPHRASE": "x"}),
        Case("keyholder: bad metrics port", (*keyholder, *fed, *kh_tls, "--metrics-port", "-1"), USAGE,
             ("--metrics-port",)),
        Case("keyholder: metrics port in use", (*keyholder, *fed, *kh_tls, "--metrics-port", str(busy_port)),
             UNAVAILABLE, ("metrics", f"{busy_port}")),
        # psi serve and join
        Case("psi serve: missing ids", ("psi", "serve", "--ids", str(root / "missing.txt"), "--out", "o", "--peer",
             "b", *site_tls), USAGE, ("missing.txt",)),
        Case("psi serve: ids that are not UTF-8", ("psi", "serve", "--ids", str(root / "bad-ids.txt"), "--out",
             str(root / "o.idx"), "--peer", "b", *site_tls), USAGE, ("bad-ids.txt", "line 2")),
        Case("psi serve: no TLS", psi_serve, USAGE, ("mutual TLS",)),
        Case("psi serve: malformed config", ("psi", "serve", "--config", str(root / "bad.toml")), USAGE, ("bad.toml",)),
        Case("psi join: missing CA", (*psi_join, *site_tls[:4], "--tls-ca", str(root / "missing.crt")), USAGE,
             ("missing.crt",)),
        Case("psi join: unreachable peer", (*psi_join, *site_tls), UNAVAILABLE, ("cannot reach",)),
        # enrol
        Case("enrol: bad site id", ("enrol", "../escape", "--out", str(root / "out1")), USAGE, ("site id",)),
        Case("enrol: missing passphrase", ("enrol", "hospital-z", "--out", str(root / "out2")), USAGE,
             ("SECUREFL_IDENTITY_PASSPHRASE",), NO_PASSPHRASE),
        Case("enrol request: unknown role", ("enrol", "request", "--id", "x", "--role", "admin", "--out", str(root)),
             USAGE, ("--role",)),
        Case("enrol sign: missing request", ("enrol", "sign", str(root / "missing.request.json"), "--dir", str(e)),
             USAGE, ("missing.request.json",)),
        Case("enrol sign: malformed request", ("enrol", "sign", str(root / "request.json"), "--dir", str(e)), USAGE,
             ("request.json", "field 'identity_public_key'")),
        Case("enrol sign: missing directory", ("enrol", "sign", str(root / "request.json"), "--dir",
             str(root / "nowhere")), USAGE, ("nowhere",)),
        Case("enrol revoke: unknown party", ("enrol", "revoke", "hospital-z", "--dir", str(e)), USAGE,
             ("not enrolled",)),
        Case("enrol revoke: unknown role", ("enrol", "revoke", "hospital-a", "--role", "king", "--dir", str(e)),
             USAGE, ("--role",)),
        # health, bench, demo
        Case("health: unreachable", ("health", "127.0.0.1:1", *fed, "--tls-cert", str(e / "operator.tls.crt"),
             "--tls-key", str(e / "operator.tls.key"), "--timeout", "2"), UNAVAILABLE, ("127.0.0.1:1",)),
        Case("health: malformed federation", ("health", "127.0.0.1:1", "--federation", str(root / "wrong-type.json"),
             "--insecure"), USAGE, ("wrong-type.json", "field 'security.value_bound'")),
        Case("bench: unknown scheme", ("bench", "--schemes", "rot13"), USAGE, ("rot13",)),
        Case("bench: zero repeats", ("bench", "--repeat", "0"), USAGE, ("--repeat",)),
        Case("demo: unknown scheme", ("demo", "--scheme", "rot13"), USAGE, ("--scheme",)),
        Case("demo: too few clients", ("demo", "--clients", "1"), USAGE, ("--clients",)),
    ]


def test_every_subcommand_refuses_bad_input_without_a_traceback_and_with_its_exit_code(files):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        all_cases = cases(files, busy.getsockname()[1])
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda case: securefl_cli(*case.args, env=case.env, timeout=120), all_cases))
    problems = []
    for case, result in zip(all_cases, results):
        output = result.stdout + result.stderr
        flat = " ".join(output.replace("│", " ").split())
        if "Traceback" in output or result.returncode != case.code or not all(s in flat for s in case.says):
            problems.append(f"{case.name}: exit {result.returncode} (expected {case.code}): {flat[-400:]}")
    assert not problems, "\n".join(problems)
    assert {case.code for case in all_cases} == {USAGE, CREDENTIALS, UNAVAILABLE}
    assert len({case.args[0] if case.args[0] not in ("aggregator", "keyholder", "psi", "enrol") else case.args[:2]
                for case in all_cases}) >= 11  # every subcommand


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file whatever its mode")
def test_an_unreadable_file_is_refused(files):
    unreadable = files / "unreadable.json"
    unreadable.write_text("{}")
    unreadable.chmod(0)
    result = securefl_cli("aggregator", "serve", "--federation", str(unreadable), "--insecure")
    assert result.returncode == USAGE and "Traceback" not in result.stderr and "unreadable.json" in result.stderr

