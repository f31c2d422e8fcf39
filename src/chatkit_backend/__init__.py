"""A self-hosted backend for OpenAI's ChatKit frontend.

`Caller`, `ChatKitBackend` and `Settings` are for including its routers in your own
FastAPI app (docs/embedding.md). They load on first use: the CLI imports this package
for every command, and most commands need none of the server.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Caller", "ChatKitBackend", "Settings", "__version__"]

if TYPE_CHECKING:
    from chatkit_backend.backend import Caller, ChatKitBackend
    from chatkit_backend.settings import Settings


def __getattr__(name: str) -> Any:
    if name in ("Caller", "ChatKitBackend"):
        from chatkit_backend import backend

        return getattr(backend, name)
    if name == "Settings":
        from chatkit_backend.settings import Settings

        return Settings
    raise AttributeError(f"module 'chatkit_backend' has no attribute {name!r}")
