"""`chatkit-backend`: serve, migrate. Thin: each command calls into the package."""

import argparse
import logging
from collections.abc import Sequence

from pydantic import ValidationError

from chatkit_backend.logs import configure_logging
from chatkit_backend.settings import Settings

logger = logging.getLogger("chatkit_backend")


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    uvicorn.run(
        "chatkit_backend.app:create_served_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port if args.port is not None else settings.port,
        workers=args.workers or settings.workers,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=30,
    )
    return 0


def _migrate(_: argparse.Namespace, settings: Settings) -> int:
    from chatkit_backend.migrations import upgrade_to_head

    upgrade_to_head(settings.database_url)
    logger.info("database is at the newest schema")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatkit-backend", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the ChatKit endpoint over HTTP")
    serve.add_argument("--host", help="address to bind (default: HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: PORT, 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: WORKERS, 1)")
    serve.set_defaults(run=_serve)
    migrate = commands.add_parser("migrate", help="upgrade the database to the newest schema")
    migrate.set_defaults(run=_migrate)
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
    configure_logging(settings.log_level)
    result: int = args.run(args, settings)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
