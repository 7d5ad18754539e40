"""Turning an answer into the request's pydantic schema, and telling the model what was wrong when not."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_MAX_ERROR_CHARS = 1500  # the feedback turn costs tokens: enough to fix the answer, no more


class ParseFailure(Exception):
    """The answer did not parse into the schema; the message is what the model is shown."""


def extract_json(text: str) -> Any:
    """The JSON value in a model's text: the whole text, a fenced block, or the first balanced object.

    Plain-JSON fallback for endpoints without JSON mode, and for chatty answers despite it.
    """
    stripped = text.strip()
    if not stripped:
        raise ParseFailure("the answer was empty")
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as first:
        for block in _FENCE.findall(stripped):
            try:
                return json.loads(block.strip())
            except json.JSONDecodeError:
                continue
        decoder = json.JSONDecoder()
        for start in (i for i, ch in enumerate(stripped) if ch in "{["):
            try:
                value, _ = decoder.raw_decode(stripped, start)
                return value
            except json.JSONDecodeError:
                continue
        raise ParseFailure(
            f"the answer is not valid JSON: {first.msg} at line {first.lineno} column {first.colno}"
        ) from None


def validate(data: Any, schema: type[BaseModel]) -> dict[str, Any]:
    """Validate against the schema; returns the model's JSON-mode dump (what the cache and rows keep)."""
    try:
        return schema.model_validate(data).model_dump(mode="json")
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in e.errors()[:10]
        )
        raise ParseFailure(f"the JSON does not match the schema {schema.__name__}: {problems}") from None


def parse_answer(text: str, data: Any | None, schema: type[BaseModel], *, truncated: bool) -> dict[str, Any]:
    """`data`: an already-structured answer (Anthropic tool input); `text`: the raw answer otherwise."""
    if truncated:
        raise ParseFailure(
            "the answer was cut off at the output token limit before it was complete; "
            "answer again, more briefly, with the complete JSON object"
        )
    return validate(data if data is not None else extract_json(text), schema)


def feedback(error: str, schema: type[BaseModel]) -> str:
    """The user turn that follows a malformed answer."""
    msg = error if len(error) <= _MAX_ERROR_CHARS else error[:_MAX_ERROR_CHARS] + " ..."
    return (
        f"Your previous answer could not be used: {msg}\n"
        f"Reply again with only one JSON object that matches the {schema.__name__} schema, and nothing else."
    )


def schema_instruction(schema_name: str, schema_text: str) -> str:
    """Added to the system prompt where the endpoint cannot be given the schema as a parameter."""
    return (
        f"Answer with only one JSON object (no prose, no code fence) that matches this JSON schema "
        f"({schema_name}):\n{schema_text}"
    )


__all__ = ["ParseFailure", "extract_json", "feedback", "parse_answer", "schema_instruction", "validate"]
