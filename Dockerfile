# One image for every Bulkhead process: the API (gunicorn), the orchestrator and the workers.
# docker-compose.yml picks the process with `command:`; the default is the API.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/bulkhead
COPY pyproject.toml README.md ./
COPY core core
COPY storage storage
COPY workers workers
COPY orchestrator orchestrator
COPY api api
RUN /opt/bulkhead/bin/pip install --upgrade pip \
 && /opt/bulkhead/bin/pip install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/bulkhead bulkhead
COPY --from=build /opt/bulkhead /opt/bulkhead
ENV PATH=/opt/bulkhead/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BULKHEAD_DATA_DIR=/var/lib/bulkhead \
    BULKHEAD_LOG_JSON=true
USER bulkhead
WORKDIR /var/lib/bulkhead
EXPOSE 8080
CMD ["gunicorn", "--bind", "0.0.0.0:8080", "--worker-class", "gthread", "--workers", "2", "--threads", "4", \
     "--graceful-timeout", "10", "--timeout", "120", "--keep-alive", "15", "--access-logfile", "-", "api.wsgi:app()"]
