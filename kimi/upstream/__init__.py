"""Upstream adapters, one per Kimi backend generation, behind ``base.Upstream``."""

from __future__ import annotations

from ..settings import Settings
from ..store import StateStore
from .base import Upstream


def make_upstream(settings: Settings, store: StateStore | None = None) -> Upstream:
    """The adapter for ``settings.protocol``; ``store`` keeps what it remembers across workers."""
    if settings.protocol == "web":
        from .web import WebUpstream

        return WebUpstream(settings, store=store)
    if settings.protocol == "legacy":
        from .legacy import LegacyUpstream

        return LegacyUpstream(settings)
    raise ValueError(f"Unknown Kimi protocol {settings.protocol!r}.")
