# One image for all five driftloop services. Each container picks its service with
# `driftloop run <name>` (docker-compose.yml overrides CMD); the default is serving.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Build from a scratch directory and delete it afterwards: the services import the
# installed packages, never a source tree that could drift from them.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contracts/ contracts/
COPY shared/ shared/
COPY services/ services/
COPY cli/ cli/
RUN pip install . \
    && rm -rf /src

# A fixed numeric uid, so orchestrators can check runAsNonRoot. /data is created and
# owned here so that a named volume mounted over it starts out writable by that user.
RUN groupadd --system --gid 10001 driftloop \
    && useradd --system --uid 10001 --gid driftloop --create-home --home-dir /home/driftloop \
       --shell /usr/sbin/nologin driftloop \
    && mkdir -p /app /data \
    && chown driftloop:driftloop /data

WORKDIR /app
# The demo project file is the default; compose mounts ./driftloop.toml over it so a
# project edit needs no rebuild.
COPY driftloop.toml /app/driftloop.toml

ENV DRIFTLOOP_CONFIG=/app/driftloop.toml \
    DRIFTLOOP_DATA_DIR=/data \
    DRIFTLOOP_HOST=0.0.0.0

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000 8001 8002 8003 8004

CMD ["driftloop", "run", "serving"]
