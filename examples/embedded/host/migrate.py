"""Migrate the host's tables and chatkit-backend's, on DATABASE_URL: `python -m host.migrate`.

Each keeps its own history (the host's in alembic_version, ours in
chatkit_alembic_version), so the order does not matter.
"""

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

from chatkit_backend.store.migrations import upgrade_to_head

HERE = Path(__file__).resolve().parents[1]


def upgrade_host(database_url: str) -> None:
    config = Config(str(HERE / "alembic.ini"))
    config.set_main_option("script_location", str(HERE / "migrations"))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")


def upgrade_all(database_url: str) -> None:
    upgrade_host(database_url)
    upgrade_to_head(database_url)  # chatkit-backend's tables


if __name__ == "__main__":
    upgrade_all(os.environ["DATABASE_URL"])
