# One image for every Arbiter service: migrate, worker, beat, flower, web and the simulator.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md beat_schedule.py bootstrap.py constraints.txt ./
COPY core ./core
COPY db ./db
COPY service_layer ./service_layer
COPY strategy_client ./strategy_client
COPY adapters ./adapters
COPY tasks ./tasks
COPY arbiter ./arbiter
COPY brokersim ./brokersim
COPY web ./web
# Pinned to constraints.txt (a clean `pip install .`, frozen; CI audits it).
RUN pip install -c constraints.txt . \
    && useradd --create-home --uid 10001 arbiter \
    && mkdir -p /data && chown arbiter:arbiter /data

USER arbiter
WORKDIR /home/arbiter
CMD ["arbiter", "--help"]
