"""`consumer transform`: apply a mapping to decoded records given as JSON lines.

Each input line is {"topic": ..., "value": {...}, "record": optional record name}; each output
line is {"ad_account_id", "event"} (plus "omitted": the user_data fields normalization left out,
with why), {"dropped": reason} or {"error": message naming the field}.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import orjson

from consumer.conversion.quality import MatchQuality
from consumer.conversion.rules import load_mapping
from consumer.engine.process import RecordProcessor
from consumer.errors import PermanentError
from consumer.records import Coordinates, Decoded, Envelope, Skip


def transform_record(
    line: dict[str, Any], processor: RecordProcessor, now_s: int, offset: int = 0
) -> dict[str, Any]:
    """One input line through map → normalize → the API's full event schema check."""
    topic = line.get("topic")
    value = line.get("value")
    if not isinstance(topic, str) or not isinstance(value, dict):
        return {"error": "input line needs a string 'topic' and an object 'value'"}
    envelope = Envelope(Coordinates(topic, 0, offset), value=b"")
    decoded = Decoded(envelope, value, str(line.get("record", "")))
    try:
        built = processor.build_decoded(decoded, now_s)
    except PermanentError as exc:
        return {"error": f"{exc.reason}: {exc.detail}"}
    if isinstance(built, Skip):
        return {"dropped": built.reason}
    result: dict[str, Any] = {"ad_account_id": built.ad_account, "event": built.event}
    if built.dropped:  # say which identifiers were left out, so a mapping can be fixed
        result["omitted"] = [{"field": f, "reason": r} for f, r in built.dropped]
    if built.also:  # the rule's `also` events from the same record
        result["also"] = [
            {"error": f"{e.reason}: {e.detail}"} if isinstance(e, PermanentError) else e.event
            for e in built.also
        ]
    return result


def transform_lines(mapping_path: Path, lines: Iterable[str], out: IO[str], now_s: int) -> str:
    """Write one output line per input line; return a human summary of outcomes and coverage."""
    processor = RecordProcessor(load_mapping(mapping_path, "--mapping"), check_every=1)
    outcomes: Counter[str] = Counter()
    quality = MatchQuality()
    for number, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            result: dict[str, Any] = {"error": f"line {number + 1} is not JSON: {exc}"}
        else:
            result = (
                transform_record(line, processor, now_s, number)
                if isinstance(line, dict)
                else {"error": "line is not a JSON object"}
            )
        out.write(orjson.dumps(result).decode() + "\n")
        if "event" in result:
            outcomes["built"] += 1
            event = result["event"]
            omitted = [(o["field"], o["reason"]) for o in result.get("omitted", ())]
            for each in (event, *(e for e in result.get("also", ()) if "event_name" in e)):
                quality.observe(
                    result["ad_account_id"], each["event_name"], each["user_data"], omitted
                )
        else:
            outcomes["dropped" if "dropped" in result else "errors"] += 1
    built = outcomes["built"]
    header = f"built {built}, dropped {outcomes['dropped']}, errors {outcomes['errors']}"
    return header + "\n" + quality.table()
