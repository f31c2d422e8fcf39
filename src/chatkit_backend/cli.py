"""`chatkit-backend`: the command line (serve, migrate, tokens, operator commands)."""

import argparse
import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from chatkit_backend.auth.roles import ROLES
from chatkit_backend.ops.logs import configure_logging
from chatkit_backend.settings import Settings

logger = logging.getLogger("chatkit_backend")

# What `chatkit-backend --help` tells a user; each command's own --help has its options.
DESCRIPTION = """\
A backend for OpenAI's ChatKit: it answers the ChatKit protocol at POST /chatkit,
keeps conversations in a database and answers with a model (without a key, an
offline one that needs no network). First start: `make run` in the project, which
migrates ./data/chatkit.db and serves on http://127.0.0.1:8000/.
"""

EPILOG = """\
common settings (environment variables, or a .env file in the working directory):
  DATABASE_URL    where conversations are kept (default: ./data/chatkit.db, SQLite;
                  postgresql://user:password@host:5432/db for PostgreSQL)
  OPENAI_API_KEY  answer with OpenAI (unset: the offline model); LLM_PROVIDER for others
  HOST, PORT      where `serve` listens (default: 127.0.0.1 and 8000)
  AUTH_MODE       none (default: every request is one local user, for development)
                  or jwt (a bearer token on every request)
  LOG_LEVEL       DEBUG, INFO (default), WARNING or ERROR

`chatkit-backend COMMAND --help` shows a command's options. Every setting, deployment
and operations: README.md in the project (Configuration, Deployment, Operations).
"""


# uvicorn's own shutdown timeout is longer than the streams' grace period
# (SHUTDOWN_GRACE_SECONDS), so our clean end of each stream comes before its cut.
SHUTDOWN_MARGIN_SECONDS = 10


def _exit_cleanly(signum: int, frame: object) -> None:
    # uvicorn re-raises SIGTERM after its graceful shutdown; the default handler would
    # then kill the process (status 143). A stop that was asked for is a clean exit.
    raise SystemExit(0)


def _port_problem(host: str, port: int, suggestion: str) -> str | None:
    """Why `serve` cannot listen on `host`:`port` (another program holds it), or None.

    Tried before uvicorn starts: its own bind error comes after the app's start-up, as
    an errno line and exit code 1, and never says what to change.
    """
    import errno
    import socket

    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return None  # a host that does not resolve: uvicorn's error names it
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            # As asyncio's server does: connections of a server that just stopped
            # (TIME_WAIT) do not hold the port, only a socket that listens on it.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return f"port {port} is in use; {suggestion} (or stop the other server)"
                # Others (an address family the machine lacks, a privileged port) are
                # left to uvicorn, which skips or reports them as it always has.
    return None


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import math
    import signal

    import uvicorn

    from chatkit_backend.ops.transport import TransportLimits, http_protocol
    from chatkit_backend.ops.workers import shared_metrics_dir
    from chatkit_backend.store.migrations import ensure_schema_current

    if settings.auth_mode == "host":
        logger.error(
            "AUTH_MODE=host is for an app that includes our router and identifies callers "
            "itself (docs/embedding.md); serve needs AUTH_MODE=jwt or none"
        )
        return 2
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    other_port = port + 1 if port < 65535 else 8001
    # The flag wins over PORT, so the advice names whichever chose this port.
    suggestion = f"use --port {other_port}" if args.port is not None else f"set PORT={other_port}"
    problem = _port_problem(host, port, suggestion)
    if problem is not None:
        logger.error("%s", problem)
        return 2
    # Once, here, before any worker starts: a database that cannot be used, or whose
    # schema is behind, stops the start with one line instead of failing every request.
    ensure_schema_current(settings)
    workers = args.workers or settings.workers
    signal.signal(signal.SIGTERM, _exit_cleanly)
    with shared_metrics_dir(workers):
        uvicorn.run(
            "chatkit_backend.app:create_served_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            # The app logs one line per request itself, with ids, status and duration.
            access_log=False,
            # Header size and count, slow heads and bodies, connections: ops/transport.py.
            http=http_protocol(TransportLimits.from_settings(settings)),
            # X-Forwarded-For/-Proto only from TRUSTED_PROXIES: limits count by the
            # client's address, which anyone else could write into the header.
            proxy_headers=True,
            forwarded_allow_ips=settings.trusted_proxies,
            timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds)
            + SHUTDOWN_MARGIN_SECONDS,
        )
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from chatkit_backend.store.engine import wait_until_answering
    from chatkit_backend.store.migrations import schema_state_of, upgrade_to_head

    if args.wait:
        failure = asyncio.run(wait_until_answering(settings, args.wait))
        if failure is not None:
            logger.error("the database did not answer within %s s: %s", args.wait, failure)
            return 1
    # Connect once first: a wrong URL is one line (DatabaseUnusable), not Alembic's traceback.
    asyncio.run(schema_state_of(settings))
    upgrade_to_head(settings.database_url, settings.table_prefix)
    logger.info("database is at the newest schema")
    return 0


def _token(args: argparse.Namespace, settings: Settings) -> int:
    import sys

    from chatkit_backend.auth.mint import mint_token

    tenant = args.tenant or settings.jwt_default_tenant or "default"
    try:
        token = mint_token(settings, user=args.user, tenant=tenant, role=args.role, ttl=args.ttl)
    except ValueError as exc:
        logger.error("cannot mint a token: %s", exc)
        return 1
    # stdout carries only the token, so `TOKEN=$(chatkit-backend token ...)` works.
    sys.stdout.write(token + "\n")
    return 0


