"""An emulator of the Kimi web backend (``web`` protocol) for tests, benchmarks and demos.

Serves the Connect RPC routes of both the main host and the auth host, plus a ``/_emulator``
control API, from one loopback HTTP server.
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
