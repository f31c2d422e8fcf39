"""What the tests (and, for the first three, bench/) are built on.

Shared with bench/ (no pytest in them):
- `openai_wire`: the OpenAI wire formats both fake upstreams speak;
- `postgres`: throwaway databases, connection counts, clusters of a test's own;
- `processes`: server processes started, waited for, stopped, killed, their logs checked.

For the tests:
- `fake_openai`: the scriptable fake OpenAI server (`fake`, tests/conftest.py);
- `needs`: skip locally, fail under CI, when PostgreSQL or a tool is missing;
- `chat_client`, `sse`, `asgi`: ChatKit requests and their answers, in process or served;
- `auth`, `attachments`, `agent_helpers`, `ops`: helpers of several test folders.
"""
