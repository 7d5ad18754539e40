"""The ledger: one row per call sent (each parse retry and each transport retry is a call and may be
billed), plus one row per request answered from the cache or not sent because of the budget. Written to
`<run>/ledger.parquet`.

Write-ahead: before a call is sent, a `pending` row (its call id, stage, request key and the worst case
reserved for it) is appended to the journal (`ledger.journal.jsonl`); when its outcome is known, the final
row with the same call id follows. A write to the kernel survives a SIGKILL of the process, so a call that
was in flight when the process died is still in the journal, with no final row. Such a call, and one that
timed out or lost its connection, has an unknown outcome: the provider may have billed it. It is shown
as `unknown` and charged at its reservation (`estimated` is true), never at $0, so a resumed run's budget
starts from everything that could have been billed. `entries` is that merged view (a pending row whose
final row came is dropped). The Parquet file is rewritten atomically from it at the end of each batch and
at most every `flush_every_s` seconds during one.

A run's LLM work split into shards (generation's chunk shards, the judge's sample shards: each a task
that may run in another process or on another machine) journals in the shard's own folder,
`shards/<stage>/<shard>/ledger.journal.jsonl`, under a grant of the budget
(`distiller.generation.grants`): processes never append to one file, and a kill of a worker leaves its
calls in its own journal. The run's ledger (`Ledger.in_run`, `read_ledger`) is the union of the run's
journal and every shard journal, so the budget, the report and the resume see all of them; shard rows
carry their shard's key, and are never copied into the run's journal.

With `storage_url` (no shared file system) a shard runs on a worker in that machine's copy of the run
folder, and what it journals reaches other machines only when it is pushed to the mirror. So each
remote execution journals in its own file, `ledger.<execution>.journal.jsonl` (`ledger_files`): two
executions of one shard (a revoked one still running, and the newer one) push different files, and
neither removes or overwrites the other's rows. Before its first call it journals a *hold* (a `pending`
row, attempt 0, call id `hold:<grant id>:<execution>`, `reserved_usd` what it may still spend:
`distiller.generation.grants.hold_usd`) and pushes it; when it ends, failed or not, it settles it with a
`released` row ($0, no call) and pushes its journal again. A machine that pulls the journal of an
execution killed with `kill -9` finds the hold unsettled and charges it as `unknown` at its
reservation, never $0; an unsettled hold covers the calls journaled beside it (`cover_holds`), so on
the machine that ran it, whose journal has the calls too, the execution is charged the larger of the
two, never both.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from distiller.records import Record, read_parquet, write_parquet

LEDGER_FILENAME = "ledger.parquet"
JOURNAL_FILENAME = "ledger.journal.jsonl"
JOURNALS = "ledger.*journal.jsonl"
"""Every journal of a shard's folder: the one its executions share (`ledger.journal.jsonl`) and those
of its remote executions (`ledger.<execution>.journal.jsonl`)."""
SHARD_JOURNALS = f"shards/*/*/{JOURNALS}"
"""Where the run's shards keep their journals, relative to the run folder."""
HOLD = "hold:"
"""How the call id of a hold starts (module doc): it is no call."""

LedgerStatus = Literal["ok", "parse_error", "failed", "unknown", "cached", "budget", "pending", "released"]
UNKNOWN_NOTE = (
    "outcome unknown (in flight when the process stopped, or no answer came): charged at its reservation"
)
HOLD_NOTE = (
    "a remote shard execution that never reported its end (killed, or still running): charged at what it "
    "may have spent, less the calls its journal here shows"
)


