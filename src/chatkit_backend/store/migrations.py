"""Run the Alembic migrations from code (the `migrate` command and the tests)."""

from pathlib import Path

from alembic import command
from alembic.config import Config

# The source tree and the Docker image both keep alembic.ini beside src/ (or in the
# working directory, for an installed package run from the project folder).
_PROJECT_ROOT = Path(__file__).resolve().parents[3]


def alembic_config(database_url: str | None = None) -> Config:
    """The project's Alembic config, pointed at `database_url` when one is given."""
    ini = Path("alembic.ini")
    if not ini.is_file():
        ini = _PROJECT_ROOT / "alembic.ini"
    config = Config(str(ini))
    config.set_main_option("script_location", str(ini.parent / "alembic"))
    if database_url is not None:
        config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(database_url: str | None = None) -> None:
    """Bring the database to the newest schema."""
    command.upgrade(alembic_config(database_url), "head")
