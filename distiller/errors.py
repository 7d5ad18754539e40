"""Errors a user can act on. Each message names the file (and line, where there is one) and the fix."""

from __future__ import annotations

import errno


class DistillError(Exception):
    """Base class: anything the CLI prints as a one-line error instead of a traceback."""


class ConfigError(DistillError):
    """The configuration is malformed: names the field (and file/line) and the problem."""


class InputFileError(DistillError):
    """One input file cannot be used. The run goes on without it and the manifest lists it."""

    def __init__(self, path: str, reason: str, line: int | None = None) -> None:
        self.path = path
        self.reason = reason
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")


class NoInputError(DistillError):
    """Nothing usable was found in the inputs."""


class StageError(DistillError):
    """A stage could not run: names the stage and what it needs."""


class BudgetExceeded(DistillError):
    """Raised internally when a call would take spend past a budget; stages catch it and stop cleanly."""


class EvalFileError(InputFileError):
    """The evaluation file (`--eval-file`) cannot be used: the run stops, since selecting the best model
    on real queries was asked for and cannot be done."""


class EnvironmentProblem(DistillError):
    """The machine, not the input, stopped the run: a full disk, a missing permission, a name the file
    system refuses. Says what to fix; running the same command again resumes."""


_ERRNO_HINTS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
}
_FIXES = {
    errno.ENOSPC: "free some space and run the same command again (finished stages are kept)",
    errno.EDQUOT: "free some space and run the same command again (finished stages are kept)",
    errno.EACCES: "make the folder writable for this user, or choose another with --runs-dir",
    errno.EPERM: "make the folder writable for this user, or choose another with --runs-dir",
    errno.EROFS: "choose a writable folder with --runs-dir",
    errno.ENAMETOOLONG: "use a shorter --run-name or --runs-dir",
}
# Libraries that lose the errno (pyarrow, torch's writer) still say what happened in words.
_TEXT_HINTS = (
    ("no space left on device", errno.ENOSPC),
    ("disk quota exceeded", errno.EDQUOT),
    ("permission denied", errno.EACCES),
    ("file name too long", errno.ENAMETOOLONG),
)


def _errno_of(e: BaseException) -> tuple[int, BaseException] | None:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _ERRNO_HINTS:
            return cur.errno, cur
        text = str(cur).lower()
        for needle, code in _TEXT_HINTS:
            if needle in text:
                return code, cur
        cur = cur.__cause__ or cur.__context__
    return None


def environment_error(e: BaseException) -> str | None:
    """One line for an error the machine caused (full disk, permissions, a name too long), or None for
    anything else (a bug keeps its traceback)."""
    if isinstance(e, DistillError):
        return None
    found = _errno_of(e)
    if found is None:
        return None
    code, err = found
    where = getattr(err, "filename", None)
    shown = f" ({where})" if where else ""
    return f"{_ERRNO_HINTS[code]}{shown}: {_FIXES[code]}"
