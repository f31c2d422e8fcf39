"""Unguessable ids that keep the SDK's prefixes."""

import secrets

from chatkit.store import StoreItemType

PREFIXES: dict[StoreItemType, str] = {
    "thread": "thr",
    "message": "msg",
    "tool_call": "tc",
    "workflow": "wf",
    "task": "tsk",
    "attachment": "atc",
    "sdk_hidden_context": "shcx",
}

# 128 random bits; the SDK's default of 32 can be enumerated.
RANDOM_BYTES = 16


def new_id(item_type: StoreItemType) -> str:
    """Return `prefix_` followed by 32 random hex characters."""
    return f"{PREFIXES[item_type]}_{secrets.token_hex(RANDOM_BYTES)}"
