"""The ``legacy`` adapter: the 2024 kimi.moonshot.cn backend (REST + Server-Sent Events)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import requests
import sseclient

from ..errors import ResearchQuotaExhausted, UpstreamCut, UpstreamError
from ..events import ChatOpened, Event
from ..files.sources import FileSource, close_sources, open_sources
from ..history import FileRef, flatten_history
from ..models import ModelOptions
from ..settings import Settings
from .base import Session, TokenGrant, TurnTarget, grant_from_refresh
from .http import (
    browser_headers,
    json_body,
    make_http_session,
    raise_for_status,
    session_headers,
    translate_transport_errors,
)
from .legacy_stream import LegacyStreamParser
from .legacy_upload import LegacyUploader

REFRESH_PATH = "/api/auth/token/refresh"
USER_PATH = "/api/user"
CHAT_PATH = "/api/chat"
RESEARCH_USAGE_PATH = "/api/chat/research/usage"
DEFAULT_AGENT = "kimi"
K1_AGENT = "crm40ee9e5jvhsn7ptcg"
NEW_CHAT_NAME = "未命名会话"
# The original cached legacy access tokens this long; they carry no reliable expiry.
ACCESS_TOKEN_LIFETIME = 300
# A length-limited answer is continued at most this many times before it ends as "length".
MAX_CONTINUATIONS = 3
# A URL runs to whitespace, a quote, an angle bracket or CJK punctuation; trailing sentence
# punctuation is prose, not part of the URL.
URL = re.compile(r"https?://[^\s<>\"'\u3000-\u303f\uff00-\uffef]+")
URL_TRAILING_PUNCTUATION = ".,;:!?)]}"
STATIC_MODELS = [
    "kimi",
    "kimi-search",
    "kimi-search-silent",
    "kimi-research",
    "kimi-k1",
    "kimi-math",
    "kimi-silent",
]


class LegacyUpstream:
    """Speaks the 2024 REST + SSE protocol; thread-safe, one HTTP pool."""

    name = "legacy"
    # The 2024 backend hands out a new pair but keeps the old refresh token working.
    rotates_refresh_tokens = False

    def __init__(self, settings: Settings, http: requests.Session | None = None) -> None:
        self.settings = settings
        self.http = http or make_http_session()
        self.uploader = LegacyUploader(self.http, settings, self._request)

    def refresh(self, refresh_token: str) -> TokenGrant:
        data = self._request("GET", REFRESH_PATH, refresh_token, "refreshing the access token")
        grant = grant_from_refresh(
            data.get("access_token"),
            data.get("refresh_token") or refresh_token,
            default_lifetime=ACCESS_TOKEN_LIFETIME,
        )
        # This generation's tokens do not name the user: ask, and send it as X-Traffic-Id.
        user = self._request("GET", USER_PATH, grant.access_token, "reading the user id")
        return replace(grant, user_id=str(user.get("id") or ""))

    def prepare_files(self, files: tuple[FileRef, ...]) -> tuple[FileSource, ...]:
        # Opened (checked, and fetched when the length is unknown) before any chat exists.
        return open_sources(files, self.settings)

    def release_files(self, files: tuple[FileSource, ...]) -> None:
        close_sources(files)

    def stream_turn(self, session: Session, target: TurnTarget) -> Iterator[Event]:
        options = target.options
        if options.research:
            self.check_research_quota(session)
        chat_id = target.chat_id or self._create_chat(session, agent_id(options))
        yield ChatOpened(chat_id)
        files = [self.uploader.upload(session, chat_id, source) for source in target.files]
        parser = LegacyStreamParser(retry_after=self.settings.cooldown_seconds)
        yield from self._completion(session, chat_id, completion_body(target, files), parser)
        for _ in range(MAX_CONTINUATIONS):
            if not parser.needs_continuation:
                break
            parser.start_continuation()
            body = continuation_body(parser.segment_id, options)
            yield from self._completion(session, chat_id, body, parser)
        yield parser.finish()

    def delete_chat(self, session: Session, chat_id: str) -> None:
        self._request("DELETE", f"{CHAT_PATH}/{chat_id}", session, "deleting the chat")

    def check(self, session: Session) -> bool:
        return bool(self._request("GET", USER_PATH, session, "checking the account").get("id"))

    def list_models(self, session: Session) -> list[str]:
        return []  # the 2024 backend publishes no model catalog

    def static_models(self) -> list[str]:
        return list(STATIC_MODELS)

    def _create_chat(self, session: Session, agent: str) -> str:
        body = {
            "name": NEW_CHAT_NAME,
            "is_example": False,
            "enter_method": "new_chat",
            "kimiplus_id": agent,
        }
        data = self._request("POST", CHAT_PATH, session, "creating a chat", json=body)
        if not data.get("id"):
            raise UpstreamError("Kimi created a chat without an id.")
        return str(data["id"])

    def check_research_quota(self, session: Session) -> None:
        """Raise ``ResearchQuotaExhausted`` when the account's research quota is used up."""
        usage = self._request("GET", RESEARCH_USAGE_PATH, session, "checking the research quota")
        remain = usage.get("remain")
        if isinstance(remain, (int, float)) and remain <= 0:
            # Only research mode is out: the account goes on serving plain turns.
            raise ResearchQuotaExhausted(
                f"The research quota of this account is used up ({usage.get('used')}/"
                f"{usage.get('total')}); use another model or wait for it to renew.",
                retry_after=self.settings.cooldown_seconds,
            )

    def _completion(
        self, session: Session, chat_id: str, body: dict, parser: LegacyStreamParser
    ) -> Iterator[Event]:
        url = f"{self.settings.base_url}{CHAT_PATH}/{chat_id}/completion/stream"
        with translate_transport_errors("streaming the answer"):
            response = self.http.post(
                url,
                json=body,
                headers=self._headers(session),
                timeout=self.settings.timeout,
                stream=True,
            )
            try:
                raise_for_status(response, self.settings.cooldown_seconds)
                if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                    raise UpstreamError("Kimi answered something other than an event stream.")
                # Read to the very end, not just to "done": the chat must be idle for the next turn.
                for event in sseclient.SSEClient(response.iter_content(chunk_size=None)).events():
                    yield from parser.feed(_json(event.data))
            finally:
                response.close()
        if not parser.call_complete:
            raise UpstreamCut()

    def _request(
        self, method: str, path: str, credential: Session | str, what: str, **kwargs: Any
    ) -> dict[str, Any]:
        headers = (
            self._headers(credential)
            if isinstance(credential, Session)
            else {
                **browser_headers(self.settings.base_url),
                "Authorization": f"Bearer {credential}",
            }
        )
        with translate_transport_errors(what):
            response = self.http.request(
                method,
                self.settings.base_url + path,
                headers=headers,
                timeout=self.settings.timeout,
                **kwargs,
            )
        return json_body(response, what, self.settings.cooldown_seconds)

    def _headers(self, session: Session) -> dict[str, str]:
        return {**browser_headers(self.settings.base_url), **session_headers(session)}


