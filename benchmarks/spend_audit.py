"""Spend audit: what the provider billed vs the budget vs the ledger, and the estimate vs the bill, for
the LLM stages (ingest -> generate -> validate) of a run on examples/medquad-mini against the loopback
server, which bills every request it starts answering (distiller/testing/llm_server.py).

Scenarios (each in a fresh runs folder and call cache; the run itself is a child process, as a user's):
  faults  ~20% of requests get a fault (429, 500, dropped connection, an answer slower than the client's
          timeout, malformed / truncated / wrong-schema JSON); a budget that covers the run.
  kills   the child is SIGKILLed three times during generate with calls in flight, then resumed to the
          end, under a budget short of the run (the issue's $0.03 case); `kills-ample` the same under a
          budget that covers it.
  tight   a budget far short of the run (the issue's $0.02 case): what each step got.
  clean   no faults, a budget that covers the run: the estimate made before the run against the bill.

    PYTHONPATH=. python benchmarks/spend_audit.py [--scenario faults kills tight] [--json out.json]

Prices are the issue's ($0.15 / $0.60 per million tokens). The answers come from the scripted teacher of
the tests (tests/helpers/generation_responder.py), which shapes its JSON from each prompt as a model would.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers.generation_responder import ScriptedTeacher  # noqa: E402

from distiller.llm.ledger import Ledger  # noqa: E402
from distiller.testing.llm_server import LLMTestServer  # noqa: E402

IN_PRICE, OUT_PRICE = 0.15, 0.60
CLIENT_TIMEOUT_S = 2.0
SLOW_S = 3.0  # a "slow" answer: past the client's timeout (the was past 60 s; scaled down)

CHILD = textwrap.dedent(
    """
    import json, sys
    from distiller.config import load_config
    from distiller.stages import generate_stage, ingest_stage, open_store, plan_llm_budget, validate_stage
    cfg = load_config(sys.argv[1], {})
    store = open_store(cfg)
    ingest_stage(store, cfg)
    plan = plan_llm_budget(store, cfg, announce=False)
    print("PLAN", plan.coverage() if plan else "-", flush=True)
    generate_stage(store, cfg)
    validate_stage(store, cfg)
    print("DONE", flush=True)
    """
)


def _config(work: Path, url: str, budget: float) -> Path:
    cfg = {
        "runs_dir": str(work / "runs"),
        "run_name": "audit",
        "cache_dir": str(work / "cache"),
        "input": {"paths": [str(ROOT / "examples" / "medquad-mini")]},
        "teacher": {
            "provider": "openai",
            "model": "test-model",
            "base_url": url,
            "input_price_per_mtok": IN_PRICE,
            "output_price_per_mtok": OUT_PRICE,
            "timeout_s": CLIENT_TIMEOUT_S,
            "max_retries": 3,
            "max_concurrency": 8,
        },
        "budget": {"run_usd": budget},
    }
    path = work / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def _child(script: Path, config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(
        [sys.executable, str(script), str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )


def _figures(name: str, server: LLMTestServer, run_dir: Path, budget: float, extra: dict[str, Any]) -> dict:
    ledger = Ledger(run_dir / "ledger.parquet")
    rows = ledger.entries
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = manifest.get("stages", {})
    by_stage = {k: v.get("cost_usd", 0.0) for k, v in stages.items()}
    est = sum((v.get("details") or {}).get("estimated_usd", 0.0) for v in stages.values())
    billed_by_steps = sum((v.get("details") or {}).get("billed_usd", 0.0) for v in stages.values())
    steps = {}
    for stage, v in stages.items():
        for step, s in ((v.get("details") or {}).get("llm_steps") or {}).items():
            steps[f"{stage}/{step}"] = {k: s.get(k) for k in ("requests", "answered", "cached", "not_sent")}
    return {
        "scenario": name,
        "budget_usd": budget,
        "server_billed_usd": round(server.billed_usd, 6),
        "server_billed_calls": server.billed_calls,
        "server_requests": server.count,
        "faults_served": dict(server.faults_served),
        "ledger_total_usd": round(ledger.total_cost_usd(), 6),
        "ledger_unknown_usd": round(ledger.unknown_usd(), 6),
        "ledger_unknown_calls": sum(e.status == "unknown" for e in rows),
        "ledger_calls_sent": sum(e.attempt > 0 and e.status not in ("cached", "budget") for e in rows),
        "manifest_stage_costs": by_stage,
        "manifest_stages_sum_usd": round(sum(by_stage.values()), 6),
        "manifest_llm_cost_total_usd": (manifest.get("llm_cost") or {}).get("total_usd"),
        "estimate_before_run_usd": (manifest.get("llm_cost") or {}).get("estimate_before_run_usd"),
        "estimate_of_calls_sent_usd": round(est, 6),
        "billed_per_stage_steps_usd": round(billed_by_steps, 6),
        "steps": steps,
        **extra,
    }


def run_scenario(name: str, work: Path) -> dict:
    budget = {"clean": 1.0, "faults": 1.0, "kills": 0.03, "kills-ample": 1.0, "tight": 0.02}[name]
    with LLMTestServer(
        ScriptedTeacher(), input_price_per_mtok=IN_PRICE, output_price_per_mtok=OUT_PRICE
    ) as srv:
        if name == "faults":
            srv.fault_rate, srv.slow_s = 0.2, SLOW_S
        elif name != "clean":
            srv.latency_s = 0.3  # calls in flight long enough for a kill to land among them
        config = _config(work, srv.openai_base_url, budget)
        script = work / "child.py"
        script.write_text(CHILD)
        kills, t0, coverage = 0, time.perf_counter(), ""
        while True:
            child = _child(script, config)
            if name.startswith("kills") and kills < 3:
                target = srv.count + 15  # well into generate, several calls in flight
                while srv.count < target and child.poll() is None:
                    time.sleep(0.02)
                if child.poll() is None:
                    child.send_signal(signal.SIGKILL)
                    kills += 1
            out = child.communicate(timeout=1800)[0].decode()
            for line in out.splitlines():
                if line.startswith("PLAN") and not coverage:
                    coverage = line[5:]
            if child.returncode == 0 or (name.startswith("kills") and child.returncode == -signal.SIGKILL):
                if child.returncode == 0:
                    break
                continue
            raise SystemExit(f"{name}: the run failed (rc {child.returncode}):\n{out[-3000:]}")
        time.sleep(SLOW_S + 0.5)  # a slow answer's thread bills before it sleeps; let stragglers finish
        extra = {"kills": kills, "seconds": round(time.perf_counter() - t0, 1), "coverage_before": coverage}
        return _figures(name, srv, work / "runs" / "audit", budget, extra)


def table(results: list[dict]) -> str:
    head = (
        "| scenario | budget | server billed | ledger | of it unknown (calls) | manifest stages sum | "
        "estimate (calls sent) | ledger/estimate | server billed/estimate before run | billed <= budget | "
        "ledger >= billed |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in results:
        est = r["estimate_of_calls_sent_usd"]
        ratio = f"{r['billed_per_stage_steps_usd'] / est:.2f}" if est else "-"
        first = r["estimate_before_run_usd"]
        before = f"{r['server_billed_usd'] / first:.2f} (of ${first:.4f})" if first else "-"
        lines.append(
            f"| {r['scenario']} | ${r['budget_usd']:.4f} | ${r['server_billed_usd']:.6f} "
            f"({r['server_billed_calls']} calls) | ${r['ledger_total_usd']:.6f} | "
            f"${r['ledger_unknown_usd']:.6f} ({r['ledger_unknown_calls']}) | "
            f"${r['manifest_stages_sum_usd']:.6f} | ${est:.6f} | {ratio} | {before} | "
            f"{r['server_billed_usd'] <= r['budget_usd'] + 1e-12} | "
            f"{r['ledger_total_usd'] + 1e-9 >= r['server_billed_usd']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", nargs="+", default=["clean", "faults", "kills", "kills-ample", "tight"])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--table-from", type=Path, help="only print the table of an earlier --json")
    args = ap.parse_args()
    if args.table_from:
        print(table(json.loads(args.table_from.read_text())))
        return
    results = []
    for name in args.scenario:
        with tempfile.TemporaryDirectory(prefix=f"spend-audit-{name}-") as tmp:
            r = run_scenario(name, Path(tmp))
        results.append(r)
        print(json.dumps(r, indent=2), flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
