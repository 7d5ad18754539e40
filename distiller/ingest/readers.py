"""Read input files into plain text, one reader per format.

Every failure is an `InputFileError` that names the file (and line) and says why, so the caller can
record it in the manifest and go on with the rest of the corpus.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from distiller.errors import InputFileError, NoInputError
from distiller.records import SkippedInput

SUPPORTED = {
    ".txt": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
    ".jsonl": "jsonl",
}
_SNIFF = 8192
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawDocument:
    source_path: str
    format: str
    text: str
    title: str | None = None
    key: str | None = None  # e.g. "file.jsonl:12" for one record of a .jsonl

    @cached_property
    def doc_id(self) -> str:
        # Content-addressed: the same text gives the same id wherever the file lives. Hashed once per
        # document (the chunker asks per chunk: re-hashing made ingest quadratic in a document's size).
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]


def expand_inputs(patterns: list[str]) -> tuple[list[Path], list[SkippedInput]]:
    """Files named by paths, folders (recursive) and glob patterns, sorted, de-duplicated."""
    if not patterns:
        raise NoInputError("no input given: pass files, folders or glob patterns (e.g. --input docs/)")
    found: dict[Path, None] = {}
    skipped: list[SkippedInput] = []
    for pat in patterns:
        p = Path(pat).expanduser()
        if reason := _dangling(p):
            skipped.append(SkippedInput(path=str(p), reason=reason))
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if reason := _dangling(f):
                    skipped.append(SkippedInput(path=str(f), reason=reason))
                elif f.is_file():
                    if f.suffix.lower() in SUPPORTED:
                        found[f] = None
                    else:
                        skipped.append(
                            SkippedInput(path=str(f), reason=f"unsupported file type '{f.suffix}'")
                        )
        elif p.is_file():
            if p.suffix.lower() in SUPPORTED:
                found[p] = None
            else:
                supported = ", ".join(sorted(set(SUPPORTED)))
                skipped.append(
                    SkippedInput(path=str(p), reason=f"unsupported file type '{p.suffix}' ({supported})")
                )
        else:
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                skipped.append(SkippedInput(path=pat, reason="no such file, folder or matching glob"))
            for f in files:
                if f.suffix.lower() in SUPPORTED:
                    found[f] = None
                else:
                    skipped.append(SkippedInput(path=str(f), reason=f"unsupported file type '{f.suffix}'"))
    return list(found), skipped


def _dangling(path: Path) -> str | None:
    """Why a symlink leads nowhere (a loop, or a missing target), or None for anything else; without
    this such links vanish from the input without a word."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop (the link points back to itself): fix or remove the link"
        return f"broken symlink: its target {os.readlink(path)!r} does not exist"
    return None


def _check_bytes(path: Path, data: bytes) -> None:
    if not data.strip():
        raise InputFileError(str(path), "empty file" if not data else "file holds only whitespace")
    if b"\x00" in data[:_SNIFF] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputFileError(
            str(path), "binary file (NUL bytes), not text; convert it to .txt/.md/.pdf first"
        )


def _decode(path: Path, data: bytes, encoding: str) -> str:
    try:
        text = data.decode("utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputFileError(
            str(path),
            f"cannot decode as {encoding}: byte 0x{data[e.start]:02x} at offset {e.start} ({e.reason}); "
            f"set input.encoding (e.g. --encoding latin-1) or re-save the file as UTF-8",
            line=line,
        ) from e
    except LookupError as e:
        raise InputFileError(str(path), f"unknown encoding '{encoding}'") from e
    if not text.strip():
        raise InputFileError(str(path), "no text after decoding")
    return text


def read_text_file(path: Path, encoding: str) -> str:
    data = path.read_bytes()
    _check_bytes(path, data)
    return _decode(path, data, encoding)


