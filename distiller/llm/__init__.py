"""The LLM layer: providers, structured output, call cache, ledger, budget and estimates.

Stages use `LLMClient` (client.py); `estimate_cost` (estimate.py) prices a plan before anything is spent.

    class Q(BaseModel):
        query: str

    reqs = [LLMRequest.build(c.chunk_id, "generate", Q, system=SYSTEM, user=c.text) for c in chunks]
    with LLMClient.for_run(config, run_dir) as llm:  # ledger, resumed budget, shared call cache
        results = llm.run_batch_sync(reqs)  # one LLMResult per request, in order
    rows = [Q.model_validate(r.parsed) for r in results if r.ok]
    note = llm.last_summary.message  # "... budget reached after N of M ..." when it stopped
"""

from distiller.llm.budget import Budget
from distiller.llm.cache import CallCache
from distiller.llm.client import BatchSummary, LLMClient, summarize
from distiller.llm.ledger import Ledger, LedgerEntry
from distiller.llm.pricing import PriceUnknown, Pricing
from distiller.llm.types import LLMRequest, LLMResult, Message

__all__ = [
    "BatchSummary",
    "Budget",
    "CallCache",
    "LLMClient",
    "LLMRequest",
    "LLMResult",
    "Ledger",
    "LedgerEntry",
    "Message",
    "PriceUnknown",
    "Pricing",
    "summarize",
]
