"""One locked environment (issue 26): what runs here is exactly what `constraints.txt` pins,
and the lock covers every dependency pyproject.toml names (runtime and dev tools)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[normalized(name)] = version
    return pins


def test_the_environment_installs_exactly_the_lock() -> None:
    strays = {}
    for name, version in lock().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # an extra this environment does not install
        if installed != version:
            strays[name] = (installed, version)
    assert not strays, f"installed ≠ constraints.txt (run `make install`): {strays}"


def test_the_lock_covers_every_dependency_pyproject_names() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        named += extra
    pins = lock()
    local = {"capi-avro"}  # the compiled decoder: built here (native/), never from an index
    names = [normalized(re.split(r"[<>=!\[; ]", d)[0]) for d in named]
    missing = [n for n in names if n not in pins and n not in local]
    assert not missing, f"run `make constraints`: {missing}"
