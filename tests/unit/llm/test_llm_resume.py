"""Kill and resume: a real subprocess runs a batch and is killed with SIGKILL in the middle; the re-run
sends only the calls that had no answer yet (counted at the server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from helpers import TESTS_DIR
from helpers.llm_fixtures import make_client, make_requests

from distiller.llm import CallCache, Ledger
from distiller.testing.llm_server import LLMTestServer

N = 40

CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[3])
    from helpers.llm_fixtures import make_requests
    from distiller.config import LLMConfig
    from distiller.llm import Budget, CallCache, Ledger, LLMClient

    cfg = LLMConfig(provider="openai", model="test-model", base_url=sys.argv[1], max_concurrency=4,
                    input_price_per_mtok=0.0, output_price_per_mtok=0.0, timeout_s=5)
    cache = CallCache.in_dir(sys.argv[2])
    client = LLMClient(
        cfg, budget=Budget.unlimited(), cache=cache, ledger=Ledger(None), api_key="sk-child-key"
    )
    client.run_batch_sync(make_requests(int(sys.argv[4])))
    print("FINISHED")
    """
)


def test_killed_run_resumes_sending_only_the_missing_calls(llm_server: LLMTestServer, tmp_path: Path) -> None:
    llm_server.latency_s = 0.1  # 40 calls, 4 at a time: ~1 s of work to kill in the middle of
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    cache_dir = tmp_path / "cache"
    tests_dir = str(TESTS_DIR)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, str(script), llm_server.openai_base_url, str(cache_dir), tests_dir, str(N)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while llm_server.count < 14:
            assert child.poll() is None, child.stdout.read().decode() if child.stdout else ""
            assert time.monotonic() < deadline, "the child never got going"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert child.stdout is not None
    with child.stdout:
        assert "FINISHED" not in child.stdout.read().decode()

    first_run = llm_server.count
    with CallCache.in_dir(cache_dir) as cache:
        answered = len(cache)
        reqs = make_requests(N)
        llm_server.reset()
        client = make_client(llm_server, cache=cache, ledger=Ledger(None))
        done = cache.contains(client.key_for(r) for r in reqs)
        assert 0 < answered < N and len(done) == answered
        results = client.run_batch_sync(reqs)

    # Only the calls with no answer went out again: those never sent and those in flight at the kill.
    assert llm_server.count == N - answered
    resent = {r.first_user for r in llm_server.requests}
    assert all(
        reqs[i].messages[-1].content not in resent for i, r in enumerate(reqs) if client.key_for(r) in done
    )
    assert first_run - answered <= 4  # at most max_concurrency calls were lost in flight
    assert [r.status for r in results].count("cached") == answered
    assert all(r.status in ("ok", "cached") for r in results)
