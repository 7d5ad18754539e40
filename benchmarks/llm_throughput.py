"""Throughput of the LLM layer against the loopback test server (not a test; run it by hand).

    .venv/bin/python benchmarks/llm_throughput.py [--calls 640] [--concurrency 32] [--latency 0.2]

The server runs in its own process (so its CPU is not billed to the client) and answers every request
after `latency` seconds. The ideal rate is concurrency / latency. Three runs, each with new connections:
the bare `openai` SDK with a semaphore (the floor of what any wrapper can do), then `LLMClient` over the
OpenAI and the Anthropic wire formats with everything on — call cache (SQLite, a fresh file, so every
call is sent and written), ledger (written to Parquet), budget (priced, reserved and settled per call)
and schema validation. Reported: calls/s, its ratio to the ideal, and client CPU time per call
(time.process_time of this process). A small untimed warm-up first pays the one-time costs (SDK
imports, first connections, pyarrow's first write), so the figures are steady-state throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from distiller.config import LLMConfig
from distiller.llm import Budget, CallCache, Ledger, LLMClient, LLMRequest


class Query(BaseModel):
    query: str = Field(min_length=3)
    difficulty: int = Field(ge=1, le=5)


def start_server(latency: float) -> tuple[subprocess.Popen[bytes], str]:
    port = 20000 + os.getpid() % 20000
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distiller.testing.llm_server",
            "--port",
            str(port),
            "--latency",
            str(latency),
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "LLM test server on" not in line:
        proc.kill()
        raise SystemExit(f"the test server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{port}"


def requests(n: int) -> list[LLMRequest]:
    chunk = "Aspirin irreversibly inhibits cyclooxygenase, reducing thromboxane synthesis in platelets. " * 8
    return [
        LLMRequest.build(f"c{i}", "generate", Query, system="Write one search query.", user=f"[{i}] {chunk}")
        for i in range(n)
    ]


async def raw_openai(url: str, n: int, concurrency: int) -> None:
    import openai

    client = openai.AsyncOpenAI(api_key="sk-bench", base_url=f"{url}/v1", max_retries=0)
    sem = asyncio.Semaphore(concurrency)
    schema = Query.model_json_schema()

    async def one(req: LLMRequest) -> None:
        async with sem:
            resp = await client.chat.completions.create(
                model="test-model",
                messages=[{"role": m.role, "content": m.content} for m in req.messages],  # type: ignore[misc]
                response_format={"type": "json_schema", "json_schema": {"name": "Query", "schema": schema}},
                max_tokens=256,
            )
            Query.model_validate_json(resp.choices[0].message.content or "")

    await asyncio.gather(*(one(r) for r in requests(n)))
    await client.close()


def llm_client_run(
    url: str, provider: str, n: int, concurrency: int, tmp: Path, tag: str = "timed"
) -> Callable[[], None]:
    cfg = LLMConfig(
        provider=provider,  # type: ignore[arg-type]
        model="test-model",
        base_url=f"{url}/v1" if provider == "openai" else url,
        max_concurrency=concurrency,
        max_tokens=256,
        timeout_s=30,
        input_price_per_mtok=0.15,
        output_price_per_mtok=0.60,
    )
    cache = CallCache(tmp / f"{provider}-{tag}-cache.sqlite")
    ledger = Ledger(tmp / f"{provider}-{tag}-ledger.parquet")
    client = LLMClient(cfg, budget=Budget(100.0), cache=cache, ledger=ledger, api_key="sk-bench-key")
    reqs = requests(n)

    def run() -> None:
        results = client.run_batch_sync(reqs)
        bad = [r for r in results if r.status != "ok"]
        if bad:
            raise SystemExit(f"{len(bad)} calls did not succeed: {bad[0]}")

    return run


def measure(run: Callable[[], None]) -> tuple[float, float]:
    cpu0, t0 = time.process_time(), time.perf_counter()
    run()
    return time.perf_counter() - t0, time.process_time() - cpu0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=640)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()
    n, conc, lat = args.calls, args.concurrency, args.latency
    ideal = conc / lat

    proc, url = start_server(lat)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            runs: list[tuple[str, Callable[[], None]]] = [
                ("openai SDK + semaphore (floor)", lambda: asyncio.run(raw_openai(url, n, conc))),
                ("LLMClient, OpenAI wire", llm_client_run(url, "openai", n, conc, tmp)),
                ("LLMClient, Anthropic wire", llm_client_run(url, "anthropic", n, conc, tmp)),
            ]
            # Warm-up, not timed: one-time process costs (importing the anthropic SDK, ~1.4 s here;
            # pyarrow's first Parquet write, ~0.3 s) would otherwise be billed to whichever run is first.
            asyncio.run(raw_openai(url, conc, conc))
            for provider in ("openai", "anthropic"):
                llm_client_run(url, provider, conc, conc, tmp, tag="warmup")()
            for name, run in runs:
                wall, cpu = measure(run)
                rows.append((name, wall, n / wall, n / wall / ideal, cpu / n * 1000))
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

    table = Table(title=f"LLM throughput: {n} calls, concurrency {conc}, server latency {lat * 1000:.0f} ms")
    for col in ("run", "wall s", "calls/s", "vs ideal", "client CPU ms/call"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for name, wall, rate, ratio, cpu_ms in rows:
        table.add_row(name, f"{wall:.2f}", f"{rate:.1f}", f"{ratio:.0%}", f"{cpu_ms:.2f}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    table.caption = (
        f"ideal = concurrency / latency = {ideal:.0f} calls/s; {os.cpu_count()} CPU cores, "
        f"load average {load} (other work on the machine slows the client)"
    )
    Console().print(table)


if __name__ == "__main__":
    main()
