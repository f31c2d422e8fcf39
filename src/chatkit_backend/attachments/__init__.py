"""Files in the conversation: storage, signed links, content checks, model input, cleanup."""
