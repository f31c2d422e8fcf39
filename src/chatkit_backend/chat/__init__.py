"""One ChatKit turn: checks before the stream, limits, the thread lease, the server,
and the stream's hooks."""
