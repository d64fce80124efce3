"""Structured output: ``response_format`` asks for JSON, and the answer is checked for it.

Kimi's web chat cannot constrain its output, so the request gets ``format_instructions`` in
its prompt and the answer is checked: ``check_json`` for a whole text, ``enforce_json`` as a
stream stage. The schema check covers the practical subset that clients and pydantic emit,
without a JSON Schema dependency.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest, InvalidJsonOutput
from .events import FINISH_STOP, ContentEvent, Finish, TextDelta

JSON_OBJECT = "json_object"
JSON_SCHEMA = "json_schema"
FORMAT_TYPES = ("text", JSON_OBJECT, JSON_SCHEMA)
MAX_REPORTED_PROBLEMS = 5  # enough for a repair prompt, short enough to read
MAX_REF_HOPS = 32  # $ref chains without descending into the value: a cycle in the schema

_FENCED = re.compile(r"```[^\n`]*\n(.*?)\n?```", re.DOTALL)
_CLOSERS = {"{": "}", "[": "]"}  # what an answer's JSON value can open and close with
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PYTHON_TYPES = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


@dataclass(frozen=True)
class ResponseFormat:
    """The JSON the answer must be: any object (``json_object``) or one matching ``schema``."""

    type: str
    schema: dict[str, Any] | None = None
    name: str | None = None
    description: str | None = None
    strict: bool = False


# --- parsing the request -------------------------------------------------------------------


def parse_response_format(body: dict[str, Any]) -> ResponseFormat | None:
    """``body["response_format"]`` as a ``ResponseFormat``; None for plain text."""
    raw = body.get("response_format")
    if raw is None:
        return None
    param = "response_format"
    if not isinstance(raw, dict) or raw.get("type") not in FORMAT_TYPES:
        raise BadRequest(
            f"'{param}' must be an object whose type is one of {', '.join(FORMAT_TYPES)}.",
            param=f"{param}.type" if isinstance(raw, dict) else param,
        )
    if raw["type"] == "text":
        return None
    if raw["type"] == JSON_OBJECT:
        return ResponseFormat(JSON_OBJECT)
    return _json_schema_format(raw.get("json_schema"), f"{param}.json_schema")


def _json_schema_format(raw: Any, param: str) -> ResponseFormat:
    if not isinstance(raw, dict):
        raise BadRequest(f"'{param}' must be an object with a name and a schema.", param=param)
    name, description = raw.get("name"), raw.get("description")
    if not isinstance(name, str) or not name.strip():
        raise BadRequest(f"'{param}.name' must be a non-empty string.", param=f"{param}.name")
    if description is not None and not isinstance(description, str):
        raise BadRequest(f"'{param}.description' must be a string.", param=f"{param}.description")
    if raw.get("strict") not in (None, True, False):
        raise BadRequest(f"'{param}.strict' must be a boolean.", param=f"{param}.strict")
    schema = raw.get("schema")
    if schema is not None:
        _check_schema(schema, f"{param}.schema")
    return ResponseFormat(
        JSON_SCHEMA,
        schema=schema,
        name=name,
        description=description,
        strict=raw.get("strict") is True,
    )


def _check_schema(schema: Any, param: str) -> None:
    """Refuse now what the answer check could not use later: a bad root or a dangling $ref."""
    if not isinstance(schema, dict):
        raise BadRequest(f"'{param}' must be a JSON Schema object.", param=param)
    types = _types(schema)
    if types and not {"object", "array"} & set(types):
        raise BadRequest(f"'{param}' must describe an object or an array at its root.", param=param)
    for ref in _refs(schema):
        if _resolve(schema, ref) is None:
            raise BadRequest(
                f"'{param}' has a $ref that cannot be resolved: {ref!r} (only references into "
                "the schema itself, like '#/$defs/Name', are supported).",
                param=param,
            )


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(root: dict[str, Any], ref: str) -> Any:
    """The schema a local ``$ref`` (a JSON pointer such as ``#/$defs/City``) points to."""
    if ref != "#" and not ref.startswith("#/"):
        return None
    node: Any = root
    for part in ref[2:].split("/") if ref != "#" else ():
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, (dict, bool)) else None


# --- the prompt ----------------------------------------------------------------------------


def format_instructions(fmt: ResponseFormat) -> str:
    """What the prompt tells the model so that its answer can be parsed as asked."""
    plain = "Write no prose before or after it and no Markdown code fence: only the JSON."
    if fmt.type == JSON_OBJECT or fmt.schema is None:
        return f"Answer with a single JSON object. {plain}"
    about = ": ".join(part for part in (fmt.name, fmt.description) if part)
    about = f" ({about})" if about else ""
    schema = json.dumps(fmt.schema, ensure_ascii=False, separators=(",", ":"))
    return (
        f"Answer with a single JSON value that matches this JSON Schema{about}:\n{schema}\n"
        f"Include every required key and no key the schema does not allow. {plain}"
    )


# --- checking the answer -------------------------------------------------------------------


