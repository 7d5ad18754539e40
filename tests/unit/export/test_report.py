"""The HTML report: self-contained, escaped, complete, and rendering without errors in a real browser."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.run_fixtures import make_run

from distiller.report import FIGURES, render_report

CHROMIUM = next(
    (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium): browser check skipped"
)

# Injected at the top of <head> of a copy of the report: collects uncaught errors, rejected promises,
# console.error calls and Content-Security-Policy violations (any attempt to load something from outside
# the file), then writes them with the count of drawn plots into the DOM, which --dump-dom prints.
PROBE = """<script>
window.__errs = [];
addEventListener('error', ev => __errs.push('error: ' + (ev.message || (ev.target && ev.target.src) || 'resource')), true);
addEventListener('unhandledrejection', ev => __errs.push('rejection: ' + ev.reason));
document.addEventListener('securitypolicyviolation', ev => __errs.push('csp: ' + ev.blockedURI + ' ' + ev.violatedDirective));
const __ce = console.error; console.error = (...a) => { __errs.push('console: ' + a.join(' ')); __ce(...a); };
addEventListener('load', () => setTimeout(() => {
  const p = document.createElement('pre'); p.id = 'probe';
  p.textContent = JSON.stringify({errors: __errs, plots: document.querySelectorAll('.js-plotly-plot .main-svg').length});
  document.body.appendChild(p);
}, 300));
</script>"""  # noqa: E501

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=10000",
]


def _chromium(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *extra, page.resolve().as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)  # type: ignore[list-item]


def _probe(report: Path, tmp: Path) -> tuple[dict, str]:
    probed = tmp / "probed.html"
    probed.write_text(
        report.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8"
    )
    proc = _chromium(probed, tmp, "--dump-dom")
    m = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"probe did not run; chromium said:\n{proc.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1))), proc.stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"), with_judgments=True)


@pytest.fixture(scope="module")
def report(run: Path) -> Path:
    return render_report(run)


def test_report_is_self_contained(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    assert report.name == "report.html"
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=", page, re.I), "external resource"
    assert "Plotly" in page  # the library itself is inlined
    for key, _ in FIGURES:
        assert f'id="fig-{key}"' in page


def test_report_escapes_run_text(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    # the fixture's documents contain a script tag: it shows as text, never as markup
    assert "&lt;script&gt;alert(&#x27;xss&#x27;)&lt;/script&gt;" in page
    assert "<script>alert(" not in page
    for name in (
        "chunks.parquet",
        "qa_pairs.parquet",
        "triplets_iter2.parquet",
        "ledger.parquet",
        "judgments.parquet",
    ):
        assert f"<h3>{name} " in page


def test_report_of_an_offline_run_says_what_is_missing(tmp_path: Path) -> None:
    page = render_report(make_run(tmp_path, "off", offline=True)).read_text(encoding="utf-8")
    assert "missing: ledger.parquet (offline teacher: no LLM calls)" in page
    assert "no ledger: offline teacher, no LLM spend" in page
    assert "no Q&amp;A pairs in this run" in page


@needs_chromium
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    probe, stderr = _probe(report, tmp_path)
    assert probe["errors"] == [], probe["errors"]
    assert probe["plots"] >= len(FIGURES)
    assert "Uncaught" not in stderr
    shot = tmp_path / "report.png"
    _chromium(report, tmp_path, f"--screenshot={shot}", "--window-size=1280,3000", "--hide-scrollbars")
    from PIL import Image

    img = Image.open(shot).convert("RGB").resize((320, 750))
    pixels = list(img.getdata())
    inked = sum(1 for p in pixels if sum(p) < 720) / len(pixels)
    assert inked > 0.03, f"screenshot looks blank ({inked:.1%} non-white)"
    assert len(set(pixels)) > 50  # charts in colour, not a flat page


@needs_chromium
def test_probe_catches_errors_and_outside_requests(tmp_path: Path) -> None:
    """The check above is only worth something if it can fail: a page with a thrown error and an
    external image must be reported."""
    bad = tmp_path / "bad.html"
    policy = "default-src 'none'; script-src 'unsafe-inline'"
    csp = f"<meta http-equiv='Content-Security-Policy' content=\"{policy}\">"
    bad.write_text(
        f"<!doctype html><html><head>{csp}</head><body><img src='https://example.invalid/x.png'>"
        "<script>null.boom()</script></body></html>",
        encoding="utf-8",
    )
    probe, _ = _probe(bad, tmp_path)
    kinds = {e.split(":")[0] for e in probe["errors"]}
    assert {"error", "csp"} <= kinds, probe["errors"]
