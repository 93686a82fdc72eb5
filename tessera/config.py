"""Tessera's settings: one frozen object, read in one place.

Precedence, highest first: explicit keyword arguments, ``TESSERA_*`` environment
variables, a TOML config file (``--config`` or ``TESSERA_CONFIG``), defaults.
Secrets (the SASL password) are masked when settings are shown.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

ENV_PREFIX = "TESSERA_"
SECRET_FIELDS = frozenset({"kafka_sasl_password", "sql_password", "alert_webhook_token", "dashboard_password"})
MASK = "********"


def mask_url(url: str) -> str:
    """A URL with its password (``user:password@``) masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:{MASK}@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


def _default_data_dir() -> str:
    return str(Path.home() / ".tessera")


@dataclass(frozen=True)
class Settings:
    # --- Kafka ---------------------------------------------------------------
    #: ``host:port[,host:port]``. Empty means "the local broker that `tessera infra up` runs".
    kafka_bootstrap: str = ""
    #: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    #: Prefix of every topic name; lets several Tessera installs (or tests) share a broker.
    topic_prefix: str = "tessera"
    #: Default partition count of the topics Tessera creates (per-topic overrides in streams.topics).
    topic_partitions: int = 6
    topic_replication_factor: int = 1

    # --- Local broker (tessera infra) ----------------------------------------
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "512m"

    # --- Faust ---------------------------------------------------------------
    app_id: str = "tessera"
    #: Faust table store URL: ``memory://`` (recovers from changelog topics) or ``rocksdb://``.
    store: str = "memory://"
    #: ``exactly_once`` or ``at_least_once``; per-agent choices are documented in docs/design.md.
    processing_guarantee: str = "at_least_once"

    # --- Resource layer ------------------------------------------------------
    #: A heartbeating resource silent this long is marked unhealthy.
    health_heartbeat_timeout_s: float = 60.0
    #: Consecutive bad samples before unhealthy / good samples before healthy again (hysteresis).
    health_unhealthy_after: int = 3
    health_healthy_after: int = 3
    #: How often the heartbeat timer checks for silent resources.
    health_check_interval_s: float = 5.0
    #: Partner discovery config (TOML); see docs/partners.example.toml.
    partners_file: str = ""

    # --- Predictive Demand Engine -------------------------------------------
    #: Length of a demand interval (seconds) and of a season in intervals (288 x 5 min = a day).
    forecast_interval_s: int = 300
    forecast_season: int = 288
    #: Intervals ahead to forecast, and the quantile levels issued for each.
    forecast_horizon: int = 12
    forecast_quantiles: str = "0.05,0.5,0.95"
    #: Late events up to this many seconds after an interval's end still count in it.
    forecast_grace_s: float = 60.0
    #: Models blended per series (comma-separated); empty = all.
    forecast_models: str = ""

    # --- Billing --------------------------------------------------------------
    #: Partner agreements (JSON list; see `tessera bill --help`) the billing agent rates with.
    billing_agreements: str = ""
    #: Usage arriving this long after its month ended is still rated into that month;
    #: later, it becomes an adjustment line in the next open month.
    billing_grace_s: float = 3 * 86400.0
    #: Usage-limit alerts are also POSTed here (JSON, CloudEvents headers); empty: topic only.
    alert_webhook_url: str = ""
    #: Bearer token for the webhook (a secret: masked in `tessera config`).
    alert_webhook_token: str = ""

    #: Placement domains (JSON: name -> regions / providers / pools; tessera.scheduler.domains):
    #: each scheduler (``--domain NAME``) owns its domain's resources and places the requests
    #: routed to it. Empty: one scheduler owns everything.
    domains_file: str = ""
    #: How often the scheduler and the billing agent save their state to the compacted
    #: checkpoints topic (seconds). A restart reads the newest checkpoint and the inputs after
    #: it, so the inputs' retention must outlast this interval (tessera.streams.checkpoint).
    checkpoint_interval_s: float = 60.0
    #: Seconds a service (a Faust worker, the scheduler, billing ...) has to stop after SIGTERM/SIGINT before it exits anyway: its
    #: output is transactional, so a hard exit loses nothing (the kill -9 drill checks), and a
    #: stop that hangs in a client library must not hang the host's shutdown.
    shutdown_grace_s: float = 30.0

    # --- ClickHouse ----------------------------------------------------------
    #: ``http(s)://user:pass@host:port/database`` selects a ClickHouse server; empty = embedded chdb.
    clickhouse_url: str = ""
    #: Database used on either backend.
    clickhouse_database: str = "tessera"
    #: CA certificate (PEM) that signed an https ClickHouse server's certificate, when the
    #: system does not trust it already.
    clickhouse_ca_file: str = ""
    #: The password ``tessera sql serve`` asks clients for (from the environment or the
    #: config file, never the command line, where the process list would show it).
    sql_password: str = ""
    #: JSON file of token digest -> tenant for ``tessera gateway`` (see tessera.app.gateway).
    gateway_tokens: str = ""

    # --- Files and ports -----------------------------------------------------
    data_dir: str = field(default_factory=_default_data_dir)
    #: Where the embedded ClickHouse keeps its files (default: <data_dir>/chdb). One process
    #: at a time can open a directory.
    chdb_dir: str = ""
    metrics_port: int = 9464
    #: Address the metrics and probe endpoint binds: loopback unless a scraper elsewhere needs it.
    metrics_bind: str = "127.0.0.1"
    #: ``tessera dashboard``: where it listens (loopback unless a password is set) and the
    #: password it asks browsers for (HTTP Basic, user ``tessera``), required beyond loopback.
    dashboard_bind: str = "127.0.0.1"
    dashboard_port: int = 8050
    dashboard_password: str = ""

    # ------------------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def chdb_path(self) -> Path:
        return Path(self.chdb_dir).expanduser() if self.chdb_dir else self.data_path / "chdb"

    @property
    def kafka_home(self) -> Path:
        return self.data_path / "kafka"

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    def topic(self, name: str) -> str:
        """Full topic name for a logical topic name (``requests`` -> ``tessera.requests.v1``)."""
        return f"{self.topic_prefix}.{name}"

    def shown(self) -> dict[str, Any]:
        """Settings as a dict with secrets masked, for ``tessera config`` and logs."""
        out = dataclasses.asdict(self)
        for key in SECRET_FIELDS:
            if out.get(key):
                out[key] = MASK
        out["clickhouse_url"] = mask_url(out.get("clickhouse_url", ""))
        return out

    def __repr__(self) -> str:
        # Settings end up in logs and tracebacks: never with a secret in them.
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in self.shown().items())})"

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