class LedgerEntry(Record):
    ts: str = Field(description="UTC time the call was sent (or answered from the cache), ISO 8601.")
    stage: str
    item_id: str
    provider: str
    model: str
    cache_key: str
    attempt: int = Field(
        description="1 for the first call of a request, 2+ for parse retries, 0 if none sent."
    )
    status: LedgerStatus = Field(
        description="ok; parse_error (answer did not parse, retried or given up); failed (an error answer, "
        "not billed); unknown (timed out, connection lost, or in flight when the process stopped: may have "
        "been billed, charged at its reservation); cached (no call); budget (not sent: budget reached); "
        "pending (journal only: sent, outcome not yet written)."
    )
    cached: bool
    input_tokens: int
    output_tokens: int
    cost_usd: float = Field(
        description="What this call cost (0 for cached and unsent rows; the reservation when `estimated`)."
    )
    reserved_usd: float = Field(description="Worst-case cost held against the budget before sending.")
    saved_usd: float = Field(default=0.0, description="Cached rows: what the original call cost.")
    latency_s: float
    finish_reason: str | None = None
    price_source: str = ""
    error: str | None = Field(default=None, description="Secrets redacted.")
    call_id: str = Field(default="", description="Joins a call's pending journal row to its final row.")
    estimated: bool = Field(
        default=False, description="cost_usd is the reserved worst case, not a bill (outcome unknown)."
    )
    shard: str = Field(default="", description="The shard whose task sent the call ('' : the stage itself).")


class Ledger:
    def __init__(
        self,
        path: Path | str | None = None,
        *,
        flush_every_s: float = 10.0,
        shards: Path | str | None = None,
        shard: str = "",
    ) -> None:
        """`path=None`: kept in memory only (tests, estimates). `shards`: the run folder whose shard
        journals (`SHARD_JOURNALS`) are part of this ledger (read, never written); by default the folder
        of a `ledger.parquet`. `shard`: this is a shard's own ledger; its rows carry the shard's key.
        The journal sits beside `path`, named after it (`ledger_files`)."""
        self.path = Path(path) if path is not None else None
        self.flush_every_s = flush_every_s
        if shards is None and self.path is not None and self.path.name == LEDGER_FILENAME and not shard:
            shards = self.path.parent  # a run's ledger: its shards' journals are part of it
        self.shards = Path(shards) if shards is not None else None
        self.shard = shard
        self._lock = threading.Lock()
        self._entries: list[LedgerEntry] = []
        # ledger.parquet: ledger.journal.jsonl; ledger.<execution>.parquet: ledger.<execution>.journal.jsonl
        self.journal = None if self.path is None else self.path.with_name(f"{self.path.stem}.journal.jsonl")
        if self.journal is not None and self.journal.is_file():
            self._entries = _read_journal(self.journal)
        elif self.path is not None and self.path.is_file():
            # The Parquet file is the union: the shards' rows stay in their own journals.
            self._entries = [e for e in read_parquet(self.path, LedgerEntry) if not e.shard]
            self._append([*self._entries])
        self._dirty = bool(self._entries) and self.path is not None and not self.path.is_file()
        self._last_flush = time.monotonic()

    @classmethod
    def in_run(cls, run_dir: Path | str) -> Ledger:
        """The run's ledger: its own journal and its shards' (see the module's doc)."""
        return cls(Path(run_dir) / LEDGER_FILENAME, shards=run_dir)

    def _shard_rows(self) -> list[LedgerEntry]:
        if self.shards is None:
            return []
        return [e for j in sorted(self.shards.glob(SHARD_JOURNALS)) for e in _read_shard_journal(j)]

    def _append(self, entries: list[LedgerEntry]) -> None:
        if self.journal is None or not entries:
            return
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(e.model_dump_json() + "\n" for e in entries)
        with self.journal.open("a+b") as f:
            # after a write torn by a kill, start on a fresh line so this row is not glued to the torn one
            if f.tell() > 0:
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    lines = "\n" + lines
            f.write(lines.encode("utf-8"))

    def add(self, entry: LedgerEntry) -> None:
        if self.shard and entry.shard != self.shard:
            entry = entry.model_copy(update={"shard": self.shard})
        with self._lock:
            self._append([entry])
            self._entries.append(entry)
            self._dirty = True
            due = time.monotonic() - self._last_flush >= self.flush_every_s
        if due:
            self.flush()

    @property
    def entries(self) -> list[LedgerEntry]:
        """Final rows, and each pending call with no final row as `unknown` at its reservation (the
        shards' too: read afresh, so a shard that finished since is counted)."""
        shard_rows = self._shard_rows()
        with self._lock:
            return merge_pending(cover_holds(self._entries) + shard_rows)

    def pending(self, call: LedgerEntry) -> None:
        """Write-ahead: journal a call about to be sent (status pending, its reservation)."""
        self.add(call.model_copy(update={"status": "pending"}))

    def flush(self) -> None:
        if self.path is None:
            return
        shard_rows = self._shard_rows()
        with self._lock:
            if not self._dirty and self.path.exists() and not shard_rows:
                return
            write_parquet(self.path, merge_pending(cover_holds(self._entries) + shard_rows), LedgerEntry)
            self._dirty = False
            self._last_flush = time.monotonic()

    def spent_by_stage(self) -> dict[str, float]:
        """What each stage spent or could have been billed (unknown outcomes at their reservation)."""
        return cost_by_stage(self.entries)

    def total_cost_usd(self) -> float:
        return sum(e.cost_usd for e in self.entries)

    def unknown_usd(self) -> float:
        """Charged at reservation because the outcome is unknown (part of the total)."""
        return sum(e.cost_usd for e in self.entries if e.estimated)


