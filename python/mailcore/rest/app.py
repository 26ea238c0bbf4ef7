"""The Starlette application: decode, call the library, encode. No business logic here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

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
)
from ..facade import Mailcore
from .errors import error_response, from_decode_error
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
            status, result = await endpoint.handler(
                Call(
                    request=request, mc=mc, scope=scope, body=body, raw_body=raw, content_type=media
                )
            )
        except MailcoreError as exc:
            headers = {}
            if exc.status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            if exc.status == 413:
                # The rest of the body was not read: the connection cannot carry another request.
                headers["Connection"] = "close"
            return error_response(exc, headers)
        headers = {}
        if endpoint.price is not None:
            headers["X-Price"] = f"{endpoint.price.amount_micros} micros/{endpoint.price.unit}"
        return Response(_encode(result), status_code=status, media_type=JSON, headers=headers)

    return handle


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
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    if mc is not None:
        app.state.mailcore = mc
    return app