def _ttl(text: str) -> object:
    from chatkit_backend.auth.mint import parse_ttl

    try:
        return parse_ttl(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seed_demo(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from chatkit_backend.agents.employees import load_demo_directory
    from chatkit_backend.store.employees import EmployeeDirectory
    from chatkit_backend.store.engine import open_engine
    from chatkit_backend.store.migrations import require_current_schema
    from chatkit_backend.store.tables import tables_for

    async def load() -> None:
        await require_current_schema(settings)
        async with open_engine(settings) as engine:
            directory = EmployeeDirectory(engine, tables_for(settings.table_prefix))
            for tenant in args.tenant or [settings.local_tenant_id]:
                count = await load_demo_directory(directory, tenant)
                logger.info("loaded %d demo employees for tenant %s", count, tenant)

    asyncio.run(load())
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import sys

    from chatkit_backend.ops.commands import export_thread, with_maintenance

    async def work(maintenance: Any) -> bool:
        return await export_thread(maintenance, args.thread_id, args.format, sys.stdout)

    if not asyncio.run(with_maintenance(settings, work)):
        logger.error("no thread %s", args.thread_id)
        return 1
    return 0


def _purge(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import json
    import sys

    from chatkit_backend.ops.commands import purge_threads, with_maintenance

    async def work(maintenance: Any) -> dict[str, Any]:
        return await purge_threads(maintenance, args.older_than, args.tenant, args.dry_run)

    result = asyncio.run(with_maintenance(settings, work))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def _stats(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import json
    import sys

    from chatkit_backend.ops.commands import stats_table, tenant_stats, with_maintenance

    rows = asyncio.run(with_maintenance(settings, tenant_stats))
    text = json.dumps(rows, indent=2) + "\n" if args.format == "json" else stats_table(rows)
    sys.stdout.write(text)
    return 0


def _add_operator_commands(commands: Any) -> None:
    export = commands.add_parser("export", help="write one thread, all its items, to stdout")
    export.add_argument("thread_id")
    export.add_argument("--format", choices=("json", "markdown"), default="json")
    export.set_defaults(run=_export)
    purge = commands.add_parser("purge", help="delete threads with no activity for a while")
    purge.add_argument("--older-than", type=_ttl, required=True, help="e.g. 90d")
    purge.add_argument("--tenant", help="only this tenant's threads")
    purge.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    purge.set_defaults(run=_purge)
    stats = commands.add_parser("stats", help="threads, items, attachments, tokens by tenant")
    stats.add_argument("--format", choices=("table", "json"), default="table")
    stats.set_defaults(run=_stats)


def _cleanup(_: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import dataclasses
    import json
    import sys

    from chatkit_backend.attachments.cleanup import clean_up_once
    from chatkit_backend.store.migrations import require_current_schema

    asyncio.run(require_current_schema(settings))
    report = asyncio.run(clean_up_once(settings))
    sys.stdout.write(json.dumps(dataclasses.asdict(report)) + "\n")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chatkit-backend")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatkit-backend",
        description=DESCRIPTION,
        epilog=EPILOG,
        # Keeps the settings list's columns as written.
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, title="commands", metavar="COMMAND"
    )
    serve = commands.add_parser(
        "serve",
        help="serve the ChatKit endpoint over HTTP",
        description="Serve POST /chatkit, the chat page at /, /healthz, /readyz and /metrics. "
        "The database must be migrated first (`migrate`, or MIGRATE_ON_START=true).",
    )
    serve.add_argument("--host", help="address to bind (default: HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: PORT, 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: WORKERS, 1)")
    serve.set_defaults(run=_serve)
    migrate = commands.add_parser("migrate", help="upgrade the database to the newest schema")
    migrate.add_argument(
        "--wait", type=float, default=0, help="first wait up to this many seconds for the database"
    )
    migrate.set_defaults(run=_migrate)
    token = commands.add_parser("token", help="mint an HS256 token (JWT_SECRET) for development")
    token.add_argument("--user", required=True, help="the token's subject (sub)")
    token.add_argument("--tenant", help="tenant claim (default: JWT_DEFAULT_TENANT, else default)")
    token.add_argument("--role", choices=ROLES, help="role claim (default: none, i.e. member)")
    token.add_argument("--ttl", type=_ttl, default="1h", help="lifetime: 90s, 15m, 1h, 7d")
    token.set_defaults(run=_token)
    seed = commands.add_parser("seed-demo", help="load demo employees for the erp-support agent")
    seed.add_argument(
        "--tenant", action="append", help="tenant to load (repeatable; default: LOCAL_TENANT_ID)"
    )
    seed.set_defaults(run=_seed_demo)
    cleanup = commands.add_parser("cleanup", help="remove unsent attachments and stray files")
    cleanup.set_defaults(run=_cleanup)
    _add_operator_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        # Only the names and reasons: the values may be secrets.
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        logging.basicConfig()
        logger.error("invalid configuration: %s", problems)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    from chatkit_backend.store.engine import DatabaseUnusable

    try:
        result: int = args.run(args, settings)
    except DatabaseUnusable as exc:
        logger.error("%s", exc)
        return 2
    return result


if __name__ == "__main__":
    raise SystemExit(main())
