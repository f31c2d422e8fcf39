"""Which agent answers, and how its run becomes ChatKit events."""
