"""Validated settings of each service: one TOML file per service (`--config`), overridden by
`SECUREFL_<SERVICE>_<FIELD>` environment variables, overridden by flags; every value checked,
and any problem reported in one line naming where the value came from and the field.

Passphrases are settings too, so that `--print-config` can say whether one is set, but they
come only from their environment variable (or a prompt, later): never from a flag, which `ps`
shows, nor from a config file, which gets copied around; `--print-config` redacts them.

Relative paths in a config file are relative to the file's directory (a config file and the
files it names travel together); on a flag or in the environment, to the working directory."""

from __future__ import annotations

import json
import os
import tomllib
from contextvars import ContextVar
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Optional, TypeVar, get_args

from pydantic import Field, FilePath, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ..errors import InvalidInput
from ..he.keystore import RotationPolicy
from ..he.presets import DEFAULT_PRESETS, PRESETS
from ..keyfiles import IDENTITY_PASSPHRASE_ENV, KEY_PASSPHRASE_ENV
from ..rounds.scheme import MAX_VECTOR_LENGTH
from ..schemes import DEFAULT_SCHEME, HE_SCHEMES, SCHEMES

SchemeName = Enum("SchemeName", {name: name for name in SCHEMES}, type=str)
HeSchemeName = Enum("HeSchemeName", {name: name for name in HE_SCHEMES}, type=str)
PresetName = Enum("PresetName", {name: name for name in PRESETS}, type=str)


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(str, Enum):
    text = "text"
    json = "json"


_FILE_VALUES: ContextVar[dict[str, Any]] = ContextVar("securefl_config_file", default={})


class _ConfigFile(PydanticBaseSettingsSource):
    """The values of the config file being loaded (read and checked by `load_settings`)."""

    def get_field_value(self, field, field_name):  # pragma: no cover - __call__ answers for every field
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get())


class ServiceSettings(BaseSettings):
    """What every server has: where it listens, its TLS material, logs and shutdown."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True, use_enum_values=False)
    service: ClassVar[str] = ""  # the name in messages; set by each subclass

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0: every interface).")
    port: int = Field(0, ge=0, le=65535, description="Port to listen on (0: any free port).")
    tls_cert: Optional[FilePath] = Field(None, description="This party's TLS certificate (PEM).")
    tls_key: Optional[FilePath] = Field(None, description=(
        f"Its TLS private key (PEM, 0600; if encrypted, the passphrase comes from ${IDENTITY_PASSPHRASE_ENV})."))
    tls_ca: Optional[FilePath] = Field(None, description="CA certificate(s) to trust (PEM).")
    log_level: LogLevel = Field(LogLevel.info, description="Least severe log records written.")
    log_format: LogFormat = Field(LogFormat.text, description="Log records as plain text lines, or JSON lines.")
    shutdown_grace: float = Field(30.0, ge=0, le=3600, description=(
        "Seconds running calls may take to finish after SIGTERM before they are cancelled."))
    identity_passphrase: Optional[SecretStr] = Field(None, validation_alias=IDENTITY_PASSPHRASE_ENV, description=(
        "Opens encrypted identity and TLS keys."))

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (given as init values) over the environment over the config file."""
        return init_settings, env_settings, _ConfigFile(settings_cls)

    @model_validator(mode="after")
    def _tls_pair(self) -> ServiceSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self

    @classmethod
    def env_name(cls, field: str) -> str:
        alias = cls.model_fields[field].validation_alias
        return alias if isinstance(alias, str) else f"{cls.model_config['env_prefix']}{field.upper()}"

    @classmethod
    def secret_fields(cls) -> list[str]:
        return [name for name, f in cls.model_fields.items() if SecretStr in _types(f.annotation)]

    def passphrase(self, field: str = "identity_passphrase") -> str | None:
        value = getattr(self, field)
        return value.get_secret_value() if value is not None else None


