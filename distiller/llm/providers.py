"""The two wire APIs behind one small interface: `await provider.complete(...) -> Completion`.

Retries: the official clients are built with `max_retries=0`; the LLM client (client.py) retries 408/409/
429/5xx, connection errors and timeouts itself, with the clients' own schedule (0.5 s doubling to 8 s,
minus up to 25% jitter, `Retry-After` / `retry-after-ms` honoured). It has to: a timed-out or dropped call
may have been billed, so every attempt needs its own budget reservation and ledger row, which a retry
hidden inside the SDK would not get. `ProviderError` says whether an attempt may be retried and whether its
outcome (billed or not) is unknown.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from distiller.config import LLMConfig
from distiller.errors import ConfigError
from distiller.llm.secrets import redact_exception
from distiller.llm.structured import schema_instruction
from distiller.llm.types import Message

FATAL_STATUS = frozenset({401, 403, 404})
"""Bad key, no permission, unknown model: every other call would fail the same way, so the batch stops."""

# A self-hosted server usually takes no key, but both clients refuse to start without one.
_NO_KEY = "no-key-configured"


@dataclass
class Completion:
    text: str
    data: Any | None
    """An already-structured answer (Anthropic tool input), else None and `text` is parsed."""
    input_tokens: int | None
    output_tokens: int | None
    finish_reason: str | None
    truncated: bool


RETRY_STATUS = frozenset({408, 409, 429})
"""As the SDKs: request timeout, lock conflict, rate limit; and every 5xx."""


class ProviderError(Exception):
    """One failed attempt. The message has secrets redacted.

    `outcome_unknown`: no answer came back for a request that reached the server (a timeout, a dropped
    connection, a 200 whose body is unreadable), so the provider may have billed it. An error status
    (4xx/5xx) is an answer: not billed. A connection that never opened sent nothing."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        bad_format: bool = False,
        outcome_unknown: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.fatal = status in FATAL_STATUS
        self.bad_format = bad_format
        self.outcome_unknown = outcome_unknown or bad_format
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        if self.bad_format:
            return False  # re-asked a level up, as a parse failure
        return self.status is None or self.status in RETRY_STATUS or self.status >= 500


def _retry_after(headers: Any) -> float | None:
    """`retry-after-ms` or `retry-after` (seconds), as the SDKs read them; None when absent or odd."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return max(0.0, float(raw) / scale)
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class CallSpec:
    """What a call asks for besides the messages."""

    schema: type[BaseModel]
    schema_dict: dict[str, Any]
    max_tokens: int
    temperature: float


class Provider(ABC):
    name: str

    def __init__(self, cfg: LLMConfig, api_key: str | None) -> None:
        self.cfg = cfg
        self.sdk = self._import_sdk()  # on use: the SDKs take ~1-2 s to import and most stages need neither
        self.client = self._make_client(
            api_key=api_key or _NO_KEY,
            base_url=cfg.base_url,
            timeout=cfg.timeout_s,
            max_retries=0,  # retried by the LLM client, one reservation per attempt (module doc)
        )

    @staticmethod
    @abstractmethod
    def _import_sdk() -> Any: ...

    @abstractmethod
    def _make_client(self, **kwargs: Any) -> Any: ...

    @abstractmethod
    def body(self, messages: list[Message], spec: CallSpec) -> dict[str, Any]:
        """The request body this provider's API takes (also one line of a batch file)."""

    @abstractmethod
    async def _complete(self, messages: list[Message], spec: CallSpec) -> Completion: ...

    async def complete(self, messages: list[Message], spec: CallSpec) -> Completion:
        """One call (the SDK retries transport faults underneath); its failures as ProviderError."""
        try:
            return await self._complete(messages, spec)
        except self.sdk.APIStatusError as e:
            raise ProviderError(
                redact_exception(e), status=e.status_code, retry_after_s=_retry_after(e.response.headers)
            ) from None
        except self.sdk.APIError as e:  # timeouts, connection errors
            import httpx

            # A connection that was never made sent nothing; anything else may have reached the server.
            never_sent = isinstance(e.__cause__, httpx.ConnectError | httpx.ConnectTimeout)
            raise ProviderError(redact_exception(e), outcome_unknown=not never_sent) from None
        except ValueError as e:  # a 200 whose body is not JSON (a proxy's error page, a broken server)
            raise ProviderError(f"unreadable response: {redact_exception(e)}", bad_format=True) from None

    async def aclose(self) -> None:
        await self.client.close()


# -- OpenAI and compatible servers ---------------------------------------------------------------------
OpenAIMode = Literal["json_schema", "json_object", "prompt"]


