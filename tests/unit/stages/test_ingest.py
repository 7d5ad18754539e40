from __future__ import annotations

import json
from pathlib import Path

import pytest

from distiller.config import load_config
from distiller.errors import NoInputError
from distiller.ingest import ingest
from distiller.ingest.readers import expand_inputs, read_documents

GOOD = (
    "Aicardi syndrome is a disorder that occurs almost exclusively in females. It is characterized by three "
    "main features that occur together in most affected individuals. People with Aicardi syndrome have "
    "absent or underdeveloped tissue connecting the left and right halves of the brain.\n\n"
    "Most affected individuals also have seizures beginning in infancy. The severity varies widely.\n"
)


def _cfg(paths: list[Path], **input_extra: object):
    return load_config(
        overrides={"input": {"paths": [str(p) for p in paths], **input_extra}, "chunking": {"chunk_size": 48}}
    )


def test_every_format_is_read(tiny_corpus: Path) -> None:
    (tiny_corpus / "more.jsonl").write_text(json.dumps({"id": "x1", "text": GOOD}) + "\n")
    result = ingest(_cfg([tiny_corpus]))
    formats = {d.format for d in result.documents}
    assert formats == {"markdown", "text", "html", "pdf", "jsonl"}
    assert not result.skipped


def test_chunks_have_spans_tokens_and_stay_in_size(tiny_corpus: Path) -> None:
    cfg = _cfg([tiny_corpus / "aicardi-syndrome.md"])
    result = ingest(cfg)
    text = (tiny_corpus / "aicardi-syndrome.md").read_text()
    assert len(result.chunks) > 3
    for c in result.chunks:
        assert text[c.char_start : c.char_end] == c.text
        assert 0 < c.n_tokens <= cfg.chunking.chunk_size
    # the chunk ids are derived from content, so they are stable
    again = ingest(cfg)
    assert [c.chunk_id for c in again.chunks] == [c.chunk_id for c in result.chunks]


def test_html_drops_scripts_and_keeps_title(tiny_corpus: Path) -> None:
    docs = list(read_documents([tiny_corpus / "genitopatellar-syndrome.html"]))
    assert docs[0].title == "genitopatellar syndrome"
    assert "console.log" not in docs[0].text and "font-family" not in docs[0].text


def test_bad_inputs_are_named_and_the_rest_goes_through(tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text(GOOD)
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.md").write_text("   \n\n")
    (tmp_path / "binary.txt").write_bytes(b"\x7fELF\x02\x01\x00\x00" + bytes(range(256)))
    (tmp_path / "latin1.txt").write_bytes("line one\nline two\ncaf\xe9 au lait\n".encode("latin-1"))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage")
    (tmp_path / "notpdf.pdf").write_text("just text")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    other = json.dumps({"text": GOOD.replace("Aicardi", "Other")})
    lines = [other, "{not json", json.dumps({"body": "x"}), "[1]"]
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")

    result = ingest(_cfg([tmp_path]))
    why = {(Path(s.path).name, s.line): s.reason for s in result.skipped}
    assert why[("empty.txt", None)] == "empty file"
    assert "only whitespace" in why[("blank.md", None)]
    assert "binary file" in why[("binary.txt", None)]
    assert "cannot decode as utf-8" in why[("latin1.txt", 3)] and "0xe9" in why[("latin1.txt", 3)]
    assert "PDF" in why[("broken.pdf", None)]
    assert "not a PDF" in why[("notpdf.pdf", None)]
    assert "unsupported file type '.png'" in why[("image.png", None)]
    assert "malformed JSON" in why[("docs.jsonl", 2)]
    assert "no non-empty string field 'text'" in why[("docs.jsonl", 3)]
    assert "not a JSON object" in why[("docs.jsonl", 4)]
    # the good file and the good jsonl line made it
    assert len(result.documents) == 2
    assert {Path(d.source_path.split(":")[0]).name for d in result.documents} == {"good.md", "docs.jsonl"}


def test_wrong_encoding_can_be_set(tmp_path: Path) -> None:
    (tmp_path / "latin1.txt").write_bytes(GOOD.replace("almost", "caf\xe9").encode("latin-1"))
    result = ingest(_cfg([tmp_path / "latin1.txt"], encoding="latin-1"))
    assert "café" in result.chunks[0].text or any("café" in c.text for c in result.chunks)


def test_duplicate_documents_are_listed(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(GOOD)
    (tmp_path / "b.md").write_text(GOOD)
    result = ingest(_cfg([tmp_path]))
    assert len(result.documents) == 1
    assert any("duplicate of" in s.reason for s in result.skipped)


def test_nothing_usable_is_an_error_listing_why(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(NoInputError) as e:
        ingest(_cfg([tmp_path]))
    assert "empty.txt: empty file" in str(e.value)


def test_globs_and_missing_paths(tmp_path: Path, tiny_corpus: Path) -> None:
    files, skipped = expand_inputs([str(tiny_corpus / "*.md"), str(tmp_path / "missing")])
    assert {f.suffix for f in files} == {".md"} and len(files) == 3
    assert skipped[0].reason == "no such file, folder or matching glob"
    with pytest.raises(NoInputError):
        expand_inputs([])
