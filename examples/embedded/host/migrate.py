"""Migrate the host's tables and chatkit-backend's, on DATABASE_URL: `python -m host.migrate`,
or `alembic upgrade head` from this folder (the host's env.py runs chatkit-backend's
migrations after its own).

Each keeps its own history (the host's in alembic_version, chatkit-backend's in
chatkit_chatkit_alembic_version: its version table carries its TABLE_PREFIX too), so the
order does not matter.
"""

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

from chatkit_backend.store.migrations import upgrade_to_head
from host.models import CHATKIT_TABLE_PREFIX

HERE = Path(__file__).resolve().parents[1]


def upgrade_host(database_url: str) -> None:
    config = Config(str(HERE / "alembic.ini"))
    config.set_main_option("script_location", str(HERE / "migrations"))
    config.attributes["database_url"] = database_url
    command.upgrade(config, "head")


def upgrade_chatkit(database_url: str) -> None:
    """chatkit-backend's tables alone (the host's env.py also runs this after its own)."""
    upgrade_to_head(database_url, table_prefix=CHATKIT_TABLE_PREFIX)


def upgrade_all(database_url: str) -> None:
    # The host's env.py brings chatkit-backend's tables to head after its own.
    upgrade_host(database_url)


if __name__ == "__main__":
    upgrade_all(os.environ["DATABASE_URL"])
