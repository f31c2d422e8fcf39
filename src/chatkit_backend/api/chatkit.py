"""`POST /chatkit`: the one endpoint the ChatKit frontend talks to."""

from chatkit.server import StreamingResult
from chatkit.types import is_streaming_req
from fastapi import APIRouter, Request, Response

from chatkit_backend.api.deps import CheckerDep, ContextDep, LimiterDep, ServerDep, SettingsDep
from chatkit_backend.api.parsing import parse_request, read_body
from chatkit_backend.api.streaming import EventStreamResponse
from chatkit_backend.auth.roles import authorize

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
        401: {"description": "Missing, malformed, expired or wrongly signed bearer token"},
        403: {"description": "The caller's role may not send this type"},
        404: {"description": "Unknown thread, item or attachment"},
        413: {"description": "Body over the configured limit"},
        429: {"description": "Over the request rate or concurrent-stream limit"},
    },
)
async def chatkit_endpoint(
    request: Request,
    server: ServerDep,
    checker: CheckerDep,
    context: ContextDep,
    settings: SettingsDep,
    limiter: LimiterDep,
) -> Response:
    # The order is the contract: 401 (in ContextDep), 429, 400/413, 403, 404, then a
    # stream slot; everything a client can get wrong is refused before a stream starts.
    limiter.admit_request(context)
    chatkit_request = parse_request(await read_body(request, settings.max_body_bytes))
    authorize(chatkit_request.type, context.role)
    await checker.check(chatkit_request, context)
    lease = limiter.open_stream(context) if is_streaming_req(chatkit_request) else None
    try:
        result = await server.handle(chatkit_request, context)
    except BaseException:
        if lease is not None:
            lease.release()
        raise
    if isinstance(result, StreamingResult):
        return EventStreamResponse(result.json_events, on_close=lease.release if lease else None)
    return Response(content=result.json, media_type="application/json")
