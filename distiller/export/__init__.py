"""Export a run's data for the tools that train on it.

`export_run` is the whole API (the CLI's `distill export` and the flow's export stage are thin wrappers):

    exports/<format>/<split>.<ext>   one file per non-empty split (train / validation / test)
    exports/<format>/README.md       data card: counts, approval, teacher/judge, cost, licence, command
    exports/alpaca|sharegpt/dataset_info.json   the LLaMA-Factory registry entry for the files
    exports/hf/                      `datasets.load_from_disk` folders (layout: `distiller.export.hf`)
    exports/split.json               the split every format in this folder was made with

Formats: jsonl, json, csv, tsv, alpaca, sharegpt (Q&A pairs); triplets (anchor/positive/negative only),
ntuple (anchor/positive/negative_1..n), triplets-full (with ids and scores), splade (retrieval); hf (all).

One folder never mixes two splits: when an export's split (ratios, seed, unvalidated policy) differs from
the one recorded in `split.json`, every format already in the folder is written again with the new one.
"""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from distiller.config import SplitConfig
from distiller.errors import ConfigError
from distiller.export.datacard import render_datacard
from distiller.export.hf import write_hf
from distiller.export.io import atomic_path, write_jsonl
from distiller.export.qa import QA_WRITERS, dataset_info, dump_dataset_info
from distiller.export.retrieval import (
    group_negatives,
    ntuple_rows,
    ntuple_size,
    write_splade_jsonl,
    write_splade_raw_tsv,
    write_triplets,
    write_triplets_full,
)
from distiller.export.rows import SPLIT_NAMES, ExportRows, Policy, collect_rows, run_ratios
from distiller.runview import RunView
from distiller.splits import SPLITS, validate_ratios

FORMATS: dict[str, str] = {
    **dict.fromkeys(QA_WRITERS, "qa"),
    "triplets": "triplets",
    "ntuple": "triplets",
    "triplets-full": "triplets",
    "splade": "triplets",
    "hf": "qa+triplets+queries",
}
"""format -> the kinds of rows it carries"""


class ExportResult(BaseModel):
    out_dir: Path
    formats: list[str]
    files: dict[str, int] = Field(default_factory=dict, description="path relative to out_dir -> rows")
    counts: dict[str, dict[str, int]] = Field(default_factory=dict, description="kind -> split -> rows")
    dropped: dict[str, int] = Field(default_factory=dict, description="why -> rows left out")
    notes: list[str] = Field(default_factory=list)
    resplit: bool = False
    command: str = ""


