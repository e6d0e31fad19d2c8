# syntax=docker/dockerfile:1.7
# Runtime image: the consumer only, as a non-root user. `--target tools` adds the sample
# producer and dev tools used by docker-compose.yml.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md constraints.txt ./
COPY consumer ./consumer
RUN pip install --constraint constraints.txt ".[zipkin]"

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
