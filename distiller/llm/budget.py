"""Spending caps: one for the run, one per stage group. Reserve the worst case before a call, settle to
the real cost after it.

Invariant: for every cap, spent + reserved <= limit at all times. `reserve()` only succeeds when the
worst-case cost of the call fits beside what is spent and what other calls in flight have reserved, and
`settle()` replaces the reservation by the real cost (never more than the reservation when the provider's
usage stays within the worst case the caller computed). So spend can only pass a cap if a provider bills
more than the prompt-bytes bound plus `max_tokens` allows; the client logs and records that case.

Amounts are integer nano-dollars (exact sums). A cap of 0 is a kill switch: nothing is sent, even to a
free (self-hosted) model. A limit of None is no cap.

Stage groups: the config caps `generation`, `validation` and `mining`; a stage name maps to its group
through `STAGE_GROUPS` (a stage that is not listed is its own group with no cap but the run's), and a
group to its config field through `GROUP_BUDGET_FIELDS`. Per-iteration stages (`mine_iter2`) are their
stage's. This is the one mapping: the report and the estimate use it too.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from distiller.config import BudgetConfig
from distiller.errors import BudgetExceeded
from distiller.llm.pricing import NANO, nano_to_usd, usd_to_nano

RUN = "run"

STAGE_GROUPS: dict[str, str] = {
    "generate": "generation",
    "generation": "generation",
    "bootstrap": "generation",
    "concepts": "generation",
    "validate": "validation",
    "validation": "validation",
    "judge": "validation",
    "mine": "mining",
    "mining": "mining",
    "documents": "generation",
}
GROUP_BUDGET_FIELDS: dict[str, str] = {
    "generation": "generation_usd",
    "validation": "validation_usd",
    "mining": "mining_usd",
}
"""Stage group -> the `budget.<field>` of the config that caps it."""


def base_stage(stage: str) -> str:
    """'mine_iter2' -> 'mine': per-iteration stages share their stage's budget."""
    return re.sub(r"_iter\d+$", "", stage)


def stage_group(stage: str) -> str:
    stage = base_stage(stage)
    return STAGE_GROUPS.get(stage, stage)


def budget_field(stage: str) -> str | None:
    """The config field (`budget.<field>`) that caps this stage besides `run_usd`; None: only the run's."""
    return GROUP_BUDGET_FIELDS.get(stage_group(stage))


@dataclass(frozen=True)
class Reservation:
    id: int
    stage: str
    nano: int

    @property
    def usd(self) -> float:
        return nano_to_usd(self.nano)


class _Cap:
    __slots__ = ("limit", "reserved", "spent")

    def __init__(self, limit: int | None, spent: int = 0) -> None:
        self.limit = limit
        self.spent = spent
        self.reserved = 0

    def fits(self, nano: int) -> bool:
        if self.limit is None:
            return True
        if self.limit == 0:
            return False  # the kill switch: not even a free call
        return self.spent + self.reserved + nano <= self.limit


