"""An emulator of the Kimi web backend for tests, benchmarks and demos.

One loopback HTTP server speaks both protocols from one state (users, tokens, chats, faults,
call log): the current ``web`` protocol (the Connect RPC routes of the main host and the auth
host) and the 2024 ``legacy`` protocol (REST + Server-Sent Events), plus a ``/_emulator``
control API.
"""

from .app import create_emulator_app
from .server import EmulatorServer
from .state import EmulatorConfig, EmulatorState, IssuedTokens

__all__ = [
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "IssuedTokens",
    "create_emulator_app",
]
