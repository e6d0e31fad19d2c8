"""decode → map → normalize for one record, with its span: what `run`, `transform`, the benchmark
and the fuzz test share (no Producer, no Pipeline needed).

Events are valid by construction (`mapping.py` and `userdata.py` can only build what the API's
closed schema takes), so the full schema check (`capi.validate_event`) runs on every event only
where input is being tried (`consumer transform`, tests) and on one event in `check_every` in
`consumer run`, counted in `capi_events_checked_total{result}` so a regression shows in metrics.
Change how a record becomes an event here; what happens to it afterwards is `fates.py`.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections import Counter

import orjson
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from consumer.conversion.capi import InvalidEvent, validate_event
from consumer.conversion.hashing import DIGEST_CACHE_SIZE, UserDataHasher
from consumer.conversion.mapping import Mapper, Variant
from consumer.conversion.normalize import normalize_conversion
from consumer.conversion.rules import MappingRules
from consumer.conversion.userdata import NormalizeOptions
from consumer.errors import PermanentError, TransientError
from consumer.observability import telemetry as tm
from consumer.records import Conversion, Decoded, Envelope, EventId, Skip
from consumer.stages.decode import Decoder

logger = logging.getLogger(__name__)
_PROPAGATOR = TraceContextTextMapPropagator()
CHECK_EVERY_IN_RUN = 1000

Built = Conversion | Skip | PermanentError


def encode_event(event: dict[str, object]) -> bytes:
    """The event as the request will carry it; `encode.unencodable` if JSON cannot say it.

    Encoded while the record is built, before the ledger tracks it: orjson refuses integers
    beyond 64 bits, and that refusal inside the batcher used to take the whole group down.
    orjson (3.12 on) hands back bytes that keep its whole growth buffer (16 KB behind a 1.5 KB
    order), so an exact-size copy (0.2 µs) is what waits in a batch.
    """
    try:
        return bytes(memoryview(orjson.dumps(event)))
    except orjson.JSONEncodeError as exc:
        raise PermanentError("encode.unencodable", str(exc)[:300]) from None


def _encoded(event: Conversion | PermanentError) -> Conversion | PermanentError:
    if isinstance(event, Conversion):
        try:
            event.encoded = encode_event(event.event)
        except PermanentError as exc:
            return exc
    return event


def _variant_event(main: Conversion, variant: Variant) -> Conversion:
    """One of the rule's `also` events: the record's normalized event with the variant's name,
    id and, when it has its own, custom_data (user_data is hashed once per record)."""
    event = dict(main.event)
    event["event_name"] = variant.event_name
    event["event_id"] = variant.event_id
    dropped = main.dropped
    if variant.custom_data is not None:
        if variant.custom_data:
            event["custom_data"] = variant.custom_data
        else:
            event.pop("custom_data", None)
        dropped = (*dropped, *variant.dropped)
    return Conversion(
        main.coords,
        main.ad_account,
        EventId(variant.event_id),
        main.event_time_s,
        variant.event_name,
        event,
        main.envelope,
        dropped=dropped,
    )


def hasher_for(
    mapping: MappingRules, cache_size: int = DIGEST_CACHE_SIZE, mode: str | None = None
) -> UserDataHasher:
    """The user_data hasher with the mapping's defaults (phone country, date order); `mode`:
    CAPI_USER_DATA_HASHER (`hashing.hasher_in_use`)."""
    options = NormalizeOptions(mapping.default_phone_country, mapping.dob_order)
    return UserDataHasher(options, cache_size, mode)


def _set_span_context(result: Built, context: trace.SpanContext | None) -> None:
    """Put `context` on a built record's events (this call made them: set in place)."""
    if isinstance(result, Conversion):
        for event in result.events():
            if isinstance(event, Conversion):
                event.span_context = context


# W3C traceparent, as OpenTelemetry's propagator reads it (its pattern and its checks below):
# the propagator builds two Contexts and a span around the answer, 5 µs a record.
_TRACEPARENT = re.compile(
    r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$"
)


def remote_context(traceparent: str) -> trace.SpanContext | None:
    """The producer's span context from a W3C traceparent; None where the propagator would
    find none (`tests/test_process.py` holds the two to the same answers)."""
    match = _TRACEPARENT.search(traceparent) if len(traceparent) <= 512 else None
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace.SpanContext(
        int(trace_id, 16), int(span_id, 16), True, trace.TraceFlags(int(flags, 16))
    )


