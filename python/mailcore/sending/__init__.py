"""The send pipeline: plan, claim, render, fan out over SMTP, record, settle."""

from __future__ import annotations

from .dispatcher import Dispatcher
from .mx import MxError, MxFailure, MxHost, MxResolver, MxResult
from .render import BatchRenderer, merge_values
from .routing import Outbound

__all__ = [
    "BatchRenderer",
    "Dispatcher",
    "MxError",
    "MxFailure",
    "MxHost",
    "MxResolver",
    "MxResult",
    "Outbound",
    "merge_values",
]