def merge_pending(rows: list[LedgerEntry]) -> list[LedgerEntry]:
    settled = {e.call_id for e in rows if e.call_id and e.status != "pending"}
    out = []
    for e in rows:
        if e.status != "pending":
            out.append(e)
        elif e.call_id not in settled:
            out.append(
                e.model_copy(
                    update={
                        "status": "unknown",
                        "cost_usd": e.reserved_usd,
                        "estimated": True,
                        "error": UNKNOWN_NOTE,
                    }
                )
            )
    return out


def cover_holds(rows: list[LedgerEntry]) -> list[LedgerEntry]:
    """One journal's rows, each hold its execution never settled as `unknown` at what of its reservation
    the calls journaled beside it do not charge already: the execution is charged the larger of its hold
    and its calls, never both. A copy of the journal pulled from the mirror has the hold alone (pushed
    before the first call); the machine that ran the execution has its calls too (write-ahead)."""
    settled = {e.call_id for e in rows if e.status != "pending"}
    holds = {e.call_id for e in rows if e.status == "pending" and e.call_id.startswith(HOLD)}
    open_holds = holds - settled
    if not open_holds:
        return rows
    calls = sum(e.cost_usd for e in merge_pending([e for e in rows if not e.call_id.startswith(HOLD)]))
    out = []
    for e in rows:
        if e.call_id in open_holds and e.status == "pending":
            covered = min(calls, e.reserved_usd)
            calls -= covered
            e = e.model_copy(
                update={
                    "status": "unknown",
                    "cost_usd": e.reserved_usd - covered,
                    "estimated": True,
                    "error": HOLD_NOTE,
                }
            )
        out.append(e)
    return out


def hold_entry(stage: str, shard: str, call_id: str, reserved_usd: float, ts: str) -> LedgerEntry:
    """A remote shard execution's hold on what it may still spend (module doc): journaled, pending."""
    return LedgerEntry(
        ts=ts,
        stage=stage,
        item_id=shard,
        provider="",
        model="",
        cache_key="",
        attempt=0,
        status="pending",
        cached=False,
        input_tokens=0,
        output_tokens=0,
        cost_usd=reserved_usd,
        reserved_usd=reserved_usd,
        latency_s=0.0,
        call_id=call_id,
        estimated=True,
        shard=shard,
    )


def released(hold: LedgerEntry, ts: str) -> LedgerEntry:
    """The row that settles a hold when its execution ends: its calls are in the journal, the hold $0."""
    return hold.model_copy(update={"ts": ts, "status": "released", "cost_usd": 0.0, "estimated": False})


def ledger_files(execution: str = "") -> tuple[str, str]:
    """A shard execution's Parquet ledger and journal, in the shard's folder: the shared ones, or a
    remote execution's own (`ledger.<execution>.parquet`, `ledger.<execution>.journal.jsonl`)."""
    if not execution:
        return LEDGER_FILENAME, JOURNAL_FILENAME
    return f"ledger.{execution}.parquet", f"ledger.{execution}.journal.jsonl"


def folder_entries(folder: Path | str) -> list[LedgerEntry]:
    """The merged rows (`Ledger.entries`) of every journal in one shard's folder: what all its
    executions journaled, here or on machines whose journals were pulled from the mirror."""
    return merge_pending([e for j in sorted(Path(folder).glob(JOURNALS)) for e in _read_shard_journal(j)])