def read_html(path: Path, encoding: str) -> tuple[str, str | None]:
    from bs4 import BeautifulSoup

    data = path.read_bytes()
    _check_bytes(path, data)
    soup = BeautifulSoup(_decode(path, data, encoding), "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "nav", "footer"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else None
    if soup.title:
        soup.title.decompose()
    # Block elements end with a newline so paragraphs stay paragraphs for the chunker.
    text = soup.get_text("\n")
    lines = [ln.strip() for ln in text.splitlines()]
    text = "\n".join(ln for ln in lines if ln)
    if not text.strip():
        raise InputFileError(str(path), "HTML holds no visible text")
    return text, title


@contextlib.contextmanager
def _pypdf_warnings_name(path: Path) -> Iterator[None]:
    """pypdf warns about a repaired PDF ("EOF marker not found") without saying which file: catch its
    warnings while one file is read and say them again with the file's name."""
    caught: list[logging.LogRecord] = []

    class _Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record)

    pypdf_log = logging.getLogger("pypdf")
    handler, propagate = _Catch(logging.WARNING), pypdf_log.propagate
    pypdf_log.addHandler(handler)
    pypdf_log.propagate = False
    try:
        yield
    finally:
        pypdf_log.removeHandler(handler)
        pypdf_log.propagate = propagate
        for record in caught:
            logger.warning("%s: %s (pypdf)", path, record.getMessage())


def read_pdf(path: Path) -> tuple[str, str | None]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    data = path.read_bytes()
    if not data.strip():
        raise InputFileError(str(path), "empty file")
    if not data.startswith(b"%PDF"):
        raise InputFileError(str(path), "not a PDF (no %PDF header)")
    try:
        with _pypdf_warnings_name(path):  # pypdf parses lazily: its warnings come from any of these
            reader = PdfReader(path)
            if reader.is_encrypted:
                try:
                    reader.decrypt("")
                except Exception as e:
                    raise InputFileError(str(path), "encrypted PDF: decrypt it first") from e
            pages = [page.extract_text() or "" for page in reader.pages]
            title = reader.metadata.title if reader.metadata else None
    except InputFileError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as e:
        raise InputFileError(str(path), f"unreadable PDF: {e}") from e
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text.strip():
        raise InputFileError(
            str(path), f"PDF has no extractable text in {len(pages)} page(s) (scanned? run OCR first)"
        )
    return text, title


def read_jsonl(path: Path, text_field: str, id_field: str | None) -> Iterator[RawDocument | SkippedInput]:
    """One document per line; a bad line is reported with its number and the rest goes on."""
    data = path.read_bytes()
    _check_bytes(path, data)
    text = _decode(path, data, "utf-8")
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield SkippedInput(path=str(path), line=n, reason=f"malformed JSON: {e.msg} (column {e.colno})")
            continue
        if not isinstance(obj, dict):
            yield SkippedInput(path=str(path), line=n, reason="not a JSON object")
            continue
        value = obj.get(text_field)
        if not isinstance(value, str) or not value.strip():
            keys = ", ".join(sorted(obj)[:8])
            yield SkippedInput(
                path=str(path),
                line=n,
                reason=f"no non-empty string field '{text_field}' (fields: {keys}); "
                "set input.jsonl_text_field",
            )
            continue
        key = str(obj.get(id_field)) if id_field and obj.get(id_field) is not None else str(n)
        title = obj.get("title") if isinstance(obj.get("title"), str) else None
        yield RawDocument(source_path=str(path), format="jsonl", text=value, title=title, key=f"{path}:{key}")


def read_documents(
    paths: list[Path],
    encoding: str = "utf-8",
    jsonl_text_field: str = "text",
    jsonl_id_field: str | None = None,
) -> Iterator[RawDocument | SkippedInput]:
    """Yield a RawDocument per readable document and a SkippedInput for everything that was not."""
    for path in paths:
        kind = SUPPORTED[path.suffix.lower()]
        try:
            if kind == "jsonl":
                yield from read_jsonl(path, jsonl_text_field, jsonl_id_field)
            elif kind == "pdf":
                text, title = read_pdf(path)
                yield RawDocument(str(path), kind, text, title)
            elif kind == "html":
                text, title = read_html(path, encoding)
                yield RawDocument(str(path), kind, text, title)
            else:
                yield RawDocument(str(path), kind, read_text_file(path, encoding))
        except InputFileError as e:
            yield SkippedInput(path=e.path, reason=e.reason, line=e.line)
        except OSError as e:
            yield SkippedInput(path=str(path), reason=f"cannot read: {e.strerror or e}")
