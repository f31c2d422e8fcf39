"""The operator commands behind `chatkit-backend export | purge | stats`."""

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO, TypeVar

from chatkit.types import (
    AssistantMessageItem,
    ThreadItem,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
    WorkflowItem,
)
from pydantic import TypeAdapter

from chatkit_backend.settings import Settings
from chatkit_backend.store.engine import open_engine
from chatkit_backend.store.maintenance import Maintenance, ThreadRecord
from chatkit_backend.store.migrations import require_current_schema
from chatkit_backend.store.tables import tables_for

_ITEM: TypeAdapter[ThreadItem] = TypeAdapter(ThreadItem)
T = TypeVar("T")


async def with_maintenance(settings: Settings, work: Callable[[Maintenance], Awaitable[T]]) -> T:
    """Run `work` on a small engine; DatabaseUnusable first if the database cannot be
    used or was not migrated (one line for the operator, not a traceback)."""
    await require_current_schema(settings)
    async with open_engine(settings) as engine:
        return await work(Maintenance(engine, tables_for(settings.table_prefix)))


async def export_thread(maintenance: Maintenance, thread_id: str, fmt: str, out: TextIO) -> bool:
    """Write the thread (owner, metadata, every item) to `out`; False if there is none."""
    record = await maintenance.thread(thread_id)
    if record is None:
        return False
    items = [_ITEM.validate_json(data) async for data in maintenance.items(thread_id)]
    if fmt == "json":
        json.dump(_as_json(record, items), out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        out.write(_as_markdown(record, items))
    return True


def _as_json(record: ThreadRecord, items: list[ThreadItem]) -> dict[str, Any]:
    return {
        "thread": json.loads(record.data),
        "tenant_id": record.tenant_id,
        "user_id": record.user_id,
        "created_at": record.created_at.isoformat(),
        "items": [item.model_dump(mode="json") for item in items],
    }


def _as_markdown(record: ThreadRecord, items: list[ThreadItem]) -> str:
    thread = ThreadMetadata.model_validate_json(record.data)
    lines = [
        f"# {thread.title or 'Untitled thread'}",
        "",
        f"- Thread: `{record.id}`",
        f"- Tenant: `{record.tenant_id}`, user: `{record.user_id}`",
        f"- Created: {record.created_at.isoformat()}",
        "",
    ]
    for item in items:
        match item:
            case UserMessageItem():
                text = " ".join(
                    part.text for part in item.content if isinstance(part, UserMessageTextContent)
                )
                lines += ["## User", "", text, ""]
            case AssistantMessageItem():
                lines += ["## Assistant", "", "".join(part.text for part in item.content), ""]
            case WorkflowItem():
                titles = [getattr(task, "title", None) or task.type for task in item.workflow.tasks]
                lines += [f"- _{title}_" for title in titles] + [""]
            case _:
                continue  # hidden context, widgets, tool calls: not part of the conversation
    return "\n".join(lines)


async def purge_threads(
    maintenance: Maintenance, older_than: timedelta, tenant: str | None, dry_run: bool
) -> dict[str, Any]:
    cutoff = datetime.now(UTC) - older_than
    result = await maintenance.purge(cutoff, tenant, dry_run)
    return {
        "cutoff": cutoff.isoformat(),
        "dry_run": dry_run,
        "threads": result.threads,
        "items": result.items,
        "attachments": len(result.attachment_ids),
    }


async def tenant_stats(maintenance: Maintenance) -> list[dict[str, Any]]:
    return [asdict(totals) for totals in await maintenance.totals()]


def stats_table(rows: list[dict[str, Any]]) -> str:
    """A plain aligned table for a terminal."""
    columns = ["tenant_id", "threads", "items", "attachments", "input_tokens", "output_tokens"]
    cells = [columns] + [[str(row[column]) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return (
        "\n".join(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            )
            for line in cells
        )
        + "\n"
    )
