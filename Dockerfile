# cbloop: one image for every role (service, pipeline loop, one-shot commands).
#   docker build -t cbloop:local .
#   docker run --rm cbloop:local cbloop --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CBLOOP_CONFIG=/etc/cbloop/config.yaml

WORKDIR /app

# The pinned dependencies alone first: this layer is rebuilt only when the lock file changes.
COPY requirements.lock ./
RUN pip install -r requirements.lock

# Then the project, without touching the pinned set. Editable, as `make` does: the pipeline
# finds its SQL migrations next to the source tree (/app/migrations).
COPY . .
RUN pip install --no-deps -e . \
    && cbloop --help > /dev/null

# An unprivileged user; the state folders belong to it so that named volumes mounted there
# start out writable.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/cbloop cbloop \
    && mkdir -p /var/lib/cbloop/spool /var/lib/cbloop/warehouse /etc/cbloop \
    && chown -R cbloop:cbloop /var/lib/cbloop
USER cbloop

EXPOSE 8000
CMD ["cbloop", "serve", "--config", "/etc/cbloop/config.yaml"]
