"""kustomize, built from the Go module proxy into .kafka/ (cached), to render deploy/kubernetes
exactly as `kubectl apply -k` would before the manifests are schema-checked."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from devenv.procs import CACHE

VERSION = "v5.7.1"
BINARY = CACHE / f"kustomize-{VERSION}"


def fetch_kustomize() -> Path:
    """The pinned kustomize binary (about 20 s to build on two cores with a warm module cache)."""
    if BINARY.exists():
        return BINARY
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("go is not installed: it builds kustomize for the deploy tests")
    workdir = CACHE / "kustomize-build"
    workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [go, "install", f"sigs.k8s.io/kustomize/kustomize/v5@{VERSION}"],
        check=True,
        env={**os.environ, "GOBIN": str(workdir), "CGO_ENABLED": "0"},
    )
    (workdir / "kustomize").rename(BINARY)
    return BINARY


def render(directory: Path) -> str:
    """`kustomize build directory`: the manifests as they would be applied."""
    return subprocess.run(
        [str(fetch_kustomize()), "build", str(directory)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
