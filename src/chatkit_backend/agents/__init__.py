"""The agents this server ships: the built-ins, their tools and prompts, and which one answers."""
