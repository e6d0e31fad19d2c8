from __future__ import annotations

import io

from consumer.conversion.quality import MatchQuality, identifiers_of
from consumer.tools.progress import Progress

DIGEST = ["0" * 64]


def test_identifiers_ip_and_agent_count_only_together() -> None:
    assert identifiers_of({"em": DIGEST, "client_ip_address": "1.2.3.4"}) == ["em"]
    assert identifiers_of({"client_ip_address": "1.2.3.4", "client_user_agent": "UA"}) == ["ip_ua"]


def test_match_quality_coverage_and_table() -> None:
    quality = MatchQuality()
    quality.observe("1", "checkout", {"em": DIGEST, "ph": DIGEST})
    quality.observe("1", "checkout", {"em": DIGEST})
    quality.observe("2", "lead", {"hashed_maids": DIGEST})
    coverage = quality.coverage()
    assert round(coverage["em"], 3) == 0.667
    assert round(coverage["ph"], 3) == 0.333
    assert quality.by_count[("1", "checkout", 2)] == 1
    table = quality.table()
    assert "match quality over 3 events" in table
    assert "identifiers per event (mean) 1.33" in table


def test_progress_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress("replay", 100, stream=stream, every_s=0)
    progress.update(50)
    progress.update(100, is_final=True)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("replay: 50/100 (50%)")
    assert "eta" in lines[0] and "/s" in lines[0]
    assert lines[-1].startswith("replay: 100/100 (100%)")
