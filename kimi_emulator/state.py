"""Everything the emulated backend remembers, behind one lock.

Users, the live refresh tokens (each single-use on the ``web`` refresh route; the ``legacy``
one lets them be reused), chats of both protocols and their messages, legacy uploads and the
files registered from them, queued faults, runtime config and the log of calls made to the
backend routes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import threading
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import UPLOAD_FORBIDDEN, EmulatorError
from .faults import PARSE_FAULTS, Fault
from .tokens import DEFAULT_ACCESS_TTL, REFRESH_TTL, TokenError, TokenSigner
from .web_file_store import WebFileStore

_ID_ALPHABET = string.digits + string.ascii_lowercase
_ID_LENGTH = 20  # Kimi user ids, and legacy chat and segment ids, are 20 characters of [0-9a-z]
WEB, LEGACY = "web", "legacy"
RESEARCH_TOTAL = 5  # research answers a 2024 account had per period
FILE, IMAGE = "file", "image"  # what a legacy upload is pre-signed for, and registered as
INITIALIZING = "initializing"
# The status a registered file reaches once usable in a completion call's refs.
READY_STATUS = {FILE: "parsed", IMAGE: "initialized"}
FILE_NOT_READY = "file not ready"


@dataclass
class EmulatorConfig:
    """Knobs tests turn at runtime."""

    access_ttl: float = DEFAULT_ACCESS_TTL
    split_frames: bool = False  # write frames in 3-byte pieces, so clients meet split reads
    frame_delay: float = 0.0  # seconds slept between frames (legacy: between events)
    research_remain: int = RESEARCH_TOTAL  # what the legacy research usage route reports left
    parse_seconds: float = 0.2  # how long a web upload stays PROCESSING before SUCCESS


@dataclass(frozen=True)
class User:
    """An account of the emulated backend."""

    user_id: str
    name: str
    device_id: str
    ssid: str


@dataclass(frozen=True)
class IssuedTokens:
    """A fresh access and refresh token pair for one user."""

    user_id: str
    access_token: str
    refresh_token: str


@dataclass
class ChatMessage:
    """One message of a chat, user's or assistant's."""

    id: str
    parent_id: str
    role: str
    text: str


@dataclass
class Chat:
    """A conversation owned by one user."""

    id: str
    user_id: str
    name: str
    deleted: bool = False
    streaming: bool = False
    messages: list[ChatMessage] = field(default_factory=list)
    protocol: str = WEB
    kimiplus_id: str = ""
    # Legacy only: the turns by request segment id, for ``continue`` calls.
    segments: dict[str, LegacySegment] = field(default_factory=dict)

    @property
    def last_assistant_id(self) -> str:
        for message in reversed(self.messages):
            if message.role == "assistant":
                return message.id
        return ""


@dataclass
class LegacySegment:
    """A legacy turn's answer as the client may still ask for it: what ``continue`` streams."""

    group_id: str
    reply_id: str
    remaining_parts: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class Turn:
    """The ids one Chat (or legacy completion) call streams about."""

    chat_id: str
    chat_name: str
    parent_id: str
    user_message_id: str
    assistant_message_id: str
    group_id: str = ""  # legacy only: the segments of one turn share a group


@dataclass(frozen=True)
class LegacyCall:
    """What one legacy completion call streams: its turn and this call's answer pieces."""

    turn: Turn
    pieces: list[str]
    more_to_come: bool  # further parts wait for a ``continue`` call: the stream ends in "length"


@dataclass
class Upload:
    """A pre-signed object of the legacy file flow and what its PUT delivered (never the bytes)."""

    object_name: str
    file_id: str
    name: str
    action: str
    user_id: str
    size: int | None = None
    sha256: str | None = None
    content_type: str | None = None
    chunked: bool = False
    content_length: str | None = None  # the header as sent
    uploaded: bool = False


@dataclass(frozen=True)
class UploadReceipt:
    """What one PUT delivered, measured while the body streamed."""

    size: int
    sha256: str
    content_type: str | None
    chunked: bool
    content_length: str | None


@dataclass
class RegisteredFile:
    """An upload registered with ``/api/file``: polled until ready, then usable as a ref."""

    id: str
    name: str
    type: str
    size: int
    sha256: str
    user_id: str
    object_name: str
    chat_id: str = ""
    status: str = INITIALIZING
    stuck: bool = False  # met the ``parse_never`` fault: never becomes ready

    @property
    def ready(self) -> bool:
        return self.status == READY_STATUS[self.type]


