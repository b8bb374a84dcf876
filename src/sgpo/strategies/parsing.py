"""Tolerant parsing of an extractor model's reply into a validated `Strategy`.

Models wrap JSON in code fences, in prose ("Here is the strategy: {...} Hope this helps"), after a
`<think>` block, or under a single wrapper key (`{"strategy": {...}}`); all of these are accepted.
What is not accepted is recorded with a reason label (`ExtractionError.reason`):

- `empty_response`: no text at all;
- `no_json`: no `{` in the reply;
- `invalid_json`: braces, but no parseable JSON object;
- `truncated`: like `invalid_json`, and the reply was cut by the token limit (`finish_reason == "length"`);
- `schema`: a JSON object, but not a valid strategy (missing / mistyped / empty fields, named in the detail).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import ValidationError

from sgpo.strategies.base import ExtractionError, Strategy

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
SNIPPET_CHARS = 200


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The start of a reply, on one line, for failure details."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def balanced_objects(text: str) -> Iterator[str]:
    """Every top-level `{...}` span of `text` with balanced braces (braces inside JSON strings do not
    count), left to right. Linear in the length of the text."""
    depth = 0
    start = -1
    in_string = False
    escaped = False
    for i, c in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
            continue
        if c == '"' and depth > 0:
            in_string = True
        elif c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                yield text[start : i + 1]


def _candidates(text: str) -> Iterator[str]:
    yield text.strip()
    for m in _FENCE.finditer(text):
        yield m.group(1).strip()
    yield from balanced_objects(text)


def _unwrap(obj: Any) -> Any:
    """`{"strategy": {...}}` (one key holding an object) -> the inner object."""
    if isinstance(obj, dict) and len(obj) == 1:
        (inner,) = obj.values()
        if isinstance(inner, dict):
            return inner
    return obj


def validate_strategy(obj: Any) -> Strategy:
    """A `Strategy` from a parsed JSON value; raises `ExtractionError("schema", ...)` naming the fields.

    Beyond the pydantic schema: text fields are stripped and must be non-empty, `steps` must hold at
    least one step; blank pitfalls are dropped."""
    if not isinstance(obj, dict):
        raise ExtractionError("schema", f"expected a JSON object, got {type(obj).__name__}")
    try:
        strategy = Strategy.model_validate(obj)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:5])
        raise ExtractionError("schema", problems) from None
    approach, insight = strategy.approach.strip(), strategy.key_insight.strip()
    steps = [s.strip() for s in strategy.steps]
    empty = [name for name, value in (("approach", approach), ("key_insight", insight)) if not value]
    if not steps:
        empty.append("steps (no steps)")
    empty += [f"steps.{i}" for i, s in enumerate(steps) if not s]
    if empty:
        raise ExtractionError("schema", "empty field(s): " + ", ".join(empty))
    pitfalls = [p.strip() for p in strategy.pitfalls if p.strip()]
    return Strategy(approach=approach, key_insight=insight, steps=steps, pitfalls=pitfalls)


def strip_reasoning(text: str) -> str:
    """The reply without its reasoning: closed `<think>...</think>` blocks are removed; text after a
    lone `</think>` (templates that open the block in the prompt) is kept; an unclosed `<think>` (cut by
    the token limit) drops everything after it."""
    body = _THINK.sub("", text)
    lower = body.lower()
    if "</think>" in lower:
        body = body[lower.rindex("</think>") + len("</think>") :]
        lower = body.lower()
    if "<think>" in lower:
        body = body[: lower.index("<think>")]
    return body


def parse_strategy(text: str | None, finish_reason: str | None = None) -> Strategy:
    """The strategy in a model reply (see the module docstring for what is tolerated and the reasons)."""
    if text is None or not text.strip():
        raise ExtractionError("empty_response", f"finish_reason={finish_reason}" if finish_reason else "")
    body = strip_reasoning(text)
    schema_error: ExtractionError | None = None
    json_error: str | None = None
    seen: set[str] = set()
    for cand in _candidates(body):
        if not cand or cand in seen or "{" not in cand:
            continue
        seen.add(cand)
        try:
            obj = json.loads(cand)
        except json.JSONDecodeError as exc:
            json_error = json_error or f"{exc.msg} (line {exc.lineno}, column {exc.colno})"  # msg may end in "at"
            continue
        try:
            return validate_strategy(_unwrap(obj))
        except ExtractionError as exc:
            schema_error = schema_error or exc
    if schema_error is not None:
        raise schema_error
    if "{" not in body:
        raise ExtractionError("no_json", f"no JSON object in the reply: {snippet(text)!r}")
    reason = "truncated" if finish_reason == "length" else "invalid_json"
    detail = f"{json_error or 'unbalanced braces'}; reply starts {snippet(text)!r}"
    raise ExtractionError(reason, detail)


def parse_replies(replies: Iterable[tuple[str | None, str | None]]) -> list[Strategy | ExtractionError]:
    """`parse_strategy` over (text, finish_reason) pairs; a failure becomes its `ExtractionError`."""
    out: list[Strategy | ExtractionError] = []
    for text, finish in replies:
        try:
            out.append(parse_strategy(text, finish))
        except ExtractionError as exc:
            out.append(exc)
    return out
