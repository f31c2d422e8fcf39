#!/bin/sh
# Wait for the database to answer (up to DB_WAIT_SECONDS, default 60), then bring the
# schema to the newest migration. Safe to run again: a current schema is left alone.
# compose.yaml runs it once, in the one-shot `migrate` service, before any app starts.
set -eu

exec chatkit-backend migrate --wait "${DB_WAIT_SECONDS:-60}"
