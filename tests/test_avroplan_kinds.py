"""The plan's kind numbers are written twice, in `avroplan.py` and in `native/src/lib.rs`: this
keeps them equal (it reads the Rust source, so it runs where the extension is not built too)."""

from __future__ import annotations

import re
from pathlib import Path

from consumer.stages import avroplan

LIB_RS = Path(__file__).resolve().parent.parent / "native" / "src" / "lib.rs"
KINDS = ["NULL", "BOOLEAN", "LONG", "FLOAT", "DOUBLE", "BYTES", "STRING", "RECORD", "ENUM",
         "ARRAY", "MAP", "UNION", "FIXED", "DECIMAL", "TIMESTAMP", "DATE"]  # fmt: skip


def test_every_kind_number_is_the_same_in_python_and_rust() -> None:
    rust = {
        name: int(value)
        for name, value in re.findall(r"^const ([A-Z_]+): u8 = (\d+);", LIB_RS.read_text(), re.M)
    }
    python = {name: getattr(avroplan, name) for name in KINDS}
    assert python == {name: rust[name] for name in KINDS}
    assert sorted(rust) == sorted(KINDS)  # no kind in Rust that Python does not know
