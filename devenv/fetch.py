"""Fetch every jar the tests and the demo need into .kafka/ (cached; a second run is a no-op)."""

from devenv.kafka import fetch_jars
from devenv.registry import fetch_registry
from devenv.zipkin import fetch_zipkin

if __name__ == "__main__":
    fetch_jars()
    fetch_registry()
    fetch_zipkin()