@dataclass
class CallRecord:
    """One call to a backend route, as the admin API reports it (never with its token)."""

    method: str
    path: str
    headers: dict[str, str]
    auth: bool
    body: Any = None
    user_id: str | None = None
    status: int | None = None
    # time.monotonic() at arrival and when the answer (a stream's start) was handed back, so a
    # test can tell whether two calls overlapped.
    arrived_at: float | None = None
    answered_at: float | None = None


def _random_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


def _random_digits(count: int) -> str:
    return str(secrets.randbelow(9) + 1) + "".join(
        secrets.choice(string.digits) for _ in range(count - 1)
    )


class EmulatorState:
    """The emulated backend's memory; every public method is safe to call from any thread."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._initial_config = replace(config) if config else EmulatorConfig()
        self._clear()

    def _clear(self) -> None:
        self._signer = TokenSigner()  # a new secret: tokens minted before a reset stop working
        self._config = replace(self._initial_config)
        self._users: dict[str, User] = {}
        self._live_refresh: dict[str, str] = {}  # jti -> user id
        self._chats: dict[str, Chat] = {}
        self._faults: list[Fault] = []
        self._calls: list[CallRecord] = []
        self._upload_key = secrets.token_bytes(32)  # pre-signed URLs die with a reset, too
        self._uploads: dict[str, Upload] = {}  # by object name
        self._files: dict[str, RegisteredFile] = {}  # by file id
        self.web_files = WebFileStore()  # the web flow's uploads (it locks on its own)

    def reset(self) -> None:
        """Forget users, tokens, chats, uploads, files, faults and calls; restore the config."""
        with self._lock:
            self._clear()

    # Users and tokens

    def create_user(self, name: str = "user") -> IssuedTokens:
        """Register a user and issue its first token pair."""
        user_id = _random_id()
        user = User(user_id, name, device_id=_random_digits(19), ssid=_random_digits(19))
        with self._lock:
            self._users[user_id] = user
            return self._issue(user)

    def user(self, user_id: str) -> User | None:
        """The user with this id, if registered."""
        with self._lock:
            return self._users.get(user_id)

    def refresh(self, refresh_token: str, revoke: bool = True) -> IssuedTokens:
        """A new pair for a live refresh token, which is rejected from then on if ``revoke``."""
        with self._lock:
            claims = self._signer.decode(refresh_token, "refresh")
            if claims.jti not in self._live_refresh:
                raise TokenError("invalid claims: refresh token revoked")
            if revoke:
                del self._live_refresh[claims.jti]
            user = self._users.get(claims.sub)
            if user is None:
                raise TokenError("invalid claims: user not found")
            return self._issue(user)

    def authenticate(self, access_token: str) -> User:
        """The user an unexpired access token belongs to; ``TokenError`` otherwise."""
        with self._lock:
            claims = self._signer.decode(access_token, "access")
            user = self._users.get(claims.sub)
        if user is None:
            raise TokenError("invalid claims: user not found")
        return user

    def token_owner(self, token: str, typ: str) -> str | None:
        """The user id of a validly signed token, ignoring revocation; ``None`` if invalid."""
        try:
            return self._signer.decode(token, typ).sub
        except TokenError:
            return None

    def _issue(self, user: User) -> IssuedTokens:
        signer = self._signer
        refresh = signer.mint(user.user_id, "refresh", REFRESH_TTL, user.device_id, user.ssid)
        access = signer.mint(
            user.user_id, "access", self._config.access_ttl, user.device_id, user.ssid
        )
        self._live_refresh[refresh.jti] = user.user_id
        return IssuedTokens(user.user_id, signer.encode(access), signer.encode(refresh))

    # Config

    def config(self) -> EmulatorConfig:
        """A copy of the current config."""
        with self._lock:
            return replace(self._config)

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Change some config fields; unknown names raise ``TypeError``."""
        with self._lock:
            self._config = replace(self._config, **changes)
            return replace(self._config)

    # Faults

    def add_fault(
        self, name: str, times: int = 1, user_id: str | None = None, seconds: float | None = None
    ) -> Fault:
        """Queue a fault for the next ``times`` matching calls; bad arguments raise ValueError."""
        fault = Fault(name, times, user_id)
        if seconds is not None:
            fault = Fault(name, times, user_id, seconds)
        with self._lock:
            self._faults.append(fault)
        return replace(fault)

    def take_fault(self, names: frozenset[str], user_id: str | None) -> Fault | None:
        """Consume one use of the oldest queued fault among ``names`` that applies to the user."""
        with self._lock:
            return self._take_fault(names, user_id)

    def _take_fault(self, names: frozenset[str], user_id: str | None) -> Fault | None:
        for fault in self._faults:
            if fault.matches(names, user_id):
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
                return replace(fault, times=1)
        return None

    def faults(self) -> list[Fault]:
        """The faults still queued."""
        with self._lock:
            return [replace(fault) for fault in self._faults]

    # Chats

    def check_turn(self, user_id: str, chat_id: str, parent_id: str) -> None:
        """Raise the ``EmulatorError`` a Chat call continuing ``chat_id`` would meet."""
        with self._lock:
            self._continued_chat(user_id, chat_id, parent_id)

    def open_turn(
        self, user_id: str, chat_id: str, parent_id: str, prompt: str, chat_name: str
    ) -> Turn:
        """Record the user message and an empty reply; the chat is busy until ``close_turn``."""
        with self._lock:
            chat = self._continued_chat(user_id, chat_id, parent_id)
            if chat is None:
                chat = Chat(str(uuid.uuid4()), user_id, chat_name)
                self._chats[chat.id] = chat
            user_message = ChatMessage(str(uuid.uuid4()), parent_id, "user", prompt)
            reply = ChatMessage(str(uuid.uuid4()), user_message.id, "assistant", "")
            chat.messages += [user_message, reply]
            chat.streaming = True
            return Turn(chat.id, chat.name, parent_id, user_message.id, reply.id)

    def set_reply_text(self, turn: Turn, text: str) -> None:
        """Store the text the reply of ``turn`` carries."""
        with self._lock:
            chat = self._chats.get(turn.chat_id)  # gone if the state was reset meanwhile
            for message in chat.messages if chat else []:
                if message.id == turn.assistant_message_id:
                    message.text = text

    def close_turn(self, turn: Turn) -> None:
        """The reply stream ended (or the client left): the chat takes new turns again."""
        with self._lock:
            chat = self._chats.get(turn.chat_id)  # gone if the state was reset meanwhile
            if chat:
                chat.streaming = False

    def delete_chat(self, user_id: str, chat_id: str) -> None:
        """Mark a chat of the user's deleted."""
        with self._lock:
            self._owned_chat(user_id, chat_id).deleted = True

    def chats(self) -> dict[str, dict[str, Any]]:
        """A snapshot of every chat, keyed by id."""
        with self._lock:
            return {
                chat.id: {
                    "user_id": chat.user_id,
                    "name": chat.name,
                    "protocol": chat.protocol,
                    "kimiplus_id": chat.kimiplus_id,
                    "deleted": chat.deleted,
                    "streaming": chat.streaming,
                    "messages": [asdict(message) for message in chat.messages],
                }
                for chat in self._chats.values()
            }

    def transcript(self, chat_id: str, prompt: str) -> tuple[list[str], int]:
        """The user prompts of ``chat_id`` with ``prompt`` last, and how many replies it holds.

        What a scripted reply needs to know which step it is at; a new chat has only ``prompt``.
        """
        with self._lock:
            chat = self._chats.get(chat_id) if chat_id else None
            messages = chat.messages if chat else []
            prompts = [m.text for m in messages if m.role == "user"]
            return [*prompts, prompt], sum(m.role == "assistant" for m in messages)

    def _continued_chat(self, user_id: str, chat_id: str, parent_id: str) -> Chat | None:
        if not chat_id:
            if parent_id:
                raise EmulatorError("invalid_argument", "parent_id must be empty in a new chat")
            return None
        chat = self._owned_chat(user_id, chat_id)
        if chat.streaming:
            raise EmulatorError("aborted", "a reply is still being generated in this chat")
        if parent_id != chat.last_assistant_id:
            raise EmulatorError("invalid_argument", "parent_id does not match the last message")
        return chat

    def _owned_chat(self, user_id: str, chat_id: str, protocol: str = WEB) -> Chat:
        """A live chat of this user in this protocol: the other protocol's chats are unknown."""
        chat = self._chats.get(chat_id)
        if chat is None or chat.deleted or chat.user_id != user_id or chat.protocol != protocol:
            raise EmulatorError("not_found", "chat not found")
        return chat

    # Legacy chats: created first, then one completion call a turn, continued by segment id

    def create_legacy_chat(self, user_id: str, name: str, kimiplus_id: str) -> str:
        """Register an empty legacy chat; its id."""
        chat = Chat(_random_id(), user_id, name, protocol=LEGACY, kimiplus_id=kimiplus_id)
        with self._lock:
            self._chats[chat.id] = chat
        return chat.id

    def check_legacy_call(self, user_id: str, chat_id: str, segment_id: str | None) -> None:
        """Raise the ``EmulatorError`` a completion call (continuing ``segment_id``) would meet."""
        with self._lock:
            chat = self._idle_legacy_chat(user_id, chat_id)
            if segment_id is not None:
                self._segment(chat, segment_id)

    def open_legacy_turn(
        self, user_id: str, chat_id: str, prompt: str, chat_name: str, parts: list[list[str]]
    ) -> LegacyCall:
        """Record the prompt and an empty reply, and stream the first of the answer's ``parts``.

        The chat is busy until ``close_turn``; its first turn renames it to ``chat_name``.
        """
        with self._lock:
            chat = self._idle_legacy_chat(user_id, chat_id)
            if not chat.messages:
                chat.name = chat_name
            parent_id = chat.last_assistant_id
            user_message = ChatMessage(_random_id(), parent_id, "user", prompt)
            reply = ChatMessage(_random_id(), user_message.id, "assistant", "")
            chat.messages += [user_message, reply]
            segment = LegacySegment(_random_id(), reply.id, parts[1:])
            chat.segments[user_message.id] = segment
            chat.streaming = True
            turn = Turn(chat.id, chat.name, parent_id, user_message.id, reply.id, segment.group_id)
            return LegacyCall(turn, parts[0], bool(segment.remaining_parts))

    def open_legacy_continuation(self, user_id: str, chat_id: str, segment_id: str) -> LegacyCall:
        """Take the next waiting part of ``segment_id``'s answer (none once it is all out)."""
        with self._lock:
            chat = self._idle_legacy_chat(user_id, chat_id)
            segment = self._segment(chat, segment_id)
            pieces = segment.remaining_parts.pop(0) if segment.remaining_parts else []
            chat.streaming = True
            turn = Turn(chat.id, chat.name, "", segment_id, segment.reply_id, segment.group_id)
            return LegacyCall(turn, pieces, bool(segment.remaining_parts))

    def append_reply_text(self, turn: Turn, text: str) -> None:
        """Add to the text the reply of ``turn`` carries (legacy answers come in parts)."""
        with self._lock:
            chat = self._chats.get(turn.chat_id)  # gone if the state was reset meanwhile
            for message in chat.messages if chat else []:
                if message.id == turn.assistant_message_id:
                    message.text += text

    def delete_legacy_chat(self, user_id: str, chat_id: str) -> None:
        """Mark a legacy chat of the user's deleted."""
        with self._lock:
            self._legacy_chat(user_id, chat_id).deleted = True

    def _idle_legacy_chat(self, user_id: str, chat_id: str) -> Chat:
        chat = self._legacy_chat(user_id, chat_id)
        if chat.streaming:
            raise EmulatorError("aborted", "a reply is still being generated in this chat")
        return chat

    def _legacy_chat(self, user_id: str, chat_id: str) -> Chat:
        chat = self._chats.get(chat_id)
        if chat is None or chat.deleted or chat.protocol != LEGACY:
            raise EmulatorError("not_found", "chat not found")
        if chat.user_id != user_id:
            raise EmulatorError("permission_denied", "the chat belongs to another user")
        return chat

    @staticmethod
    def _segment(chat: Chat, segment_id: str) -> LegacySegment:
        segment = chat.segments.get(segment_id)
        if segment is None:
            raise EmulatorError("invalid_argument", f"unknown segment_id {segment_id!r}")
        return segment

    # Legacy files: pre-signed, PUT, registered (polled until ready), then referred to

    def presign_upload(self, user_id: str, action: str, name: str) -> Upload:
        """Reserve a unique object (and file id) for the user to PUT ``name``'s bytes to."""
        upload = Upload(uuid.uuid4().hex, _random_id(), name, action, user_id)
        with self._lock:
            self._uploads[upload.object_name] = upload
            return replace(upload)

    def upload_signature(self, object_name: str) -> str:
        """The ``sig`` that makes an upload URL for ``object_name`` valid."""
        with self._lock:
            key = self._upload_key
        return hmac.new(key, object_name.encode(), hashlib.sha256).hexdigest()

    def upload_owner(self, object_name: str, signature: str) -> str:
        """The user a validly signed, known object was pre-signed for; ``permission_denied``
        (``upload.forbidden``) otherwise."""
        expected = self.upload_signature(object_name)
        with self._lock:
            upload = self._uploads.get(object_name)
        if upload is None or not hmac.compare_digest(expected, signature):
            raise EmulatorError("permission_denied", "invalid upload URL", UPLOAD_FORBIDDEN)
        return upload.user_id

    def finish_upload(self, object_name: str, receipt: UploadReceipt) -> None:
        """Record what a PUT delivered (a later PUT replaces it, like an object store)."""
        with self._lock:
            upload = self._uploads.get(object_name)  # gone if the state was reset meanwhile
            if upload is not None:
                for name, value in asdict(receipt).items():
                    setattr(upload, name, value)
                upload.uploaded = True

    def register_file(
        self, user_id: str, kind: str, key: str, name: str, chat_id: str = ""
    ) -> RegisteredFile:
        """Register (first call) or poll (later calls) the upload keyed by ``key``: the object
        name of a file, the pre-signed file id of an image. A file needs the user's chat.

        The first call answers ``initializing``; later ones the ready status, unless the file
        met the ``parse_never`` fault when it was registered.
        """
        with self._lock:
            upload = self._uploaded(user_id, kind, key)
            if kind == FILE:
                self._owned_chat(user_id, chat_id, LEGACY)
            registered = self._files.get(upload.file_id)
            if registered is None:
                registered = self._new_file(upload, name, chat_id)
                self._files[registered.id] = registered
            elif not registered.stuck:
                registered.status = READY_STATUS[registered.type]
            return replace(registered)

    def parse_files(self, user_id: str, file_ids: list[str]) -> bool:
        """Whether the user's files are all parsed; each that is not yet is by the next call."""
        with self._lock:
            files = [self._user_file(user_id, file_id) for file_id in file_ids]
            all_ready = all(registered.ready for registered in files)
            for registered in files:
                if not registered.stuck:
                    registered.status = READY_STATUS[registered.type]
            return all_ready

    def ready_file_names(self, user_id: str, file_ids: tuple[str, ...]) -> list[str]:
        """The names of the user's ready files, in order; ``invalid_argument`` if one is not."""
        with self._lock:
            files = [self._files.get(file_id) for file_id in file_ids]
            if any(f is None or f.user_id != user_id or not f.ready for f in files):
                raise EmulatorError("invalid_argument", FILE_NOT_READY)
            return [registered.name for registered in files if registered]

    def uploads(self) -> list[dict[str, Any]]:
        """Every pre-signed object and what its PUT delivered, in pre-sign order."""
        with self._lock:
            return [asdict(upload) for upload in self._uploads.values()]

    def files(self) -> dict[str, dict[str, Any]]:
        """A snapshot of every registered file, keyed by file id."""
        with self._lock:
            return {file_id: asdict(registered) for file_id, registered in self._files.items()}

    def _new_file(self, upload: Upload, name: str, chat_id: str) -> RegisteredFile:
        return RegisteredFile(
            id=upload.file_id,
            name=name,
            type=upload.action,
            size=upload.size or 0,
            sha256=upload.sha256 or "",
            user_id=upload.user_id,
            object_name=upload.object_name,
            chat_id=chat_id,
            stuck=self._take_fault(PARSE_FAULTS, upload.user_id) is not None,
        )

    def _uploaded(self, user_id: str, kind: str, key: str) -> Upload:
        if kind == FILE:
            upload = self._uploads.get(key)
        else:
            upload = next((u for u in self._uploads.values() if u.file_id == key), None)
        if upload is None or upload.user_id != user_id or not upload.uploaded:
            raise EmulatorError("invalid_argument", "file not uploaded")
        if upload.action != kind:
            raise EmulatorError("invalid_argument", f"the upload was pre-signed as {upload.action}")
        return upload

    def _user_file(self, user_id: str, file_id: str) -> RegisteredFile:
        registered = self._files.get(file_id)
        if registered is None or registered.user_id != user_id:
            raise EmulatorError("invalid_argument", f"unknown file id {file_id!r}")
        return registered

    # Call log

    def begin_call(self, record: CallRecord) -> CallRecord:
        """Append a call to the log at arrival; fill it in later with ``update_call``."""
        with self._lock:
            self._calls.append(record)
        return record

    def update_call(self, record: CallRecord, **fields: Any) -> None:
        """Set some fields of a logged call."""
        with self._lock:
            for name, value in fields.items():
                setattr(record, name, value)

    def calls(self) -> list[dict[str, Any]]:
        """The logged calls in arrival order."""
        with self._lock:
            return [asdict(record) for record in self._calls]

    def clear_calls(self) -> None:
        """Empty the call log."""
        with self._lock:
            self._calls.clear()
