"""`consumer status`: a compact human summary of a running instance, from its health endpoints."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections import defaultdict
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families


def _get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def _by_label(metrics_text: str, family: str, label: str) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for metric in text_string_to_metric_families(metrics_text):
        for sample in metric.samples:
            if sample.name == family:
                totals[sample.labels.get(label, "")] += sample.value
    return dict(totals)


def collect(base_url: str, interval_s: float = 1.0) -> dict[str, Any]:
    """Two /stats samples `interval_s` apart (for rates), /readyz and /metrics."""
    base_url = base_url.rstrip("/")
    started = time.monotonic()
    first = orjson.loads(_get(f"{base_url}/stats")[1])
    time.sleep(interval_s)
    second = orjson.loads(_get(f"{base_url}/stats")[1])
    elapsed = time.monotonic() - started
    ready_status, ready_body = _get(f"{base_url}/readyz")
    metrics = _get(f"{base_url}/metrics")[1].decode()
    return {
        "ready": ready_status == 200,
        "readiness": orjson.loads(ready_body),
        "assigned": second["assigned"],
        "lag": second["lag"],
        "total_lag": sum(second["lag"].values()),
        "paused_partitions": second["paused"],
        "consumed_per_s": round((second["consumed"] - first["consumed"]) / elapsed, 1),
        "delivered_per_s": round((second["delivered"] - first["delivered"]) / elapsed, 1),
        "totals": {
            k: second[k]
            for k in ("consumed", "delivered", "deduplicated", "skipped", "dead_lettered")
        },
        "retries_by_cause": _by_label(metrics, "capi_delivery_retries_total", "cause"),
        "requests_by_status": _by_label(metrics, "capi_delivery_requests_total", "status"),
        "dead_letters_by_reason": _by_label(metrics, "capi_messages_dead_lettered_total", "reason"),
        "halted_accounts": second["halted_accounts"],
        "halted": second["halted"],
        "match_coverage": second["match_coverage"],
        "normalize_dropped": second.get("normalize_dropped", {}),
        "pinterest_eqs": second.get("pinterest_eqs", {}),
    }


def render(status: dict[str, Any]) -> str:
    def pairs(values: dict[str, float]) -> str:
        shown = sorted((k, v) for k, v in values.items() if k)  # "" is the zero series
        return ", ".join(f"{k} {int(v)}" for k, v in shown) or "none"

    lag = status["lag"]
    halted = ", ".join(f"{a}: {r}" for a, r in status["halted_accounts"].items()) or "none"
    lines = [
        f"ready        {'yes' if status['ready'] else 'NO'}"
        + (
            f" ({status['readiness']['state']}: {status['readiness'].get('reason', '')})"
            if "state" in status["readiness"]
            else ""
        ),
        f"partitions   {len(status['assigned'])} assigned, {status['paused_partitions']} paused,"
        f" lag {status['total_lag']}",
    ]
    for partition in sorted(lag):
        lines.append(f"  {partition:<40} lag {lag[partition]}")
    totals = status["totals"]
    lines += [
        f"throughput   in {status['consumed_per_s']:.0f}/s, out {status['delivered_per_s']:.0f}/s",
        f"totals       consumed {totals['consumed']}, delivered {totals['delivered']}, "
        f"deduplicated {totals['deduplicated']}, skipped {totals['skipped']}, "
        f"dead-lettered {totals['dead_lettered']}",
        f"requests     {pairs(status['requests_by_status'])}",
        f"retries      {pairs(status['retries_by_cause'])}",
        f"dead letters {pairs(status['dead_letters_by_reason'])}",
        f"halted       {halted}",
        f"left out     {pairs(status['normalize_dropped'])} (values normalization could not "
        "use; the events were still sent)",
        "match coverage (share of delivered-bound events carrying each identifier)",
    ]
    coverage = status["match_coverage"]
    lines += [f"  {name:<14}{share * 100:6.1f}%" for name, share in coverage.items() if share]
    eqs = status["pinterest_eqs"]
    shown = ", ".join(f"{account} {worst}" for account, worst in eqs.items())
    lines.append(
        f"Pinterest's event quality score (worst per account): {shown}"
        if eqs
        else "Pinterest's event quality score: not read (set CAPI_EQS_TOKEN, an ads:read token)"
    )
    return "\n".join(lines)
