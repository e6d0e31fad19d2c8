"""One locked environment (issue 26): what runs here is exactly what `constraints.txt` pins,
the lock covers every dependency pyproject.toml names (runtime and dev tools), and the two
hashed locks pip installs from (`requirements-dev.lock` here and in CI, `requirements.lock` in
the image) carry exactly those versions, each with its hashes."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# What a venv brings and a build without isolation needs: in the hashed locks only (pip freeze,
# which writes constraints.txt, leaves them out).
INSTALL_TOOLS = {"pip", "setuptools", "wheel"}


def hashed_lock(name: str) -> dict[str, list[str]]:
    """Each pin of a hashed lock ("name==version") with its hashes."""
    pins: dict[str, list[str]] = {}
    current = ""
    for line in (ROOT / name).read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-]+==[^ \\]+)", line):
            name_, version = match.group(1).split("==")
            current = f"{normalized(name_)}=={version}"
            pins[current] = []
        for digest in re.findall(r"--hash=sha256:([0-9a-f]{64})", line):
            pins[current].append(digest)
    return pins


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
    local = {"capi-native"}  # the compiled decoder: built here (native/), never from an index
    names = [normalized(re.split(r"[<>=!\[; ]", d)[0]) for d in named]
    missing = [n for n in names if n not in pins and n not in local]
    assert not missing, f"run `make constraints`: {missing}"


def test_the_hashed_locks_pin_exactly_the_constraints_and_hash_every_pin() -> None:
    pins = lock()
    for name in ("requirements.lock", "requirements-dev.lock"):
        hashed = hashed_lock(name)
        assert hashed, name
        unhashed = [pin for pin, digests in hashed.items() if not digests]
        assert not unhashed, f"{name}: no hash for {unhashed}"
        strays = {
            pin
            for pin in hashed
            if pin.split("==")[0] not in INSTALL_TOOLS
            and pins.get(pin.split("==")[0]) != pin.split("==")[1]
        }
        assert not strays, f"{name} differs from constraints.txt (`make constraints`): {strays}"
    dev = {pin.split("==")[0] for pin in hashed_lock("requirements-dev.lock")}
    assert set(pins) <= dev, f"not in requirements-dev.lock: {set(pins) - dev}"


def test_the_image_lock_holds_the_runtime_and_no_dev_tools() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = project["dependencies"] + project["optional-dependencies"]["zipkin"]
    image = {pin.split("==")[0] for pin in hashed_lock("requirements.lock")}
    assert {normalized(re.split(r"[<>=!\[; ]", d)[0]) for d in runtime} <= image
    assert not {"ruff", "mypy", "pytest", "pip-tools"} & image


def test_the_environment_has_the_hashed_locks_install_tools() -> None:
    for pin in hashed_lock("requirements-dev.lock"):
        name, version = pin.split("==")
        if name in INSTALL_TOOLS:
            assert metadata.version(name) == version, f"{name}: run `make install`"
