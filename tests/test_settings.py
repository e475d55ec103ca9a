"""Service settings: a TOML file per service, overridden by SECUREFL_<SERVICE>_* variables,
overridden by flags; every problem reported in one line naming its source and the field;
passphrases never from a file and never printed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from securefl.errors import InvalidInput
from securefl.services.settings import (
    AggregatorSettings, KeyHolderSettings, LogLevel, PsiSettings, load_settings, read_config, render,
)
from tests.conftest import PASSPHRASE_ENV, enrol_with_cli, securefl_cli


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def enrolment(tmp_path_factory) -> Path:
    return enrol_with_cli(tmp_path_factory.mktemp("enrolment"), "hospital-a")


@pytest.fixture
def config(enrolment) -> Path:
    """aggregator.toml next to the enrolment's files, naming them relative to itself."""
    path = enrolment / "aggregator.toml"
    path.write_text('federation = "federation.json"\nidentity = "aggregator.identity.json"\nscheme = "plain"\n'
                    'insecure = true\nport = 7100\nmax_open_rounds = 10\n')
    return path


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("SECUREFL_AGGREGATOR_", "SECUREFL_KEYHOLDER_")):
            monkeypatch.delenv(name)


def test_flags_override_the_environment_which_overrides_the_file(config, monkeypatch):
    assert load_settings(AggregatorSettings, config, {}).port == 7100
    monkeypatch.setenv("SECUREFL_AGGREGATOR_PORT", "7200")
    monkeypatch.setenv("SECUREFL_AGGREGATOR_LOG_LEVEL", "debug")
    settings = load_settings(AggregatorSettings, config, {})
    assert (settings.port, settings.log_level, settings.max_open_rounds) == (7200, LogLevel.debug, 10)
    assert load_settings(AggregatorSettings, config, {"port": 7300}).port == 7300


def test_relative_paths_in_a_config_file_are_relative_to_the_file(config, enrolment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # elsewhere
    settings = load_settings(AggregatorSettings, config, {})
    assert settings.federation == enrolment / "federation.json"
    assert settings.db == Path("aggregator.db")  # a default, relative to the working directory


@pytest.mark.parametrize("content, message", [
    ("port = 70000", "aggregator.toml: field 'port': Input should be less than or equal to 65535 (got 70000)"),
    ('port = "seven"', "aggregator.toml: field 'port': Input should be a valid integer"),
    ('scheme = "rot13"', "aggregator.toml: field 'scheme': Input should be 'ckks', 'secagg' or 'plain'"),
    ('keyholder = "nowhere"', "aggregator.toml: field 'keyholder': must be host:port"),
    ('identity = "missing.json"', "aggregator.toml: field 'identity': Path does not point to a file"),
    ("prot = 7000", "aggregator.toml: field 'prot' is not a setting of the aggregator"),
    ("[tls]\ncert = 'x'", "aggregator.toml: field 'tls' is not a setting"),
    ('identity_passphrase = "hunter2"', "field 'identity_passphrase' cannot come from a file: set "
                                        "$SECUREFL_IDENTITY_PASSPHRASE"),
    ("port = ", "aggregator.toml: not a valid TOML file"),
    ("max_open_rounds_per_site = 20\nmax_open_rounds = 5", "max_open_rounds_per_site cannot exceed max_open_rounds"),
])
def test_a_bad_config_file_is_reported_in_one_line_naming_the_file_and_the_field(config, content, message):
    replaced = {line.split("=")[0].strip() for line in content.splitlines()}
    kept = [line for line in config.read_text().splitlines() if line.split("=")[0].strip() not in replaced]
    config.write_text("\n".join([*kept, content]) + "\n")
    with pytest.raises(InvalidInput) as refused:
        load_settings(AggregatorSettings, config, {})
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_a_bad_environment_variable_or_flag_is_named(config, monkeypatch):
    monkeypatch.setenv("SECUREFL_AGGREGATOR_ROUND_TIMEOUT", "soon")
    with pytest.raises(InvalidInput, match=r"^\$SECUREFL_AGGREGATOR_ROUND_TIMEOUT: field 'round_timeout'"):
        load_settings(AggregatorSettings, config, {})
    monkeypatch.delenv("SECUREFL_AGGREGATOR_ROUND_TIMEOUT")
    with pytest.raises(InvalidInput, match=r"^--min-clients: field 'min_clients'"):
        load_settings(AggregatorSettings, config, {"min_clients": 0})


def test_missing_settings_say_where_they_may_come_from(tmp_path):
    with pytest.raises(InvalidInput) as refused:
        load_settings(KeyHolderSettings, None, {"insecure": True})
    assert str(refused.value) == ("field 'federation' is required: pass --federation, set "
                                  "$SECUREFL_KEYHOLDER_FEDERATION, or set federation in the config file (--config)")


def test_tls_or_an_explicit_insecure(config, enrolment):
    config.write_text(config.read_text().replace("insecure = true\n", ""))
    with pytest.raises(InvalidInput, match="mutual TLS needs tls_cert and tls_key"):
        load_settings(AggregatorSettings, config, {})
    with pytest.raises(InvalidInput, match="insecure and tls_cert exclude each other"):
        load_settings(AggregatorSettings, config, {"insecure": True, "tls_cert": enrolment / "aggregator.tls.crt",
                                                   "tls_key": enrolment / "aggregator.tls.key"})


def test_print_config_redacts_the_passphrase_and_prints_a_file_that_loads_back(config, tmp_path, monkeypatch):
    env = {**PASSPHRASE_ENV, "SECUREFL_IDENTITY_PASSPHRASE": "correct horse battery staple"}
    result = securefl_cli("aggregator", "serve", "--config", str(config), "--port", "7400", "--no-verbose",
                          "--print-config", env=env)
    assert result.returncode == 0, result.stderr
    assert "correct horse" not in result.stdout + result.stderr
    assert "# identity_passphrase: set (redacted); only from $SECUREFL_IDENTITY_PASSPHRASE" in result.stdout
    assert "port = 7400" in result.stdout and 'log_level = "warning"' in result.stdout  # --no-verbose still works
    printed = tmp_path / "printed.toml"
    printed.write_text(result.stdout)
    assert "identity_passphrase" not in read_config(AggregatorSettings, printed)
    monkeypatch.setenv("SECUREFL_IDENTITY_PASSPHRASE", "another one")
    assert render(load_settings(AggregatorSettings, printed, {})) == result.stdout


@pytest.mark.parametrize("model", [AggregatorSettings, KeyHolderSettings, PsiSettings])
def test_every_setting_is_documented_in_the_operations_guide(model):
    guide = (ROOT / "docs" / "operations.md").read_text()
    missing = [name for name in model.model_fields if name not in model.secret_fields() and f"`{name}`" not in guide]
    assert not missing
