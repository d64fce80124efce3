"""``python -m kimi COMMAND``: the service's command line. One command so far: ``doctor``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: python -m kimi doctor [TOKEN] [--json] [--capture FILE]

commands:
  doctor   walk each upstream step with one Kimi token and say which one breaks"""
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the command named first; usage (exit status 2) for anything else."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if not args or args[0] != "doctor":
        print(USAGE, file=sys.stderr)
        return EXIT_USAGE
    from .doctor import main as doctor_main

    return doctor_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
