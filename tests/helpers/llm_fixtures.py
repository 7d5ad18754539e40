"""Fixtures for anything that calls an LLM: a real loopback server speaking the OpenAI and Anthropic APIs.

Use from a test module (or conftest):
registers the fixtures `llm_server` and `fake_key` (named apart from the functions, so no F811).
Program it per test: `llm_server.responder = fn`, `llm_server.inject("429", "malformed")`,
`llm_server.fault_fn = fn`, `llm_server.latency_s = 0.1`; count with `llm_server.count` / `.counts`.
`llm_server.llm_config("openai" | "anthropic", **overrides)` gives an LLMConfig pointing at it (free,
short timeouts).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from distiller.llm import Budget, CallCache, Ledger, LLMClient, LLMRequest
from distiller.testing.llm_server import LLMTestServer

FAKE_KEY = "sk-test-DISTINCTIVE-7f3a9c2e51d84b06"
"""A key that appears nowhere else, so finding it in an artifact proves a leak."""


@pytest.fixture(name="llm_server")
def llm_server_fixture() -> Iterator[LLMTestServer]:
    with LLMTestServer() as server:
        yield server


@pytest.fixture(name="fake_key")
def fake_key_fixture(monkeypatch: pytest.MonkeyPatch) -> str:
    """FAKE_KEY in OPENAI_API_KEY and ANTHROPIC_API_KEY for the test."""
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    return FAKE_KEY


# -- helpers shared by the LLM tests ------------------------------------------------------------------------
class Answer(BaseModel):
    """A small answer schema with constraints, so a wrong answer really fails validation."""

    query: str = Field(min_length=3)
    score: int = Field(ge=1, le=5)


def make_requests(n: int, stage: str = "generate", prefix: str = "chunk") -> list[LLMRequest]:
    return [
        LLMRequest.build(f"{prefix}-{i}", stage, Answer, user=f"{prefix} number {i}: some passage text.")
        for i in range(n)
    ]


def make_client(
    server: LLMTestServer,
    provider: Literal["openai", "anthropic"] = "openai",
    *,
    budget: Budget | None = None,
    cache: CallCache | None = None,
    ledger: Ledger | None = None,
    api_key: str | None = "sk-test-key-for-loopback",
    **cfg: Any,
) -> LLMClient:
    return LLMClient(
        server.llm_config(provider, **cfg),
        budget=budget or Budget.unlimited(),
        cache=cache,
        ledger=ledger,
        api_key=api_key,
    )
