"""Checks that fail a run before anything starts, with one line that says what to change: `distill run`
and `distill bootstrap` make them before the flow starts, and the `distill` flow makes them again first
thing, so a deployment run (which skips the command line) fails just as fast and with the same message.
"""

from __future__ import annotations

from distiller.config import DistillConfig
from distiller.errors import DistillError


def preflight(cfg: DistillConfig) -> None:
    """Raise a DistillError for an unknown template or language, a model whose price is unknown (its
    spend could not be kept within the budget), or bootstrap mode with the offline teacher (a domain's
    knowledge cannot come from it)."""
    from distiller.generation import bootstrap_mode
    from distiller.generation.validation import judge_endpoint
    from distiller.llm.pricing import Pricing

    if not cfg.input.qa_file and not cfg.teacher.offline:
        from distiller.generation.context import GenContext

        GenContext.from_config(cfg)  # an unknown template or language first: it lists the known ones
    if not cfg.input.qa_file:
        endpoints = [cfg.teacher] + ([judge_endpoint(cfg)] if cfg.validation.enabled else [])
        for endpoint in {id(e): e for e in endpoints}.values():
            if not endpoint.offline and not (pricing := Pricing(endpoint)).known:
                raise DistillError(
                    pricing.unknown_message() + " On the command line: --input-price and --output-price."
                )
    if bootstrap_mode(cfg) and cfg.teacher.offline:
        raise DistillError(
            "bootstrap mode (--domain, no documents) needs an LLM teacher: --teacher openai --model "
            "gpt-4o-mini (OPENAI_API_KEY), --teacher anthropic --model NAME, or --teacher openai "
            "--base-url http://localhost:8000/v1 for an OpenAI-compatible server"
        )


__all__ = ["preflight"]
