"""Run the emulator: ``python -m kimi_emulator --port 9000``; with ``--replay FILE`` it answers
with the recorded responses of a doctor capture instead.

It serves both protocols at once; point the service at it with
``KIMI_BASE_URL=http://127.0.0.1:9000 KIMI_AUTH_URL=http://127.0.0.1:9000`` (``web``) or
``KIMI_PROTOCOL=legacy KIMI_BASE_URL=http://127.0.0.1:9000`` (``legacy``).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from .replay import Replay, create_replay_app
from .server import EmulatorServer
from .state import EmulatorConfig, EmulatorState
from .tokens import DEFAULT_ACCESS_TTL


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kimi_emulator",
        description="Emulate the Kimi backend (web and legacy protocols) on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument(
        "--access-ttl", type=float, default=DEFAULT_ACCESS_TTL, help="access token lifetime (s)"
    )
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow a non-loopback host (no real auth!)"
    )
    parser.add_argument(
        "--replay",
        metavar="FILE",
        help="answer with the recorded responses of a capture (python -m kimi doctor --capture)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start the emulator with one demo user and serve until Ctrl-C."""
    args = _parse_args(argv)
    if not _is_loopback(args.host) and not args.allow_remote:
        print(f"refusing non-loopback host {args.host!r}; pass --allow-remote", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.replay:
        return _serve_replay(args.replay, args.host, args.port)
    state = EmulatorState(EmulatorConfig(access_ttl=args.access_ttl))
    server = EmulatorServer(state, host=args.host, port=args.port).start()
    demo = state.create_user("demo")
    print(f"Kimi emulator on {server.url}")
    print(f"demo user {demo.user_id}, refresh token:\n{demo.refresh_token}\n")
    print("web protocol:")
    print(f"  KIMI_BASE_URL={server.url} KIMI_AUTH_URL={server.url}")
    print("legacy protocol:")
    print(f"  KIMI_PROTOCOL=legacy KIMI_BASE_URL={server.url}", flush=True)
    return _serve_until_interrupted(server)


def _serve_replay(path: str, host: str, port: int) -> int:
    """Serve a capture's recorded answers until Ctrl-C."""
    try:
        replay = Replay.from_file(path)
    except (OSError, ValueError) as exc:
        print(f"cannot replay {path}: {exc}", file=sys.stderr)
        return 2
    server = EmulatorServer(host=host, port=port, app=create_replay_app(replay)).start()
    print(f"Replaying {len(replay.routes())} recorded routes of {path} on {server.url}")
    print(f"  KIMI_BASE_URL={server.url} KIMI_AUTH_URL={server.url}", flush=True)
    return _serve_until_interrupted(server)


def _serve_until_interrupted(server: EmulatorServer) -> int:
    """Serve until Ctrl-C, then stop the server."""
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
