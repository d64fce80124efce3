"""Settings, read from the environment once and passed down as one frozen object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .reasoning import DEFAULT_REASONING_MODE, parse_reasoning_mode
from .store import DEFAULT_REDIS_PREFIX, DEFAULT_STATE_TIMEOUT, is_state_location
from .tokens import Credential, split_credentials

WEB_BASE_URL = "https://www.kimi.com"
WEB_AUTH_URL = "https://auth.kimi.com"
LEGACY_BASE_URL = "https://kimi.moonshot.cn"
PROTOCOLS = ("web", "legacy")
# WEB_FILE_MODE: Kimi reads attached files itself (upload), or we read documents into the prompt.
WEB_FILE_MODES = ("upload", "extract")
# Defaults that other modules share (the stream parsers, parse_chat_request): named once here.
COOLDOWN_SECONDS = 600.0  # how long a rate-limited or dead account rests, unless Kimi says
MAX_FILES_PER_MESSAGE = 10
MAX_CONCURRENT_PER_ACCOUNT = 2  # turns one server-pool account runs at once
# Seconds a turn's slot on an account outlives the turn's last sign of life (the turn renews it
# while it runs): what a crashed worker or instance holds at most.
LEASE_SECONDS = 300.0
# A request with dead tokens stops after this many accounts, however many it names.
MAX_ACCOUNTS_TRIED = 3
# Anthropic model names (glob patterns, first match wins) and the Kimi model each one runs as.
DEFAULT_ANTHROPIC_MODEL_MAP = (("claude-*", "kimi"),)


@dataclass(frozen=True)
class Settings:
    """Everything configurable about the service. Build with ``Settings.from_env()``."""

    protocol: str = "web"
    base_url: str = WEB_BASE_URL
    auth_url: str = WEB_AUTH_URL
    kimi_tokens: tuple[Credential, ...] = ()
    api_keys: tuple[str, ...] = ()
    # Opens GET /status and GET /metrics to whoever sends it; empty: both are 404.
    admin_key: str = field(default="", repr=False)
    state_path: str = "./data/kimi-state.db"
    # A redis:// (or sqlite:///) URL that wins over state_path; it may hold a password.
    state_url: str = field(default="", repr=False)
    redis_prefix: str = DEFAULT_REDIS_PREFIX
    state_timeout: float = DEFAULT_STATE_TIMEOUT
    state_encryption_key: str = field(default="", repr=False)
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    keepalive_seconds: float = 15.0
    cooldown_seconds: float = COOLDOWN_SECONDS
    models_cache_seconds: float = 600.0
    conversation_ttl_seconds: float = 30 * 24 * 3600.0
    max_file_mb: float = 100.0
    max_files_per_message: int = MAX_FILES_PER_MESSAGE
    max_document_chars: int = 200_000
    allow_private_file_urls: bool = False
    file_parse_timeout: float = 30.0
    web_file_mode: str = "upload"
    web_file_cache_seconds: float = 3 * 3600.0
    file_fetch_timeout: float = 60.0
    file_fetch_min_kbps: float = 10.0
    file_fetch_rate_window: float = 10.0
    file_extract_timeout: float = 30.0
    file_extract_memory_mb: float = 512.0
    file_extract_concurrency: int = 2
    reasoning_output: str = DEFAULT_REASONING_MODE
    max_streams_per_worker: int = 1000
    max_concurrent_per_account: int = MAX_CONCURRENT_PER_ACCOUNT
    pool_wait_seconds: float = 0.0
    lease_seconds: float = LEASE_SECONDS
    max_request_mb: float = 10.0
    request_body_timeout: float = 60.0
    max_tokens_per_header: int = 10
    token_checks_per_minute: int = 10
    allow_public_pool: bool = False
    anthropic_model_map: tuple[tuple[str, str], ...] = DEFAULT_ANTHROPIC_MODEL_MAP

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        protocol = _choice(env, "KIMI_PROTOCOL", PROTOCOLS)
        kimi_tokens = tuple(split_credentials(env.get("KIMI_TOKENS", "")))
        api_keys = tuple(k.strip() for k in env.get("API_KEYS", "").split(",") if k.strip())
        allow_public_pool = _flag(env, "ALLOW_PUBLIC_POOL")
        if kimi_tokens and not api_keys and not allow_public_pool:
            raise ValueError(
                "KIMI_TOKENS is set without API_KEYS: anyone who reaches the service would use "
                "these Kimi accounts. Set API_KEYS, or ALLOW_PUBLIC_POOL=1 to mean it."
            )
        default_base = WEB_BASE_URL if protocol == "web" else LEGACY_BASE_URL
        base_url = _url(env.get("KIMI_BASE_URL"), default_base)
        return cls(
            protocol=protocol,
            base_url=base_url,
            auth_url=_url(
                env.get("KIMI_AUTH_URL"), WEB_AUTH_URL if protocol == "web" else base_url
            ),
            kimi_tokens=kimi_tokens,
            api_keys=api_keys,
            admin_key=_admin_key(env, api_keys),
            allow_public_pool=allow_public_pool,
            state_path=env.get("KIMI_STATE_PATH", "").strip() or cls.state_path,
            state_url=_state_url(env),
            redis_prefix=env.get("KIMI_REDIS_PREFIX", "").strip() or cls.redis_prefix,
            state_timeout=_number(env, "KIMI_STATE_TIMEOUT", cls.state_timeout),
            state_encryption_key=env.get("STATE_ENCRYPTION_KEY", "").strip(),
            connect_timeout=_number(env, "KIMI_CONNECT_TIMEOUT", cls.connect_timeout),
            read_timeout=_number(env, "KIMI_READ_TIMEOUT", cls.read_timeout),
            keepalive_seconds=_number(env, "KEEPALIVE_SECONDS", cls.keepalive_seconds),
            cooldown_seconds=_number(env, "KIMI_COOLDOWN_SECONDS", cls.cooldown_seconds),
            models_cache_seconds=_number(env, "MODELS_CACHE_SECONDS", cls.models_cache_seconds),
            max_file_mb=_number(env, "MAX_FILE_MB", cls.max_file_mb),
            max_files_per_message=int(
                _number(env, "MAX_FILES_PER_MESSAGE", cls.max_files_per_message)
            ),
            max_document_chars=int(_number(env, "MAX_DOCUMENT_CHARS", cls.max_document_chars)),
            file_parse_timeout=_number(env, "FILE_PARSE_TIMEOUT", cls.file_parse_timeout),
            web_file_mode=_choice(env, "WEB_FILE_MODE", WEB_FILE_MODES),
            web_file_cache_seconds=_number(
                env, "WEB_FILE_CACHE_SECONDS", cls.web_file_cache_seconds, allow_zero=True
            ),
            file_fetch_timeout=_number(env, "FILE_FETCH_TIMEOUT", cls.file_fetch_timeout),
            file_fetch_min_kbps=_number(env, "FILE_FETCH_MIN_KBPS", cls.file_fetch_min_kbps),
            file_fetch_rate_window=_number(
                env, "FILE_FETCH_RATE_WINDOW", cls.file_fetch_rate_window
            ),
            file_extract_timeout=_number(env, "FILE_EXTRACT_TIMEOUT", cls.file_extract_timeout),
            file_extract_memory_mb=_number(
                env, "FILE_EXTRACT_MEMORY_MB", cls.file_extract_memory_mb
            ),
            file_extract_concurrency=int(
                _number(env, "FILE_EXTRACT_CONCURRENCY", cls.file_extract_concurrency)
            ),
            allow_private_file_urls=_flag(env, "ALLOW_PRIVATE_FILE_URLS"),
            max_streams_per_worker=int(
                _number(env, "MAX_STREAMS_PER_WORKER", cls.max_streams_per_worker)
            ),
            max_concurrent_per_account=int(
                _number(env, "KIMI_MAX_CONCURRENT_PER_ACCOUNT", cls.max_concurrent_per_account)
            ),
            pool_wait_seconds=_number(
                env, "POOL_WAIT_SECONDS", cls.pool_wait_seconds, allow_zero=True
            ),
            lease_seconds=_number(env, "KIMI_LEASE_SECONDS", cls.lease_seconds),
            max_request_mb=_number(env, "MAX_REQUEST_MB", cls.max_request_mb),
            request_body_timeout=_number(env, "REQUEST_BODY_TIMEOUT", cls.request_body_timeout),
            max_tokens_per_header=int(
                _number(env, "MAX_TOKENS_PER_HEADER", cls.max_tokens_per_header)
            ),
            token_checks_per_minute=int(
                _number(env, "TOKEN_CHECKS_PER_MINUTE", cls.token_checks_per_minute)
            ),
            anthropic_model_map=_model_map(env.get("ANTHROPIC_MODEL_MAP", "")),
            reasoning_output=parse_reasoning_mode(
                env.get("REASONING_OUTPUT", "").strip() or None, name="REASONING_OUTPUT"
            ),
        )

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def max_request_bytes(self) -> int:
        """The largest request body read; a larger one is refused (413) before it is parsed."""
        return int(self.max_request_mb * 1024 * 1024)

    @property
    def state_location(self) -> str:
        """Where state lives: the state URL when one is set, else the SQLite file."""
        return self.state_url or self.state_path

    @property
    def timeout(self) -> tuple[float, float]:
        """The ``(connect, read)`` pair that ``requests`` takes."""
        return (self.connect_timeout, self.read_timeout)


def _url(value: str | None, default: str) -> str:
    return (value or "").strip().rstrip("/") or default


def _model_map(raw: str) -> tuple[tuple[str, str], ...]:
    """``ANTHROPIC_MODEL_MAP``: ``pattern=model`` pairs, comma-separated, in the order tried."""
    if not raw.strip():
        return DEFAULT_ANTHROPIC_MODEL_MAP
    pairs = []
    for item in filter(str.strip, raw.split(",")):
        pattern, sep, model = (part.strip() for part in item.partition("="))
        if not sep or not pattern or not model:
            raise ValueError(
                f"ANTHROPIC_MODEL_MAP entries are pattern=model (claude-sonnet*=kimi-thinking), "
                f"not {item.strip()!r}"
            )
        pairs.append((pattern, model))
    return tuple(pairs)


def _admin_key(env: Mapping[str, str], api_keys: tuple[str, ...]) -> str:
    """``ADMIN_KEY``: never one of the API keys, so a caller's key cannot open the status page."""
    key = env.get("ADMIN_KEY", "").strip()
    if key and key in api_keys:
        raise ValueError("ADMIN_KEY must not be one of API_KEYS: callers would hold the admin key")
    return key


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first when unset), case-insensitive."""
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes")


def _state_url(env: Mapping[str, str]) -> str:
    """``KIMI_STATE_URL``, else ``REDIS_URL`` (the name platforms give an attached Redis)."""
    for name in ("KIMI_STATE_URL", "REDIS_URL"):
        url = env.get(name, "").strip()
        if url and not is_state_location(url):
            raise ValueError(
                f"{name} must start with redis://, rediss:// or sqlite:///, "
                f"not {url.split(':', 1)[0]!r}"
            )
        if url:
            return url
    return ""


def _number(
    env: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, not {raw!r}") from exc
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'zero or ' if allow_zero else ''}positive")
    return value
