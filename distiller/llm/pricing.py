"""What a call costs: `genai-prices` (a maintained price table, tiered prices included), overridden per
side by `input_price_per_mtok` / `output_price_per_mtok` in the endpoint's config (self-hosted: 0).

Costs are kept as integer nano-dollars inside the budget so that sums are exact (a float sum can drift
past a limit by one ulp); they are rounded up, so rounding never lets spend past a budget either.
"""

from __future__ import annotations

import math
from decimal import Decimal

from genai_prices import Usage, calc_price
from genai_prices.types import PriceCalculation

from distiller.config import LLMConfig
from distiller.errors import ConfigError
from distiller.llm.secrets import safe_url

NANO = 1_000_000_000

BATCH_DISCOUNT = Decimal("0.5")
"""OpenAI's Batch API and Anthropic's Message Batches both bill half the online price."""


class PriceUnknown(ConfigError):
    """No price for this model: spending on it cannot be bounded, so it is refused."""


def usd_to_nano(usd: float | Decimal) -> int:
    return math.ceil(Decimal(str(usd)) * NANO)


def nano_to_usd(nano: int) -> float:
    return nano / NANO


class Pricing:
    """Prices of one endpoint. `source` says where they came from (for the ledger and the estimate)."""

    def __init__(self, cfg: LLMConfig) -> None:
        self.model = cfg.model
        self.provider = cfg.provider
        self.base_url = cfg.base_url
        self._in_override = cfg.input_price_per_mtok
        self._out_override = cfg.output_price_per_mtok
        self._lookup_error: str | None = None
        self._table_id: str | None = None
        if self._in_override is None or self._out_override is None:
            self._probe_table()
        self.known = self._lookup_error is None
        parts = []
        if self._in_override is not None or self._out_override is not None:
            parts.append("config override")
        if self._table_id:
            parts.append(f"genai-prices {self._table_id}")
        self.source = " + ".join(parts) if self.known else "unknown"

    def _calc(self, input_tokens: int, output_tokens: int) -> PriceCalculation:
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        if self.base_url:
            # A custom base URL names the provider (DeepSeek, Together...); a self-hosted one matches none,
            # which is right: a local model's price is whatever the user says it is.
            return calc_price(usage, self.model, provider_api_url=self.base_url)
        return calc_price(usage, self.model, provider_id=self.provider)

    def _probe_table(self) -> None:
        try:
            calc = self._calc(1, 1)
        except LookupError as e:
            text = str(e)
            self._lookup_error = (
                text.replace(self.base_url, safe_url(self.base_url) or "") if self.base_url else text
            )
        else:
            self._table_id = f"{calc.provider.id}/{calc.model.id}"

    def unknown_message(self) -> str:
        where = safe_url(self.base_url) or self.provider
        return (
            f"no price is known for model {self.model!r} at {where} ({self._lookup_error}), so spending "
            "on it cannot be kept within a budget. Set input_price_per_mtok and output_price_per_mtok (USD "
            "per million tokens; 0 for a self-hosted model) on this endpoint's config (teacher or "
            "validation.judge)."
        )

    def cost_usd(self, input_tokens: int, output_tokens: int, *, batch: bool = False) -> Decimal:
        """Exact cost in USD (`batch`: at the batch APIs' price). Raises PriceUnknown when the model has
        no price."""
        if not self.known:
            raise PriceUnknown(self.unknown_message())
        table_in = table_out = Decimal(0)
        if self._in_override is None or self._out_override is None:
            calc = self._calc(input_tokens, output_tokens)
            table_in, table_out = calc.input_price, calc.output_price
        cost_in = (
            Decimal(str(self._in_override)) * input_tokens / 1_000_000
            if self._in_override is not None
            else table_in
        )
        cost_out = (
            Decimal(str(self._out_override)) * output_tokens / 1_000_000
            if self._out_override is not None
            else table_out
        )
        return (cost_in + cost_out) * (BATCH_DISCOUNT if batch else 1)

    def cost_nano(self, input_tokens: int, output_tokens: int, *, batch: bool = False) -> int:
        return usd_to_nano(self.cost_usd(input_tokens, output_tokens, batch=batch))


__all__ = ["BATCH_DISCOUNT", "NANO", "PriceUnknown", "Pricing", "nano_to_usd", "usd_to_nano"]
