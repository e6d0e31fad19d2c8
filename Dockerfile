# syntax=docker/dockerfile:1.7
# Runtime image: the consumer only, as a non-root user. `--target tools` adds the sample
# producer and dev tools used by docker-compose.yml.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm
ARG RUST_IMAGE=rust:1.95-slim-bookworm

FROM ${RUST_IMAGE} AS rust

# The compiled Avro decoder (native/), built into a wheel for the image's own Python.
FROM ${PYTHON_IMAGE} AS native
# The C linker Rust needs; the base image pins the Debian release it comes from.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY --from=rust /usr/local/cargo /usr/local/cargo
COPY --from=rust /usr/local/rustup /usr/local/rustup
ENV CARGO_HOME=/usr/local/cargo RUSTUP_HOME=/usr/local/rustup PATH=/usr/local/cargo/bin:$PATH \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /native
COPY native ./
RUN pip install "maturin==1.16.0" && maturin build --release --locked --out /wheels

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Every dependency from the hashed lock (pip refuses a file whose hash is not in it), then the
# consumer and the decoder's wheel with nothing fetched beside them.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY consumer ./consumer
COPY --from=native /wheels /wheels
RUN pip install --no-deps --no-build-isolation . /wheels/*.whl

FROM ${PYTHON_IMAGE} AS tools
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
COPY constraints.txt ./
RUN pip install --no-cache-dir --constraint constraints.txt "confluent-kafka[schemaregistry]>=2.16,<3"
COPY schemas ./schemas
COPY devenv ./devenv
USER 10001

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin capi
COPY --from=build /opt/venv /opt/venv
COPY schemas /app/schemas
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    CAPI_HEALTH_PORT=8080 CAPI_READER_SCHEMA_DIR=/app/schemas
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["consumer"]
CMD ["run"]
