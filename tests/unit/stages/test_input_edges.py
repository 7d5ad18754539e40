"""Bad input at any size (issue 10): a multi-megabyte single line ingests with one hash per document, and
the small cases (BOM, NaN, symlink loops, odd run names, empty env values, PDF warnings) are handled."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers import ROOT

from distiller.ingest import ingest
from distiller.ingest import readers as readers_mod
from distiller.ingest.chunking import Chunker


class _WordTokenizer:
    """Counts words: keeps the test about ingest's own work, not a real tokenizer's speed."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[str]:
        return text.split()


def test_a_multi_megabyte_line_ingests_hashing_the_document_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distiller.config import DistillConfig

    sentence = "Gout causes sudden joint pain and swelling that doctors treat with rest. "
    (tmp_path / "big.txt").write_text(sentence * 45_000, encoding="utf-8")  # ~3.3 MB, no newline
    hashed: list[int] = []
    real = hashlib.sha256

    def counting(data: bytes = b"") -> object:
        hashed.append(len(data))
        return real(data)

    monkeypatch.setattr(readers_mod.hashlib, "sha256", counting)
    cfg = DistillConfig(input={"paths": [str(tmp_path / "big.txt")]})
    res = ingest(cfg, chunker=Chunker(_WordTokenizer(), chunk_size=200, overlap=0.1, min_tokens=8))
    assert len(res.documents) == 1 and len(res.chunks) > 3000
    assert {c.doc_id for c in res.chunks} == {res.documents[0].doc_id}
    # once per document, not once per chunk (that made a 20 MB line take 16 minutes)
    assert len(hashed) == 1 and hashed[0] > 3_000_000


# --- the small items ------------------------------------------------------------------------------------


def _labeled_cfg(path: Path, **extra: object):
    from distiller.config import load_config

    return load_config(overrides={"input": {"qa_file": str(path)}, "chunking": {"chunk_size": 64}, **extra})


ROWS = [
    ("What causes gout?", "Uric acid crystals in the joints."),
    ("How is asthma treated?", "Inhalers that open the airways."),
    ("What is anemia?", "Too few red blood cells."),
    ("What is glaucoma?", "Damage to the optic nerve."),
]


def test_csv_with_a_utf8_byte_order_mark_is_read(tmp_path: Path) -> None:
    from distiller.labeled import load_labeled

    p = tmp_path / "faq.csv"
    body = "question,answer\n" + "".join(f'"{q}","{a}"\n' for q, a in ROWS)
    p.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))  # what Excel writes
    passages, queries = load_labeled(_labeled_cfg(p))
    assert len(queries) == 4 and len(passages) == 4
    assert {q.text for q in queries} == {q for q, _ in ROWS}


def test_nan_in_a_jsonl_qa_file_skips_the_row_like_parquet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    import pandas as pd

    from distiller.labeled import load_labeled

    jsonl = tmp_path / "faq.jsonl"
    lines = [json.dumps({"question": q, "answer": a}) for q, a in ROWS]
    lines.insert(2, '{"question": "What is rosacea?", "answer": NaN}')  # pandas' to_json of a gap
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    df = pd.DataFrame(
        {"question": [q for q, _ in ROWS] + ["What is rosacea?"], "answer": [a for _, a in ROWS] + [None]}
    )
    df.loc[4, "answer"] = float("nan")
    parquet = tmp_path / "faq.parquet"
    df.to_parquet(parquet)
    with caplog.at_level("WARNING", logger="distiller.labeled"):
        from_jsonl = load_labeled(_labeled_cfg(jsonl))
        from_parquet = load_labeled(_labeled_cfg(parquet))
    assert len(from_jsonl[1]) == len(from_parquet[1]) == 4
    assert f"{jsonl}: 1 rows without a question or an answer were skipped (line 3)" in caplog.text
    assert f"{parquet}: 1 rows without a question or an answer were skipped (row 5)" in caplog.text


def test_symlink_loops_and_broken_links_are_listed_as_skipped(tmp_path: Path) -> None:
    import os

    from distiller.ingest import expand_inputs

    d = tmp_path / "docs"
    d.mkdir()
    (d / "ok.txt").write_text("Gout causes joint pain.")
    os.symlink("loop.txt", d / "loop.txt")  # points at itself
    os.symlink("gone.md", d / "broken.md")
    files, skipped = expand_inputs([str(d), str(d / "loop.txt")])
    assert files == [d / "ok.txt"]
    reasons = {(s.path, s.reason.split(":")[0].split(" (")[0]) for s in skipped}
    assert reasons == {
        (str(d / "loop.txt"), "symlink loop"),
        (str(d / "broken.md"), "broken symlink"),
    }


@pytest.mark.parametrize("name", ["a\nb", "tab\there", "star*", "what?", "a<b", "a>b", "pipe|x", "x" * 101])
def test_unsafe_run_names_are_refused_with_a_clear_error(name: str) -> None:
    from distiller.config import load_config
    from distiller.errors import ConfigError

    with pytest.raises(ConfigError, match=r"run_name: Value error, (must be a plain folder name|too long)"):
        load_config(overrides={"run_name": name})


def test_an_empty_runs_dir_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    from distiller.config import load_config
    from distiller.errors import ConfigError

    monkeypatch.setenv("DISTILL_RUNS_DIR", "")
    assert load_config().runs_dir == "runs"
    with pytest.raises(ConfigError, match="runs_dir: Value error, must name a folder"):
        load_config(overrides={"runs_dir": " "})


def test_malformed_json_in_an_environment_section_is_one_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from distiller.config import load_config
    from distiller.errors import ConfigError

    monkeypatch.setenv("DISTILL_CHUNKING", "{chunk_size: 64")
    with pytest.raises(ConfigError) as info:
        load_config()
    msg = str(info.value)
    assert msg.startswith("invalid configuration (environment): DISTILL_CHUNKING is not valid JSON")
    assert "\n" not in msg and "DISTILL_CHUNKING__FIELD=value" in msg


def test_pypdf_warnings_name_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import re

    from distiller.errors import InputFileError
    from distiller.ingest.readers import read_pdf

    cut = tmp_path / "cut.pdf"
    data = (ROOT / "examples/medquad-mini/isolated-pierre-robin-sequence.pdf").read_bytes()
    cut.write_bytes(data[: data.rindex(b"%%EOF")])  # a download cut short: no EOF marker
    # pypdf warns while it tries to repair the file, then gives up: both say which file
    with (
        caplog.at_level("WARNING"),
        pytest.raises(InputFileError, match=rf"^{re.escape(str(cut))}: unreadable"),
    ):
        read_pdf(cut)
    named = [r.getMessage() for r in caplog.records if r.name == "distiller.ingest.readers"]
    assert any(m.startswith(f"{cut}: EOF marker not found") for m in named), caplog.text
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]  # said once, with the name
