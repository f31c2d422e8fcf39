"""`POST /chatkit`: the one endpoint the ChatKit frontend talks to."""

from chatkit.server import StreamingResult
from fastapi import APIRouter, Request, Response

from chatkit_backend.api.deps import CheckerDep, ContextDep, ServerDep, SettingsDep
from chatkit_backend.api.parsing import parse_request, read_body
from chatkit_backend.api.streaming import EventStreamResponse

router = APIRouter()


@router.post(
    "/chatkit",
    summary="ChatKit protocol endpoint",
    description=(
        "Takes a ChatKit request `{type, params, metadata}`. Streaming types answer "
        "`text/event-stream`; the others `application/json`."
    ),
    responses={
        200: {"content": {"application/json": {}, "text/event-stream": {}}},
        400: {"description": "Malformed JSON, unknown type or invalid params"},
        404: {"description": "Unknown thread, item or attachment"},
        413: {"description": "Body over the configured limit"},
    },
)
async def chatkit_endpoint(
    request: Request,
    server: ServerDep,
    checker: CheckerDep,
    context: ContextDep,
    settings: SettingsDep,
) -> Response:
    chatkit_request = parse_request(await read_body(request, settings.max_body_bytes))
    await checker.check(chatkit_request, context)
    result = await server.handle(chatkit_request, context)
    if isinstance(result, StreamingResult):
        return EventStreamResponse(result.json_events)
    return Response(content=result.json, media_type="application/json")
