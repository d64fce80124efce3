"""Where an emulator app keeps its state, for the blueprints to find."""

from __future__ import annotations

from flask import current_app

from .state import EmulatorState

EXTENSION_KEY = "kimi_emulator"


def current_state() -> EmulatorState:
    """The state of the emulator app handling this request."""
    return current_app.extensions[EXTENSION_KEY]