def read_ledger(run_dir: Path | str) -> list[LedgerEntry]:
    """A run folder's ledger rows (journal first: it has every row, the Parquet file may lag)."""
    if not has_journal(run_dir) and not (Path(run_dir) / LEDGER_FILENAME).is_file():
        return []
    return Ledger.in_run(run_dir).entries


def has_journal(run_dir: Path | str) -> bool:
    """Whether the run, or any of its shards, has a journal (the ledger's full record)."""
    run_dir = Path(run_dir)
    return (run_dir / JOURNAL_FILENAME).is_file() or next(run_dir.glob(SHARD_JOURNALS), None) is not None


def manifest_stage_costs(by_ledger_stage: dict[str, float], stages: list[str]) -> dict[str, float]:
    """The ledger's costs under the manifest's stage names: a ledger stage is the manifest stage of the
    same name, else the first one of its base name (an older ledger's `mine` -> `mine_iter1`), else
    itself (spend of a stage the manifest does not list yet still adds up to the total)."""
    import re

    out: dict[str, float] = {}
    for stage, cost in by_ledger_stage.items():
        name = stage
        if stage not in stages:
            name = next((s for s in stages if re.sub(r"_iter\d+$", "", s) == stage), stage)
        out[name] = out.get(name, 0.0) + cost
    return out


def ledger_summary(run_dir: Path | str, stages: list[str]) -> dict[str, Any] | None:
    """Every cost figure of a run (manifest, status, report, artifacts) comes from here; None: no ledger."""
    rows = read_ledger(run_dir)
    if not rows:
        return None
    by_stage = manifest_stage_costs(cost_by_stage(rows), stages)
    return {
        "total_usd": round(sum(e.cost_usd for e in rows), 9),
        "by_stage": {k: round(v, 9) for k, v in by_stage.items()},
        "unknown_usd": round(sum(e.cost_usd for e in rows if e.estimated), 9),
        "calls_sent": sum(1 for e in rows if e.attempt > 0 and e.status not in ("cached", "budget")),
        "calls_unknown": sum(1 for e in rows if e.status == "unknown" and e.attempt > 0),
        # remote shard executions that never reported back: charged at their holds (no call each)
        "holds_unknown": sum(1 for e in rows if e.status == "unknown" and e.attempt == 0),
        "not_sent_budget": sum(1 for e in rows if e.status == "budget"),
    }


def cost_by_stage(rows: list[LedgerEntry]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for e in rows:
        out[e.stage] += e.cost_usd
    return dict(out)


_SHARD_JOURNALS: dict[Path, tuple[int, int, list[LedgerEntry]]] = {}
_SHARD_JOURNALS_LOCK = threading.Lock()


def _read_shard_journal(path: Path) -> list[LedgerEntry]:
    """A shard's journal (its holds covered, `cover_holds`), parsed again only when it changed: the run's
    ledger reads every shard's journal whenever it is asked (a planner sizing each grant, the stage's
    budget), and a finished shard's journal never changes."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return []
    with _SHARD_JOURNALS_LOCK:
        hit = _SHARD_JOURNALS.get(path)
    if hit is not None and hit[:2] == (st.st_size, st.st_mtime_ns):
        return hit[2]
    rows = cover_holds(_read_journal(path))
    with _SHARD_JOURNALS_LOCK:
        _SHARD_JOURNALS[path] = (st.st_size, st.st_mtime_ns, rows)
    return rows


def _read_journal(path: Path) -> list[LedgerEntry]:
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(LedgerEntry.model_validate_json(line))
        except ValueError:
            continue  # a line torn by a kill in the middle of a write: that call was never counted
    return entries


__all__ = [
    "HOLD",
    "HOLD_NOTE",
    "JOURNALS",
    "JOURNAL_FILENAME",
    "LEDGER_FILENAME",
    "SHARD_JOURNALS",
    "UNKNOWN_NOTE",
    "Ledger",
    "LedgerEntry",
    "LedgerStatus",
    "cost_by_stage",
    "cover_holds",
    "folder_entries",
    "has_journal",
    "hold_entry",
    "ledger_files",
    "ledger_summary",
    "manifest_stage_costs",
    "merge_pending",
    "read_ledger",
    "released",
]
