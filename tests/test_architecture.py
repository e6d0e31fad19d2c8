"""The folder list is the architecture: these tests keep the packages' import rules true.

- tools import the runtime; nothing in the runtime imports a tool;
- a stage imports no other stage (its own helper module aside), only records, errors,
  observability and its libraries; only the engine knows all the stages;
- conversion rules are pure: they import no stage, engine or tool;
- no import circle between modules, lazy imports inside functions included.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "consumer"
# A stage's own helper: the decoder's compiled plan, the Redis store, the ledger's map, the
# delivery's status table and rate limiter.
HELPERS = {
    "consumer.stages.decode": {"consumer.stages.avroplan"},
    "consumer.stages.delivery": {"consumer.stages.answers", "consumer.stages.ratelimit"},
    "consumer.stages.dryrun": {"consumer.stages.delivery"},
    "consumer.stages.source": {"consumer.stages.commits"},
    "consumer.stages.dedup_redis": {"consumer.stages.dedup"},
    "consumer.stages.offsets": {"consumer.stages.offsetmap"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> Iterator[str]:
    """Every `consumer...` module imported anywhere in the file (functions included)."""
    known = modules()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("consumer") and name in known:
                yield name


def graph() -> dict[str, set[str]]:
    return {name: set(imports_of(path)) - {name} for name, path in modules().items()}


def role(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else "shared"


def test_architecture_no_runtime_module_imports_a_tool() -> None:
    for module, imported in graph().items():
        if role(module) != "tools" and module != "consumer.__main__":
            tools = sorted(i for i in imported if role(i) == "tools")
            assert not tools, f"{module} imports tools {tools}"


def test_architecture_a_stage_imports_no_other_stage() -> None:
    for module, imported in graph().items():
        if role(module) == "stages":
            others = {i for i in imported if role(i) in ("stages", "engine")}
            others -= HELPERS.get(module, set()) | {"consumer.stages", "consumer.stages.contract"}
            assert not others, f"{module} imports {sorted(others)}"


def test_architecture_conversion_rules_stay_pure() -> None:
    for module, imported in graph().items():
        if role(module) == "conversion":
            outside = sorted(i for i in imported if role(i) in ("stages", "engine", "tools"))
            assert not outside, f"{module} imports {outside}"


def test_architecture_no_import_circle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(edges.get(module, ())):
            if nxt.count(".") < 2:  # a package __init__ imports nothing of ours
                continue
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join([*path, module, nxt]))
            if nxt not in state:
                visit(nxt, [*path, module])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])


def test_architecture_every_module_sits_in_a_role_package() -> None:
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top == {"__init__.py", "__main__.py", "config.py", "errors.py", "records.py"}


def test_architecture_readme_folder_list_names_every_module() -> None:
    """README's folder list is the architecture diagram: each module is named under its
    package, so a new module cannot hide from it."""
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("consumer/\n  records.py") :]
    block = block[: block.index("```")]
    sections = re.split(r"\n  (?=\w+/)", block)
    for package in ("stages", "conversion", "engine", "observability", "tools"):
        (section,) = [s for s in sections if s.startswith(f"{package}/")]
        words = set(re.findall(r"[a-z_]+", section))
        for path in sorted((PACKAGE / package).glob("*.py")):
            if path.stem != "__init__":
                assert path.stem in words, f"README's folder list misses {package}/{path.name}"
