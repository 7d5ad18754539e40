"""What a stage hands the LLM layer (`LLMRequest`) and what it gets back (`LLMResult`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant"]
ResultStatus = Literal["ok", "cached", "failed", "budget"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str


class LLMRequest(BaseModel):
    """One planned call. `schema` names the pydantic model the answer must parse into."""

    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, frozen=True, populate_by_name=True
    )

    item_id: str = Field(
        description="The caller's id for the row this call produces (chunk id, query id...)."
    )
    stage: str = Field(description="Budget and ledger group: 'generate', 'validate', 'mine', ...")
    messages: tuple[Message, ...]
    schema_model: type[BaseModel] = Field(alias="schema")
    max_tokens: int | None = Field(default=None, ge=1, description="Override of the endpoint's max_tokens.")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)

    @classmethod
    def build(
        cls,
        item_id: str,
        stage: str,
        schema: type[BaseModel],
        *,
        user: str,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> LLMRequest:
        """The common case: an optional system prompt and one user turn."""
        msgs = ([Message(role="system", content=system)] if system else []) + [
            Message(role="user", content=user)
        ]
        return cls(
            item_id=item_id,
            stage=stage,
            messages=tuple(msgs),
            schema=schema,  # type: ignore[call-arg]  # the field's alias; the plugin knows only its name
            max_tokens=max_tokens,
            temperature=temperature,
        )


class LLMResult(BaseModel):
    """The outcome of one request. Exactly one per request, in request order: nothing is dropped."""

    model_config = ConfigDict(extra="forbid")

    item_id: str
    stage: str
    status: ResultStatus
    parsed: dict[str, Any] | None = Field(
        default=None, description="The answer, validated against the schema."
    )
    error: str | None = Field(default=None, description="Why it failed or was not sent (secrets redacted).")
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    attempts: int = Field(default=0, description="Calls sent for this request (parse retries included).")
    cache_key: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "cached")


def utc_now() -> str:
    """Now in UTC, ISO 8601 to the millisecond (ledger and journal timestamps)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


__all__ = ["LLMRequest", "LLMResult", "Message", "ResultStatus", "Role", "utc_now"]
