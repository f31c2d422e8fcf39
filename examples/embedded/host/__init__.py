"""A host app with users of its own that includes chatkit-backend's router under /api."""
