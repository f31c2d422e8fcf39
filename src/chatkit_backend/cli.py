"""`chatkit-backend`: serve, migrate. Thin: each command calls into the package."""

import argparse
import logging
from collections.abc import Sequence

from pydantic import ValidationError

from chatkit_backend.auth.roles import ROLES
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

    from chatkit_backend.demo import load_demo_directory
    from chatkit_backend.store.employees import EmployeeDirectory
    from chatkit_backend.store.engine import create_engine

    async def load() -> None:
        engine = create_engine(settings.database_url)
        try:
            directory = EmployeeDirectory(engine)
            for tenant in args.tenant or [settings.local_tenant_id]:
                count = await load_demo_directory(directory, tenant)
                logger.info("loaded %d demo employees for tenant %s", count, tenant)
        finally:
            await engine.dispose()

    asyncio.run(load())
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
