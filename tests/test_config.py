from __future__ import annotations

from pathlib import Path

import pytest

from consumer.config import load_config
from consumer.errors import ConfigError
from consumer.records import mask_url_credentials

ROOT = Path(__file__).resolve().parent.parent
BASE = {
    "CAPI_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "CAPI_MAPPING_FILE": str(ROOT / "schemas" / "mapping.example.yaml"),
    "CAPI_SCHEMA_REGISTRY_URL": "http://127.0.0.1:8081",
    "CAPI_ACCESS_TOKEN": "pina_SECRET",
}


def test_config_defaults_and_topics_from_mapping() -> None:
    config = load_config(BASE)
    assert config.topics == ("shop.orders", "shop.engagement")
    assert config.batch_max_events == 1000 and config.linger_ms == 200
    assert config.dedup_window_s == 48 * 3600
    assert config.token_for("1") is not None


def test_config_kafka_passthrough_and_secret_masking(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text("s3cret-pass\n")
    token_file = tmp_path / "token"
    token_file.write_text("pina_FILE_TOKEN")
    config = load_config(
        {
            **BASE,
            "CAPI_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "CAPI_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "CAPI_KAFKA_SASL_USERNAME": "capi",
            "CAPI_KAFKA_SASL_PASSWORD_FILE": str(secret_file),
            "CAPI_ACCESS_TOKEN_FILE_549755885175": str(token_file),
            "CAPI_DEDUP_WINDOW_S": "24h",
        }
    )
    client = config.kafka_client_config()
    assert client["security.protocol"] == "SASL_SSL"
    assert client["sasl.password"] == "s3cret-pass"
    token = config.token_for("549755885175")
    assert token is not None and token.reveal() == "pina_FILE_TOKEN"
    dumped = str(config.masked()) + repr(config)
    for secret in ("s3cret-pass", "pina_FILE_TOKEN", "pina_SECRET"):
        assert secret not in dumped
    assert config.dedup_window_s == 24 * 3600


@pytest.mark.parametrize(("changes", "key"), [
    ({"CAPI_KAFKA_BOOTSTRAP_SERVERS": ""}, "CAPI_KAFKA_BOOTSTRAP_SERVERS"),
    ({"CAPI_MAPPING_FILE": "/nope.yaml"}, "CAPI_MAPPING_FILE"),
    ({"CAPI_LINGER_MS": "soon"}, "CAPI_LINGER_MS"),
    ({"CAPI_BATCH_MAX_EVENTS": "1001"}, "CAPI_BATCH_MAX_EVENTS"),
    ({"CAPI_BATCH_MAX_EVENTS": "0"}, "CAPI_BATCH_MAX_EVENTS"),
    ({"CAPI_DEDUP_BACKEND": "memcached"}, "CAPI_DEDUP_BACKEND"),
    ({"CAPI_DEDUP_BACKEND": "redis"}, "CAPI_REDIS_URL"),
    ({"CAPI_API_BASE_URL": "api.pinterest.com"}, "CAPI_API_BASE_URL"),
    ({"CAPI_TEST_MODE": "maybe"}, "CAPI_TEST_MODE"),
    ({"CAPI_ACCESS_TOKEN": ""}, "CAPI_ACCESS_TOKEN"),
    ({"CAPI_ACCESS_TOKEN_FILE": "/missing"}, "CAPI_ACCESS_TOKEN_FILE"),
    ({"CAPI_BACKLOG_LOW_WATERMARK": "60000"}, "CAPI_BACKLOG_LOW_WATERMARK"),
    ({"CAPI_SCHEMA_REGISTRY_URL": ""}, "CAPI_SCHEMA_REGISTRY_URL"),
    ({"CAPI_LOCAL_SCHEMAS": "orders"}, "CAPI_LOCAL_SCHEMAS"),
    ({"CAPI_LINGR_MS": "5"}, "CAPI_LINGR_MS"),
    ({"CAPI_HEALTH_PORT": "70000"}, "CAPI_HEALTH_PORT"),
    ({"CAPI_HTTP_TIMEOUT_S": "inf"}, "CAPI_HTTP_TIMEOUT_S"),
    ({"CAPI_HTTP_TIMEOUT_S": "nan"}, "CAPI_HTTP_TIMEOUT_S"),
    ({"CAPI_SHUTDOWN_GRACE_S": "1e9"}, "CAPI_SHUTDOWN_GRACE_S"),
    ({"CAPI_REVOKE_TIMEOUT_S": "-1"}, "CAPI_REVOKE_TIMEOUT_S"),
    ({"CAPI_ACCESS_TOKEN_FILE_acme": "/etc/token"}, "CAPI_ACCESS_TOKEN_FILE_acme"),
    ({"CAPI_ACCESS_TOKEN_shop": "t"}, "CAPI_ACCESS_TOKEN_shop"),
    ({"CAPI_SCHEMA_REGISTRY_AUTHFILE": "/etc/auth"}, "CAPI_SCHEMA_REGISTRY_AUTHFILE"),
])  # fmt: skip
def test_config_invalid_setting_names_the_key(changes: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({**BASE, **changes})
    assert info.value.key == key, str(info.value)


def test_config_bad_mapping_names_file_and_rule_key(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text("topics:\n  - topic: t\n    event_name: purchase\n")
    with pytest.raises(ConfigError) as info:
        load_config({**BASE, "CAPI_MAPPING_FILE": str(mapping)})
    assert info.value.key.startswith("m.yaml.topics[0]")


def test_config_dry_run_needs_no_token() -> None:
    env = {k: v for k, v in BASE.items() if k != "CAPI_ACCESS_TOKEN"}
    assert load_config({**env, "CAPI_DRY_RUN": "true"}).is_dry_run


def test_config_default_token_from_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("pina_DEFAULT\n")
    env = {k: v for k, v in BASE.items() if k != "CAPI_ACCESS_TOKEN"}
    config = load_config({**env, "CAPI_ACCESS_TOKEN_FILE": str(token_file)})
    token = config.token_for("123")
    assert token is not None and token.reveal() == "pina_DEFAULT"
    assert config.account_tokens == {}


def test_readme_documents_every_setting() -> None:
    import dataclasses

    from consumer.config import Config, _env_name

    readme = (ROOT / "README.md").read_text()
    for field in dataclasses.fields(Config):
        if field.name in (
            "mapping",
            "kafka",
            "account_tokens",
            "mapping_file",
            "bootstrap_servers",
        ):
            continue
        assert _env_name(field.name) in readme, field.name


@pytest.mark.parametrize(
    "url",
    [
        "redis://redis.internal:6379/0?password=marker-secret-1",
        "redis://:marker-secret-1@redis.internal:6379/0",
        "https://user:marker-secret-1@api.example.com/x?access_token=marker-secret-1",
    ],
)
def test_mask_url_credentials_hides_userinfo_and_secret_query_parameters(url: str) -> None:
    assert "marker-secret-1" not in mask_url_credentials(url)
    host = "redis.internal" if url.startswith("redis") else "api.example.com"
    assert host in mask_url_credentials(url)


def test_config_masked_hides_a_redis_password_given_as_a_query_parameter() -> None:
    config = load_config(
        {
            **BASE,
            "CAPI_DEDUP_BACKEND": "redis",
            "CAPI_REDIS_URL": "redis://redis.internal:6379/0?password=marker-secret-3",
        }
    )
    assert "marker-secret-3" not in str(config.masked())


def test_config_a_rejected_url_is_not_echoed_with_its_password() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({**BASE, "CAPI_REDIS_URL": "ftp://:marker-secret-2@redis.internal/0"})
    assert "marker-secret-2" not in str(info.value)


@pytest.mark.parametrize(("key", "value"), [
    ("CAPI_COMMIT_INTERVAL_MS", "600000000"), ("CAPI_RETRY_BACKOFF_BASE_MS", "99999999999"),
    ("CAPI_RETRY_BACKOFF_CAP_MS", "99999999999"), ("CAPI_DEDUP_WINDOW_S", "365d"),
    ("CAPI_LINGER_MS", "86400000"), ("CAPI_SHUTDOWN_GRACE_S", "86400"),
    ("CAPI_REVOKE_TIMEOUT_S", "7200"), ("CAPI_HTTP_TIMEOUT_S", "86400"),
    ("CAPI_AUTH_RETRY_S", "86400"), ("CAPI_PAUSED_UNREADY_S", "1e9"),
    ("CAPI_LOST_UNREADY_S", "1e9"), ("CAPI_UNKNOWN_SCHEMA_RETRY_S", "1e9"),
    ("CAPI_MAX_RETRY_AGE_S", "1e12"), ("CAPI_BATCH_MAX_BYTES", "999999999999"),
])  # fmt: skip
def test_every_duration_and_size_has_an_upper_bound_naming_its_key(key: str, value: str) -> None:
    """Issue 24 part 4: a mistyped unit (ms for s) must stop start-up, not quietly make the
    consumer commit once a week or never give up."""
    with pytest.raises(ConfigError) as info:
        load_config({**BASE, key: value})
    assert str(info.value).startswith(key) and "\n" not in str(info.value)


def test_eqs_token_is_a_secret_read_from_a_file_and_masked(tmp_path: Path) -> None:
    token_file = tmp_path / "eqs-token"
    token_file.write_text("pina_READ_marker\n")
    config = load_config(
        {**BASE, "CAPI_EQS_TOKEN_FILE": str(token_file), "CAPI_EQS_LOOKBACK": "1d"}
    )
    assert config.eqs_token is not None and config.eqs_token.reveal() == "pina_READ_marker"
    assert config.eqs_lookback == "1d" and config.eqs_interval_s == 3600.0
    assert "pina_READ_marker" not in str(config.masked()) + repr(config)
    with pytest.raises(ConfigError) as info:
        load_config({**BASE, "CAPI_EQS_LOOKBACK": "7d"})
    assert str(info.value).startswith("CAPI_EQS_LOOKBACK")
