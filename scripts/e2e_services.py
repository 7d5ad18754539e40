"""Start and stop a production-shaped Prefect setup from Debian's and PyPI's packages alone: a private
PostgreSQL cluster on 127.0.0.1, a Prefect server on it, and process workers.

`tests/e2e/test_e2e_server.py` uses it; by hand it brings the same stack up until Ctrl-C:

    .venv/bin/python scripts/e2e_services.py up --dir /tmp/distill-stack

Every process is started in its own session (process group) and stopped by that group's id, so a
test that fails still leaves nothing running. PostgreSQL refuses to run as root, so as root the
cluster belongs to the `postgres` system user (made by Debian's package; created when missing).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin: prefect, distill
PG_USER = "postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run scripts/install-system-deps.sh")
    return found[-1].parent


def _tail(path: Path, n: int = 40) -> str:
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


# -- processes ---------------------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the whole process group (a worker's flow runs are its children), then SIGKILL."""
        if not self.alive():
            return
        pgid = self.popen.pid  # start_new_session: the group id is the leader's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # stragglers of the group too, even if the leader exited
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def spawn(name: str, cmd: Sequence[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(cmd), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Proc(name, popen, log)


def wait_http(url: str, timeout_s: float, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{_tail(proc.log)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout_s:.0f}s" + (f":\n{_tail(proc.log)}" if proc else ""))


# -- PostgreSQL ----------------------------------------------------------------------------------------
def _ensure_pg_user() -> None:
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", PG_USER], check=True)


def _as_pg_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class Postgres:
    """A private cluster in a temporary folder (outside pytest's root-only tmp, so `postgres` can read it)."""

    port: int = field(default_factory=free_port)
    user: str = "prefect"
    password: str = field(default_factory=lambda: secrets.token_hex(12))
    database: str = "prefect"
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="distill-pg-")))

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> None:
        bindir = pg_bin()
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        self.dir.chmod(0o700)
        run = _as_pg_user
        if os.geteuid() == 0:
            _ensure_pg_user()
            shutil.chown(self.dir, PG_USER)
            shutil.chown(pwfile, PG_USER)
        subprocess.run(
            run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    self.user,
                    "--pwfile",
                    str(pwfile),
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-sync",  # a throwaway cluster: durability is not the point
                ]
            ),
            check=True,
            capture_output=True,
        )
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off"
        subprocess.run(
            run(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.dir / "log"),
                    "-o",
                    opts,
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        env = {**os.environ, "PGPASSWORD": self.password}
        subprocess.run(
            [
                str(bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                self.database,
            ],
            check=True,
            env=env,
            capture_output=True,
        )

    def postmaster_pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(pidfile.read_text().splitlines()[0])
        return None

    def stop(self) -> None:
        pid = self.postmaster_pid()
        if pid is not None:
            subprocess.run(
                _as_pg_user(
                    [str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]
                ),
                capture_output=True,
                timeout=30,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # no-op when pg_ctl stopped it
        shutil.rmtree(self.dir, ignore_errors=True)


# -- Prefect ---------------------------------------------------------------------------------------------
def prefect_env(home: Path, api_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of every Prefect process: its own home, the server it talks to, no analytics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DISTILL_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_CLI_PROMPT="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env


@dataclass
class Stack:
    """PostgreSQL + Prefect server + workers, all stopped by `close()`."""

    dir: Path
    postgres: Postgres | None = None
    procs: list[Proc] = field(default_factory=list)
    api_url: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        return prefect_env(self.dir / "prefect-home", self.api_url or None, **extra)

    def start_server(self, cmd: Sequence[str], port: int, timeout_s: float = 120) -> Proc:
        assert self.postgres is not None
        self.api_url = f"http://127.0.0.1:{port}/api"
        env = prefect_env(
            self.dir / "prefect-home",
            None,
            PREFECT_API_DATABASE_CONNECTION_URL=self.postgres.url,
            PREFECT_UI_ENABLED="false",  # the test reads the API; the UI's static build only costs time
        )
        proc = spawn("prefect server", cmd, env, self.dir / "server.log")
        self.procs.append(proc)
        wait_http(f"{self.api_url}/health", timeout_s, proc)
        return proc

    def start_worker(self, cmd: Sequence[str], name: str, health_port: int, **extra: str) -> Proc:
        env = self.env(
            PREFECT_WORKER_WEBSERVER_PORT=str(health_port),
            PREFECT_WORKER_WEBSERVER_HOST="127.0.0.1",
            **extra,
        )
        proc = spawn(name, cmd, env, self.dir / f"{name}.log")
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if self.postgres is not None:
            self.postgres.stop()


@contextlib.contextmanager
def stack(base: Path) -> Iterator[Stack]:
    s = Stack(dir=base)
    try:
        s.postgres = Postgres()
        s.postgres.start()
        yield s
    finally:
        s.close()


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up"])
    ap.add_argument("--dir", type=Path, default=Path(tempfile.mkdtemp(prefix="distill-stack-")))
    ap.add_argument("--port", type=int, default=4200)
    args = ap.parse_args(argv)

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # a background job ignores SIGINT: TERM must clean up as well

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with stack(args.dir) as s:
        s.start_server(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(args.port)],
            args.port,
        )
        print(f"export PREFECT_API_URL={s.api_url}\nlogs in {args.dir}; Ctrl-C stops everything", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
