"""docs/deploy.md, run: enrol with the CLI, the key-holder and the aggregator as `securefl ...
serve --config` processes with the settings files printed in the walk-through (ports and
addresses overridden through SECUREFL_* variables), both probed with `securefl health`, three
sites as separate processes (examples/site.py), the aggregator's metrics after the round, and a
SIGTERM that drains both services to exit 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from securefl.simulation import ServiceProcess
from tests.conftest import PASSPHRASE_ENV, enrol_with_cli, securefl_cli
from tests.scrape import scrape

ROOT = Path(__file__).resolve().parent.parent
SITES = ("hospital-a", "hospital-b", "hospital-c")


def settings_files(walkthrough: str) -> dict[str, str]:
    """The ```toml blocks of the walk-through, by the file name on their first line."""
    blocks = re.findall(r"```toml\n# (\S+\.toml)\n(.*?)```", walkthrough, re.S)
    return {name: body for name, body in blocks}


def test_the_deployment_walkthrough_runs_a_ckks_round_between_three_site_processes(tmp_path):
    enrolment = enrol_with_cli(tmp_path / "enrolment", *SITES)
    files = settings_files((ROOT / "docs" / "deploy.md").read_text())
    assert set(files) == {"keyholder.toml", "aggregator.toml"}
    for name, body in files.items():
        (enrolment / name).write_text(body)
    env = {**PASSPHRASE_ENV, "SECUREFL_KEY_PASSPHRASE": "key-holder passphrase"}
    local = {f"SECUREFL_{service}_{setting}": value for service in ("KEYHOLDER", "AGGREGATOR")
             for setting, value in (("HOST", "127.0.0.1"), ("PORT", "0"), ("METRICS_PORT", "0"))}
    keyholder = ServiceProcess("keyholder", ["keyholder", "serve", "--config", "keyholder.toml"], tmp_path,
                               {**env, **local}, cwd=enrolment)
    aggregator = ServiceProcess("aggregator", ["aggregator", "serve", "--config", "aggregator.toml"], tmp_path,
                                {**env, **local}, cwd=enrolment)
    operator = ["--federation", str(enrolment / "federation.json"), "--tls-cert", str(enrolment / "operator.tls.crt"),
                "--tls-key", str(enrolment / "operator.tls.key")]
    try:
        aggregator.env["SECUREFL_AGGREGATOR_KEYHOLDER"] = f"127.0.0.1:{keyholder.start()}"
        fingerprint = re.search(r"[0-9a-f]{64}", (tmp_path / "keyholder.log").read_text()).group(0)
        aggregator.start()
        for port, role in ((keyholder.port, "keyholder"), (aggregator.port, "aggregator")):
            probe = securefl_cli("health", f"127.0.0.1:{port}", "--role", role, *operator)
            assert (probe.returncode, probe.stdout.strip()) == (0, "SERVING"), probe.stderr
        sites = [subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "site.py"), "--aggregator", f"127.0.0.1:{aggregator.port}",
             "--id", site, "--dir", str(enrolment), "--keyholder-fingerprint", fingerprint, "--value", str(value)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        ) for value, site in enumerate(SITES, start=1)]
        outputs = [site.communicate(timeout=120) for site in sites]
        metrics = scrape(aggregator)
    finally:
        exits = (aggregator.stop(), keyholder.stop())
    rounds = set()
    for site, (stdout, stderr) in zip(SITES, outputs):
        found = re.search(rf"{site}: round (round-[0-9a-f]{{16}}) average ([0-9.]+)", stdout)
        assert found, (stdout, stderr)
        assert abs(float(found.group(2)) - 2.0) < 1e-4  # CKKS is approximate: 2.000001 happens
        rounds.add(found.group(1))
    assert len(rounds) == 1  # one round, under an id the aggregator drew at random
    assert metrics[("securefl_rounds_ended_total", (("outcome", "complete"), ("reason", "")))] == 1
    assert metrics[("securefl_submissions_accepted_total", ())] == 3
    assert exits == (0, 0)  # SIGTERM: drained and stopped cleanly
    assert '"logger": "securefl.services.launch"' in (tmp_path / "aggregator.log").read_text()  # log_format = json
    audit = (enrolment / "keyholder.db").stat().st_mode & 0o777
    assert audit == 0o600