def check_json(text: str, fmt: ResponseFormat) -> str:
    """The answer's JSON, compact, after checking it against ``fmt``.

    A code fence or prose around one clearly delimited JSON value is removed first. Anything
    else raises ``InvalidJsonOutput`` with a message that says what is wrong, by path, so it
    can be handed back to the model as a repair instruction.
    """
    value = _parse(text)
    if fmt.type == JSON_OBJECT and not isinstance(value, dict):
        raise InvalidJsonOutput(f"The answer must be a JSON object, not {_json_type(value)}.")
    if fmt.schema is not None:
        problems: list[str] = []
        _validate(value, fmt.schema, "$", _Context(fmt.schema, problems))
        if problems:
            raise InvalidJsonOutput(_problem_message(problems))
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _parse(text: str) -> Any:
    """The one JSON value in ``text``: alone, in a code fence, or clearly delimited in prose."""
    body = text.strip()
    fenced = _FENCED.search(body)
    if fenced and not _is_json(body):
        body = fenced.group(1).strip()
    if not body:
        raise InvalidJsonOutput("The answer is empty; it must be only the JSON.")
    span = _delimited_span(body)
    if span is None:
        raise InvalidJsonOutput("The answer holds no JSON object; it must be only the JSON.")
    try:
        return _loads(span)
    except ValueError as exc:
        raise InvalidJsonOutput(f"The answer is not valid JSON: {exc}.") from exc


def _delimited_span(text: str) -> str | None:
    """From the first ``{`` or ``[`` to the last matching closer: the JSON between prose."""
    starts = [index for index in (text.find(opener) for opener in _CLOSERS) if index >= 0]
    if not starts:
        return None
    start = min(starts)
    end = text.rfind(_CLOSERS[text[start]])
    return text[start : end + 1] if end > start else text[start:]


def _is_json(text: str) -> bool:
    try:
        _loads(text)
    except ValueError:
        return False
    return True


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _problem_message(problems: list[str]) -> str:
    shown = "; ".join(problems[:MAX_REPORTED_PROBLEMS])
    more = len(problems) - MAX_REPORTED_PROBLEMS
    suffix = f"; and {more} more problem{'s' if more > 1 else ''}" if more > 0 else ""
    return f"The answer's JSON does not match the schema: {shown}{suffix}."


# --- the schema subset ---------------------------------------------------------------------


@dataclass
class _Context:
    root: dict[str, Any]
    problems: list[str]


def _validate(value: Any, schema: Any, path: str, ctx: _Context, hops: int = 0) -> None:
    """Append to ``ctx.problems`` every way ``value`` at ``path`` breaks ``schema``."""
    if schema is False:
        ctx.problems.append(f"{path}: no value is allowed here")
        return
    if not isinstance(schema, dict):  # True, or a malformed part: nothing we can check
        return
    if isinstance(schema.get("$ref"), str):
        target = _resolve(ctx.root, schema["$ref"])
        if target is None or hops >= MAX_REF_HOPS:
            ctx.problems.append(f"{path}: the schema's $ref {schema['$ref']!r} cannot be used")
            return
        _validate(value, target, path, ctx, hops + 1)
    if not _type_ok(value, schema, path, ctx):
        return
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        options = ", ".join(_dump(option) for option in schema["enum"])
        ctx.problems.append(f"{path}: must be one of {options}; got {_dump(value)}")
    if "const" in schema and not _same(value, schema["const"]):
        ctx.problems.append(f"{path}: must be {_dump(schema['const'])}; got {_dump(value)}")
    for sub in _list(schema.get("allOf")):
        _validate(value, sub, path, ctx, hops)
    for keyword in ("anyOf", "oneOf"):
        if _list(schema.get(keyword)):
            _validate_choice(value, schema[keyword], path, ctx, hops)
    if isinstance(value, dict):
        _validate_object(value, schema, path, ctx)
    elif isinstance(value, list):
        _validate_array(value, schema, path, ctx)


def _type_ok(value: Any, schema: dict[str, Any], path: str, ctx: _Context) -> bool:
    types = _types(schema)
    if not types or any(_is_type(value, name) for name in types):
        return True
    if value is None and schema.get("nullable") is True:
        return True
    expected = " or ".join(types)
    ctx.problems.append(f"{path}: expected {expected}, got {_json_type(value)}")
    return False


def _validate_choice(value: Any, choices: list[Any], path: str, ctx: _Context, hops: int) -> None:
    """anyOf / oneOf, checked shallowly: one matching choice is enough (oneOf as anyOf)."""
    attempts = []
    for choice in choices:
        trial = _Context(ctx.root, [])
        _validate(value, choice, path, trial, hops)
        if not trial.problems:
            return
        attempts.append((choice, trial.problems))
    # Report the choice whose type fits, if exactly one does: its problems are the useful ones.
    fitting = [problems for choice, problems in attempts if _type_fits(value, choice, ctx)]
    if len(fitting) == 1:
        ctx.problems.extend(fitting[0])
        return
    shapes = sorted({t for c, _ in attempts for t in _types(_deref(c, ctx))})
    wanted = f" ({' or '.join(shapes)})" if shapes else ""
    ctx.problems.append(f"{path}: matches none of the allowed shapes{wanted}")


