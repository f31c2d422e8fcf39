"""Operations: request tracking, metrics, graceful shutdown, maintenance commands."""
