"""What a user is told when a model run fails."""

import logging

import openai
from agents.exceptions import (
    AgentsException,
    InputGuardrailTripwireTriggered,
    MaxTurnsExceeded,
    ModelBehaviorError,
)

logger = logging.getLogger(__name__)


def describe_failure(exc: Exception) -> tuple[str, bool]:
    """A message safe to show, and whether retrying may help."""
    match exc:
        case InputGuardrailTripwireTriggered():
            info = exc.guardrail_result.output.output_info
            message = info.get("message") if isinstance(info, dict) else None
            return str(message or "The assistant cannot take this message."), False
        case openai.AuthenticationError() | openai.PermissionDeniedError():
            return "The model provider refused our credentials. Ask an administrator.", False
        case openai.RateLimitError():
            return "The model provider is rate limiting us. Try again in a moment.", True
        case openai.APITimeoutError():
            return "The model took too long to answer. Try again.", True
        case openai.APIConnectionError():
            return "The model provider could not be reached. Try again.", True
        case openai.BadRequestError():
            return "The model provider rejected the request.", False
        case openai.APIStatusError():
            return "The model provider had an error. Try again.", True
        case MaxTurnsExceeded():
            return "The assistant took too many steps and stopped.", True
        case ModelBehaviorError():
            return "The model gave an answer the assistant could not use. Try again.", True
        case AgentsException():
            return "The assistant could not finish its answer. Try again.", True
        case _:
            return "Something went wrong while answering. Try again.", True


def log_failure(exc: Exception, thread_id: str) -> None:
    """One line, no stack trace: the type says what failed without leaking content."""
    logger.warning("model run failed in thread %s: %s", thread_id, type(exc).__name__)
