"""The ``/_emulator`` control API: tests create users, queue faults and read what happened."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from flask import Blueprint, Response, jsonify, request

from .context import current_state
from .errors import EmulatorError
from .state import EmulatorConfig

bp = Blueprint("kimi_emulator_admin", __name__, url_prefix="/_emulator")

_CONFIG_TYPES = {
    "access_ttl": (int, float),
    "split_frames": (bool,),
    "frame_delay": (int, float),
    "research_remain": (int,),
    "parse_seconds": (int, float),
}


@bp.errorhandler(EmulatorError)
def answer_emulator_error(error: EmulatorError) -> Response:
    return error.to_response()


@bp.post("/users")
def create_user() -> Response:
    """Register a user: ``{"name"}`` → ``{"user_id", "refresh_token", "access_token"}``."""
    name = _body().get("name") or "user"
    if not isinstance(name, str):
        raise EmulatorError("invalid_argument", "name must be a string")
    return jsonify(asdict(current_state().create_user(name)))


@bp.post("/faults")
def add_fault() -> Response:
    """Queue a fault: ``{"fault", "times"?, "user_id"?, "seconds"?}``."""
    body = _body()
    try:
        current_state().add_fault(
            name=body.get("fault"),
            times=int(body.get("times", 1)),
            user_id=body.get("user_id"),
            seconds=None if body.get("seconds") is None else float(body["seconds"]),
        )
    except (TypeError, ValueError) as exc:
        raise EmulatorError("invalid_argument", str(exc)) from exc
    return jsonify({})


@bp.get("/faults")
def list_faults() -> Response:
    """The faults still queued."""
    return jsonify(faults=[asdict(fault) for fault in current_state().faults()])


@bp.get("/config")
def show_config() -> Response:
    """The current config."""
    return jsonify(asdict(current_state().config()))


@bp.post("/config")
def change_config() -> Response:
    """Change some of ``access_ttl``, ``split_frames``, ``frame_delay``, ``research_remain``,
    ``parse_seconds``; answer the config."""
    changes = _body()
    for name, value in changes.items():
        _check_config_value(name, value)
    return jsonify(asdict(current_state().configure(**changes)))


@bp.get("/calls")
def list_calls() -> Response:
    """The calls made to the backend routes of both protocols, in arrival order."""
    return jsonify(calls=current_state().calls())


@bp.delete("/calls")
def clear_calls() -> Response:
    """Empty the call log."""
    current_state().clear_calls()
    return jsonify({})


@bp.get("/chats")
def list_chats() -> Response:
    """Every chat with its owner, flags and messages."""
    return jsonify(chats=current_state().chats())


@bp.get("/uploads")
def list_uploads() -> Response:
    """Every pre-signed legacy upload and what its PUT delivered (size and SHA-256)."""
    return jsonify(uploads=current_state().uploads())


@bp.get("/files")
def list_files() -> Response:
    """Every legacy file registered from an upload, keyed by file id."""
    return jsonify(files=current_state().files())


@bp.get("/web_files")
def list_web_files() -> Response:
    """Every web upload (name, size, SHA-256, content type) and how far its parse has got."""
    return jsonify(web_files=current_state().web_files.snapshot())


@bp.post("/reset")
def reset() -> Response:
    """Forget everything and restore the default config."""
    current_state().reset()
    return jsonify({})


def _check_config_value(name: str, value: Any) -> None:
    if name not in {field.name for field in fields(EmulatorConfig)}:
        raise EmulatorError("invalid_argument", f"unknown config field {name!r}")
    types = _CONFIG_TYPES[name]
    numeric = types != (bool,)
    if not isinstance(value, types) or (numeric and (isinstance(value, bool) or value < 0)):
        raise EmulatorError("invalid_argument", f"invalid value for {name}: {value!r}")


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None and request.get_data().strip():
        raise EmulatorError("invalid_argument", "body is not JSON")
    if body is not None and not isinstance(body, dict):
        raise EmulatorError("invalid_argument", "body is not a JSON object")
    return body or {}
