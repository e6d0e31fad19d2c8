"""Record types that flow between stages. Each carries its Kafka coordinates; reprs show no PII."""

from __future__ import annotations

import enum
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, NewType

AdAccountId = NewType("AdAccountId", str)
EventId = NewType("EventId", str)
TopicPartition = tuple[str, int]


class Coordinates(NamedTuple):
    """Where a record is: a NamedTuple, not a dataclass, because it keys the admission's, the
    ledger's and the fates' dicts several times per record, and a dataclass hashes and compares
    in Python (3 µs of every record between them); a tuple does it in C."""

    topic: str
    partition: int
    offset: int

    @property
    def next_offset(self) -> int:
        """The offset to commit once this record is done: the only place offset + 1 is written."""
        return self.offset + 1

    @property
    def topic_partition(self) -> TopicPartition:
        return (self.topic, self.partition)


def is_ad_account_id(text: str) -> bool:
    """ASCII digits only: `str.isdigit` also takes "²" and Arabic-Indic digits, which pass a
    check and then make Pinterest refuse the whole request."""
    return text.isascii() and text.isdigit()


class Commit(NamedTuple):
    """What to commit for one partition: the next offset, and in its metadata the map of final
    offsets past it (`offsetmap.py`)."""

    offset: int
    metadata: str = ""


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 4x, per message
class Envelope:
    """One consumed Kafka message. `generation` counts assignments of its partition."""

    coords: Coordinates
    value: bytes = field(repr=False)
    key: bytes | None = field(default=None, repr=False)
    headers: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    timestamp_ms: int = 0
    traceparent: str | None = None
    generation: int = 0
    consumed_at_s: float = 0.0


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 4x, per message
class Decoded:
    """An envelope's value as a plain dict, with the writer's record name."""

    envelope: Envelope
    record: dict[str, Any] = field(repr=False)
    record_name: str = ""

    @property
    def coords(self) -> Coordinates:
        return self.envelope.coords


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 4x, per message
class Conversion:
    """A Pinterest event built from one record, bound for one ad account."""

    coords: Coordinates
    ad_account: AdAccountId
    event_id: EventId
    event_time_s: int
    event_name: str
    event: dict[str, Any] = field(repr=False)  # emptied once the batcher has encoded it
    envelope: Envelope = field(repr=False)
    # The OpenTelemetry span context of this record's process span, for links from delivery.
    span_context: object | None = field(default=None, repr=False, compare=False)
    # user_data fields normalization left out, with why: ((field, reason), ...); never values.
    dropped: tuple[tuple[str, str], ...] = ()
    # dedup.key_of keeps the event's dedup key (a `DedupKey`) here: claimed, sent, then
    # confirmed or released, it is asked for four times, and a blake2b and a tuple per ask
    # were 3 % of the CPU.
    dedup_key: Any = field(default=None, repr=False, compare=False)
    # The event as JSON, encoded while the record is built (`process.encode_event`).
    encoded: bytes = field(default=b"", repr=False, compare=False)
    # The other events the rule made from the same record (its `also`), each a Conversion or
    # the PermanentError that stopped it; the record is final once all of them are.
    also: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    def events(self) -> tuple[Any, ...]:
        """This event and the others of its record, in the mapping's order."""
        return (self, *self.also) if self.also else (self,)


@dataclass(frozen=True, slots=True)
class Skip:
    """A record dropped on purpose (filter, consent, no rule). Its offset still advances."""

    coords: Coordinates
    reason: str


class Fate(enum.Enum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True, slots=True)
class Batch:
    """Conversions for one ad account and their encoded events, in request order."""

    ad_account: AdAccountId
    conversions: tuple[Conversion, ...] = field(repr=False)
    encoded: tuple[bytes, ...] = field(repr=False)
    created_at_s: float = 0.0

    def __len__(self) -> int:
        return len(self.conversions)

    @property
    def body(self) -> bytes:
        return request_body(self.encoded)


def request_body(encoded: Sequence[bytes]) -> bytes:
    """The events endpoint's body, {"data": [...]}, from events already encoded as JSON."""
    return b'{"data":[' + b",".join(encoded) + b"]}"


# "abandoned": not sent, because its partition went to another member meanwhile.
OutcomeStatus = Literal["processed", "failed", "abandoned"]


@dataclass(frozen=True, slots=True)
class EventOutcome:
    status: OutcomeStatus
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One outcome per event of `batch`, in order; `request_id` is Pinterest's x-pinterest-rid."""

    batch: Batch
    outcomes: tuple[EventOutcome, ...]
    request_id: str = ""
    attempts: int = 1


# Query parameters that carry a credential ('redis://host/0?password=…', '?access_token=…').
_SECRET_PARAMS = re.compile(
    r"([?&](?:password|passwd|pwd|token|access_token|secret|api_key|apikey|key)=)[^&#\s]*",
    re.IGNORECASE,
)


def mask_url_credentials(text: str) -> str:
    """'redis://:secret@host:6379/0' → 'redis://:***@host:6379/0', and the value of a
    password or token query parameter → '***'; other text unchanged."""
    if "://" not in text:
        return text
    text = _SECRET_PARAMS.sub(r"\1***", text)
    if "@" not in text:
        return text
    try:
        parts = urllib.parse.urlsplit(text)
        password = parts.password
    except ValueError:
        return text
    if password is None:
        return text
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class Secret:
    """A token or password that never shows itself in a repr, a log line or a config dump."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__
