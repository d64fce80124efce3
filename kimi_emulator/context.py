"""Where an emulator app keeps its state, for the blueprints to find."""

from __future__ import annotations

from flask import current_app

from .errors import EmulatorError
from .state import EmulatorState

EXTENSION_KEY = "kimi_emulator"


def current_state() -> EmulatorState:
    """The state of the emulator app handling this request."""
    return current_app.extensions[EXTENSION_KEY]


def fail_on(faults: frozenset[str], user_id: str, message: str) -> None:
    """Answer a 500 when one of ``faults`` is queued for the caller."""
    if current_state().take_fault(faults, user_id):
        raise EmulatorError("internal", message)
