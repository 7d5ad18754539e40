"""Export a run's data for the tools that train on it.

`export_run` is the whole API (the CLI's `distill export` and the flow's export stage are thin wrappers):

    exports/<format>/<split>.<ext>   one file per non-empty split (train / val / test)
    exports/<format>/README.md       data card: counts, approval, teacher/judge, cost, licence, command
    exports/alpaca|sharegpt/dataset_info.json   the LLaMA-Factory registry entry for the files
    exports/hf/{qa,triplets,queries}/           `datasets.load_from_disk` folders

Formats: jsonl, json, csv, tsv, alpaca, sharegpt (Q&A pairs); triplets, splade (retrieval); hf (all).
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from pydantic import BaseModel, Field

from distiller.config import SplitConfig
from distiller.errors import ConfigError
from distiller.export.datacard import render_datacard
from distiller.export.hf import write_hf
from distiller.export.io import atomic_path
from distiller.export.qa import QA_WRITERS, dataset_info, dump_dataset_info
from distiller.export.retrieval import write_splade_jsonl, write_splade_raw_tsv, write_triplets
from distiller.export.rows import ExportRows, Policy, collect_rows
from distiller.export.run import RunView
from distiller.splits import SPLITS, validate_ratios

FORMATS: dict[str, str] = {
    **dict.fromkeys(QA_WRITERS, "qa"),
    "triplets": "triplets",
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


def parse_formats(formats: list[str] | str) -> list[str]:
    """Accept a list or comma-separated names; unknown names raise an error that lists the choices."""
    items = [formats] if isinstance(formats, str) else list(formats)
    names = [f.strip().lower() for item in items for f in item.split(",") if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise ConfigError(f"export format(s) {unknown or names}: choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def split_from_ratios(train_ratio: float, val_ratio: float) -> SplitConfig:
    """A SplitConfig from CLI ratios, with a one-line error (not pydantic's report) when they are wrong."""
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


def _write_format(fmt: str, rows: ExportRows, folder: Path, run_name: str) -> dict[str, int]:
    """Write one format's files into `folder`; return {file name relative to folder: rows}."""
    files: dict[str, int] = {}
    if fmt in QA_WRITERS:
        ext, writer = QA_WRITERS[fmt]
        written: dict[str, str] = {}
        for s in SPLITS:
            if rows.qa[s]:
                files[f"{s}.{ext}"] = writer(rows.qa[s], folder / f"{s}.{ext}")
                written[s] = f"{s}.{ext}"
        if fmt in ("alpaca", "sharegpt") and written:
            dump_dataset_info(dataset_info(fmt, run_name, written), folder / "dataset_info.json")
    elif fmt == "triplets":
        for s in SPLITS:
            if rows.triplets[s]:
                files[f"{s}.jsonl"] = write_triplets(rows.triplets[s], folder / f"{s}.jsonl")
    elif fmt == "splade":
        for s in SPLITS:
            if rows.triplets[s]:
                files[f"{s}.jsonl"] = write_splade_jsonl(rows.triplets[s], folder / f"{s}.jsonl")
                files[f"{s}.raw.tsv"] = write_splade_raw_tsv(rows.triplets[s], folder / f"{s}.raw.tsv")
    elif fmt == "hf":
        for kind, by_split in (("qa", rows.qa), ("triplets", rows.triplets), ("queries", rows.queries)):
            for s, n in write_hf(kind, by_split, folder / kind).items():
                files[f"{kind}/{s}"] = n
    return files


def export_run(
    run_dir: Path,
    formats: list[str] | str,
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
    for fmt in names:
        # Build the whole folder beside the old one, then swap: readers never see a mix of two exports.
        final = out_dir / fmt
        tmp = out_dir / f".{fmt}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        files = _write_format(fmt, rows, tmp, view.name)
        card = render_datacard(view, rows, fmt, FORMATS[fmt], files, command)
        with atomic_path(tmp / "README.md") as p:
            p.write_text(card, encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        result.files.update({f"{fmt}/{name}": n for name, n in files.items()})
        if not files:
            result.notes.append(f"{fmt}: no rows to export (README.md written)")
    return result


__all__ = ["FORMATS", "ExportResult", "RunView", "export_run", "parse_formats", "split_from_ratios"]
