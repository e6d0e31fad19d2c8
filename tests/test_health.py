from __future__ import annotations

import pytest

from consumer.observability.health import STATES, UNREACHABLE_GRACE_S, ReadinessFacts, assess

LONG = UNREACHABLE_GRACE_S + 1


@pytest.mark.parametrize(("facts", "state", "words"), [
    (ReadinessFacts(), "starting", "not joined"),
    (ReadinessFacts(is_joined=True, assigned=4), "consuming", "4 partitions"),
    (ReadinessFacts(is_joined=True), "no_partitions", "more replicas than partitions"),
    (ReadinessFacts(broker_down_s=LONG), "broker_unreachable", "no Kafka broker"),
    (ReadinessFacts(broker_down_s=1.0, is_joined=True, assigned=1), "consuming", ""),  # a blip
    (ReadinessFacts(missing_topics=("shop.ordres",), is_joined=True), "topic_missing",
     "shop.ordres"),
    (ReadinessFacts(transient_failing_s=LONG, transient_error="registry down", is_joined=True,
                    assigned=2), "registry_unreachable", "registry down"),
    (ReadinessFacts(all_paused_s=301, is_joined=True, assigned=2), "backpressure", "paused"),
    (ReadinessFacts(all_paused_s=10, is_joined=True, assigned=2), "consuming", ""),
    (ReadinessFacts(halted_accounts=("549755885175",), is_joined=True, assigned=2),
     "account_halted", "549755885175"),
    (ReadinessFacts(halt_reason="1000 dead letters in a row", halted_accounts=("1",)),
     "dead_letter_ceiling", "dead letters"),
])  # fmt: skip
def test_assess_every_state_with_its_reason(facts: ReadinessFacts, state: str, words: str) -> None:
    found, reason = assess(facts)
    assert found == state and words in reason


def test_only_consuming_and_idle_replicas_are_ready() -> None:
    assert {s for s, ready in STATES.items() if ready} == {"consuming", "no_partitions"}
