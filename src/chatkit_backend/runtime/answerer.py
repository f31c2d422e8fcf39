"""One answer: pick the agent and model, run it, stream it, account for it; what the
user is told when it fails; the thread's title after the first answer."""

import logging
from collections.abc import AsyncIterator, Callable

import anyio
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
from chatkit.agents import AgentContext, stream_agent_response
from chatkit.errors import CustomStreamError
from chatkit.types import InferenceOptions, ThreadItemDoneEvent, ThreadStreamEvent

from chatkit_backend.agents.catalog import LABELS, AgentSelector
from chatkit_backend.context import RequestContext
from chatkit_backend.ops.metrics import count_error, count_tokens
from chatkit_backend.providers.provider import Provider
from chatkit_backend.runtime.messages import AnswerTracker, RecordingModel, TextRecorder
from chatkit_backend.runtime.workflow import ActivityHooks, routed_task
from chatkit_backend.settings import Settings
from chatkit_backend.store.usage import UsageLedger

logger = logging.getLogger(__name__)


class Answerer:
    """Runs the selected agent on the configured provider and streams ChatKit events."""

    def __init__(
        self, provider: Provider, selector: AgentSelector, usage: UsageLedger, settings: Settings
    ) -> None:
        self.provider = provider
        self.selector = selector
        self.usage = usage
        self.settings = settings

    def model_name(self, options: InferenceOptions | None) -> str:
        """The composer's model when it is allowed, else the configured one."""
        wanted = options.model if options else None
        allowed = wanted is not None and wanted in self.settings.allowed_models
        return wanted if wanted is not None and allowed else self.settings.model_name

    def run_config(self, model_name: str, recorder: TextRecorder | None = None) -> RunConfig:
        # A Model instance, not a name: the SDK gives agents without a model its gpt-5
        # defaults (reasoning effort, verbosity), which other models refuse.
        model = self.provider.get_model(model_name)
        return RunConfig(
            model=RecordingModel(model, recorder) if recorder is not None else model,
            # The SDK asks Chat Completions servers for usage only on api.openai.com.
            model_settings=ModelSettings(
                include_usage=True if self.provider.asks_for_usage else None
            ),
            tracing_disabled=not self.settings.agents_tracing,
        )

    async def answer(
        self,
        agent_context: AgentContext[RequestContext],
        history: list[TResponseInputItem],
        options: InferenceOptions | None,
        new_message_id: Callable[[], str],
    ) -> AsyncIterator[ThreadStreamEvent]:
        context = agent_context.request_context
        tool_choice = options.tool_choice.id if options and options.tool_choice else None
        selection = self.selector.select(context, tool_choice)
        model_name = self.model_name(options)
        tracker = AnswerTracker(new_message_id)
        recorder = TextRecorder()
        result: RunResultStreaming | None = None
        if selection.routed_to:
            await agent_context.add_workflow_task(routed_task(selection.routed_to))
        try:
            result = Runner.run_streamed(
                selection.agent,
                history,
                context=agent_context,
                run_config=self.run_config(model_name, recorder),
                hooks=ActivityHooks(LABELS),
            )
            async for event in stream_agent_response(agent_context, result):
                yield tracker.rewrite(event)
        except Exception as exc:
            log_failure(exc, agent_context.thread.id)
            count_error(f"model_{type(exc).__name__}")
            # Whatever was said before the failure stays in the thread, even what the SDK
            # dropped unshown; what a guardrail withdrew stays withdrawn.
            if isinstance(exc, InputGuardrailTripwireTriggered | OutputGuardrailTripwireTriggered):
                for item in tracker.unfinished():
                    yield ThreadItemDoneEvent(item=item)
            else:
                for event in tracker.salvage(recorder.messages, agent_context.thread.id):
                    yield event
            message, allow_retry = describe_failure(exc)
            raise CustomStreamError(message, allow_retry=allow_retry) from None
        finally:
            _stop(result)
            if result is not None:
                # Also after a cancel: the tokens were spent either way.
                with anyio.CancelScope(shield=True):
                    try:
                        await self._record_usage(result, agent_context, model_name)
                    except Exception as exc:
                        # The database may be away. A raise here helps nobody: when the
                        # SDK's own write fails it drops this generator unclosed, so this
                        # runs at garbage collection, in a task no one awaits.
                        logger.warning("could not record usage: %s", type(exc).__name__)

    async def _record_usage(
        self, result: RunResultStreaming, agent_context: AgentContext[RequestContext], model: str
    ) -> None:
        usage = result.context_wrapper.usage
        if usage.requests == 0 and usage.total_tokens == 0:
            return
        count_tokens(model, usage.input_tokens, usage.output_tokens)
        await self.usage.record(
            agent_context.thread.id,
            agent_context.request_context,
            model,
            usage.requests,
            usage.input_tokens,
            usage.output_tokens,
        )

    async def title(self, first_message: str) -> str:
        """A title for a new thread: derived offline, asked of the model otherwise."""
        if self.provider.offline:
            return derived_title(first_message)
        model = self.provider.get_model(None)
        return await model_title(model, first_message, self.run_config(self.settings.model_name))


def _stop(result: RunResultStreaming | None) -> None:
    """Stop a run that is still going when its answer ends early (failure or cancel).

    The merge in `chatkit_merge.py` already cancels the run when its stream is abandoned;
    this also covers a failure before the stream was first read.
    """
    if result is not None and not result.is_complete:
        result.cancel()


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
