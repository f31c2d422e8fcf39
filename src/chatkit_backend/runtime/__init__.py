"""Running an answer: the agent run streamed as ChatKit events, its messages and
workflow tasks, failures and titles."""
