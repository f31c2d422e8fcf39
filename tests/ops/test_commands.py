"""The operator commands: export, purge and stats, on both databases and from the CLI."""

import json
import secrets
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from sqlalchemy import update

from chatkit_backend.ops.commands import export_thread, purge_threads, stats_table, tenant_stats
from chatkit_backend.store.engine import create_engine
from chatkit_backend.store.maintenance import Maintenance
from chatkit_backend.store.tables import UNPREFIXED
from tests.support.chat_client import ChatClient, chat_client
from tests.support.processes import run_cli
from tests.support.sse import answer_text


async def _age(database_url: str, thread_id: str, days: int) -> None:
    """Make a thread, and everything in it, look `days` old."""
    then = datetime.now(UTC) - timedelta(days=days)
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(UNPREFIXED.threads)
                .where(UNPREFIXED.threads.c.id == thread_id)
                .values(updated_at=then)
            )
            await conn.execute(
                update(UNPREFIXED.items)
                .where(UNPREFIXED.items.c.thread_id == thread_id)
                .values(created_at=then)
            )
    finally:
        await engine.dispose()


async def test_export_as_json_and_markdown(database_url: str) -> None:
    tenant = f"t-{secrets.token_hex(4)}"
    async with chat_client(database_url, local_tenant_id=tenant) as client:
        thread_id, events = await client.new_thread("What is the plan?")
    engine = create_engine(database_url)
    try:
        maintenance = Maintenance(engine)
        out = StringIO()
        assert await export_thread(maintenance, thread_id, "json", out)
        document = json.loads(out.getvalue())
        assert document["thread"]["id"] == thread_id
        assert document["tenant_id"] == tenant
        kinds = [item["type"] for item in document["items"]]
        assert kinds == ["user_message", "assistant_message"]
        assert document["items"][0]["content"][0]["text"] == "What is the plan?"

        out = StringIO()
        assert await export_thread(maintenance, thread_id, "markdown", out)
        text = out.getvalue()
        assert text.startswith("# ")
        assert f"- Thread: `{thread_id}`" in text
        assert "## User\n\nWhat is the plan?" in text
        assert "## Assistant\n\n" + answer_text(events) in text

        assert not await export_thread(maintenance, "thr_missing", "json", StringIO())
    finally:
        await engine.dispose()


async def _thread(client: ChatClient, text: str) -> str:
    thread_id, _ = await client.new_thread(text)
    return thread_id


async def test_purge_deletes_idle_threads_only(database_url: str) -> None:
    tenant, other = f"t-{secrets.token_hex(4)}", f"o-{secrets.token_hex(4)}"
    async with chat_client(database_url, local_tenant_id=tenant) as client:
        old = await _thread(client, "old")
        revived = await _thread(client, "old but written to lately")
        fresh = await _thread(client, "fresh")
    async with chat_client(database_url, local_tenant_id=other) as client:
        others_old = await _thread(client, "someone else's")
    for thread_id in (old, revived, others_old):
        await _age(database_url, thread_id, days=100)
    # A new message in an old thread is activity, though the thread row is untouched.
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(UNPREFIXED.items)
                .where(
                    UNPREFIXED.items.c.thread_id == revived,
                    UNPREFIXED.items.c.type == "assistant_message",
                )
                .values(created_at=datetime.now(UTC))
            )
        maintenance = Maintenance(engine)
        dry = await purge_threads(maintenance, timedelta(days=90), tenant, dry_run=True)
        assert (dry["threads"], dry["items"], dry["dry_run"]) == (1, 2, True)
        done = await purge_threads(maintenance, timedelta(days=90), tenant, dry_run=False)
        assert (done["threads"], done["items"]) == (1, 2)
        assert await maintenance.thread(old) is None
        for kept in (revived, fresh, others_old):
            assert await maintenance.thread(kept) is not None
        # Without --tenant, every tenant's idle threads go.
        everyone = await purge_threads(maintenance, timedelta(days=90), None, dry_run=False)
        assert everyone["threads"] >= 1
        assert await maintenance.thread(others_old) is None
        assert await maintenance.thread(revived) is not None
    finally:
        await engine.dispose()


async def test_stats_by_tenant(database_url: str) -> None:
    tenant = f"t-{secrets.token_hex(4)}"
    async with chat_client(database_url, local_tenant_id=tenant) as client:
        thread_id = await _thread(client, "one")
        await client.stream(
            "threads.add_user_message",
            thread_id=thread_id,
            input={
                "content": [{"type": "input_text", "text": "two"}],
                "attachments": [],
                "inference_options": {},
            },
        )
        await _thread(client, "three")
    engine = create_engine(database_url)
    try:
        rows = await tenant_stats(Maintenance(engine))
    finally:
        await engine.dispose()
    [row] = [row for row in rows if row["tenant_id"] == tenant]
    assert row["threads"] == 2
    assert row["items"] == 6
    assert row["attachments"] == 0
    assert row["input_tokens"] > 0 and row["output_tokens"] > 0
    table = stats_table([row])
    assert table.splitlines()[0].split() == [
        "tenant_id",
        "threads",
        "items",
        "attachments",
        "input_tokens",
        "output_tokens",
    ]
    assert table.splitlines()[1].split()[:3] == [tenant, "2", "6"]


@pytest.mark.slow
def test_the_commands_from_the_cli(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}",
        "LLM_PROVIDER": "offline",
        "OFFLINE_TOKEN_DELAY_MS": "0",
    }
    assert run_cli("migrate", env=env).returncode == 0

    import asyncio

    async def make() -> str:
        async with chat_client(env["DATABASE_URL"], local_tenant_id="acme") as client:
            return await _thread(client, "Hello from the CLI test")

    thread_id = asyncio.run(make())
    exported = run_cli("export", thread_id, "--format", "markdown", env=env)
    assert exported.returncode == 0, exported.stderr
    assert "Hello from the CLI test" in exported.stdout
    assert json.loads(run_cli("export", thread_id, env=env).stdout)["thread"]["id"] == thread_id
    missing = run_cli("export", "thr_nope", env=env)
    assert missing.returncode == 1 and missing.stdout == ""

    stats = json.loads(run_cli("stats", "--format", "json", env=env).stdout)
    assert [row["tenant_id"] for row in stats] == ["acme"]
    assert run_cli("stats", env=env).stdout.startswith("tenant_id")

    kept = json.loads(run_cli("purge", "--older-than", "90d", env=env).stdout)
    assert kept["threads"] == 0
    asyncio.run(_age(env["DATABASE_URL"], thread_id, days=91))
    purged = json.loads(run_cli("purge", "--older-than", "90d", "--tenant", "acme", env=env).stdout)
    assert (purged["threads"], purged["items"]) == (1, 2)
    bad = run_cli("purge", "--older-than", "soon", env=env)
    assert bad.returncode == 2  # argparse refuses it