def agent_id(options: ModelOptions) -> str:
    """The ``kimiplus_id``: a named agent, the K1 reasoning agent, or plain Kimi."""
    if options.agent_id:
        return options.agent_id
    return K1_AGENT if options.k1 else DEFAULT_AGENT


def tag_urls(text: str) -> str:
    """Wrap URLs so the legacy backend fetches and reads them."""
    return URL.sub(_tag_url, text)


def _tag_url(match: re.Match) -> str:
    url = match.group(0).rstrip(URL_TRAILING_PUNCTUATION)
    rest = match.group(0)[len(url) :]
    return f'<url id="" type="url" status="" title="" wc="">{url}</url>{rest}'


def completion_body(target: TurnTarget, files: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    options = target.options
    return {
        "kimiplus_id": agent_id(options),
        "messages": [{"role": "user", "content": flatten_history(target.messages, tag_urls)}],
        "refs": [file["id"] for file in files],
        "refs_file": list(files),
        "use_search": options.search,
        "use_math": options.math,
        "use_research": options.research,
        "extend": {"sidebar": True},
    }


def continuation_body(segment_id: str | None, options: ModelOptions) -> dict[str, Any]:
    return {
        "segment_id": segment_id,
        "action": "continue",
        "messages": [{"role": "user", "content": " "}],
        "kimiplus_id": agent_id(options),
    }


def _json(data: str) -> Any:
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise UpstreamError(f"Kimi sent an event that is not JSON: {data[:80]!r}") from exc
