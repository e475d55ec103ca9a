"""docs/deploy.md, run: enrol with the CLI, a key-holder and an aggregator as `securefl ... serve`
processes on mutual TLS, three sites as separate processes (examples/site.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from securefl.simulation import ServiceProcess
from tests.conftest import PASSPHRASE_ENV, enrol_with_cli

ROOT = Path(__file__).resolve().parent.parent
SITES = ("hospital-a", "hospital-b", "hospital-c")


def test_the_deployment_walkthrough_runs_a_ckks_round_between_three_site_processes(tmp_path):
    enrolment = enrol_with_cli(tmp_path / "enrolment", *SITES)
    env = {**PASSPHRASE_ENV, "SECUREFL_KEY_PASSPHRASE": "key-holder passphrase"}
    keyholder = ServiceProcess("keyholder", [
        "keyholder", "serve", "--federation", "federation.json", "--tls-cert", "keyholder.tls.crt",
        "--tls-key", "keyholder.tls.key", "--key-file", "keyholder.key", "--db", "keyholder.db", "--port", "0",
    ], tmp_path, env, cwd=enrolment)
    aggregator = ServiceProcess("aggregator", [
        "aggregator", "serve", "--federation", "federation.json", "--identity", "aggregator.identity.json",
        "--tls-cert", "aggregator.tls.crt", "--tls-key", "aggregator.tls.key", "--min-clients", "2",
        "--round-timeout", "600", "--db", "aggregator.db", "--port", "0",
    ], tmp_path, env, cwd=enrolment)
    try:
        aggregator.args += ["--keyholder", f"127.0.0.1:{keyholder.start()}"]
        fingerprint = re.search(r"[0-9a-f]{64}", (tmp_path / "keyholder.log").read_text()).group(0)
        aggregator.start()
        sites = [subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "site.py"), "--aggregator", f"127.0.0.1:{aggregator.port}",
             "--id", site, "--dir", str(enrolment), "--keyholder-fingerprint", fingerprint, "--value", str(value)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        ) for value, site in enumerate(SITES, start=1)]
        outputs = [site.communicate(timeout=120) for site in sites]
    finally:
        aggregator.stop()
        keyholder.stop()
    for site, (stdout, stderr) in zip(SITES, outputs):
        assert f"{site}: round round-000001 average 2.000000" in stdout, stderr
    audit = (enrolment / "keyholder.db").stat().st_mode & 0o777
    assert audit == 0o600
