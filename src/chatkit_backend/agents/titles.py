"""Thread titles, made after the first answer."""

import logging

from agents import Agent, Model, RunConfig, Runner

logger = logging.getLogger(__name__)

MAX_TITLE_CHARS = 60
INSTRUCTIONS = (
    "Write a title of at most six words for a conversation that starts with the user's "
    "message below. Answer with the title only: no quotes, no final full stop."
)


def derived_title(text: str) -> str:
    """The first words of the message, cut on a word boundary."""
    words = " ".join(text.split())
    if len(words) <= MAX_TITLE_CHARS:
        return words or "New conversation"
    cut = words[:MAX_TITLE_CHARS].rsplit(" ", 1)[0]
    return f"{cut}…"


async def model_title(model: Model, text: str, run_config: RunConfig) -> str:
    """A short title from the model, or the derived one if the model fails."""
    agent: Agent[None] = Agent(name="Titler", instructions=INSTRUCTIONS, model=model)
    try:
        result = await Runner.run(agent, text[:2000], run_config=run_config)
    except Exception as exc:
        logger.info("title generation failed: %s", type(exc).__name__)
        return derived_title(text)
    title = str(result.final_output).strip().strip("\"'").strip()
    return derived_title(title) if title else derived_title(text)
