"""Input guardrails added to every agent, built-in or not."""

from typing import Any

from agents import (
    Agent,
    GuardrailFunctionOutput,
    InputGuardrail,
    RunContextWrapper,
    input_guardrail,
)
from agents.items import TResponseInputItem

from chatkit_backend.attachments.model_input import last_user_text


def message_length_guardrail(limit: int) -> InputGuardrail[Any]:
    """Trips when the newest user message is longer than `limit` characters."""

    # Not in parallel: a message that trips it never reaches the model.
    @input_guardrail(name="message_length", run_in_parallel=False)
    async def check(
        _: RunContextWrapper[Any], __: Agent[Any], input: str | list[TResponseInputItem]
    ) -> GuardrailFunctionOutput:
        length = len(last_user_text(input))
        message = (
            f"Your message is {length:,} characters long; the assistant takes at most "
            f"{limit:,}. Please shorten it and send it again."
        )
        return GuardrailFunctionOutput(
            output_info={"message": message}, tripwire_triggered=length > limit
        )

    return check
