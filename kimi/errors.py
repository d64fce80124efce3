"""Error types, each carrying its HTTP status and OpenAI error body.

KimiError                      500 api_error
├── BadRequest                 400 invalid_request_error
├── AuthenticationFailed       401 authentication_error
│   └── UpstreamAuthRejected   401 (Kimi refused the account's token)
├── NotFound                   404 invalid_request_error
├── RequestTimeout             408 invalid_request_error (body slower than REQUEST_BODY_TIMEOUT)
├── ConversationBusy           409 conflict
├── RequestTooLarge            413 invalid_request_error (body over MAX_REQUEST_MB)
├── RateLimited                429 rate_limit_error (+ Retry-After)
│   └── ResearchQuotaExhausted 429 (one mode's quota: the account serves other turns)
├── UpstreamError              502 upstream_error (Kimi answered garbage or failed)
│   ├── UpstreamCut            502 upstream_cut (the answer stream ended before its end)
│   ├── InvalidJsonOutput      502 invalid_json_output (structured output did not parse)
│   ├── UpstreamUnavailable    503 upstream_unavailable (Kimi said it is unavailable)
│   └── UpstreamOverloaded     503 upstream_overloaded (another account may still answer)
├── NoUsableAccount            503 service_unavailable
├── StateStoreUnavailable      503 service_unavailable (SQLite or Redis failed; recovers by itself)
└── UpstreamTimeout            504 timeout
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "KimiError",
    "BadRequest",
    "AuthenticationFailed",
    "UpstreamAuthRejected",
    "NotFound",
    "RequestTimeout",
    "ConversationBusy",
    "RequestTooLarge",
    "RateLimited",
    "ResearchQuotaExhausted",
    "UpstreamError",
    "UpstreamCut",
    "InvalidJsonOutput",
    "UpstreamUnavailable",
    "UpstreamOverloaded",
    "NoUsableAccount",
    "StateStoreUnavailable",
    "UpstreamTimeout",
]


class KimiError(Exception):
    """Base of every error this service reports to a client."""

    status = 500
    error_type = "api_error"
    code: str | None = "internal_error"
    # Kimi's own words, when the error reports an answer of Kimi's (set by the upstream side).
    said: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_body(self) -> dict[str, Any]:
        """The OpenAI error object: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(KimiError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(KimiError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class UpstreamAuthRejected(AuthenticationFailed):
    """Kimi refused the account's token (dead, revoked or rotated away)."""

    code = "kimi_token_invalid"


class NotFound(KimiError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ConversationBusy(KimiError):
    status = 409
    error_type = "conflict_error"
    code = "conversation_busy"


class RequestTimeout(KimiError):
    status = 408
    error_type = "invalid_request_error"
    code = "request_timeout"


class RequestTooLarge(KimiError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(KimiError):
    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 60.0, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_after = max(1, int(retry_after + 0.999))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ResearchQuotaExhausted(RateLimited):
    """The account's research quota is used up; its plain turns still go through."""

    code = "research_quota_exhausted"


class UpstreamError(KimiError):
    status = 502
    error_type = "upstream_error"
    code = "bad_gateway"


class UpstreamCut(UpstreamError):
    """Kimi's answer stream ended (or broke) before the turn reached its end."""

    code = "upstream_cut"

    def __init__(self, message: str = "Kimi's answer stream was cut off before the end.", **kw):
        super().__init__(message, **kw)


class InvalidJsonOutput(UpstreamError):
    """``response_format`` asked for JSON and the model's answer was not (or not the schema)."""

    code = "invalid_json_output"


class UpstreamUnavailable(UpstreamError):
    """Kimi answered that it is unavailable (``unavailable``): a 503, not a broken answer."""

    status = 503
    error_type = "service_unavailable"
    code = "upstream_unavailable"


class UpstreamOverloaded(UpstreamError):
    """Kimi's model is overloaded (``REASON_COMPLETION_OVERLOADED``): before the answer starts,
    another account is tried; says nothing about this account's token or quota."""

    status = 503
    error_type = "service_unavailable"
    code = "upstream_overloaded"


class NoUsableAccount(KimiError):
    status = 503
    error_type = "service_unavailable"
    code = "no_usable_account"


class ServiceShuttingDown(KimiError):
    """The worker is stopping (its graceful time is up) while a stream is still running."""

    status = 503
    error_type = "service_unavailable"
    code = "service_shutting_down"


class StateStoreUnavailable(KimiError):
    """The state store (SQLite file or Redis) failed; the message names the cause, never a value."""

    status = 503
    error_type = "service_unavailable"
    code = "state_store_unavailable"


class UpstreamTimeout(KimiError):
    status = 504
    error_type = "timeout_error"
    code = "upstream_timeout"
