"""Training checkpoints that are whole or absent, and that come often enough to matter.

The HF trainer writes `checkpoint-N/` file by file where it stands; a kill or a full disk in the middle
leaves a torn folder (a model but a cut-off `optimizer.pt`, no `trainer_state.json`) that
`get_last_checkpoint` would hand back and the next run would fail on. Here the trainer saves into a
staging folder (`<root>/.staging/`); when it reports the save done (`on_save`, after the trainer state is
written), the checkpoint gets a list of its files and sizes (`distiller_checkpoint.json`) and is renamed
into `<root>/checkpoint-N` in one step. A resume takes the newest checkpoint whose list matches its files;
anything else is torn, named in a warning and removed.

Saves come every `save_steps` steps and, with `save_minutes`, also whenever that much time has passed
since the last one, so a kill during a long training costs minutes, however long a step is.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

MARKER = "distiller_checkpoint.json"
"""Written into a checkpoint once it is whole: its files and their sizes."""
FINGERPRINT = "fingerprint.txt"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def _files(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARKER
    }


def is_complete(folder: Path) -> bool:
    """Whether `folder` is a whole checkpoint: one this module published (its file list matches, the
    trainer's state among them), or one written before it existed (no list) whose trainer state, the
    last file the trainer writes, is there and readable."""
    try:
        if not (folder / MARKER).is_file():
            json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
            return True
        listed = json.loads((folder / MARKER).read_text(encoding="utf-8"))["files"]
        return "trainer_state.json" in listed and _files(folder) == listed
    except (OSError, ValueError, KeyError, TypeError):
        return False


class CheckpointStore:
    """The checkpoints of one training (one fingerprint of base, data, config and seed) under `root`."""

    def __init__(self, root: Path, fingerprint: str, keep: int = 2) -> None:
        self.root = Path(root)
        self.fingerprint = fingerprint
        self.keep = keep
        self.staging = self.root / ".staging"

    def checkpoints(self) -> list[Path]:
        """The `checkpoint-N` folders, newest first."""
        if not self.root.is_dir():
            return []
        found = [
            (int(m.group(1)), p) for p in self.root.iterdir() if (m := _STEP.match(p.name)) and p.is_dir()
        ]
        return [p for _, p in sorted(found, reverse=True)]

    def prepare(self) -> str | None:
        """Make the folder ready for this training and return the checkpoint to resume from, if any:
        another training's checkpoints go, and so do torn ones (with a warning naming them)."""
        marker = self.root / FINGERPRINT
        if self.root.is_dir() and (
            not marker.is_file() or marker.read_text(encoding="utf-8").strip() != self.fingerprint
        ):
            shutil.rmtree(self.root, ignore_errors=True)  # another base, data or config: not ours to resume
        shutil.rmtree(self.staging, ignore_errors=True)  # a save that never finished
        resume = None
        for ckpt in self.checkpoints():
            if is_complete(ckpt):
                resume = resume or str(ckpt)
                continue
            logger.warning("ignoring torn checkpoint %s (incomplete: killed or disk full while saving)", ckpt)
            shutil.rmtree(ckpt, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        marker.write_text(self.fingerprint, encoding="utf-8")
        return resume

    def publish(self, step: int) -> Path | None:
        """Move the trainer's finished save of `step` from staging into place, whole, and keep the newest
        `keep` checkpoints."""
        src = self.staging / f"checkpoint-{step}"
        if not src.is_dir():
            return None
        tmp = src / f".{MARKER}.tmp"
        tmp.write_text(json.dumps({"step": step, "files": _files(src)}), encoding="utf-8")
        tmp.replace(src / MARKER)
        dst = self.root / src.name
        if dst.exists():
            shutil.rmtree(dst)
        src.rename(dst)
        for old in [c for c in self.checkpoints() if is_complete(c)][self.keep :]:
            shutil.rmtree(old, ignore_errors=True)  # torn ones are prepare()'s to report
        return dst

    def callbacks(self, save_minutes: float) -> list[TrainerCallback]:
        """What the trainer needs: publish each save; save by time as well as by steps."""
        out: list[TrainerCallback] = [_Publish(self)]
        if save_minutes > 0:
            out.append(SaveEvery(save_minutes * 60.0))
        return out

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class _Publish(TrainerCallback):
    def __init__(self, store: CheckpointStore) -> None:
        self.store = store

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.store.publish(int(state.global_step))


class SaveEvery(TrainerCallback):
    """Ask the trainer for a checkpoint when `seconds` have passed since the last one (or the start)."""

    def __init__(self, seconds: float, clock: Any = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.last = clock()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last = self.clock()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.clock() - self.last >= self.seconds:
            control.should_save = True
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last = self.clock()


__all__ = ["CheckpointStore", "SaveEvery", "is_complete"]
