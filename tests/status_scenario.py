"""Four server-pool accounts driven into the four states through the emulator, for the status
page and metrics tests: ``ok`` (served a turn), ``cooling`` (rate-limited), ``dead`` (its refresh
token rejected again and again) and ``busy`` (a stream holds its only slot).

The first three are driven by other instances sharing the state file (one account each, as a
second server would), the busy one by the status app itself, whose pool then picks the one
account never used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from helpers import chat

from kimi import account_health, create_app
from kimi.account_health import BUSY, COOLING, DEAD, OK
from kimi.tokens import Credential

API_KEY = "caller-api-key"
ADMIN_KEY = "operator-admin-key-3f9c"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CALLER = {"Authorization": f"Bearer {API_KEY}"}
SECRET_PROMPT = "the launch code is tangerine-4711"
STATES = (OK, COOLING, DEAD, BUSY)
KEEPALIVE_SECONDS = 0.2
# The busy account's answer: 30 words at a second a frame hold it longer than a test needs;
# closing the stream ends the turn within one pause.
FRAME_PAUSE_SECONDS = 1.0
LONG_PROMPT = " ".join(f"word{n}" for n in range(30))


@dataclass
class Scenario:
    """The status app, each state's account label, and every token the emulator issued."""

    app: object
    labels: dict[str, str]  # state -> account label
    tokens: list[str] = field(default_factory=list)
    held: list = field(default_factory=list)  # open responses holding their slot

    def close(self) -> None:
        for response in self.held:
            response.close()

    def stored_tokens(self) -> list[str]:
        """Rotated refresh tokens and cached access tokens, as the store holds them now."""
        kimi = self.app.extensions["kimi"]
        found = []
        for credential in kimi.settings.kimi_tokens:
            rotated = kimi.store.get(f"refresh_token:{credential.account_id}")
            access = kimi.store.get(f"access:{credential.account_id}")
            found += [rotated] if rotated else []
            found += [json.loads(access)["access_token"]] if access else []
        return found

    def every_token(self) -> list[str]:
        return self.tokens + self.stored_tokens()


def drive_into_every_state(
    make_settings, new_account, emulator, monkeypatch: pytest.MonkeyPatch
) -> Scenario:
    # Three rejections in a row make a token dead at once (not only over a minute).
    monkeypatch.setattr(account_health, "DEAD_AFTER_SECONDS", 0.0)
    users = {state: new_account(f"user-{state}") for state in STATES}
    credentials = {state: Credential.parse(users[state].refresh_token) for state in STATES}

    def instance(*states: str, **overrides):
        tokens = tuple(credentials[s] for s in states)
        settings = make_settings(kimi_tokens=tokens, api_keys=(API_KEY,), **overrides)
        return create_app(settings).test_client()

    assert chat(instance(OK), CALLER, SECRET_PROMPT).status_code == 200
    emulator.state.add_fault("limit", user_id=users[COOLING].user_id)
    assert chat(instance(COOLING), CALLER).status_code == 429
    reissued = emulator.state.refresh(users[DEAD].refresh_token)  # the old one is revoked now
    dying = instance(DEAD)
    for _ in range(account_health.DEAD_AFTER_FAILURES):
        assert chat(dying, CALLER).status_code in (401, 503)

    app = create_app(
        make_settings(
            kimi_tokens=tuple(credentials[s] for s in STATES),
            api_keys=(API_KEY,),
            admin_key=ADMIN_KEY,
            max_concurrent_per_account=1,
            keepalive_seconds=KEEPALIVE_SECONDS,
        )
    )
    # Kimi answers slowly, frame by frame: the stream is answered (a keep-alive first) and its
    # turn holds the only slot of the one account never used for many seconds.
    emulator.state.add_fault("slow", user_id=users[BUSY].user_id, seconds=FRAME_PAUSE_SECONDS)
    stream = chat(app.test_client(), CALLER, f"{SECRET_PROMPT} {LONG_PROMPT}", stream=True)
    assert stream.status_code == 200
    issued = [users[s].refresh_token for s in STATES] + [users[s].access_token for s in STATES]
    return Scenario(
        app=app,
        labels={state: credentials[state].label for state in STATES},
        tokens=issued + [reissued.refresh_token, reissued.access_token],
        held=[stream],
    )


def token_fragments(token: str) -> list[str]:
    """The token and each of its JWT payload and signature parts: none may show anywhere."""
    parts = token.split(".")
    return [token] + (parts[1:] if len(parts) == 3 else [])
