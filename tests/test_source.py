from __future__ import annotations

import pytest

from consumer.source import partition_lag


@pytest.mark.parametrize(("stats", "lag"), [
    ({"consumer_lag": 12, "hi_offset": 100, "committed_offset": 88}, 12),
    # a group that never committed: librdkafka says -1; the position counts instead
    ({"consumer_lag": -1, "hi_offset": 100, "committed_offset": -1001, "app_offset": 40}, 60),
    # before the first message was handed over: from the start of the log
    ({"consumer_lag": -1, "hi_offset": 100, "committed_offset": -1001, "app_offset": -1001,
      "lo_offset": 0}, 100),
    ({"consumer_lag": -1, "hi_offset": -1, "committed_offset": -1001}, None),  # nothing known
    ({}, None),
])  # fmt: skip
def test_partition_lag_from_statistics_also_for_a_new_group(
    stats: dict[str, int], lag: int | None
) -> None:
    assert partition_lag(stats) == lag
