"""The map of final offsets past a committed offset, as it travels in the commit's metadata.

Pure functions. Kafka keeps up to `offset.metadata.max.bytes` (4096 by default) of text with each
committed offset; the ledger writes there which later offsets are final already, so a new owner
after a crash or rebalance skips them instead of sending them to Pinterest again.

Format: `capi1:<base>:<kind><payload>`, payload URL-safe base64 without padding, of either
- `r`: run lengths from `base`, alternating not-final and final, each an unsigned LEB128 varint;
- `b`: a bitset, bit i (little-endian within each byte) set when `base + i` is final.
The smaller one is written. A map that does not fit marks only the first final offsets.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Final

MAX_METADATA_BYTES: Final = 4000  # below Kafka's default 4096, leaving room for a longer base
# Never believe a map that claims more than this many final offsets (it would cost memory).
MAX_DECODED_OFFSETS: Final = 1_000_000
_PREFIX: Final = "capi1"


def _varints(values: Sequence[int]) -> bytes:
    out = bytearray()
    for value in values:
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _runs(relative: Sequence[int]) -> list[int]:
    """Alternating run lengths (not final, final, ...) covering 0..relative[-1]."""
    runs: list[int] = []
    position = 0
    for offset in relative:
        if offset == position and runs and len(runs) % 2 == 0:
            runs[-1] += 1  # extends the current final run
        else:
            runs.append(offset - position)
            runs.append(1)
        position = offset + 1
    return runs


def _bitset(relative: Sequence[int]) -> bytes:
    bits = bytearray((relative[-1] >> 3) + 1)
    for offset in relative:
        bits[offset >> 3] |= 1 << (offset & 7)
    return bytes(bits)


def _encode(relative: Sequence[int], base: int) -> str:
    as_runs = _b64(_varints(_runs(relative)))
    as_bits = _b64(_bitset(relative))
    kind, payload = ("r", as_runs) if len(as_runs) <= len(as_bits) else ("b", as_bits)
    return f"{_PREFIX}:{base}:{kind}{payload}"


def encode_final_offsets(
    final: Sequence[int], base: int, max_bytes: int = MAX_METADATA_BYTES
) -> tuple[str, bool]:
    """The metadata for a commit at `base` marking `final` (ascending offsets after it).

    Returns the text and whether it marks all of them; "" when there is nothing to mark.
    """
    relative = [offset - base for offset in final if offset > base]
    if not relative:
        return "", True
    text = _encode(relative, base)
    if len(text) <= max_bytes:
        return text, True
    fits, too_many = 0, len(relative)  # binary search for the longest prefix that fits
    while too_many - fits > 1:
        middle = (fits + too_many) // 2
        if len(_encode(relative[:middle], base)) <= max_bytes:
            fits = middle
        else:
            too_many = middle
    return (_encode(relative[:fits], base) if fits else ""), False


def decode_final_offsets(metadata: str | None, committed: int) -> set[int]:
    """The offsets a commit at `committed` marks final; empty for foreign or damaged metadata."""
    if not metadata or not metadata.startswith(_PREFIX + ":"):
        return set()
    try:
        _, base_text, body = metadata.split(":", 2)
        base = int(base_text)
        kind, data = body[:1], _unb64(body[1:])
    except (ValueError, binascii.Error):
        return set()
    if base != committed:  # offsets were reset or moved since this map was written
        return set()
    final: set[int] = set()
    if kind == "b":
        for index, byte in enumerate(data):
            for bit in range(8):
                if byte >> bit & 1:
                    final.add(base + index * 8 + bit)
        return final
    if kind != "r":
        return set()
    runs, value, shift = [], 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            runs.append(value)
            value, shift = 0, 0
    if sum(runs[1::2]) > MAX_DECODED_OFFSETS:
        return set()
    position = base
    for index, length in enumerate(runs):
        if index % 2:
            final.update(range(position, position + length))
        position += length
    return final
