"""The thin HTTP layer: Starlette routes built from one route table, served by hypercorn."""

from __future__ import annotations

from .app import create_app
from .routes import ENDPOINTS, Endpoint

__all__ = ["ENDPOINTS", "Endpoint", "create_app"]
