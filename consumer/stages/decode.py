"""Avro bytes → plain dict: Confluent wire format through a schema registry, or local `.avsc`.

Writer schemas are fetched once per id and cached parsed; a reader schema of the same full name
from the configured folder resolves writer/reader evolution. Bad bytes and unknown schema ids are
`PermanentError` (dead-letter); a registry that cannot be reached is `TransientError` (retry).
Without a reader schema, the compiled decoder (`avroplan`) reads the bytes; fastavro reads what
it leaves, and its verdict is the one that counts.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import aiohttp
import fastavro
from fastavro.read import SchemaResolutionError

from consumer.errors import ConfigError, PermanentError, TransientError
from consumer.records import Decoded, Envelope
from consumer.stages.avroplan import Plan, compiled_decoder

_HEADER = struct.Struct(">bI")
_UNKNOWN_ID_RETRY_S = 60.0
# What fastavro raises on bytes that do not match the schema.
_AVRO_ERRORS = (
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    OverflowError,
    struct.error,
    UnicodeDecodeError,
    SchemaResolutionError,
)


@dataclass(frozen=True, slots=True)
class _Schema:
    writer: Any
    reader: Any
    name: str
    compiled: Plan | None  # None: fastavro reads these (schema resolution, or no plan)

    @classmethod
    def of(cls, writer: Any, readers: Mapping[str, Any], mode: str | None = None) -> _Schema:
        name = str(writer.get("name", "")) if isinstance(writer, dict) else ""
        reader = readers.get(name) if name else None
        if reader == writer:  # nothing to resolve (fastavro skips it too): the image ships both
            reader = None
        compiled = None if reader is not None else compiled_decoder(writer, mode)
        return cls(writer, reader, name, compiled)


def load_schema_file(path: Path) -> Any:
    try:
        return fastavro.parse_schema(json.loads(path.read_text()))
    except (OSError, ValueError, fastavro.schema.SchemaParseException) as exc:
        raise ConfigError(str(path), f"not a readable Avro schema: {exc}") from None


def load_reader_schemas(folder: Path | None) -> dict[str, Any]:
    """Newest (last by file name) schema per record full name, e.g. order_event.v2.avsc."""
    readers: dict[str, Any] = {}
    if folder is None:
        return readers
    for path in sorted(folder.glob("*.avsc")):
        schema = load_schema_file(path)
        readers[str(schema["name"])] = schema
    return readers


class RegistryClient:
    """The one call we need from the Confluent REST API: GET /schemas/ids/{id}."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        basic_auth: tuple[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._session = session
        self._url = url.rstrip("/")
        self._auth = aiohttp.BasicAuth(*basic_auth) if basic_auth else None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def fetch(self, schema_id: int) -> str | None:
        """The schema text, or None when the registry does not know the id."""
        try:
            async with self._session.get(
                f"{self._url}/schemas/ids/{schema_id}", auth=self._auth, timeout=self._timeout
            ) as response:
                body = await response.read()
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise TransientError(f"schema registry answered {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"schema registry unreachable: {type(exc).__name__}") from None
        try:
            return str(json.loads(body)["schema"])
        except (ValueError, KeyError, TypeError):
            raise TransientError("schema registry sent an unreadable answer") from None


class Decoder:
    """`prepare` (async, fetches unknown writer schemas) then `decode` (pure, per record)."""

    def __init__(
        self,
        registry: RegistryClient | None,
        topic_schemas: Mapping[str, Any],
        reader_schemas: Mapping[str, Any],
        clock: Callable[[], float] | None = None,
        unknown_schema_grace_s: float = 0.0,
        mode: str | None = None,
    ) -> None:
        """`mode`: CAPI_AVRO_DECODER (`avroplan.decoder_in_use`)."""
        self._registry = registry
        self._mode = mode
        # A registry that answers 404 may only lag behind a schema registered a moment ago (a
        # follower, a replica not caught up): its records are held this long before an id is
        # taken for unknown and they are dead-lettered.
        self._unknown_schema_grace_s = unknown_schema_grace_s
        self._missing_since: dict[int, float] = {}
        self._topic_schemas = {
            t: _Schema.of(s, reader_schemas, mode) for t, s in topic_schemas.items()
        }
        self._readers = reader_schemas
        self._by_id: dict[int, _Schema] = {}
        self._unknown_ids: dict[int, float] = {}
        self._clock = clock or time.monotonic  # read at construction (the simulation patches it)

    def _missing_ids(self, envelopes: Iterable[Envelope]) -> set[int]:
        missing = set()
        for envelope in envelopes:
            value = envelope.value
            if envelope.coords.topic in self._topic_schemas or len(value) < 5 or value[0] != 0:
                continue
            schema_id = _HEADER.unpack_from(value)[1]
            if schema_id not in self._by_id:
                missing.add(schema_id)
        return missing

    async def prepare(self, envelopes: Iterable[Envelope]) -> None:
        """Fetch every writer schema these envelopes need. Raises `TransientError` on outage,
        and while an id the registry does not know yet is within its grace period."""
        now = self._clock()
        for schema_id in self._missing_ids(envelopes):
            if self._unknown_ids.get(schema_id, 0.0) > now or self._registry is None:
                continue
            text = await self._registry.fetch(schema_id)
            if text is None:
                since = self._missing_since.setdefault(schema_id, now)
                if now - since < self._unknown_schema_grace_s:
                    raise TransientError(
                        f"schema id {schema_id} not in the registry yet: its records are held "
                        f"up to CAPI_UNKNOWN_SCHEMA_RETRY_S={self._unknown_schema_grace_s:g}s"
                    )
                self._unknown_ids[schema_id] = now + _UNKNOWN_ID_RETRY_S
                continue
            self._missing_since.pop(schema_id, None)
            try:
                writer: Any = fastavro.parse_schema(json.loads(text))
            except (ValueError, fastavro.schema.SchemaParseException):
                self._unknown_ids[schema_id] = now + _UNKNOWN_ID_RETRY_S
                continue
            self.add_writer_schema(schema_id, writer)

    def add_writer_schema(self, schema_id: int, writer: Any) -> None:
        """Cache a parsed writer schema under its registry id (tests, pre-seeding)."""
        self._by_id[schema_id] = _Schema.of(writer, self._readers, self._mode)

    def decode(self, envelope: Envelope) -> Decoded:
        """Decode one prepared envelope. Raises `PermanentError` for bytes we cannot read."""
        value = envelope.value
        schema = self._topic_schemas.get(envelope.coords.topic)
        offset = 0
        if schema is None:
            if len(value) < 5:
                raise PermanentError("decode.too_short", f"{len(value)} bytes, no wire header")
            magic, schema_id = _HEADER.unpack_from(value)
            if magic != 0:
                raise PermanentError("decode.bad_magic_byte", f"magic byte {magic}, expected 0")
            schema = self._by_id.get(schema_id)
            if schema is None:
                raise PermanentError("decode.unknown_schema_id", f"schema id {schema_id}")
            offset = 5
        # The compiled decoder reads what it is sure of; fastavro has the last word on the rest.
        read = schema.compiled.decode(value, offset) if schema.compiled is not None else None
        if read is None:
            read = _fastavro_read(value, offset, schema)
        record, end = read
        if not isinstance(record, dict):
            raise PermanentError("decode.not_a_record", "top-level Avro value is not a record")
        if end != len(value):
            raise PermanentError("decode.trailing_bytes", f"{len(value) - end} bytes left")
        return Decoded(envelope, record, schema.name)


def _fastavro_read(value: bytes, offset: int, schema: _Schema) -> tuple[Any, int]:
    buffer = BytesIO(value)
    buffer.seek(offset)
    try:
        record = fastavro.schemaless_reader(buffer, schema.writer, schema.reader)
    except _AVRO_ERRORS as exc:
        raise PermanentError("decode.bad_avro", type(exc).__name__) from None
    return record, buffer.tell()
