# syntax=docker/dockerfile:1

# ---- builder: install the package and its dependencies into a virtualenv ----
# The venv is the only thing the runtime stage takes from here, so pip, the build
# backend and any build caches never reach the final image.
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /build
# pyproject.toml names README.md as the readme, so hatchling needs it to build; the
# wheel carries LICENSE and, as chatkit_backend/migrations, the alembic/ folder.
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
COPY alembic ./alembic
# A regular (non-editable) install: the runtime stage has no source tree.
RUN pip install .


# ---- runtime: the venv, the migrations, and nothing else ----
FROM python:3.11-slim AS runtime

ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A fixed numeric id, so `runAsNonRoot` checks and bind-mount ownership are predictable.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# `chatkit-backend migrate` looks for alembic.ini (and alembic/ beside it) in the
# working directory; the installed package has no project folder to fall back to.
COPY alembic.ini ./
COPY alembic ./alembic
# The entrypoint and the migration step: plain scripts, which the tests run outside Docker.
COPY --chmod=755 docker/entrypoint.sh docker/migrate.sh ./docker/

# The default DATABASE_URL is ./data/chatkit.db, i.e. /app/data; it is the only path
# the app writes to. Owned by the app user so that a named volume mounted here
# starts out writable (Docker copies the ownership into a new, empty volume).
RUN mkdir -p /app/data && chown app:app /app/data

USER 10001:10001

EXPOSE 8000

# On SIGTERM, open streams get SHUTDOWN_GRACE_SECONDS (25) to finish, then end like a
# cancel (partial answers kept); the process exits 0 within about 35 s. `docker stop`
# waits 10 s by default: give it --stop-timeout 40 (compose.yaml does).
STOPSIGNAL SIGTERM

# The slim image has no curl; the venv's Python can do the request itself.
# urlopen raises (so the command exits non-zero) on a refused connection or a non-2xx.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# A single `docker run` migrates on start; compose turns this off and migrates once,
# in its own service, so several app replicas never race to migrate.
ENV MIGRATE_ON_START=true

# Binds every interface inside the container; WORKERS (default 1) sets the process count.
# The entrypoint runs docker/migrate.sh when MIGRATE_ON_START=true, then execs the CMD.
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["chatkit-backend", "serve", "--host", "0.0.0.0", "--port", "8000"]
