"""The ``web`` adapter: kimi.com's current backend (Connect RPC, rotating refresh tokens)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import requests

from ..errors import BadRequest, KimiError, NotFound, UpstreamCut, UpstreamError
from ..events import ChatOpened, Event, ReplyStarted
from ..files.documents import read_documents
from ..files.sources import close_sources, open_sources
from ..history import FileRef, flatten_history
from ..models import ModelOptions, model_ids_for_scenario
from ..settings import Settings
from ..store import StateStore
from .base import Session, TokenGrant, TurnTarget, grant_from_refresh
from .connect import FrameDecoder, FrameError, encode_frame
from .http import (
    browser_headers,
    json_body,
    make_http_session,
    raise_for_status,
    session_headers,
    translate_transport_errors,
)
from .web_prompt import format_for_prompt
from .web_stream import WebStreamParser
from .web_upload import UploadedFiles, WebUploader

log = logging.getLogger(__name__)

REFRESH_PATH = "/api/account.gateway.v1.AuthService/RefreshToken"
CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
DELETE_CHAT_PATH = "/apiv2/kimi.chat.v1.ChatService/DeleteChat"
SUBSCRIPTION_PATH = "/apiv2/kimi.gateway.order.v1.SubscriptionService/GetSubscription"
MODELS_PATH = "/apiv2/kimi.gateway.config.v1.ConfigService/GetAvailableModels"
CONNECT_CONTENT_TYPE = "application/connect+json"
DEFAULT_SCENARIO = "SCENARIO_K2D5"
ACCESS_TOKEN_LIFETIME = 15 * 60  # seconds, when the token does not say
# How Kimi may refuse a Chat call naming a file it no longer has (exact types: not a cut stream,
# an overload or a rate limit, which say nothing about the files).
REFUSALS = (BadRequest, NotFound, UpstreamError)
STATIC_MODELS = [
    "kimi",
    "kimi-search",
    "kimi-search-silent",
    "kimi-thinking",
    "kimi-thinking-search",
    "kimi-k2.5",
    "kimi-k2.5-thinking",
    "kimi-k2",
    "kimi-ok-computer",
]


class WebUpstream:
    """Speaks the ``web`` protocol for one deployment; thread-safe, one HTTP pool."""

    name = "web"
    rotates_refresh_tokens = True

    def __init__(
        self,
        settings: Settings,
        http: requests.Session | None = None,
        store: StateStore | None = None,
    ) -> None:
        self.settings = settings
        self.http = http or make_http_session()
        self.uploads_files = settings.web_file_mode == "upload"
        cache = None
        if store is not None and settings.web_file_cache_seconds > 0:
            cache = UploadedFiles(store, settings.web_file_cache_seconds)
        self.uploader = WebUploader(self.http, settings, self._headers, self._call, cache)

    def refresh(self, refresh_token: str) -> TokenGrant:
        url = self.settings.auth_url + REFRESH_PATH
        with translate_transport_errors("refreshing the access token"):
            response = self.http.post(
                url,
                json={"refresh_token": refresh_token},
                headers=self._base_headers(),
                timeout=self.settings.timeout,
            )
        data = json_body(response, "refreshing the access token", self.settings.cooldown_seconds)
        return grant_from_refresh(
            data.get("accessToken") or data.get("access_token"),
            data.get("refreshToken") or data.get("refresh_token") or refresh_token,
            default_lifetime=ACCESS_TOKEN_LIFETIME,
        )

    def prepare_files(self, files: tuple[FileRef, ...]) -> tuple:
        # Opened (checked, fetched into a spool) or read into text before any chat call.
        if self.uploads_files:
            return open_sources(files, self.settings)
        return tuple(read_documents(files, self.settings)) if files else ()

    def release_files(self, files: tuple) -> None:
        if self.uploads_files:  # extracted text holds nothing to free
            close_sources(files)

    def stream_turn(self, session: Session, target: TurnTarget) -> Iterator[Event]:
        if not self.uploads_files:
            yield from self._chat(session, chat_body(target), target)
            return
        # Uploaded for this account (the turn may be retried on another): ids, not text.
        files = self.uploader.file_ids(session, target.files)
        text_target = replace(target, files=())
        started = False  # some of the answer reached the caller: no second try then
        opened: str | None = None  # the chat Kimi opened for this attempt
        try:
            for event in self._chat(session, chat_body(text_target, files.ids), target):
                if isinstance(event, ChatOpened):
                    opened = event.chat_id
                elif not isinstance(event, ReplyStarted):
                    started = True
                yield event
        except REFUSALS as exc:
            # A remembered file id that Kimi no longer knows must not fail every later turn too:
            # forget the files and send them again, once. Kimi may say so before the chat
            # opens (an HTTP error) or in the stream after it (an error frame).
            if started or type(exc) not in REFUSALS or not files.remembered:
                raise
            log.warning(
                "Kimi refused a turn naming remembered files (%s); sending them again", exc.code
            )
            if opened and not target.chat_id:
                self._drop_refused_chat(session, opened)
            self.uploader.forget(session, target.files)
            files = self.uploader.file_ids(session, target.files)
            yield from self._chat(session, chat_body(text_target, files.ids), target)

    def _drop_refused_chat(self, session: Session, chat_id: str) -> None:
        """Delete the new chat of a refused attempt: the retry opens another one."""
        try:
            self.delete_chat(session, chat_id)
        except KimiError as exc:
            log.warning("Could not delete the chat of a refused turn: %s", exc.message)

    def _chat(self, session: Session, body: dict[str, Any], target: TurnTarget) -> Iterator[Event]:
        with translate_transport_errors("streaming the answer"):
            response = self.http.post(
                self.settings.base_url + CHAT_PATH,
                data=encode_frame(body),
                headers=self._headers(session, CONNECT_CONTENT_TYPE),
                timeout=self.settings.timeout,
                stream=True,
            )
            try:
                yield from self._read_stream(response, target)
            finally:
                response.close()

    def delete_chat(self, session: Session, chat_id: str) -> None:
        self._call(session, DELETE_CHAT_PATH, {"chat_id": chat_id}, "deleting the chat")

    def check(self, session: Session) -> bool:
        data = self._call(session, SUBSCRIPTION_PATH, {}, "checking the account")
        return isinstance(data.get("subscription"), dict)

    def list_models(self, session: Session) -> list[str]:
        data = self._call(session, MODELS_PATH, {}, "listing models")
        ids = []
        for entry in data.get("availableModels") or []:
            if isinstance(entry, dict) and entry.get("scenario"):
                ids.append(
                    model_ids_for_scenario(str(entry["scenario"]), bool(entry.get("thinking")))
                )
        return ids

    def static_models(self) -> list[str]:
        return list(STATIC_MODELS)

    def _read_stream(self, response: requests.Response, target: TurnTarget) -> Iterator[Event]:
        try:
            raise_for_status(response, self.settings.cooldown_seconds)
        except NotFound as exc:
            if target.chat_id:
                raise
            # A one-shot turn names no chat to be "not found": Kimi refused the turn (its route
            # moved, say), as an error frame saying so would (web_errors.stream_error).
            said = exc.said or exc.message
            raise UpstreamError(f"Kimi refused the turn: {said}", code="kimi_not_found") from exc
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("application/connect"):
            raise UpstreamError(
                f"Kimi answered {content_type or 'no content type'}, not a chat stream."
            )
        decoder = FrameDecoder()
        parser = WebStreamParser.for_turn(target, self.settings.cooldown_seconds)
        try:
            for chunk in response.iter_content(chunk_size=None):
                for frame in decoder.feed(chunk):
                    yield from parser.feed(frame)
        except FrameError as exc:
            raise UpstreamError(f"Kimi's chat stream was malformed: {exc}") from exc
        yield from parser.close()
        if not parser.finished:
            raise UpstreamCut()

    def _call(self, session: Session, path: str, payload: dict, what: str) -> dict[str, Any]:
        with translate_transport_errors(what):
            response = self.http.post(
                self.settings.base_url + path,
                json=payload,
                headers=self._headers(session, "application/json"),
                timeout=self.settings.timeout,
            )
        return json_body(response, what, self.settings.cooldown_seconds)

    def _base_headers(self) -> dict[str, str]:
        headers = browser_headers(self.settings.base_url)
        headers.update({"X-Msh-Version": "2.0.0", "X-Language": "zh-CN"})
        return headers

    def _headers(self, session: Session, content_type: str) -> dict[str, str]:
        headers = self._base_headers()
        headers.update(session_headers(session))
        headers.update({"Content-Type": content_type, "Connect-Protocol-Version": "1"})
        return headers


def prompt_text(target: TurnTarget) -> str:
    """The flattened messages, after the attached documents' text when there is any."""
    prompt = flatten_history(target.messages)
    return f"{format_for_prompt(target.files)}\n\n{prompt}" if target.files else prompt


def chat_body(target: TurnTarget, file_ids: tuple[str, ...] = ()) -> dict[str, Any]:
    """The Chat request for one turn: one ``message``, history already flattened into it, after
    a ``file`` block for each uploaded file."""
    options: ModelOptions = target.options
    scenario = options.scenario or DEFAULT_SCENARIO
    body: dict[str, Any] = {
        "scenario": scenario,
        "chat_id": target.chat_id or "",
        "tools": [{"type": "TOOL_TYPE_SEARCH", "search": {}}] if options.search else [],
        "message": {
            "parent_id": target.parent_id or "",
            "role": "user",
            "scenario": scenario,
            "is_goal": False,
            "blocks": [
                *({"message_id": "", "file": {"id": file_id}} for file_id in file_ids),
                {"message_id": "", "text": {"content": prompt_text(target)}},
            ],
        },
        "options": {"thinking": options.thinking, "enable_plugin": False},
        "project_id": "",
    }
    if options.thinking and options.effort:
        body["options"]["reasoning_effort"] = f"REASONING_EFFORT_{options.effort}"
    if options.agent_id:
        body["kimiplusId"] = options.agent_id
    return body
