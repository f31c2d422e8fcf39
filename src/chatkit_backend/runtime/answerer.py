"""One answer: pick the agent and model, run it, stream it, account for it; what the
user is told when it fails; the thread's title after the first answer."""

import logging

import openai
from agents import Agent, Model, ModelSettings, RunConfig, Runner
from agents.exceptions import (
    AgentsException,
    InputGuardrailTripwireTriggered,
    MaxTurnsExceeded,
    ModelBehaviorError,
    OutputGuardrailTripwireTriggered,
)
from agents.items import TResponseInputItem
from agents.result import RunResultStreaming
from chatkit.errors import CustomStreamError
from chatkit.types import InferenceOptions

from chatkit_backend.agents.catalog import LABELS, AgentSelector
from chatkit_backend.ops.metrics import count_error
from chatkit_backend.providers.provider import Provider
from chatkit_backend.runtime.events import RunEvents, TurnContext
from chatkit_backend.runtime.recording import RecordingModel, TextRecorder, current_recorder
from chatkit_backend.runtime.workflow import ActivityHooks, routed_task
from chatkit_backend.settings import Settings

logger = logging.getLogger(__name__)


class Answerer:
    """Runs the selected agent on the configured provider and streams ChatKit events."""

    def __init__(self, provider: Provider, selector: AgentSelector, settings: Settings) -> None:
        self.provider = provider
        self.selector = selector
        self.settings = settings
        self._run_configs: dict[str, RunConfig] = {}

    def model_name(self, options: InferenceOptions | None) -> str:
        """The composer's model when it is allowed, else the configured one."""
        wanted = options.model if options else None
        allowed = wanted is not None and wanted in self.settings.allowed_models
        return wanted if wanted is not None and allowed else self.settings.model_name

    def run_config(self, model_name: str) -> RunConfig:
        """The run's configuration, made once per model: building a `RunConfig` resolves
        its type hints, milliseconds of CPU that were a tenth of a streamed turn."""
        config = self._run_configs.get(model_name)
        if config is None:
            # A Model instance, not a name: the SDK gives agents without a model its gpt-5
            # defaults (reasoning effort, verbosity), which other models refuse.
            model = RecordingModel(self.provider.get_model(model_name))
            config = self._run_configs[model_name] = RunConfig(
                model=model,
                # The SDK asks Chat Completions servers for usage only on api.openai.com.
                model_settings=ModelSettings(include_usage=self.provider.asks_for_usage or None),
                tracing_disabled=not self.settings.agents_tracing,
            )
        return config

    async def run(
        self,
        context: TurnContext,
        history: list[TResponseInputItem],
        options: InferenceOptions | None,
        events: RunEvents,
    ) -> None:
        """Run the agent, handing its events to `events` (which also keeps what it spent).

        A failure raises `CustomStreamError` with what the user should read, after the
        answer so far has been handed on whole (even what the model said that the SDK
        dropped unshown); what a guardrail withdrew stays withdrawn.
        """
        request_context = context.request_context
        tool_choice = options.tool_choice.id if options and options.tool_choice else None
        selection = self.selector.select(request_context, tool_choice)
        model_name = self.model_name(options)
        recorder = TextRecorder()
        recording = current_recorder.set(recorder)
        result: RunResultStreaming | None = None
        if selection.routed_to:
            await context.add_workflow_task(routed_task(selection.routed_to))
        try:
            result = Runner.run_streamed(
                selection.agent,
                history,
                context=context,
                run_config=self.run_config(model_name),
                hooks=ActivityHooks(LABELS),
            )
            events.spending(result, model_name)
            async for event in result.stream_events():
                await events.raw(event)
            events.finish()
        except (InputGuardrailTripwireTriggered, OutputGuardrailTripwireTriggered) as exc:
            self._failed(exc, context)
            events.withdraw()
            message, allow_retry = describe_failure(exc)
            raise CustomStreamError(message, allow_retry=allow_retry) from None
        except Exception as exc:
            self._failed(exc, context)
            events.salvage(recorder.messages)
            message, allow_retry = describe_failure(exc)
            raise CustomStreamError(message, allow_retry=allow_retry) from None
        finally:
            current_recorder.reset(recording)
            if result is not None and not result.is_complete:
                # Ended early (failure or cancel): stop the run and its model call.
                result.cancel()

    def _failed(self, exc: Exception, context: TurnContext) -> None:
        log_failure(exc, context.thread.id)
        count_error(f"model_{type(exc).__name__}")

    async def title(self, first_message: str) -> str:
        """A title for a new thread: derived offline, asked of the model otherwise."""
        if self.provider.offline:
            return derived_title(first_message)
        model = self.provider.get_model(None)
        return await model_title(model, first_message, self.run_config(self.settings.model_name))


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


MAX_TITLE_CHARS = 60
TITLE_INSTRUCTIONS = (
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
    agent: Agent[None] = Agent(name="Titler", instructions=TITLE_INSTRUCTIONS, model=model)
    try:
        result = await Runner.run(agent, text[:2000], run_config=run_config)
    except Exception as exc:
        logger.info("title generation failed: %s", type(exc).__name__)
        return derived_title(text)
    title = str(result.final_output).strip().strip("\"'").strip()
    return derived_title(title) if title else derived_title(text)
