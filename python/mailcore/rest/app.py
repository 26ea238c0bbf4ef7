"""The Starlette application: decode, call the library, encode. No business logic here."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import Settings
from ..errors import (
    MailcoreError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationError,
)
from ..facade import Mailcore
from .errors import error_response, from_decode_error
from .links import ROUTES as LINK_ROUTES
from .routes import ENDPOINTS, JSON, Call, Endpoint, decoder

_encode = msgspec.json.Encoder().encode


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes", limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _media_type(request: Request) -> str | None:
    raw = request.headers.get("content-type")
    if raw is None:
        return None
    return raw.split(";", 1)[0].strip().lower()


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _make_handler(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    reads_body = endpoint.body is not None or endpoint.large_body

    async def handle(request: Request) -> Response:
        mc: Mailcore = request.app.state.mailcore
        try:
            scope = None
            if endpoint.auth:
                scope = mc.account(await mc.accounts.authenticate(_bearer(request)))
            raw = b""
            body: Any = None
            media = _media_type(request)
            if reads_body:
                if media not in endpoint.content_types:
                    raise UnsupportedMediaType(
                        f"Content-Type must be {' or '.join(endpoint.content_types)}",
                        accepted=list(endpoint.content_types),
                    )
                limit = (
                    mc.settings.max_import_bytes
                    if endpoint.large_body
                    else mc.settings.max_body_bytes
                )
                raw = await _read_body(request, limit)
                if endpoint.body is not None:
                    try:
                        body = decoder(endpoint.body).decode(raw)
                    except msgspec.DecodeError as exc:
                        raise from_decode_error(exc) from None
            call = Call(
                request=request, mc=mc, scope=scope, body=body, raw_body=raw, content_type=media
            )
            key = request.headers.get("idempotency-key")
            if key is not None and scope is not None and endpoint.method == "POST":
                return await _idempotent(endpoint, call, scope.account_id, key, raw)
            status, result = await endpoint.handler(call)
        except MailcoreError as exc:
            headers = {}
            if exc.status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            if exc.status == 413:
                # The rest of the body was not read: the connection cannot carry another request.
                headers["Connection"] = "close"
            return error_response(exc, headers)
        return Response(
            _encode(result), status_code=status, media_type=JSON, headers=_price_headers(endpoint)
        )

    return handle


async def _idempotent(
    endpoint: Endpoint, call: Call, account_id: str, key: str, raw: bytes
) -> Response:
    """Run a POST at most once per ``Idempotency-Key``: a retry gets the first answer; the
    same key with another request is 422. Only successes are kept, so a retry after an
    error (e.g. 402 before funds were added) runs again."""
    if not 1 <= len(key) <= 255:
        raise ValidationError(
            "Idempotency-Key must be 1 to 255 characters", field="Idempotency-Key"
        )
    store = call.mc.store
    fingerprint = hashlib.sha256(
        f"{endpoint.method} {call.request.url.path}\n".encode() + raw
    ).hexdigest()
    replay = await store.idempotency_begin(
        account_id, key, fingerprint, time.time(), call.mc.settings.idempotency_ttl_seconds
    )
    if replay is not None:
        return Response(
            replay.body,
            status_code=replay.status,
            media_type=JSON,
            headers={"Idempotent-Replayed": "true"},
        )
    try:
        status, result = await endpoint.handler(call)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await store.idempotency_abandon(account_id, key)
        raise
    body = _encode(result)
    await store.idempotency_finish(account_id, key, status, body)
    return Response(body, status_code=status, media_type=JSON, headers=_price_headers(endpoint))


def _price_headers(endpoint: Endpoint) -> dict[str, str]:
    if endpoint.price is None:
        return {}
    return {"X-Price": f"{endpoint.price.amount_micros} micros/{endpoint.price.unit}"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(MethodNotAllowed(f"{request.method} is not allowed here"))
    if exc.status_code == 404:
        return error_response(NotFound(f"no route for {request.method} {request.url.path}"))
    err = MailcoreError(exc.detail or "error")
    return Response(
        _encode({"error": {"code": "http_error", "message": err.message}}),
        status_code=exc.status_code,
        media_type=JSON,
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(MailcoreError("internal error"))


def create_app(mc: Mailcore | None = None, settings: Settings | None = None) -> Starlette:
    """The ASGI app. Pass an open ``mc`` (embedding, tests), or ``settings`` for the app to
    open its own Mailcore for its lifetime."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if mc is not None:
            app.state.mailcore = mc
            yield
            return
        async with Mailcore.open(settings) as opened:
            app.state.mailcore = opened
            yield

    routes = [
        Route(e.path, _make_handler(e), methods=[e.method], name=f"{e.method} {e.path}")
        for e in ENDPOINTS
    ]
    routes += LINK_ROUTES
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    if mc is not None:
        app.state.mailcore = mc
    return app


def create_health_app(mc: Mailcore) -> Starlette:
    """A process without the API role (``--role sender``/``webhooks``) still answers
    ``GET /v1/health`` on its port, with the same handler as the API's."""
    health = next(e for e in ENDPOINTS if e.path == "/v1/health")
    app = Starlette(
        routes=[Route(health.path, _make_handler(health), methods=["GET"])],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.mailcore = mc
    return app
