"""Environment variables (prefix CAPI_) → one frozen `Config`, with the compiled mapping file.

Every setting is validated at start-up; a bad one raises `ConfigError` naming its variable.
Secrets (tokens, passwords) come from variables or mounted files and are held as `Secret`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from consumer.conversion.hashing import HAS_NATIVE_HASHER, HASHER_MODES
from consumer.conversion.rules import MappingRules, load_mapping, parse_duration_s
from consumer.errors import ConfigError
from consumer.records import Secret, is_ad_account_id, mask_url_credentials
from consumer.stages.avroplan import DECODER_MODES, HAS_COMPILED_DECODER
from consumer.stages.batcher import BatchSettings
from consumer.stages.delivery import DeliverySettings

PREFIX = "CAPI_"
T = TypeVar("T")
# librdkafka settings whose values are secrets.
_SECRET_KAFKA_KEYS = (
    "sasl.password",
    "ssl.key.password",
    "sasl.oauthbearer.client.secret",
    "ssl.keystore.password",
    "ssl.key.pem",
)
_TOKEN_PREFIX = "ACCESS_TOKEN_"
_TOKEN_FILE_PREFIX = "ACCESS_TOKEN_FILE_"


# Each stage's settings object holds its defaults; Config's knobs start from them.
_BATCH = BatchSettings()
_DELIVERY = DeliverySettings()


@dataclass(frozen=True)
class Config:
    bootstrap_servers: str
    mapping_file: Path
    mapping: MappingRules = field(repr=False)
    group_id: str = "capi-consumer"
    topics: tuple[str, ...] = ()
    kafka: Mapping[str, str | Secret] = field(default_factory=dict)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    consume_batch_size: int = 1000
    schema_registry_url: str | None = None
    schema_registry_auth: Secret | None = None
    local_schemas: Mapping[str, Path] = field(default_factory=dict)
    reader_schema_dir: Path | None = None
    api_base_url: str = _DELIVERY.base_url
    access_token: Secret | None = None
    # An OAuth token with ads:read for Pinterest's event quality score; none: not polled.
    eqs_token: Secret | None = None
    eqs_interval_s: float = 3600.0
    eqs_lookback: str = "14d"
    account_tokens: Mapping[str, Secret] = field(default_factory=dict)
    is_test_mode: bool = False
    is_dry_run: bool = False
    batch_max_events: int = _BATCH.max_events
    batch_max_bytes: int = _BATCH.max_bytes
    linger_ms: int = round(_BATCH.linger_s * 1000)
    max_in_flight_per_account: int = _DELIVERY.max_in_flight_per_account
    rate_limit_per_minute: int = _DELIVERY.rate_per_minute
    test_mode_rate_per_s: float = _DELIVERY.test_rate_per_s
    http_timeout_s: float = 30.0
    http_connect_timeout_s: float = 10.0
    http_pool_size: int = 64
    retry_backoff_base_ms: int = round(_DELIVERY.backoff_base_s * 1000)
    retry_backoff_cap_ms: int = round(_DELIVERY.backoff_cap_s * 1000)
    auth_retry_s: float = _DELIVERY.auth_retry_s
    max_retry_age_s: float | None = _DELIVERY.max_retry_age_s
    dedup_backend: Literal["memory", "redis", "off"] = "memory"
    dedup_window_s: int = 48 * 3600
    avro_decoder: str = "auto"  # auto, native (the compiled decoder, required) or fastavro
    user_data_hasher: str = "auto"  # auto, native (the compiled rules, required) or python
    dedup_read_legacy_keys: bool = True  # Redis keys written before event names counted
    dedup_max_keys: int = 10_000_000
    redis_url: str | None = None
    backlog_high_watermark: int = _BATCH.high_watermark
    backlog_low_watermark: int = _BATCH.low_watermark
    commit_interval_ms: int = 100
    shutdown_grace_s: float = 25.0
    revoke_timeout_s: float = 10.0
    paused_unready_s: float = 300.0
    lost_unready_s: float = 60.0
    unknown_schema_retry_s: float = 60.0
    dlq_topic: str = "capi.dead-letter"
    trial_dlq_topic: str = ""  # a dry run's or test mode's dead letters: logged unless set
    dlq_max_run: int = 1000
    health_host: str = "0.0.0.0"
    health_port: int = 8080
    log_level: str = "INFO"

    def token_for(self, ad_account: str) -> Secret | None:
        return self.account_tokens.get(ad_account, self.access_token)

    def batch_settings(self) -> BatchSettings:
        return BatchSettings(
            max_events=self.batch_max_events,
            max_bytes=self.batch_max_bytes,
            linger_s=self.linger_ms / 1000,
            high_watermark=self.backlog_high_watermark,
            low_watermark=self.backlog_low_watermark,
        )

    def delivery_settings(self) -> DeliverySettings:
        return DeliverySettings(
            base_url=self.api_base_url,
            is_test=self.is_test_mode,
            max_in_flight_per_account=self.max_in_flight_per_account,
            rate_per_minute=self.rate_limit_per_minute,
            test_rate_per_s=self.test_mode_rate_per_s,
            backoff_base_s=self.retry_backoff_base_ms / 1000,
            backoff_cap_s=self.retry_backoff_cap_ms / 1000,
            auth_retry_s=self.auth_retry_s,
            max_retry_age_s=self.max_retry_age_s,
        )

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka settings with secrets revealed: only for building clients."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        for key, value in self.kafka.items():
            config[key] = value.reveal() if isinstance(value, Secret) else value
        return config

    @property
    def commits_offsets(self) -> bool:
        """False for a dry run and for test mode: neither delivers for real, so neither may move
        the group's offsets past events it printed or sent with test=true."""
        return not (self.is_dry_run or self.is_test_mode)

    def masked(self) -> dict[str, Any]:
        """The effective configuration for `check-config`, secrets masked."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "mapping":
                continue
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                value = {str(k): str(v) for k, v in value.items()}
            elif isinstance(value, Secret | Path | tuple):
                value = str(value) if not isinstance(value, tuple) else list(value)
            if isinstance(value, str):
                value = mask_url_credentials(value)
            elif isinstance(value, dict):
                value = {k: mask_url_credentials(v) for k, v in value.items()}
            out[f.name] = value
        out["mapping_rules"] = [rule.name for rule in self.mapping.rules]
        return out


# Booleans are named is_* in code; their variables read naturally without the prefix.
_ENV_NAMES = {"is_test_mode": "TEST_MODE", "is_dry_run": "DRY_RUN", "group_id": "KAFKA_GROUP_ID"}


def _env_name(name: str) -> str:
    return PREFIX + _ENV_NAMES.get(name, name.upper())


def _int(key: str, raw: str, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        raise ConfigError(key, f"expected an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(key, f"must be {bounds}, got {value}")
    return value


def _float(key: str, raw: str, minimum: float = 0.0, maximum: float = 86_400.0) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(key, f"expected a number, got {raw!r}") from None
    # inf and nan parse as floats but would turn a timeout into "wait for ever".
    if not minimum <= value <= maximum:
        raise ConfigError(key, f"must be between {minimum} and {maximum:g}, got {raw}")
    return value


def _bool(key: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(key, f"expected true or false, got {raw!r}")


def _choice(key: str, raw: str, choices: tuple[str, ...]) -> str:
    if raw.strip().lower() not in choices:
        raise ConfigError(key, f"expected one of {', '.join(choices)}, got {raw!r}")
    return raw.strip().lower()


def _url(key: str, raw: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """A base URL: paths are appended to it, so it has no query or fragment (but a Redis URL
    may: `?password=`, `?db=`)."""
    shown = mask_url_credentials(raw)  # a rejected URL may still carry a password
    text = raw.strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme not in schemes or not re.match(r"^[a-z]+://[^\s/?#]+", text, re.IGNORECASE):
        expected = " or ".join(f"{s}://" for s in schemes)
        raise ConfigError(key, f"expected a {expected} URL, got {shown!r}")
    if scheme.startswith("http") and ("?" in text or "#" in text):
        raise ConfigError(key, f"a base URL takes no query or fragment, got {shown!r}")
    return text.rstrip("/")


def _api_url(key: str, raw: str) -> str:
    """Pinterest takes the access token as a bearer token: credentials in the URL would be a
    second Authorization, which the HTTP client refuses on every request."""
    url = _url(key, raw)
    if "@" in url.split("://", 1)[1].split("/", 1)[0]:
        raise ConfigError(
            key, "takes no user or password: the API reads the token from CAPI_ACCESS_TOKEN"
        )
    return url


def _at_most(key: str, value: int, maximum: int, shown: str) -> int:
    if value > maximum:
        raise ConfigError(key, f"at most {shown}, got {value}")
    return value


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    """`CAPI_<NAME>` or the file named by `CAPI_<NAME>_FILE` (a mounted Kubernetes Secret)."""
    key = _env_name(name)
    file_key = key + "_FILE"
    if env.get(key) and env.get(file_key):
        raise ConfigError(file_key, f"set either {key} or {file_key}, not both")
    if env.get(key):
        return Secret(env[key].strip())
    if env.get(file_key):
        return Secret(_read_secret_file(file_key, env[file_key]))
    return None


def _read_secret_file(key: str, path: str) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(key, f"cannot read secret file: {exc.strerror}") from None
    if not value:
        raise ConfigError(key, "secret file is empty")
    return value


def _kafka_settings(env: Mapping[str, str]) -> dict[str, str | Secret]:
    """CAPI_KAFKA_SECURITY_PROTOCOL → security.protocol, and so on for any librdkafka key."""
    settings: dict[str, str | Secret] = {}
    prefix = PREFIX + "KAFKA_"
    for key, raw in env.items():
        if not key.startswith(prefix) or key == prefix + "BOOTSTRAP_SERVERS":
            continue
        name = key[len(prefix) :].lower()
        if name == "group_id":
            continue
        if name.endswith("_file") and name[:-5].replace("_", ".") in _SECRET_KAFKA_KEYS:
            settings[name[:-5].replace("_", ".")] = Secret(_read_secret_file(key, raw))
            continue
        property_name = name.replace("_", ".")
        is_secret = property_name in _SECRET_KAFKA_KEYS
        settings[property_name] = Secret(raw) if is_secret else raw
    return settings


def _account_tokens(env: Mapping[str, str]) -> dict[str, Secret]:
    tokens: dict[str, Secret] = {}
    for key, raw in env.items():
        if key == PREFIX + "ACCESS_TOKEN_FILE":
            continue  # the default token's file, not an account's
        if key.startswith(PREFIX + _TOKEN_FILE_PREFIX):
            account = key[len(PREFIX + _TOKEN_FILE_PREFIX) :]
            if not is_ad_account_id(account):
                raise ConfigError(
                    key, "per-account token files are CAPI_ACCESS_TOKEN_FILE_<ad account id>"
                )
            tokens[account] = Secret(_read_secret_file(key, raw))
        elif key.startswith(PREFIX + _TOKEN_PREFIX):
            account = key[len(PREFIX + _TOKEN_PREFIX) :]
            if not is_ad_account_id(account):
                raise ConfigError(key, "per-account tokens are CAPI_ACCESS_TOKEN_<ad account id>")
            tokens[account] = Secret(raw.strip())
    return tokens


def _local_schemas(key: str, raw: str) -> dict[str, Path]:
    schemas = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        topic, sep, path = item.partition("=")
        if not sep or not topic or not path:
            raise ConfigError(key, f"expected topic=path.avsc[,topic=path.avsc], got {item!r}")
        if not Path(path).is_file():
            raise ConfigError(key, f"schema file not found: {path}")
        schemas[topic.strip()] = Path(path.strip())
    return schemas


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Build the `Config` from `env` (default: the process environment). Raises `ConfigError`."""
    env = dict(os.environ if env is None else env)
    known = {_env_name(f.name) for f in dataclasses.fields(Config)}
    values: dict[str, Any] = {}

    def get(name: str, parse: Callable[[str, str], T]) -> None:
        key = _env_name(name)
        if env.get(key, "").strip() != "":
            values[name] = parse(key, env[key])

    bootstrap = env.get(PREFIX + "KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if not bootstrap:
        raise ConfigError(PREFIX + "KAFKA_BOOTSTRAP_SERVERS", "is required (host:port,...)")
    mapping_key = _env_name("mapping_file")
    if not env.get(mapping_key):
        raise ConfigError(mapping_key, "is required: the YAML file of topic → event rules")
    mapping_file = Path(env[mapping_key])
    mapping = load_mapping(mapping_file, mapping_key)
    get("group_id", lambda k, v: v.strip())
    get("topics", lambda k, v: tuple(t.strip() for t in v.split(",") if t.strip()))
    if "topics" not in values:
        values["topics"] = tuple(
            r.topic if r.topic is not None else f"^{r.topic_pattern.pattern}"  # type: ignore[union-attr]
            for r in mapping.rules
        )
    get("auto_offset_reset", lambda k, v: _choice(k, v, ("earliest", "latest")))
    get("consume_batch_size", lambda k, v: _int(k, v, 1, 100_000))
    get("schema_registry_url", _url)
    values["schema_registry_auth"] = _secret(env, "schema_registry_auth")
    get("local_schemas", _local_schemas)
    get("reader_schema_dir", lambda k, v: _existing_dir(k, v))
    get("api_base_url", _api_url)
    values["access_token"] = _secret(env, "access_token")
    values["eqs_token"] = _secret(env, "eqs_token")
    values["account_tokens"] = _account_tokens(env)
    get("is_test_mode", _bool)
    get("is_dry_run", _bool)
    get("batch_max_events", lambda k, v: _int(k, v, 1, 1000))
    get("batch_max_bytes", lambda k, v: _int(k, v, 1024, 16 * 1024 * 1024))
    get("linger_ms", lambda k, v: _int(k, v, 0, 60_000))
    get("max_in_flight_per_account", lambda k, v: _int(k, v, 1, 256))
    get("rate_limit_per_minute", lambda k, v: _int(k, v, 1, 10_000_000))
    get("test_mode_rate_per_s", lambda k, v: _float(k, v, 0.1, 10_000.0))
    get("eqs_interval_s", lambda k, v: _float(k, v, 60.0, 86_400.0))
    get("eqs_lookback", lambda k, v: _choice(k, v, ("1d", "14d")))
    get("http_timeout_s", lambda k, v: _float(k, v, 0.1, 600.0))
    get("http_connect_timeout_s", lambda k, v: _float(k, v, 0.1, 120.0))
    get("http_pool_size", lambda k, v: _int(k, v, 1, 1024))
    get("retry_backoff_base_ms", lambda k, v: _int(k, v, 1, 600_000))
    get("retry_backoff_cap_ms", lambda k, v: _int(k, v, 1, 3_600_000))
    get("auth_retry_s", lambda k, v: _float(k, v, 0.01, 3600.0))
    get("max_retry_age_s", lambda k, v: _float(k, v, 1.0, 30 * 86_400.0))
    get("dedup_backend", lambda k, v: _choice(k, v, ("memory", "redis", "off")))
    get("dedup_window_s", lambda k, v: _at_most(k, parse_duration_s(v, k), 30 * 86_400, "30d"))
    get("dedup_read_legacy_keys", _bool)
    get("avro_decoder", lambda k, v: _choice(k, v, DECODER_MODES))
    get("user_data_hasher", lambda k, v: _choice(k, v, HASHER_MODES))
    get("dedup_max_keys", lambda k, v: _int(k, v, 1000))
    get("redis_url", lambda k, v: _url(k, v, ("redis", "rediss")))
    get("backlog_high_watermark", lambda k, v: _int(k, v, 1))
    get("backlog_low_watermark", lambda k, v: _int(k, v, 0))
    get("commit_interval_ms", lambda k, v: _int(k, v, 10, 60_000))
    # Kubernetes kills the pod at terminationGracePeriodSeconds whatever these say.
    get("shutdown_grace_s", lambda k, v: _float(k, v, 0.0, 3600.0))
    get("revoke_timeout_s", lambda k, v: _float(k, v, 0.0, 600.0))
    get("paused_unready_s", lambda k, v: _float(k, v, 1.0))
    get("lost_unready_s", lambda k, v: _float(k, v, 1.0))
    get("unknown_schema_retry_s", lambda k, v: _float(k, v, 0.0, 86_400.0))
    get("dlq_topic", lambda k, v: v.strip())
    get("trial_dlq_topic", lambda k, v: v.strip())
    get("dlq_max_run", lambda k, v: _int(k, v, 0))
    get("health_host", lambda k, v: v.strip())
    get("health_port", lambda k, v: _int(k, v, 0, 65535))
    get("log_level", lambda k, v: _choice(k, v, ("debug", "info", "warning", "error")).upper())
    values["kafka"] = _kafka_settings(env)
    for key in env:
        if key.startswith(PREFIX) and not _is_recognized(key, known):
            raise ConfigError(key, "unknown setting (see README: Configuration)")
    config = Config(
        bootstrap_servers=bootstrap, mapping_file=mapping_file, mapping=mapping, **values
    )
    _check_relations(config)
    return config


def _is_recognized(key: str, known: set[str]) -> bool:
    prefixes = (PREFIX + "KAFKA_", PREFIX + _TOKEN_PREFIX)
    secrets_as_files = {
        PREFIX + "ACCESS_TOKEN_FILE",
        PREFIX + "SCHEMA_REGISTRY_AUTH_FILE",
        PREFIX + "EQS_TOKEN_FILE",
        PREFIX + "MAPPING_FILE",
    }
    return key in known or key in secrets_as_files or key.startswith(prefixes)


def _existing_dir(key: str, raw: str) -> Path:
    path = Path(raw)
    if not path.is_dir():
        raise ConfigError(key, f"not a directory: {raw}")
    return path


def _check_relations(config: Config) -> None:
    if config.backlog_low_watermark >= config.backlog_high_watermark:
        raise ConfigError(_env_name("backlog_low_watermark"), "must be below the high watermark")
    if config.avro_decoder == "native" and not HAS_COMPILED_DECODER:
        raise ConfigError(
            _env_name("avro_decoder"),
            "native asks for the compiled decoder, which is not installed "
            "(pip install ./native needs Rust; auto or fastavro decode without it)",
        )
    if config.user_data_hasher == "native" and not HAS_NATIVE_HASHER:
        raise ConfigError(
            _env_name("user_data_hasher"),
            "native asks for the compiled user_data rules, which are not installed "
            "(pip install ./native needs Rust; auto or python hash without them)",
        )
    if config.dedup_backend == "redis" and not config.redis_url:
        raise ConfigError(_env_name("redis_url"), "is required when CAPI_DEDUP_BACKEND=redis")
    if not config.is_dry_run and config.access_token is None and not config.account_tokens:
        raise ConfigError(
            _env_name("access_token"),
            "is required (or CAPI_ACCESS_TOKEN_FILE, or per-account tokens)",
        )
    if not config.schema_registry_url and not config.local_schemas:
        raise ConfigError(
            _env_name("schema_registry_url"),
            "is required unless every topic has a CAPI_LOCAL_SCHEMAS entry",
        )
    if config.retry_backoff_cap_ms < config.retry_backoff_base_ms:
        raise ConfigError(_env_name("retry_backoff_cap_ms"), "must be >= the base backoff")
