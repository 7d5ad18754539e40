"""Test helpers other engineers' tests use: a loopback LLM server speaking the OpenAI and Anthropic APIs
(`distiller.testing.llm_server`). Names are loaded on first use, so `python -m
distiller.testing.llm_server` does not import the module twice."""

from __future__ import annotations

from typing import Any

__all__ = ["ChatRequest", "Fault", "LLMTestServer", "Reply", "stub_instance"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from distiller.testing import llm_server

        return getattr(llm_server, name)
    raise AttributeError(f"module 'distiller.testing' has no attribute {name!r}")
