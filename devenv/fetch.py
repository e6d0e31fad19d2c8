"""Fetch every server the tests and the demo need into .kafka/ (cached; a second run is a no-op):
Kafka, the schema registry and Zipkin from Maven Central; Jaeger and kustomize built from the Go
module proxy."""

from devenv.jaeger import fetch_jaeger
from devenv.kafka import fetch_jars
from devenv.kustomize import fetch_kustomize
from devenv.registry import fetch_registry
from devenv.zipkin import fetch_zipkin

if __name__ == "__main__":
    fetch_jars()
    fetch_registry()
    fetch_zipkin()
    fetch_jaeger()
    fetch_kustomize()