def _type_fits(value: Any, choice: Any, ctx: _Context) -> bool:
    return any(_is_type(value, name) for name in _types(_deref(choice, ctx)))


def _deref(schema: Any, ctx: _Context) -> Any:
    for _ in range(MAX_REF_HOPS):
        if not isinstance(schema, dict) or not isinstance(schema.get("$ref"), str):
            return schema
        schema = _resolve(ctx.root, schema["$ref"])
    return schema


def _validate_object(value: dict[str, Any], schema: dict[str, Any], path: str, ctx: _Context):
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    for key in _list(schema.get("required")):
        if key not in value:
            ctx.problems.append(f"{_child(path, key)}: required key missing")
    extra_schema = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            _validate(item, properties[key], _child(path, key), ctx)
        elif extra_schema is False:
            ctx.problems.append(f"{_child(path, key)}: key not allowed by the schema")
        elif isinstance(extra_schema, dict):
            _validate(item, extra_schema, _child(path, key), ctx)


def _validate_array(value: list[Any], schema: dict[str, Any], path: str, ctx: _Context) -> None:
    prefix = _list(schema.get("prefixItems"))
    items = schema.get("items")
    if isinstance(items, list):  # the older tuple form of prefixItems
        prefix, items = items, schema.get("additionalItems")
    for index, item in enumerate(value):
        if index < len(prefix):
            _validate(item, prefix[index], f"{path}[{index}]", ctx)
        elif items is False:
            ctx.problems.append(f"{path}[{index}]: no item is allowed here")
        elif isinstance(items, dict):
            _validate(item, items, f"{path}[{index}]", ctx)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _types(schema: Any) -> list[str]:
    if not isinstance(schema, dict):
        return []
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    return [t for t in declared if isinstance(t, str)] if isinstance(declared, list) else []


def _is_type(value: Any, name: str) -> bool:
    if name not in _PYTHON_TYPES or not isinstance(value, _PYTHON_TYPES[name]):
        return False
    if isinstance(value, bool):
        return name == "boolean"
    if name == "integer":
        return isinstance(value, int) or value.is_integer()
    return True


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    for name in ("object", "array", "string", "number", "null"):
        if isinstance(value, _PYTHON_TYPES[name]):
            return name
    return type(value).__name__


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, though Python says it is."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    kinds = {_json_type(a), _json_type(b)}
    return a == b and (len(kinds) == 1 or kinds == {"integer", "number"})


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if _IDENTIFIER.fullmatch(key) else f"{path}[{json.dumps(key)}]"


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def repair_instruction(error: InvalidJsonOutput) -> str:
    """The follow-up message that asks the model, once, to fix an answer ``check_json`` refused."""
    return (
        f"Your answer is not valid: {error.message} Reply again with only the corrected JSON "
        "value: no prose, no code fence."
    )


# --- the stream stage ----------------------------------------------------------------------


def enforce_json(
    events: Iterable[ContentEvent], fmt: ResponseFormat | None
) -> Iterator[ContentEvent]:
    """Stream only the answer's JSON value, and check it when the answer ends.

    Text before the JSON opens (a ```json fence line, a sentence) and after it closes (the
    closing fence, a remark) is dropped as it arrives, so the client gets exactly the JSON.
    At a ``Finish("stop")`` that JSON is checked with ``check_json``; a failure raises
    ``InvalidJsonOutput``. Another finish reason (``length``) passes unchecked: the client
    is told the answer was cut, as OpenAI does.
    """
    if fmt is None:
        return iter(events)  # no stage at all: nothing is added to each event's way
    return _json_only(events, fmt)


def _json_only(events: Iterable[ContentEvent], fmt: ResponseFormat) -> Iterator[ContentEvent]:
    extractor = JsonExtractor()
    streamed: list[str] = []
    unused: list[str] = []  # the text while no JSON has opened: what an error is about then
    for event in events:
        if isinstance(event, TextDelta):
            text = extractor.feed(event.text)
            if text:
                streamed.append(text)
                yield TextDelta(text)
            elif not extractor.started:
                unused.append(event.text)
            continue
        if isinstance(event, Finish) and event.reason == FINISH_STOP:
            check_json("".join(streamed if extractor.started else unused), fmt)
        yield event


class JsonExtractor:
    """Feed answer text in pieces; get back only its first JSON object or array.

    It tracks nesting outside strings, so it knows where the value ends without parsing it;
    whether the value is valid JSON is decided later, on the whole.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.started = False
        self.finished = False
        self.in_string = False
        self.escaped = False

    def feed(self, text: str) -> str:
        out: list[str] = []
        for char in text:
            if self.finished:
                break
            if not self.started and char not in _CLOSERS:
                continue
            self.started = True
            out.append(char)
            self._track(char)
        return "".join(out)

    def _track(self, char: str) -> None:
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == '"':
                self.in_string = False
        elif char == '"':
            self.in_string = True
        elif char in "{[":
            self.depth += 1
        elif char in "}]":
            self.depth -= 1
            self.finished = self.depth == 0
