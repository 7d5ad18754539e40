"""Atomic file writing for exports: a killed export never leaves a half file that looks whole."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success it replaces `path`, on error it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> int:
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            # ensure_ascii=False keeps non-English text readable; JSON escapes newlines and tabs anyway.
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return len(rows)


def write_json(rows: list[dict[str, Any]], path: Path) -> int:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return len(rows)