def _coerce(name: str, raw: Any, target: type | str) -> Any:
    kind = target if isinstance(target, str) else target.__name__
    if kind == "float":
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"setting {name!r} must be a number, got {raw!r}") from None
    if kind == "int":
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"setting {name!r} must be an integer, got {raw!r}") from None
    return str(raw)


def read_toml(path: Path, what: str, hint: str = "") -> dict[str, Any]:
    """A TOML document, or a ConfigError that says which file and what is wrong with it."""
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist{hint}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid TOML: {exc}") from None


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build Settings from defaults, an optional TOML file, the environment and overrides.

    The TOML file holds the same keys as the dataclass, either at top level or under a
    ``[tessera]`` table. Environment variables are the upper-cased key with the
    ``TESSERA_`` prefix, e.g. ``TESSERA_KAFKA_BOOTSTRAP``.
    """
    env = os.environ if env is None else env
    known = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}

    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        p = Path(path).expanduser()
        doc = read_toml(p, "config file", hint=" (set by --config or TESSERA_CONFIG)")
        doc = doc.get("tessera", doc)
        for key, raw in doc.items():
            if key not in known:
                raise ConfigError(
                    f"config file {str(p)!r}: unknown setting {key!r}; known settings: {', '.join(sorted(known))}"
                )
            values[key] = _coerce(key, raw, known[key].type)

    for key, f in known.items():
        env_key = ENV_PREFIX + key.upper()
        if env_key in env and env[env_key] != "":
            values[key] = _coerce(env_key, env[env_key], f.type)

    for key, raw in overrides.items():
        if raw is None:
            continue
        if key not in known:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = raw

    settings = Settings(**values)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    protocols = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
    if s.kafka_security_protocol not in protocols:
        raise ConfigError(
            f"TESSERA_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol!r}; use one of {sorted(protocols)}"
        )
    if s.alert_webhook_url and not s.alert_webhook_url.startswith(("http://", "https://")):
        raise ConfigError(f"TESSERA_ALERT_WEBHOOK_URL={s.alert_webhook_url!r}: give an http(s) URL")
    if s.kafka_security_protocol.startswith("SASL") and not s.kafka_sasl_username:
        raise ConfigError("SASL needs TESSERA_KAFKA_SASL_USERNAME and TESSERA_KAFKA_SASL_PASSWORD")
    if s.processing_guarantee not in {"exactly_once", "at_least_once"}:
        raise ConfigError("TESSERA_PROCESSING_GUARANTEE must be 'exactly_once' or 'at_least_once'")
    if s.forecast_interval_s < 1 or s.forecast_horizon < 1 or s.forecast_season < 1:
        raise ConfigError("TESSERA_FORECAST_INTERVAL_S, _HORIZON and _SEASON must be >= 1")
    try:
        levels = [float(q) for q in s.forecast_quantiles.split(",") if q.strip()]
    except ValueError:
        levels = []
    if not levels or any(not 0 < q < 1 for q in levels):
        raise ConfigError(f"TESSERA_FORECAST_QUANTILES={s.forecast_quantiles!r}: give levels in (0, 1), "
                          "e.g. 0.05,0.5,0.95")
    if s.checkpoint_interval_s <= 0:
        raise ConfigError("TESSERA_CHECKPOINT_INTERVAL_S must be positive (seconds between saved states)")
    if s.shutdown_grace_s <= 0:
        raise ConfigError("TESSERA_SHUTDOWN_GRACE_S must be positive (seconds a worker has to stop)")
    if s.topic_partitions < 1:
        raise ConfigError("TESSERA_TOPIC_PARTITIONS must be >= 1")
    if s.clickhouse_url and not s.clickhouse_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"TESSERA_CLICKHOUSE_URL={mask_url(s.clickhouse_url)!r} must start with http:// or https:// "
            "(clickhouse-connect speaks the HTTP interface); leave it empty for embedded chdb"
        )
