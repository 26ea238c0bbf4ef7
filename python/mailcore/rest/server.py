"""Serving the API with hypercorn's Trio worker."""

from __future__ import annotations

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from ..config import Settings
from ..facade import Mailcore
from ..node import ROLES
from .app import create_app, create_health_app


def hypercorn_config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = "-"
    config.keep_alive_timeout = 75
    return config


async def serve(
    mc: Mailcore,
    host: str | None = None,
    port: int | None = None,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API for an open Mailcore until cancelled; reports the bound URLs."""
    config = hypercorn_config(
        host if host is not None else mc.settings.host,
        port if port is not None else mc.settings.port,
    )
    await hypercorn_serve(create_app(mc), config, task_status=task_status)  # type: ignore[arg-type]


async def serve_health(
    mc: Mailcore,
    host: str | None = None,
    port: int | None = None,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Only ``GET /v1/health``, for a process that does not serve the API."""
    config = hypercorn_config(
        host if host is not None else mc.settings.host,
        port if port is not None else mc.settings.port,
    )
    await hypercorn_serve(create_health_app(mc), config, task_status=task_status)  # type: ignore[arg-type]


async def run(settings: Settings, *, roles: frozenset[str] = frozenset(ROLES)) -> None:
    """``mailcore serve``: the roles of this process (all of them by default: the API, the
    sender and the webhook dispatcher in one process). The sender resumes every campaign
    that was sending; a process without the API role serves its health on the port."""
    async with Mailcore.open(settings) as mc, trio.open_nursery() as nursery:
        mc.node.roles = roles
        if "sender" in roles:
            await nursery.start(mc.run_sender)
        if "webhooks" in roles:
            await nursery.start(mc.run_webhooks)
        if "api" in roles:
            if settings.inbound_smtp_port:
                from ..feedback import run_inbound

                await nursery.start(run_inbound, mc)
            await nursery.start(serve, mc)
        else:
            await nursery.start(serve_health, mc)
