"""Counting prompt tokens offline: an expected count for estimates and a hard upper bound for budgets.

No provider tokenizer is usable offline here (tiktoken fetches its BPE files from the network; Anthropic
counts tokens only through its API), so the expected count is the providers' own rule of thumb of about
4 characters per token for English. The budget needs a bound, not a guess: every byte-level BPE token
(GPT, Claude, Llama and most open models) covers at least one byte of text, so the UTF-8 length of the
prompt plus a per-message and per-request allowance for the chat template, the response-format schema and
Anthropic's tool-use system prompt (~350 tokens) bounds the billed prompt tokens from above.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from distiller.llm.types import Message

CHARS_PER_TOKEN = 4.0
PER_MESSAGE_OVERHEAD = 8
"""Role markers and separators of the chat template, in tokens (OpenAI documents 3-4)."""
PER_REQUEST_OVERHEAD = 512
"""Reply priming, JSON-mode instructions and Anthropic's tool-use system prompt (313-346 tokens)."""

METHOD_APPROX = "approx: ceil(chars / 4) + template overhead (no provider tokenizer available offline)"


@functools.lru_cache(maxsize=256)
def schema_info(schema: type[BaseModel]) -> tuple[str, str, dict[str, Any]]:
    """A response schema's name, its JSON text and that text parsed (cached: requests share schemas)."""
    text = schema_json(schema)
    return schema.__name__, text, json.loads(text)


def schema_json(schema: type[BaseModel]) -> str:
    """The schema as sent to the provider, canonical (sorted keys) so it hashes the same in every run."""
    return json.dumps(schema.model_json_schema(), sort_keys=True, separators=(",", ":"))


def _texts(messages: Iterable[Message], schema_text: str) -> tuple[list[str], int]:
    msgs = list(messages)
    return [m.content for m in msgs] + [schema_text], len(msgs)


def expected_prompt_tokens(messages: Iterable[Message], schema_text: str = "") -> int:
    """What the provider will most likely bill for this prompt (an approximation; see module doc)."""
    texts, n = _texts(messages, schema_text)
    chars = sum(len(t) for t in texts)
    return math.ceil(chars / CHARS_PER_TOKEN) + n * PER_MESSAGE_OVERHEAD + PER_REQUEST_OVERHEAD // 4


def max_prompt_tokens(messages: Iterable[Message], schema_text: str = "") -> int:
    """An upper bound of the billed prompt tokens: UTF-8 bytes plus template allowances."""
    texts, n = _texts(messages, schema_text)
    return sum(len(t.encode("utf-8")) for t in texts) + n * PER_MESSAGE_OVERHEAD + PER_REQUEST_OVERHEAD


def approx_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


__all__ = [
    "METHOD_APPROX",
    "approx_tokens",
    "expected_prompt_tokens",
    "max_prompt_tokens",
    "schema_json",
]
