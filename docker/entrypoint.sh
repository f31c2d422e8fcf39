#!/bin/sh
# The image's entrypoint: optionally migrate, then become the given command (by default
# the image's CMD, `chatkit-backend serve ...`), so it is PID 1 and receives SIGTERM.
#
#   MIGRATE_ON_START=true   run docker/migrate.sh first (single container, `docker run`)
#   MIGRATE_ON_START=false  don't: compose runs migrations once, in its `migrate` service
#
# Tests run this script outside Docker (tests/test_deploy_scripts.py).
set -eu

if [ "${MIGRATE_ON_START:-false}" = "true" ]; then
    "$(dirname "$0")/migrate.sh"
fi

exec "$@"