class Budget:
    """Thread-safe: several stages (threads) may share one run budget."""

    def __init__(
        self,
        run_limit_usd: float | None,
        group_limits_usd: Mapping[str, float | None] | None = None,
        spent_usd: Mapping[str, float] | None = None,
    ) -> None:
        """`spent_usd`: what each stage already spent in this run (read back from the ledger on resume)."""
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._open: dict[int, Reservation] = {}
        spent_groups: dict[str, int] = {}
        for stage, usd in (spent_usd or {}).items():
            g = stage_group(stage)
            spent_groups[g] = spent_groups.get(g, 0) + usd_to_nano(usd)
        self._run = _Cap(_nano_or_none(run_limit_usd), sum(spent_groups.values()))
        self._groups: dict[str, _Cap] = {
            g: _Cap(_nano_or_none(lim), spent_groups.get(g, 0)) for g, lim in (group_limits_usd or {}).items()
        }
        for g, nano in spent_groups.items():
            self._groups.setdefault(g, _Cap(None, nano))

    @classmethod
    def from_config(cls, cfg: BudgetConfig, spent_usd: Mapping[str, float] | None = None) -> Budget:
        groups = {g: getattr(cfg, f) for g, f in GROUP_BUDGET_FIELDS.items()}
        return cls(cfg.run_usd, groups, spent_usd)

    @classmethod
    def unlimited(cls) -> Budget:
        """No cap at all (tests, self-hosted runs). Unpriced models are only allowed under this."""
        return cls(None)

    # -- queries -------------------------------------------------------------------------------------
    def _caps(self, stage: str) -> list[tuple[str, _Cap]]:
        g = stage_group(stage)
        cap = self._groups.get(g)
        if cap is None:
            cap = self._groups[g] = _Cap(None)
        return [(RUN, self._run), (g, cap)]

    def is_unlimited(self, stage: str) -> bool:
        with self._lock:
            return all(c.limit is None for _, c in self._caps(stage))

    def is_zero(self, stage: str) -> bool:
        with self._lock:
            return any(c.limit == 0 for _, c in self._caps(stage))

    def remaining_usd(self, stage: str) -> float | None:
        with self._lock:
            left = [c.limit - c.spent - c.reserved for _, c in self._caps(stage) if c.limit is not None]
        return nano_to_usd(max(0, min(left))) if left else None

    def spent_usd(self, stage: str | None = None) -> float:
        with self._lock:
            if stage is None:
                return nano_to_usd(self._run.spent)
            return nano_to_usd(self._caps(stage)[1][1].spent)

    def in_flight(self, stage: str | None = None) -> int:
        """Open reservations (of this stage's group and the run, or all)."""
        with self._lock:
            if stage is None:
                return len(self._open)
            g = stage_group(stage)
            return sum(1 for r in self._open.values() if stage_group(r.stage) == g)

    def describe(self, stage: str) -> str:
        with self._lock:
            parts = []
            for name, c in self._caps(stage):
                if c.limit is not None:
                    parts.append(f"{name} ${nano_to_usd(c.spent):.4f} of ${nano_to_usd(c.limit):.4f}")
        return ", ".join(parts) or "no cap"

    # -- reserve / settle ----------------------------------------------------------------------------
    def reserve(self, stage: str, usd: float | None = None, *, nano: int | None = None) -> Reservation:
        """Hold the worst-case cost of a call. Raises BudgetExceeded when it does not fit every cap."""
        amount = nano if nano is not None else usd_to_nano(usd or 0)
        if amount < 0:
            raise ValueError("a reservation cannot be negative")
        with self._lock:
            caps = self._caps(stage)
            for name, cap in caps:
                if not cap.fits(amount):
                    assert cap.limit is not None
                    raise BudgetExceeded(
                        f"{name} budget: a call costing up to ${nano_to_usd(amount):.6f} does not fit "
                        f"(spent ${nano_to_usd(cap.spent):.6f}, in flight ${nano_to_usd(cap.reserved):.6f}, "
                        f"limit ${nano_to_usd(cap.limit):.6f})"
                    )
            for _, cap in caps:
                cap.reserved += amount
            r = Reservation(next(self._ids), stage, amount)
            self._open[r.id] = r
            return r

    def settle(self, reservation: Reservation, actual_nano: int) -> None:
        """Commit the real cost and release the rest of the reservation (idempotent per reservation)."""
        with self._lock:
            if self._open.pop(reservation.id, None) is None:
                return
            for _, cap in self._caps(reservation.stage):
                cap.reserved -= reservation.nano
                cap.spent += max(0, actual_nano)

    def release(self, reservation: Reservation) -> None:
        """Nothing was spent (the call was not sent, or failed before the provider billed it)."""
        self.settle(reservation, 0)


def _nano_or_none(usd: float | None) -> int | None:
    if usd is None:
        return None
    # Truncated (costs are rounded up): rounding never makes a cap larger than the user wrote.
    return int(Decimal(str(usd)) * NANO)


__all__ = [
    "GROUP_BUDGET_FIELDS",
    "RUN",
    "STAGE_GROUPS",
    "Budget",
    "Reservation",
    "base_stage",
    "budget_field",
    "stage_group",
]
