"""Operator mistakes, each as a real subprocess: one line naming the setting, file or key, a
distinct exit code (2 configuration, 3 a command that cannot do its job), never a traceback,
never a secret."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.procs import free_port

ROOT = Path(__file__).resolve().parent.parent
MAPPING = ROOT / "schemas" / "mapping.example.yaml"


def base_env(**extra: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "CAPI_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "CAPI_MAPPING_FILE": str(MAPPING),
        "CAPI_SCHEMA_REGISTRY_URL": "http://127.0.0.1:9/apis/ccompat/v7",
        "CAPI_ACCESS_TOKEN": "tok-cli-secret",
        **extra,
    }


def consumer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env or base_env(),
    )


@pytest.fixture(scope="module")
def not_a_health_server() -> Iterator[str]:
    """Something that answers HTTP, but not with a consumer's JSON."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def mapping_file(tmp_path: Path, change: Any) -> str:
    document = yaml.safe_load(MAPPING.read_text())
    change(document)
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_cli_status_with_nothing_listening(tmp_path: Path) -> None:
    result = consumer("status", "--url", f"http://127.0.0.1:{free_port()}", "--interval", "0")
    assert_one_line_error(result, 3, "no consumer health server answering", "--url")


def test_cli_status_pointed_at_something_else(not_a_health_server: str) -> None:
    result = consumer("status", "--url", not_a_health_server, "--interval", "0")
    assert_one_line_error(result, 3, "no consumer health server answering")


def test_cli_transform_input_file_missing() -> None:
    result = consumer("transform", "--mapping", str(MAPPING), "--input", "/no/such/records.jsonl")
    assert_one_line_error(result, 3, "--input", "/no/such/records.jsonl")


def test_cli_transform_mapping_file_missing() -> None:
    result = consumer("transform", "--mapping", "/no/such/mapping.yaml")
    assert_one_line_error(result, 2, "--mapping")


@pytest.mark.parametrize(("change", "key"), [
    (lambda d: d["topics"][0].__setitem__("filters", 5), "topics[0].filters"),
    (lambda d: d["topics"][0].__setitem__("filters", "abc"), "topics[0].filters"),
    (lambda d: d["topics"][0]["user_data"].__setitem__("email", "x"), "user_data.email"),
    (lambda d: d["topics"][0].pop("event_id"), "topics[0].event_id"),
    (lambda d: d.__setitem__("topics", "orders"), "mapping.yaml.topics"),
])  # fmt: skip
def test_cli_transform_bad_mapping_names_the_key(tmp_path: Path, change: Any, key: str) -> None:
    result = consumer("transform", "--mapping", mapping_file(tmp_path, change), "--input", "-")
    assert_one_line_error(result, 2, key)


@pytest.mark.parametrize(("extra", "key"), [
    ({"CAPI_KAFKA_SECURTY_PROTOCOL": "SASL_SSL"}, "CAPI_KAFKA_SECURTY_PROTOCOL"),
    ({"CAPI_KAFKA_SECURITY_PROTOCOL": "SASL_SSSL"}, "CAPI_KAFKA_SECURITY_PROTOCOL"),
    ({"CAPI_SCHEMA_REGISTRY_AUTHFILE": "/etc/auth"}, "CAPI_SCHEMA_REGISTRY_AUTHFILE"),
    ({"CAPI_LINGER_MS": "soon"}, "CAPI_LINGER_MS"),
    ({"CAPI_MAPPING_FILE": "/no/such/mapping.yaml"}, "CAPI_MAPPING_FILE"),
])  # fmt: skip
def test_cli_check_config_and_run_stop_on_a_mistyped_setting(
    extra: dict[str, str], key: str
) -> None:
    for command in ("check-config", "run"):
        result = consumer(command, env=base_env(**extra))
        assert_one_line_error(result, 2, key)


def test_cli_check_config_masks_credentials_inside_urls() -> None:
    env = base_env(
        CAPI_DEDUP_BACKEND="redis",
        CAPI_REDIS_URL="redis://:hunter2-redis@127.0.0.1:6379/0",
        CAPI_SCHEMA_REGISTRY_URL="https://reg-user:hunter2-registry@127.0.0.1:9/apis/ccompat/v7",
    )
    result = consumer("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert "tok-cli-secret" not in result.stdout + result.stderr
    assert "redis://:***@127.0.0.1:6379/0" in result.stdout


def test_cli_unknown_command_or_option_prints_usage_not_traceback() -> None:
    for args in (("frobnicate",), ("run", "--dry-rnu"), ("status", "--interval", "soon")):
        result = consumer(*args)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr and "usage:" in result.stderr
