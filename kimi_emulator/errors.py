"""Errors the emulator answers with, in the shape of either protocol.

Routes raise ``EmulatorError`` with a Connect code; the ``web`` routes answer it as Connect's
``{"code", "message"}``, the ``legacy`` routes translate it to the 2024 backend's
``{"error_type", "message"}`` with that backend's status.
"""

from __future__ import annotations

from flask import Response, jsonify

# Connect's error codes and the HTTP status its unary protocol pairs with each.
CONNECT_STATUS = {
    "invalid_argument": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "aborted": 409,
    "resource_exhausted": 429,
    "internal": 500,
}
# The 2024 backend's error type and HTTP status for each Connect code. A busy chat was a 400
# there, and another user's chat a 403 rather than a 404.
LEGACY_ERRORS = {
    "invalid_argument": ("validation.error", 400),
    "unauthenticated": ("auth.token.invalid", 401),
    "permission_denied": ("chat.forbidden", 403),
    "not_found": ("chat.not_found", 404),
    "aborted": ("chat.user_stream_pushing", 400),
    "resource_exhausted": ("chat.rate_limit", 429),
    "internal": ("internal", 500),
}

# The legacy object store's refusal of a pre-signed upload (bad signature, unknown object).
UPLOAD_FORBIDDEN = "upload.forbidden"


class EmulatorError(Exception):
    """A request the emulated backend refuses, with a Connect ``code`` and a message."""

    def __init__(self, code: str, message: str, legacy_error_type: str | None = None) -> None:
        super().__init__(message)
        if code not in CONNECT_STATUS:
            raise ValueError(f"unknown Connect code {code!r}")
        self.code = code
        self.message = message
        # Overrides the error type the code translates to, e.g. ``upload.forbidden``.
        self._legacy_error_type = legacy_error_type

    @property
    def status(self) -> int:
        return CONNECT_STATUS[self.code]

    def to_response(self) -> Response:
        """The JSON error body with its HTTP status."""
        response = jsonify(code=self.code, message=self.message)
        response.status_code = self.status
        return response

    @property
    def legacy_error_type(self) -> str:
        return self._legacy_error_type or LEGACY_ERRORS[self.code][0]

    def to_legacy_response(self) -> Response:
        """The 2024 backend's ``{"error_type", "message"}`` body with its HTTP status."""
        response = jsonify(error_type=self.legacy_error_type, message=self.message)
        response.status_code = LEGACY_ERRORS[self.code][1]
        return response
