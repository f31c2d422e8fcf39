"""Which database failures mean "the database is away" rather than a bug."""

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# Refused or dropped connections surface as OSError (asyncpg connecting), as
# OperationalError/InterfaceError (a connection that died), or as the pool's timeout.
DATABASE_OUTAGES: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    ConnectionError,
)


def is_database_outage(exc: BaseException) -> bool:
    """True for failures that a database coming back would cure."""
    if isinstance(exc, DATABASE_OUTAGES):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # asyncpg's own errors for a server that is shutting down or restarting, raw or
    # wrapped by SQLAlchemy.
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    return type(original).__name__ in _ASYNCPG_OUTAGES


_ASYNCPG_OUTAGES = frozenset(
    {"CannotConnectNowError", "AdminShutdownError", "ConnectionDoesNotExistError"}
)
