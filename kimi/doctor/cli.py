"""The doctor's command line: read the token and the settings, walk, print, exit status."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from ..accounts import Accounts
from ..settings import Settings
from ..store import open_configured_store
from ..tokens import Credential, split_credentials
from ..upstream import make_upstream
from .capture import learn, write_capture
from .masking import Masker
from .report import EXIT_USAGE, Report, render_json, render_text
from .steps import Walk, run_steps, steps_for
from .wire import Recorder, record_session

STDIN_TOKEN = "-"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kimi doctor [TOKEN] [--json] [--capture FILE]``; returns the exit status."""
    args = _parser().parse_args(argv)  # a usage error exits with 2
    # The report says what went wrong; the adapters' own warnings would only repeat it.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = doctor_settings(os.environ)
        token = _token(args.token, os.environ)
        if args.capture:
            _check_writable(args.capture)
    except (ValueError, OSError) as exc:
        print(f"kimi doctor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report, masker = run_doctor(settings, token, capture=args.capture)
    output = render_json(report) if args.json else render_text(report)
    print(masker.text(output))
    return report.exit_status


def run_doctor(settings: Settings, token: str, capture: str | None = None) -> tuple[Report, Masker]:
    """Walk the steps of ``settings.protocol`` with ``token``; the report, and the masker that
    knows every secret seen (anything printed goes through it)."""
    credential = Credential.parse(token)
    upstream = make_upstream(settings)
    recorder = Recorder()
    record_session(upstream.http, recorder)  # type: ignore[attr-defined]
    accounts = Accounts(open_configured_store(settings), upstream)
    masker = Masker()
    masker.add_token(credential.token)
    walk = Walk(settings, upstream, accounts, credential, recorder)
    steps = run_steps(walk, steps_for(settings.protocol), masker)
    learn(recorder.exchanges, masker)
    report = Report(
        protocol=settings.protocol,
        base_url=settings.base_url,
        auth_url=settings.auth_url,
        account=credential.label,
        steps=steps,
        capture=capture,
    )
    if capture:
        write_capture(capture, recorder.exchanges, settings, masker, report.to_dict())
    return report, masker


def doctor_settings(environ: Mapping[str, str]) -> Settings:
    """The service's settings, read as the service reads them; ``KIMI_TOKENS`` aside (the
    doctor takes one token of it, and needs no ``API_KEYS`` to guard the pool)."""
    return Settings.from_env({**environ, "KIMI_TOKENS": ""})


def _token(argument: str | None, environ: Mapping[str, str]) -> str:
    if argument == STDIN_TOKEN:
        argument = sys.stdin.readline()
    if argument and argument.strip():
        return argument.strip()
    tokens = split_credentials(environ.get("KIMI_TOKENS", ""))
    if not tokens:
        raise ValueError("give a token (argument, or - to read it from stdin) or set KIMI_TOKENS")
    return tokens[0].token


def _check_writable(path: str) -> None:
    """Fail before the walk, not after it, when the capture file cannot be written."""
    with open(path, "w", encoding="utf-8"):
        pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kimi doctor",
        description=(
            "Walk each upstream step (reach, refresh, identify, models, chat, stream, upload, "
            "delete) for KIMI_PROTOCOL with one Kimi token, and say which one breaks. Exit "
            "status: 0 all ok, 1 a step failed, 2 usage error."
        ),
    )
    parser.add_argument(
        "token", nargs="?", help="a Kimi token; - reads it from stdin; default: KIMI_TOKENS' first"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--capture", metavar="FILE", help="write the walk's exchanges, masked, as JSON lines"
    )
    return parser