class RecordProcessor:
    def __init__(
        self,
        mapping: MappingRules,
        decoder: Decoder | None = None,
        tracer: trace.Tracer | None = None,
        group_id: str = "",
        check_every: int = 1,
        hasher: UserDataHasher | None = None,
        records_spans: bool = True,
    ) -> None:
        """`records_spans`: False when `tracer` never records a span (`Telemetry.records_spans`):
        a traced record then gets no span of its own, only its producer's context."""
        self.mapping = mapping
        self.mapper = Mapper(mapping)
        self.hasher = hasher or hasher_for(mapping)
        self.decoder = decoder
        self.tracer = tracer
        self.records_spans = records_spans
        self.group_id = group_id
        self._check_every = max(1, check_every)
        self._until_check = 1  # the first event is always checked
        self.checked: Counter[str] = Counter()  # result → events fully checked
        self.internal_errors: Counter[str] = Counter()  # exception type → records failed by it

    def build_decoded(self, decoded: Decoded, now_s: int) -> Conversion | Skip:
        """map → normalize (→ check) one decoded record. Raises `PermanentError`."""
        rule = self.mapper.rule_for(decoded)
        mapped = self.mapper.apply(rule, decoded, now_s)
        if isinstance(mapped, Skip):
            return mapped
        conversion = normalize_conversion(mapped, self.hasher)
        self._until_check -= 1
        if self._until_check <= 0:
            self._until_check = self._check_every
            try:
                validate_event(conversion.event, now_s, self.mapping.max_future_skew_s)
            except InvalidEvent as exc:
                self.checked["invalid"] += 1
                raise PermanentError("validate.invalid_event", str(exc)) from None
            self.checked["valid"] += 1
        if rule is not None and rule.also:
            conversion.also = tuple(
                _variant_event(conversion, v) if isinstance(v, Variant) else v
                for v in self.mapper.variants(rule, decoded, conversion.event)
            )
        return conversion

    def build(self, envelope: Envelope, now_s: int) -> Built:
        """decode → map → normalize → encode one envelope; bad data comes back as the
        `PermanentError`, and so does any unexpected exception: one record's failure, never
        the group's (a crash here would restart every pod that takes the partition onto it).
        Only `TransientError` (the registry or Redis away) propagates."""
        span = None
        if envelope.traceparent is not None and self.records_spans:
            span = self._start_span(envelope)
        try:
            assert self.decoder is not None, "a processor without a decoder takes Decoded"
            result: Built = self.build_decoded(self.decoder.decode(envelope), now_s)
            if isinstance(result, Conversion):
                result.encoded = encode_event(result.event)
                if result.also:
                    result.also = tuple(_encoded(e) for e in result.also)
        except PermanentError as exc:
            result = exc
        except TransientError:
            raise
        except Exception as exc:  # the one per-record boundary (STYLE §6)
            result = self._internal_error(exc)
        if envelope.traceparent is not None and not self.records_spans:
            # No span is recorded: the producer's context alone, so the delivery span (and the
            # logs written under it) still carry the producer's trace id.
            _set_span_context(result, remote_context(envelope.traceparent))
        if span is not None:
            if isinstance(result, PermanentError):
                span.set_attribute(tm.ATTR_ERROR_TYPE, result.reason)
            elif isinstance(result, Skip):
                span.set_attribute(tm.ATTR_REASON, result.reason)
            else:
                _set_span_context(result, span.get_span_context())
            span.end()
        return result

    def _internal_error(self, exc: Exception) -> PermanentError:
        """A bug met by one record: dead-letter it, count it, log the first of each kind.

        The log names the type and where it was raised, never the message (it may quote a
        value); the dead-letter header carries the message, beside the record's own bytes.
        """
        kind = type(exc).__name__
        self.internal_errors[kind] += 1
        if self.internal_errors[kind] == 1:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            logger.error(
                "a record failed to build: dead-lettered (logged once per exception type)",
                extra={"error_type": kind, "raised_at": f"{frame.filename}:{frame.lineno}"},
            )
        return PermanentError(f"internal.{kind}", f"{kind}: {str(exc)[:300]}")

    def _start_span(self, envelope: Envelope) -> trace.Span | None:
        if self.tracer is None:
            return None
        coords = envelope.coords
        return self.tracer.start_span(
            tm.SPAN_PROCESS.format(topic=coords.topic),
            context=_PROPAGATOR.extract({"traceparent": envelope.traceparent}),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                tm.ATTR_MESSAGING_SYSTEM: "kafka",
                tm.ATTR_MESSAGING_OPERATION: "process",
                tm.ATTR_DESTINATION: coords.topic,
                tm.ATTR_PARTITION: str(coords.partition),
                tm.ATTR_OFFSET: coords.offset,
                tm.ATTR_CONSUMER_GROUP: self.group_id,
            },
        )