class OpenAIProvider(Provider):
    """Chat Completions. Structured output by `response_format` json_schema; an endpoint that rejects it
    (older vLLM / llama.cpp / Ollama builds) is stepped down to JSON mode, then to the schema in the
    prompt with plain JSON extraction — once per client, remembered for the rest of the batch."""

    name = "openai"

    def __init__(self, cfg: LLMConfig, api_key: str | None) -> None:
        super().__init__(cfg, api_key)
        self.mode: OpenAIMode = "json_schema"
        # api.openai.com wants max_completion_tokens (reasoning models reject max_tokens); compatible
        # servers implement the older, universal max_tokens.
        self._tokens_param = "max_completion_tokens" if cfg.base_url is None else "max_tokens"

    @staticmethod
    def _import_sdk() -> Any:
        import openai

        return openai

    def _make_client(self, **kwargs: Any) -> Any:
        return self.sdk.AsyncOpenAI(**kwargs)

    def _payload(self, messages: list[Message], spec: CallSpec) -> dict[str, Any]:
        msgs: list[dict[str, str]] = [{"role": m.role, "content": m.content} for m in messages]
        name = spec.schema.__name__[:64]
        if self.mode == "json_schema":
            return {
                "messages": msgs,
                "response_format": {
                    "type": "json_schema",
                    # strict=False: strict mode needs every field required and no defaults, which
                    # ordinary pydantic schemas are not; the answer is validated here anyway.
                    "json_schema": {"name": name, "schema": spec.schema_dict, "strict": False},
                },
            }
        instruction = schema_instruction(name, json.dumps(spec.schema_dict, separators=(",", ":")))
        if msgs and msgs[0]["role"] == "system":
            msgs[0] = {"role": "system", "content": f"{msgs[0]['content']}\n\n{instruction}"}
        else:
            msgs.insert(0, {"role": "system", "content": instruction})
        out: dict[str, Any] = {"messages": msgs}
        if self.mode == "json_object":
            out["response_format"] = {"type": "json_object"}
        return out

    def body(self, messages: list[Message], spec: CallSpec) -> dict[str, Any]:
        """The request body of one call (also a Batch API line's `body`)."""
        return {
            "model": self.cfg.model,
            "temperature": spec.temperature,
            self._tokens_param: spec.max_tokens,
            **self._payload(messages, spec),
        }

    async def _complete(self, messages: list[Message], spec: CallSpec) -> Completion:
        while True:
            tried = self.mode
            try:
                resp = await self.client.chat.completions.create(**self.body(messages, spec))
            except self.sdk.BadRequestError as e:
                text = str(e).lower()
                if tried == "prompt" or ("response_format" not in text and "json_schema" not in text):
                    raise
                # Step down from the mode this request used (concurrent requests fail together).
                if self.mode == tried:
                    self.mode = "json_object" if tried == "json_schema" else "prompt"
                continue
            return _openai_completion(resp)


def _openai_completion(resp: Any) -> Completion:
    if not getattr(resp, "choices", None):
        raise ProviderError("the endpoint returned no choices", bad_format=True)
    choice = resp.choices[0]
    usage = getattr(resp, "usage", None)
    return Completion(
        text=choice.message.content or "",
        data=None,
        input_tokens=getattr(usage, "prompt_tokens", None),
        output_tokens=getattr(usage, "completion_tokens", None),
        finish_reason=choice.finish_reason,
        truncated=choice.finish_reason == "length",
    )


# -- Anthropic -----------------------------------------------------------------------------------------
class AnthropicProvider(Provider):
    """Messages API. Structured output by forced tool use: one tool whose input schema is the answer's
    schema, `tool_choice` naming it; a reply without the tool call falls back to JSON in its text.

    `temperature` is not sent: anthropic 2.x removed the parameter from `messages.create`.
    """

    name = "anthropic"

    @staticmethod
    def _import_sdk() -> Any:
        import anthropic

        return anthropic

    def _make_client(self, **kwargs: Any) -> Any:
        return self.sdk.AsyncAnthropic(**kwargs)

    def body(self, messages: list[Message], spec: CallSpec) -> dict[str, Any]:
        """The parameters of one call (also a Message Batches request's `params`)."""
        tool = spec.schema.__name__[:64]
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        turns = [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
        kwargs: dict[str, Any] = {"system": system} if system else {}
        return {
            "model": self.cfg.model,
            "max_tokens": spec.max_tokens,
            "messages": turns,
            "tools": [
                {
                    "name": tool,
                    "description": f"Give the answer as a {tool} object.",
                    "input_schema": spec.schema_dict,
                }
            ],
            "tool_choice": {"type": "tool", "name": tool},
            **kwargs,
        }

    async def _complete(self, messages: list[Message], spec: CallSpec) -> Completion:
        resp = await self.client.messages.create(**self.body(messages, spec))
        return _anthropic_completion(resp, spec.schema.__name__[:64])


def _anthropic_completion(resp: Any, tool: str) -> Completion:
    data = None
    texts: list[str] = []
    for block in resp.content or []:
        if block.type == "tool_use" and block.name == tool:
            data = block.input
        elif block.type == "text":
            texts.append(block.text)
    usage = resp.usage
    return Completion(
        text=json.dumps(data, ensure_ascii=False) if data is not None else "".join(texts),
        data=data,
        input_tokens=getattr(usage, "input_tokens", None),
        output_tokens=getattr(usage, "output_tokens", None),
        finish_reason=resp.stop_reason,
        truncated=resp.stop_reason == "max_tokens",
    )


def make_provider(cfg: LLMConfig, api_key: str | None) -> Provider:
    if cfg.provider == "openai":
        return OpenAIProvider(cfg, api_key)
    if cfg.provider == "anthropic":
        return AnthropicProvider(cfg, api_key)
    raise ConfigError(f"provider {cfg.provider!r} makes no LLM calls (the offline teacher needs no client)")


__all__ = [
    "AnthropicProvider",
    "CallSpec",
    "Completion",
    "OpenAIProvider",
    "Provider",
    "ProviderError",
    "make_provider",
]
