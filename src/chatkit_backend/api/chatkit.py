"""`POST /chatkit`: the one endpoint the ChatKit frontend talks to."""

from chatkit.server import NonStreamingResult
from chatkit.types import is_streaming_req
from fastapi import APIRouter, Request, Response

from chatkit_backend.api.deps import CheckerDep, ContextDep, LimiterDep, ServerDep, SettingsDep
from chatkit_backend.api.parsing import parse_request, read_body
from chatkit_backend.api.streams import start_stream
from chatkit_backend.auth.roles import authorize
from chatkit_backend.ops.tracking import current

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
        409: {"description": "The thread is still answering an earlier message"},
        413: {"description": "Body over the configured limit"},
        429: {"description": "Over the request rate or concurrent-stream limit"},
        503: {"description": "Shutting down, or the database is not answering"},
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
    info = current()
    if info is not None:
        info.tenant_id, info.user_id = context.tenant_id, context.user_id
    limiter.admit_request(context)
    chatkit_request = parse_request(await read_body(request, settings.max_body_bytes))
    if info is not None:
        info.chatkit_type = chatkit_request.type
        thread_id = getattr(chatkit_request.params, "thread_id", None)
        info.thread_id = thread_id if isinstance(thread_id, str) else None
    authorize(chatkit_request.type, context.role)
    await checker.check(chatkit_request, context)
    if is_streaming_req(chatkit_request):
        # Then 503 while shutting down, 429 for stream slots, 409 for a busy thread.
        return await start_stream(request, chatkit_request, context, server, limiter)
    result = await server.handle(chatkit_request, context)
    assert isinstance(result, NonStreamingResult)
    return Response(content=result.json, media_type="application/json")