class InsecureOption(BaseSettings):
    insecure: bool = Field(False, description=(
        "Plaintext gRPC, no TLS: anyone on the network reads and forges the traffic. For measurement only."))

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> InsecureOption:
        tls = [f for f in ("tls_cert", "tls_key", "tls_ca") if getattr(self, f, None) is not None]
        if self.insecure and tls:
            raise ValueError(f"insecure and {tls[0]} exclude each other")
        if not self.insecure and getattr(self, "tls_cert", None) is None:
            raise ValueError("mutual TLS needs tls_cert and tls_key (--tls-cert, --tls-key), or insecure "
                             "(--insecure) explicitly")
        return self


class MetricsOptions(BaseSettings):
    metrics_host: str = Field("127.0.0.1", description="Address of the Prometheus endpoint (plaintext HTTP).")
    metrics_port: Optional[int] = Field(None, ge=0, le=65535, description=(
        "Serve Prometheus metrics on this port (0: any free port; unset: no metrics)."))


class AggregatorSettings(InsecureOption, MetricsOptions, ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SECUREFL_AGGREGATOR_")
    service: ClassVar[str] = "aggregator"

    federation: FilePath = Field(description="federation.json: the roster, the pinned keys, the CA and the "
                                             "security parameters.")
    identity: FilePath = Field(description=(
        f"The aggregator's identity file (signs acknowledgements; passphrase from ${IDENTITY_PASSPHRASE_ENV})."))
    scheme: SchemeName = Field(SchemeName(DEFAULT_SCHEME), description=(
        "bfv or ckks (need keyholder), secagg (pairwise masking) or plain (no protection, for measurement)."))
    keyholder: Optional[str] = Field(None, description="host:port of the key-holder.")
    port: int = Field(7000, ge=0, le=65535, description="Port to listen on (0: any free port).")
    db: Path = Field(Path("aggregator.db"), description="SQLite round store.")
    min_clients: int = Field(2, ge=1, description="Default quorum of a round.")
    expected_clients: int = Field(0, ge=0, description=(
        "Close a round as soon as this many submitted (0: all enrolled)."))
    round_timeout: float = Field(0.0, ge=0, description="Seconds from a round's opening to its deadline (0: none).")
    implicit_rounds: bool = Field(True, description="Open a round on its first submission.")
    stage_timeout: float = Field(30.0, gt=0, description=(
        "secagg: seconds each stage waits before counting the silent as dropped."))
    max_open_rounds: int = Field(64, ge=1, description="Rounds open at once, at most.")
    max_open_rounds_per_site: int = Field(4, ge=1, description=(
        "Open rounds one site may have created (by joining or submitting to a new round id), at most."))
    round_retention: float = Field(600.0, ge=0, description=(
        "Seconds a finished round stays in memory; its result stays in the store for late fetchers."))
    max_waits_per_site: int = Field(4, ge=1, description=(
        "Concurrent long-poll calls (stage and result waits) of one site, at most."))
    max_streams_per_site: int = Field(2, ge=1, description="Concurrent submission streams of one site, at most.")
    vector_length: int = Field(0, ge=0, le=MAX_VECTOR_LENGTH, description=(
        "Length of every round's update, weight included (0: fixed by each round's first submission)."))
    max_inflight_mb: Optional[int] = Field(None, ge=1, description=(
        "Memory for submissions being received; others wait under flow control (default: 8 submissions of the "
        "model, 64 MiB to a quarter of free memory)."))
    checkpoint_seconds: float = Field(60.0, ge=0, description=(
        "Checkpoint an open round's sum this often (0: after every submission); clients resend what a restart "
        "lost since."))
    shard: Optional[tuple[int, int]] = Field(None, description=(
        "INDEX/COUNT: sum one chunk range of rounds split across COUNT aggregators; shard 0 coordinates them."))
    coordinator: Optional[str] = Field(None, description="host:port of shard 0, for the other shards.")

    @field_validator("keyholder", "coordinator")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            check_address(value)
        return value

    @field_validator("shard", mode="before")
    @classmethod
    def _shard(cls, value: Any) -> Any:
        if isinstance(value, str):
            index, _, count = value.partition("/")
            try:
                value = (int(index), int(count))
            except ValueError:
                raise ValueError(f"shard takes INDEX/COUNT, e.g. 0/3, not {value!r:.40}") from None
        if value is not None and not 0 <= value[0] < value[1]:
            raise ValueError(f"shard {value[0]} of {value[1]} does not exist")
        return value

    @model_validator(mode="after")
    def _caps(self) -> AggregatorSettings:
        if self.max_open_rounds_per_site > self.max_open_rounds:
            raise ValueError("max_open_rounds_per_site cannot exceed max_open_rounds")
        if self.expected_clients and self.expected_clients < self.min_clients:
            raise ValueError("expected_clients must be 0 or at least min_clients")
        return self


class KeyHolderSettings(InsecureOption, MetricsOptions, ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SECUREFL_KEYHOLDER_")
    service: ClassVar[str] = "keyholder"

    federation: FilePath = Field(description="federation.json: the roster, the pinned keys, the CA and the "
                                             "security parameters.")
    port: int = Field(7001, ge=0, le=65535, description="Port to listen on (0: any free port).")
    identity: FilePath = Field(description=(
        "The key-holder's identity file: signs every key epoch, and federation.json pins its key (passphrase from "
        f"${IDENTITY_PASSPHRASE_ENV})."))
    scheme: HeSchemeName = Field(HeSchemeName(DEFAULT_SCHEME), description=(
        "The HE scheme of the key epochs: bfv (exact, packed) or ckks; the aggregator runs the same."))
    preset: Optional[PresetName] = Field(None, description=(
        f"HE parameter preset of new epochs (default: {', '.join(f'{p} for {s}' for s, p in DEFAULT_PRESETS.items())})."))
    precision_bits: Optional[int] = Field(None, ge=4, le=39, description=(
        "bfv: bits of each client's quantized value (default: the federation's security.precision_bits, else 12)."))
    rotate_every: int = Field(RotationPolicy.rotate_every, ge=1, description=(
        "A key epoch serves at most this many rounds; a refused release retires it at once."))
    min_clients: Optional[int] = Field(None, ge=1, description=(
        "Release only sums of at least this many distinct signed contributions (default: the federation's "
        "min_participants)."))
    keystore: Path = Field(Path("keyholder.keystore"), description=(
        f"Encrypted keystore: each epoch's keys and the rounds it decrypted (created if absent; passphrase from "
        f"${KEY_PASSPHRASE_ENV})."))
    audit_log: Path = Field(Path("keyholder.audit.jsonl"), description=(
        "Audit log: every release or refusal, with who asked (JSON lines, 0600)."))
    decryption_workers: int = Field(0, ge=0, description=(
        "Child processes that decrypt large aggregates in parallel (0: in the key-holder's process; worth it "
        "only with more than two cores, see docs/operations.md)."))
    key_passphrase: Optional[SecretStr] = Field(None, validation_alias=KEY_PASSPHRASE_ENV, description=(
        "Opens the keystore."))


class PsiSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SECUREFL_PSI_")
    service: ClassVar[str] = "psi"

    ids: FilePath = Field(description="IDs, one per line, or a CSV with column.")
    out: Path = Field(description="Write the aligned row indices here, one per line.")
    peer: str = Field(description="The only party served as party B: the securefl id its TLS certificate names.")
    column: Optional[str] = Field(None, description="CSV column holding the IDs.")
    max_peer_set: Optional[int] = Field(None, ge=1, description=(
        "Largest set the peer may bring (default: twice this party's)."))
    session_timeout: float = Field(3600.0, ge=1, description="Seconds a session may last before it is dropped.")
    port: int = Field(7100, ge=0, le=65535, description="Port to listen on (0: any free port).")

    @model_validator(mode="after")
    def _needs_tls(self) -> PsiSettings:
        if self.tls_cert is None:
            raise ValueError("PSI runs over mutual TLS only: give tls_cert and tls_key (--tls-cert, --tls-key)")
        return self


S = TypeVar("S", bound=ServiceSettings)


def check_address(value: str) -> str:
    """`host:port` with a port in 1-65535."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"must be host:port with a port in 1-65535, got {value!r:.80}")
    return value


def load_settings(model: type[S], config: Path | None, flags: dict[str, Any]) -> S:
    """The effective settings: `flags` (only those given on the command line) over the
    environment over the config file over the defaults. InvalidInput names the source and the
    field of the first problem."""
    values = read_config(model, config) if config is not None else {}
    token = _FILE_VALUES.set(values)
    try:
        return model(**flags)
    except ValidationError as exc:
        raise InvalidInput(_describe(model, exc, config, values, flags)) from None
    finally:
        _FILE_VALUES.reset(token)


def read_config(model: type[ServiceSettings], path: Path) -> dict[str, Any]:
    """The config file's values, with relative paths made relative to its directory."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read the config file: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: not a valid TOML file: {exc}") from None
    known = list(model.model_fields)
    for key, value in data.items():
        if key in model.secret_fields() or key in {model.env_name(f) for f in model.secret_fields()}:
            raise InvalidInput(f"{path}: field {key!r} cannot come from a file: set ${model.env_name(key)}"
                               if key in model.model_fields else f"{path}: a passphrase cannot come from a file")
        if key not in known:
            raise InvalidInput(f"{path}: field {key!r:.60} is not a setting of the {model.service} "
                               f"(known: {', '.join(known)})")
        if isinstance(value, dict):
            raise InvalidInput(f"{path}: field {key!r} must be a value, not a table")
        if isinstance(value, str) and Path in _types(model.model_fields[key].annotation):
            data[key] = str(Path(path).parent / value)
    return data


def _describe(model: type[ServiceSettings], exc: ValidationError, config: Path | None, file_values: dict[str, Any],
              flags: dict[str, Any]) -> str:
    """One line: where the value came from, the field, what is wrong (secrets never echoed)."""
    problems = []
    aliases = {f.validation_alias: name for name, f in model.model_fields.items() if isinstance(f.validation_alias, str)}
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else None
        message = error["msg"].removeprefix("Value error, ")
        if field is None:
            problems.append(f"the {model.service} settings: {message}")
            continue
        field = aliases.get(field, field)
        if error["type"] == "missing":
            problems.append(f"field '{field}' is required: pass --{field.replace('_', '-')}, set "
                            f"${model.env_name(field)}, or set {field} in the config file (--config)")
            continue
        if field in flags:
            source = f"--{field.replace('_', '-')}"
        elif field in model.model_fields and os.environ.get(model.env_name(field)) is not None:
            source = f"${model.env_name(field)}"
        elif field in file_values:
            source = str(config)
        else:
            source = "default"
        shown = "" if field in model.secret_fields() else f" (got {error['input']!r:.60})"
        problems.append(f"{source}: field '{field}': {message}{shown}")
    return "; ".join(problems)


def render(settings: ServiceSettings) -> str:
    """The effective settings as a TOML config file, each field under its description, paths
    absolute; secrets redacted (shown only as set or not)."""
    lines = [f"# effective {settings.service} settings (securefl)"]
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        lines.append(f"# {field.description}")
        if name in settings.secret_fields():
            state = "set (redacted)" if value is not None else "not set"
            lines.append(f"# {name}: {state}; only from ${settings.env_name(name)}")
        elif value is None:
            lines.append(f"# {name} = (unset)")
        else:
            lines.append(f"{name} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, Path):
        value = value.absolute()  # the printed file means the same wherever it is saved
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def _types(annotation: Any) -> set[Any]:
    """Every type an annotation names, through Optional and Annotated."""
    found = {annotation}
    for argument in get_args(annotation):
        found |= _types(argument)
    return found
