"""Match quality: which identifiers each built event carries, and which were left out and why.

Pinterest matches conversions to users through these identifiers; coverage per ad account and
event name tells an advertiser how well a mapping will attribute before anyone looks at reports.
Pure and cheap enough for every event (one counter per event); the identifiers come from
`userdata.USER_DATA_FIELDS`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Iterable, Mapping
from typing import Any, Final

from consumer.conversion.userdata import FIELDS_BY_NAME, MATCH_IDENTIFIERS

IDENTIFIERS: Final = MATCH_IDENTIFIERS
# client_ip_address and client_user_agent only count together, as the API requires both.
_SINGLE: Final = tuple(
    (name, field.match_identifier)
    for name, field in FIELDS_BY_NAME.items()
    if field.match_identifier and field.match_identifier != "ip_ua"
)


def identifiers_of(user_data: Container[str]) -> list[str]:
    """The match identifiers a user_data (or just its field names) carries."""
    found = [identifier for name, identifier in _SINGLE if name in user_data]
    if "client_ip_address" in user_data and "client_user_agent" in user_data:
        found.append("ip_ua")
    return found


class MatchQuality:
    """Counts events per identifier and per number of identifiers, by (ad account, event name),
    and user_data fields left out by normalization, by (field, reason).

    `observe` only counts each event's shape (its account, name and user_data keys): a mapping
    produces few shapes, and the per-identifier counts are derived from them when read.
    """

    def __init__(self) -> None:
        self._shapes: Counter[tuple[str, str, tuple[str, ...]]] = Counter()
        self.dropped: Counter[tuple[str, str]] = Counter()

    def observe(
        self,
        ad_account: str,
        event_name: str,
        user_data: Mapping[str, Any],
        dropped: Iterable[tuple[str, str]] = (),
    ) -> None:
        self._shapes[(ad_account, event_name, tuple(user_data))] += 1
        if dropped:
            self.dropped.update(dropped)

    @property
    def events(self) -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        for (account, event_name, _), count in self._shapes.items():
            counts[(account, event_name)] += count
        return counts

    @property
    def by_identifier(self) -> Counter[tuple[str, str, str]]:
        counts: Counter[tuple[str, str, str]] = Counter()
        for (account, event_name, fields), count in self._shapes.items():
            for name in identifiers_of(fields):
                counts[(account, event_name, name)] += count
        return counts

    @property
    def by_count(self) -> Counter[tuple[str, str, int]]:
        counts: Counter[tuple[str, str, int]] = Counter()
        for (account, event_name, fields), count in self._shapes.items():
            counts[(account, event_name, len(identifiers_of(fields)))] += count
        return counts

    def coverage(self) -> dict[str, float]:
        """Share of all observed events carrying each identifier, 0..1."""
        total = sum(self.events.values())
        shares = dict.fromkeys(IDENTIFIERS, 0.0)
        for (_, _, name), count in self.by_identifier.items():
            shares[name] += count / total if total else 0.0
        return shares

    def table(self) -> str:
        """A text table of coverage, as `consumer transform --summary` and `status` print it."""
        total = sum(self.events.values())
        rows = [f"match quality over {total} events"]
        for name, share in self.coverage().items():
            rows.append(f"  {name:<14}{share * 100:6.1f}%  {'#' * round(share * 20)}")
        mean = (sum(n * c for (_, _, n), c in self.by_count.items()) / total) if total else 0.0
        rows.append(f"  identifiers per event (mean) {mean:.2f}")
        if self.dropped:
            rows.append("fields left out by normalization (the events were still sent)")
            for (field, reason), count in sorted(self.dropped.items()):
                rows.append(f"  {field:<14}{reason:<12}{count:>8}")
        return "\n".join(rows)
