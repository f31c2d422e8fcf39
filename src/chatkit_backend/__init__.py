"""A self-hosted backend for OpenAI's ChatKit frontend."""

__version__ = "0.1.0"
