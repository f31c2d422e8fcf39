"""Persistence: tables, the engine and the ChatKit `Store` implementation."""
