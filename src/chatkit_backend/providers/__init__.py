"""Which model answers: the offline model or an OpenAI client."""
