"""One process at a time per run folder: an OS file lock on `<run>/.lock`.

Two `distill run --run-name same` started together would both train in full and write the same temporary
names and manifest. The second one refuses at once instead (it does not wait: a run can take hours, and a
command that hangs silently is worse than one that says why), naming the process that holds the run.
Runs with different names do not lock each other; they share the stage cache, whose entries appear whole
or not at all (`distiller.store.StageCache.put`).

The lock is `fcntl.flock`, held by an open file: the OS releases it when the process ends, however it
ends (kill -9 included), so a later run never has to clean anything up. It is re-entrant within one
process (the CLI takes it, then the flow it starts takes it again), and a process that holds it can use
threads or Dask workers for the stages: those do not lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from distiller.errors import DistillError

LOCK_NAME = ".lock"


class RunLocked(DistillError):
    """Another process is running this run folder."""


_held: dict[Path, tuple[IO[str], int]] = {}
_guard = threading.Lock()


def _holder(f: IO[str]) -> str:
    with contextlib.suppress(OSError, ValueError):
        f.seek(0)
        info = json.loads(f.read() or "{}")
        if info.get("pid"):
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
            host = f" on {info['host']}" if info.get("host") and info["host"] != socket.gethostname() else ""
            return f"process {info['pid']}{host} (since {since}: {info.get('command', '?')})"
    return "another process"


@contextlib.contextmanager
def run_lock(run_dir: Path | str) -> Iterator[None]:
    """Hold the run folder's lock for the block; raise `RunLocked` naming the holder if it is taken."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the run goes on unlocked, as before
        yield
        return
    run_dir = Path(run_dir).resolve()
    with _guard:
        if run_dir in _held:
            f, n = _held[run_dir]
            _held[run_dir] = (f, n + 1)
            reentered = True
        else:
            reentered = False
    if not reentered:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = (run_dir / LOCK_NAME).open("a+", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(f)
            f.close()
            raise RunLocked(
                f"run {run_dir.name!r} is in use by {holder}: wait for it to finish (or stop it), or "
                f"choose another --run-name; runs with other names may run at the same time"
            ) from None
        except BaseException:
            f.close()
            raise
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.time(),
            "command": " ".join(sys.argv)[:120],
        }
        with contextlib.suppress(OSError):  # who holds it is news for others, not a reason to fail
            f.seek(0)
            f.truncate()
            f.write(json.dumps(info))
            f.flush()
        with _guard:
            _held[run_dir] = (f, 1)
    try:
        yield
    finally:
        with _guard:
            f, n = _held[run_dir]
            if n > 1:
                _held[run_dir] = (f, n - 1)
            else:
                del _held[run_dir]
                f.close()  # releases the lock; the file stays (removing it would race a new holder)


__all__ = ["LOCK_NAME", "RunLocked", "run_lock"]
