"""Every fault the emulator can inject, met by the doctor: the broken step is named, with a
sensible hint, the steps that build on it are skipped, and the exit status says so.

The walks are independent (one emulator user each, its fault queued for that user alone), so
they run side by side once for the module and each test reads its walk's report.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from kimi.doctor import run_doctor
from kimi.doctor.steps import steps_for
from kimi.settings import Settings
from kimi_emulator.faults import FAULT_NAMES
from kimi_emulator.stream_failures import ERROR_FAULTS, EXCEPTION_FAULTS

READ_TIMEOUT = 2.5  # seconds; the timing faults stay silent longer than this
PARSE_TIMEOUT = 3.0
FAULT_SECONDS = 6.0
WALKERS = 16

PROTOCOL_CHANGED = "protocol changed"
SERVER = "Kimi's side failed"
RATE = "rate limited"
TIMEOUT = "did not answer within"
CUT = "ended before its end"
STOPPED = "Kimi stopped the answer"
ACCESS = "refused the access token"

# fault -> {protocol: (the step that fails, or None when every step stays ok; words of the
# hint)}. A protocol left out never meets the fault (e.g. a web stream frame under legacy).
# Before a web answer starts, a Chat call's failure is the "chat" step's; legacy opens its
# chat with another call first, so the completion call's failures are the "stream" step's.
EXPECTED: dict[str, dict[str, tuple[str | None, str]]] = {
    "unauthorized": {"web": ("chat", ACCESS), "legacy": ("stream", ACCESS)},
    "limit": {"web": ("chat", RATE), "legacy": ("stream", RATE)},
    "server_error": {"web": ("chat", SERVER), "legacy": ("stream", SERVER)},
    "garbage": {"web": ("chat", PROTOCOL_CHANGED), "legacy": ("stream", PROTOCOL_CHANGED)},
    "busy": {"web": ("chat", "still being written"), "legacy": ("stream", "still being written")},
    "limit_in_stream": {"web": ("chat", RATE), "legacy": ("stream", RATE)},
    "cut": {"web": ("stream", CUT), "legacy": ("stream", CUT)},
    "stream_error": {"web": ("stream", SERVER), "legacy": ("stream", STOPPED)},
    "moderation": {"web": ("stream", STOPPED), "legacy": ("stream", STOPPED)},
    "silence": {"web": ("stream", TIMEOUT), "legacy": ("stream", TIMEOUT)},
    "slow": {"web": ("stream", TIMEOUT), "legacy": ("stream", TIMEOUT)},
    "degrade": {"web": (None, "")},
    "length": {"legacy": (None, "")},
    "length_twice": {"legacy": (None, "")},
    "refresh_down": {"web": ("refresh", SERVER), "legacy": ("refresh", SERVER)},
    "research_exhausted": {"legacy": ("models", "research")},
    "presign_error": {"legacy": ("upload", SERVER)},
    "upload_forbidden": {"legacy": ("upload", "refused access")},
    "parse_never": {"legacy": ("upload", "FILE_PARSE_TIMEOUT")},
    "parse_failed": {"web": ("upload", "could not read")},
    "parse_slow": {"web": ("upload", "FILE_PARSE_TIMEOUT")},
    "upload_unauthorized": {"web": ("upload", ACCESS)},
    "upload_limit": {"web": ("upload", RATE)},
    # Legacy reads the user in its refresh.
    "account_down": {"web": ("identify", SERVER), "legacy": ("refresh", SERVER)},
    "models_down": {"web": ("models", SERVER)},
    "delete_error": {"web": ("delete", SERVER), "legacy": ("delete", SERVER)},
}
# Error frames and exception blocks of the web stream: the "stream" step, whatever the hint.
STREAM_FAILURE_HINTS = {
    "error_end:unauthenticated": ACCESS,
    "error_end:rate_limited": RATE,
    "error_end:chat_busy": "still being written",
    "error_end:invalid_argument": PROTOCOL_CHANGED,
    "error_end:unimplemented": PROTOCOL_CHANGED,
    "error_end:deadline_exceeded": TIMEOUT,
    "exception:moderation": STOPPED,
}
for _name in ERROR_FAULTS | EXCEPTION_FAULTS:
    _kind = ":".join(_name.split(":")[:2])
    EXPECTED[_name] = {"web": ("stream", STREAM_FAILURE_HINTS.get(_kind, ""))}

CASES = [
    (fault, protocol)
    for fault in sorted(FAULT_NAMES)
    for protocol in ("web", "legacy")
    if protocol in EXPECTED.get(fault, {})
]


@pytest.fixture(scope="module")
def walks(emulator_server, tmp_path_factory):
    """Each case's report, the walks run side by side."""
    emulator_server.state.reset()
    directory = tmp_path_factory.mktemp("doctor-faults")

    def walk(case: tuple[str, str]):
        fault, protocol = case
        user = emulator_server.state.create_user(f"{fault}/{protocol}")
        emulator_server.state.add_fault(fault, user_id=user.user_id, seconds=FAULT_SECONDS)
        settings = Settings(
            protocol=protocol,
            base_url=emulator_server.url,
            auth_url=emulator_server.url,
            state_path=str(directory / f"{user.user_id}.db"),
            connect_timeout=5.0,
            read_timeout=READ_TIMEOUT,
            file_parse_timeout=PARSE_TIMEOUT,
        )
        report, _ = run_doctor(settings, user.refresh_token)
        return report

    with ThreadPoolExecutor(WALKERS) as pool:
        reports = dict(zip(CASES, pool.map(walk, CASES), strict=True))
    yield reports
    emulator_server.state.reset()


def test_every_fault_the_emulator_can_inject_has_an_expected_step():
    assert sorted(FAULT_NAMES - set(EXPECTED)) == []


@pytest.mark.parametrize("fault, protocol", CASES)
def test_the_doctor_names_the_step_a_fault_breaks(walks, fault, protocol):
    report = walks[(fault, protocol)]
    step, hint_words = EXPECTED[fault][protocol]
    failed = report.failed_step()
    if step is None:
        assert failed is None, report.steps
        assert report.exit_status == 0
        return
    assert failed is not None, f"{fault} went unnoticed: {report.steps}"
    assert failed.name == step, report.steps
    assert failed.hint and hint_words in failed.hint, failed
    assert report.exit_status == 1
    assert [s.name for s in report.steps if s.status == "failed"] == [step]
    for later in dependents(step, protocol):
        assert next(s for s in report.steps if s.name == later).status == "skipped"


def test_a_model_degrade_notice_is_mentioned_on_the_stream_step(walks):
    stream = next(s for s in walks[("degrade", "web")].steps if s.name == "stream")
    assert "TYPE_MODEL_DEGRADE" in stream.detail


def dependents(step: str, protocol: str) -> set[str]:
    """The steps that need ``step``, directly or through another."""
    found: set[str] = set()
    for candidate in steps_for(protocol):
        if step in candidate.needs or found & set(candidate.needs):
            found.add(candidate.name)
    return found
