"""`POST /chatkit`: the one endpoint the ChatKit frontend talks to."""

from fastapi import APIRouter, Request, Response

from chatkit_backend.api.deps import ContextDep, ServicesDep
from chatkit_backend.api.requests import is_streaming, parse_request, read_body
from chatkit_backend.api.streaming import start_stream
from chatkit_backend.auth.roles import authorize
from chatkit_backend.errors import UnsupportedMediaType
from chatkit_backend.ops.logs import current

router = APIRouter()


def require_json(request: Request, endpoint: str = "POST /chatkit") -> None:
    """ChatKit's client sends `application/json`. Anything else may be a page elsewhere
    posting a form or `text/plain`, which a browser sends across sites without asking."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(f"{endpoint} takes a JSON body (Content-Type: application/json)")


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
        415: {"description": "The body is not `application/json`"},
        429: {"description": "Over the request rate or concurrent-stream limit"},
        503: {"description": "Shutting down, or the database is not answering"},
    },
)
async def chatkit_endpoint(
    request: Request, services: ServicesDep, context: ContextDep
) -> Response:
    # The order is the contract: 401 (in ContextDep), 429, 415, 400/413, 403, 404, then a
    # stream slot; everything a client can get wrong is refused before a stream starts.
    info = current()
    if info is not None:
        info.owner = context.owner
    await services.limiter.admit_request(context.owner)
    require_json(request)
    body = await read_body(request, services.settings.max_body_bytes)
    chatkit_request = parse_request(body)
    if info is not None:
        info.chatkit_type = chatkit_request.type
        thread_id = getattr(chatkit_request.params, "thread_id", None)
        info.thread_id = thread_id if isinstance(thread_id, str) else None
    authorize(chatkit_request.type, context.role)
    if chatkit_request.type == "attachments.create":
        await services.limiter.admit_upload(context.owner)
    await services.checker.check(chatkit_request, context)
    if is_streaming(chatkit_request):
        # Then 503 while shutting down, 429 for stream slots, 409 for a busy thread.
        return await start_stream(services, chatkit_request, context)
    body = await services.requests.handle(chatkit_request, context)
    return Response(content=body, media_type="application/json")


@router.get(
    "/chatkit/me",
    summary="The caller, as this server sees it",
    description="The user, tenant and role the token names; AUTH_MODE=none: the local user.",
    responses={401: {"description": "Missing, malformed, expired or wrongly signed bearer token"}},
)
async def caller(context: ContextDep) -> dict[str, str]:
    return {
        "user_id": context.owner.user_id,
        "tenant_id": context.owner.tenant_id,
        "role": context.role,
    }
