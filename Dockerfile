# cbloop: one image for every role (service, pipeline loop, one-shot commands). It holds the
# runtime lock (requirements.lock, hashed) and the project's wheel, nothing else: no tests,
# no dev tools, no source tree.
#   docker build -t cbloop:local .
#   docker run --rm cbloop:local cbloop --help

# -- the wheel, built from the source in a throwaway stage ----------------------------------
FROM python:3.11-slim AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cbloop ./cbloop
COPY service ./service
COPY pipeline ./pipeline
COPY cli ./cli
COPY migrations ./migrations
RUN pip wheel --no-deps --wheel-dir /wheels .

# -- the image ---------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CBLOOP_CONFIG=/etc/cbloop/config.yaml

# The pinned runtime dependencies alone first: this layer is rebuilt only when the lock
# changes. Every line carries hashes, so pip checks each download.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes -r /tmp/requirements.lock && rm /tmp/requirements.lock

# Then the project's wheel, without touching the pinned set. The SQL migrations ship inside
# it (package cbloop_migrations), so every command runs from any working folder.
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && cbloop --help > /dev/null

# An unprivileged user; the state folders belong to it so that named volumes mounted there
# start out writable.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/cbloop cbloop \
    && mkdir -p /var/lib/cbloop/spool /var/lib/cbloop/warehouse /etc/cbloop \
    && chown -R cbloop:cbloop /var/lib/cbloop
USER cbloop
WORKDIR /var/lib/cbloop

EXPOSE 8000
CMD ["cbloop", "serve", "--config", "/etc/cbloop/config.yaml"]
