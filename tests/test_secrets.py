"""A marker secret through every URL-shaped setting never shows (issue 24 part 6).

Each setting that takes a URL (`CAPI_API_BASE_URL`, `CAPI_SCHEMA_REGISTRY_URL`,
`CAPI_REDIS_URL`) carries the marker as URL userinfo and as password/token query parameters;
`check-config`, configuration error messages, the logs of a short `consumer run` and the
delivery span's attributes are searched for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consumer.config import load_config
from consumer.errors import ConfigError
from consumer.observability.telemetry import setup_telemetry
from consumer.records import AdAccountId, Batch, Secret
from consumer.stages.delivery import DeliveryClient, DeliverySettings
from consumer.tools import cli
from tests.conftest import ConversionFactory, eventually
from tests.test_delivery import _ScriptedSession

ROOT = Path(__file__).resolve().parent.parent
MARKER = "mk7Secret9q"
URL_SETTINGS = ("CAPI_API_BASE_URL", "CAPI_SCHEMA_REGISTRY_URL", "CAPI_REDIS_URL")


def with_marker(setting: str, form: str) -> str:
    scheme, host = (
        ("redis", "127.0.0.1:1/0") if setting == "CAPI_REDIS_URL" else ("http", "127.0.0.1:1")
    )
    if form == "userinfo":
        return f"{scheme}://user:{MARKER}@{host}"
    return f"{scheme}://{host}?{form}={MARKER}&x=1"


FORMS = ("userinfo", "password", "token", "access_token", "api_key")


def environment(form: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPI_", "OTEL_"))}
    return {
        **env,
        "CAPI_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "CAPI_MAPPING_FILE": str(ROOT / "schemas" / "mapping.example.yaml"),
        "CAPI_ACCESS_TOKEN": "pina_t",
        "CAPI_HEALTH_PORT": "0",
        "CAPI_DEDUP_BACKEND": "redis",
        "CAPI_LOG_LEVEL": "debug",
        **{setting: with_marker(setting, form) for setting in URL_SETTINGS},
    }


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("setting", URL_SETTINGS)
def test_check_config_and_config_errors_never_show_a_url_secret(
    setting: str, form: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`consumer check-config` prints the effective configuration, or one line naming the key
    of a URL it refuses (a base URL with a query, credentials in the API's URL)."""
    for key in [k for k in os.environ if k.startswith(("CAPI_", "OTEL_"))]:
        monkeypatch.delenv(key)
    clean = {k: v.replace(f"user:{MARKER}@", "") for k, v in environment("userinfo").items()}
    for key, value in {**clean, setting: with_marker(setting, form)}.items():
        if key.startswith("CAPI_"):
            monkeypatch.setenv(key, value)
    code = cli.main(["check-config"])
    printed = capsys.readouterr()
    output = printed.out + printed.err
    assert MARKER not in output
    if code == 0:
        assert "127.0.0.1" in output  # shown, masked
    else:
        assert output.count("\n") == 1 and setting in output  # one line naming the key
    assert code in (0, 2)
    # The same outside the command: the error's text, and a rejected scheme.
    env = {k: v for k, v in clean.items() if k.startswith("CAPI_")}
    env[setting] = with_marker(setting, form).replace("http://", "ftp://")
    env[setting] = env[setting].replace("redis://", "ftp://")
    with pytest.raises(ConfigError) as info:
        load_config(env)
    assert setting in str(info.value) and MARKER not in str(info.value)


def test_logs_of_a_run_never_show_a_url_secret(tmp_path: Path) -> None:
    """Nothing answers on the URLs: the run logs its start, the clients' errors, its stop.
    (`tests/integration/test_security.py` sends records through URLs carrying a marker.)"""
    log = tmp_path / "run.log"
    with log.open("w") as out:
        run = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run"],
            env=environment("userinfo")
            | {
                "CAPI_API_BASE_URL": "http://127.0.0.1:1",  # credentials here are refused
                "CAPI_REDIS_URL": with_marker("CAPI_REDIS_URL", "password"),
            },
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "consumer started" not in log.read_text():
                time.sleep(0.1)
        finally:
            run.send_signal(signal.SIGTERM)
            try:
                run.wait(30)
            except subprocess.TimeoutExpired:
                run.kill()
    text = log.read_text(errors="replace")
    assert '"consumer started"' in text and '"drained"' in text, text
    assert MARKER not in text


@pytest.mark.parametrize("form", FORMS)
async def test_delivery_span_url_never_shows_a_url_secret(
    form: str, conversion_factory: ConversionFactory
) -> None:
    exporter = InMemorySpanExporter()
    telemetry = setup_telemetry([], span_processors=[SimpleSpanProcessor(exporter)])
    session = _ScriptedSession(on_first=lambda: None)
    results: list[object] = []
    client = DeliveryClient(
        session,  # type: ignore[arg-type]
        DeliverySettings(base_url=with_marker("CAPI_API_BASE_URL", form), backoff_base_s=0.01),
        lambda a: Secret("token"),
        results.append,
        telemetry,
    )
    conversion = conversion_factory()
    client.submit(Batch(AdAccountId("111"), (conversion,), (b'{"event_id":"e"}',)))
    await eventually(lambda: results, what="the batch's outcome")
    spans = exporter.get_finished_spans()
    assert spans
    for span in spans:
        assert MARKER not in repr(dict(span.attributes or {})) and MARKER not in span.name