def parse_formats(formats: Sequence[str] | str) -> list[str]:
    """Accept a list or comma-separated names; unknown names raise an error that lists the choices."""
    items = [formats] if isinstance(formats, str) else list(formats)
    names = [f.strip().lower() for item in items for f in item.split(",") if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise ConfigError(f"export format(s) {unknown or names}: choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def split_from_ratios(
    train_ratio: float | None, val_ratio: float | None, run_dir: Path | str | None = None
) -> SplitConfig:
    """A SplitConfig from CLI ratios, with a one-line error (not pydantic's report) when they are wrong.
    A ratio left out is the run's own (`split.*` in its manifest), else the config default."""
    if train_ratio is None or val_ratio is None:
        run_train, run_val, _ = run_ratios(RunView(run_dir)) if run_dir is not None else (None, None, None)
        defaults = SplitConfig()
        if train_ratio is None:
            train_ratio = run_train if run_train is not None else defaults.train_ratio
        if val_ratio is None:
            val_ratio = run_val if run_val is not None else defaults.val_ratio
    try:
        validate_ratios(train_ratio, val_ratio)
        return SplitConfig(train_ratio=train_ratio, val_ratio=val_ratio)
    except ValueError as e:
        raise ConfigError(f"--train-ratio/--val-ratio: {e}") from None


def default_command(run_dir: Path, formats: list[str], split: SplitConfig | None, seed: int) -> str:
    parts = ["distill", "export", str(run_dir)]
    for f in formats:
        parts += ["--format", f]
    if split is not None:
        parts += ["--split", "--train-ratio", str(split.train_ratio), "--val-ratio", str(split.val_ratio)]
    parts += ["--seed", str(seed)]
    return shlex.join(parts)


def _write_format(fmt: str, rows: ExportRows, folder: Path, run_name: str, ntuple_n: int) -> dict[str, int]:
    """Write one format's files into `folder`; return {file name relative to folder: rows}."""
    files: dict[str, int] = {}
    if fmt in QA_WRITERS:
        ext, writer = QA_WRITERS[fmt]
        written: dict[str, str] = {}
        for s in SPLITS:
            name = f"{SPLIT_NAMES[s]}.{ext}"
            if rows.qa[s]:
                files[name] = writer(rows.qa[s], folder / name)
                written[SPLIT_NAMES[s]] = name
        if fmt in ("alpaca", "sharegpt") and written:
            dump_dataset_info(dataset_info(fmt, run_name, written), folder / "dataset_info.json")
    elif fmt in ("triplets", "triplets-full", "ntuple", "splade"):
        for s in SPLITS:
            base = SPLIT_NAMES[s]
            trips = rows.triplets[s]
            if not trips:
                continue
            if fmt == "triplets":
                files[f"{base}.jsonl"] = write_triplets(trips, folder / f"{base}.jsonl")
            elif fmt == "triplets-full":
                files[f"{base}.jsonl"] = write_triplets_full(trips, folder / f"{base}.jsonl")
            elif fmt == "ntuple":
                tuples, _ = ntuple_rows(trips, ntuple_n)
                if tuples:
                    files[f"{base}.jsonl"] = write_jsonl(tuples, folder / f"{base}.jsonl")
            else:
                files[f"{base}.jsonl"] = write_splade_jsonl(trips, folder / f"{base}.jsonl")
                files[f"{base}.raw.tsv"] = write_splade_raw_tsv(trips, folder / f"{base}.raw.tsv")
    elif fmt == "hf":
        # The top level is the training table (load_from_disk("exports/hf")); the others are subfolders.
        for kind, sub, by_split in (
            ("triplets", "", rows.triplets),
            ("qa", "qa", rows.qa),
            ("queries", "queries", rows.queries),
            ("triplets-full", "triplets-full", rows.triplets),
        ):
            for name, n in write_hf(kind, by_split, folder / sub if sub else folder).items():
                files[f"{sub}/{name}" if sub else name] = n
    return files


SPLIT_MARKER = "split.json"


def _split_signature(rows: ExportRows) -> dict[str, object]:
    plan = rows.plan
    return {
        "resplit": plan.resplit,
        "train_ratio": plan.train_ratio,
        "val_ratio": plan.val_ratio,
        "seed": plan.seed,
        "unvalidated_policy": rows.policy,
    }


def _stale_formats(out_dir: Path, signature: dict[str, object], names: list[str]) -> list[str]:
    """Formats already in `out_dir` made with another split (or of unknown split): they must be written
    again so that the folder holds one split only."""
    present = [f for f in FORMATS if (out_dir / f).is_dir() and f not in names]
    marker = out_dir / SPLIT_MARKER
    if not present:
        return []
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = None
    return [] if recorded == signature else present


def export_run(
    run_dir: Path,
    formats: Sequence[str] | str,
    split: SplitConfig | None,
    seed: int | None = None,
    out_dir: Path | None = None,
    command: str | None = None,
    unvalidated_policy: Policy | None = None,
) -> ExportResult:
    """Export a run's approved (and, by policy, unvalidated) rows in each format, split by source document.

    `split`: ratios for the export; when they (and the seed) match the run's, the run's own split is kept,
    otherwise documents are re-split; None keeps the run's split. `seed` None: the run's seed.
    `unvalidated_policy` None: the run's `validation.unvalidated_policy`. `command` is recorded in each
    data card (default: the equivalent `distill export` command line).
    Raises ConfigError (unknown format, bad ratios) and NotARunError (no manifest.json): both DistillError."""
    run_dir = Path(run_dir)
    names = parse_formats(formats)
    if split is not None:
        validate_ratios(split.train_ratio, split.val_ratio)
    view = RunView(run_dir, require_manifest=True)
    if seed is None:
        seed = int(view.config_get("seed", 13))
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "exports"
    command = command or default_command(run_dir, names, split, seed)
    rows = collect_rows(view, split, seed, unvalidated_policy)

    result = ExportResult(
        out_dir=out_dir,
        formats=names,
        counts=rows.counts(),
        dropped=dict(rows.dropped),
        notes=list(rows.notes),
        resplit=rows.plan.resplit,
        command=command,
    )
    signature = _split_signature(rows)
    stale = _stale_formats(out_dir, signature, names)
    if stale:
        result.notes.append(
            f"{', '.join(stale)} in {out_dir} had another split: written again with this one, so the "
            "folder holds one split"
        )
    all_triplets = [t for s in SPLITS for t in rows.triplets[s]]
    ntuple_n = ntuple_size(group_negatives(all_triplets))
    if "ntuple" in names + stale and all_triplets:
        short = sum(ntuple_rows(rows.triplets[s], ntuple_n)[1] for s in SPLITS)
        if short:
            result.dropped[f"ntuple: (query, positive) groups with fewer than {ntuple_n} negatives"] = short
    for fmt in names + stale:
        # Build the whole folder beside the old one, then swap: readers never see a mix of two exports.
        final = out_dir / fmt
        tmp = out_dir / f".{fmt}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        files = _write_format(fmt, rows, tmp, view.name, ntuple_n)
        card = render_datacard(view, rows, fmt, FORMATS[fmt], files, command)
        with atomic_path(tmp / "README.md") as p:
            p.write_text(card, encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        result.files.update({f"{fmt}/{name}": n for name, n in files.items()})
        if not files:
            result.notes.append(f"{fmt}: no rows to export (README.md written)")
    with atomic_path(out_dir / SPLIT_MARKER) as p:
        p.write_text(json.dumps(signature, indent=1) + "\n", encoding="utf-8")
    result.formats = names + stale
    return result


__all__ = ["FORMATS", "ExportResult", "RunView", "export_run", "parse_formats", "split_from_ratios"]
