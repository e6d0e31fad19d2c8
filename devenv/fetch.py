"""Fetch what the demo and the tests need into .kafka/ (cached; a second run is a no-op).

python -m devenv.fetch              Kafka, the schema registry and Zipkin from Maven Central
python -m devenv.fetch test-tools   also Jaeger (the OTLP receiver) and kustomize, built from the
                                    Go module proxy: only the tests use them
"""

import sys

from devenv.jaeger import fetch_jaeger
from devenv.kafka import fetch_jars
from devenv.kustomize import fetch_kustomize
from devenv.registry import fetch_registry
from devenv.zipkin import fetch_zipkin

if __name__ == "__main__":
    fetch_jars()
    fetch_registry()
    fetch_zipkin()
    if sys.argv[1:] == ["test-tools"]:
        fetch_jaeger()
        fetch_kustomize()
