"""Labeled mode: Q&A files in four formats, identical answers as one passage, long answers chunked,
splits by topic (never splitting one), and errors that name the file and the problem."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distiller.config import DistillConfig
from distiller.errors import InputFileError
from distiller.labeled import load_labeled

ROWS = [
    {"q": f"What is {topic} {aspect}?", "a": f"The {aspect} of {topic} is described here.", "topic": topic}
    for topic in [f"topic{i:02d}" for i in range(30)]
    for aspect in ("cause", "treatment", "outlook")
]


def write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def cfg_for(path: Path, group: str | None = "topic", **chunking: int) -> DistillConfig:
    return DistillConfig(
        input={"qa_file": str(path), "question_column": "q", "answer_column": "a", "group_column": group},
        chunking={"chunk_size": 200, **chunking},
        split={"train_ratio": 0.7, "val_ratio": 0.1},
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_formats_load_the_same(tmp_path: Path, suffix: str) -> None:
    passages, queries = load_labeled(cfg_for(write(tmp_path / f"qa{suffix}", ROWS)))
    assert len(queries) == 90 and len(passages) == 90
    assert {q.teacher for q in queries} == {"labeled"}
    texts = {p.passage_id: p.text for p in passages}
    for query in queries:
        assert len(query.positive_ids) == 1
        topic = query.doc_id
        assert topic in texts[query.positive_ids[0]] and topic in query.text


def test_grouping_never_splits_a_topic(tmp_path: Path) -> None:
    _, queries = load_labeled(cfg_for(write(tmp_path / "qa.jsonl", ROWS)))
    splits: dict[str, set[str]] = defaultdict(set)
    for query in queries:
        splits[query.doc_id].add(query.split)
    assert len(splits) == 30
    assert all(len(s) == 1 for s in splits.values())
    assert {next(iter(s)) for s in splits.values()} == {"train", "val", "test"}
    # the same seed gives the same split
    _, again = load_labeled(cfg_for(write(tmp_path / "qa.jsonl", ROWS)))
    assert [q.split for q in again] == [q.split for q in queries]


def test_identical_answers_are_one_passage_and_join_groups(tmp_path: Path) -> None:
    rows = [*ROWS, {"q": "How common is topic05 and topic17?", "a": "Rare.", "topic": "topic05"}]
    rows.append({"q": "How common is topic17?", "a": "  Rare. ", "topic": "topic17"})  # same text, spaces
    passages, queries = load_labeled(cfg_for(write(tmp_path / "qa.jsonl", rows)))
    rare = [p for p in passages if p.text == "Rare."]
    assert len(rare) == 1
    shared = [q for q in queries if q.positive_ids == [rare[0].passage_id]]
    assert len(shared) == 2
    # the two topics share a passage, so they became one group with one split
    merged = {q.doc_id for q in shared}
    assert len(merged) == 1
    assert len({q.split for q in queries if q.doc_id in merged | {"topic05", "topic17"}}) == 1


def test_without_group_column_groups_by_answer(tmp_path: Path) -> None:
    rows = [
        {"q": f"question {i} about answer {i % 7}", "a": f"answer number {i % 7}", "topic": "x"}
        for i in range(28)
    ]
    passages, queries = load_labeled(cfg_for(write(tmp_path / "qa.csv", rows), group=None))
    assert len(passages) == 7
    by_answer: dict[str, set[str]] = defaultdict(set)
    for query in queries:
        by_answer[query.positive_ids[0]].add(query.split)
    assert all(len(s) == 1 for s in by_answer.values())


def test_long_answers_are_chunked(tmp_path: Path) -> None:
    long = " ".join(f"Sentence {i} explains one more detail of the long answer." for i in range(40))
    rows = [
        {"q": "Tell me everything?", "a": long, "topic": "t1"},
        {"q": "Short?", "a": "Short.", "topic": "t2"},
    ]
    passages, queries = load_labeled(cfg_for(write(tmp_path / "qa.json", rows), chunk_size=32))
    chunks = [p for p in passages if p.doc_id == "t1"]
    assert len(chunks) > 5
    first = next(q for q in queries if q.text == "Tell me everything?")
    assert first.positive_ids == [p.passage_id for p in chunks]
    assert "".join(c.text for c in chunks).replace(" ", "")[:50] == long.replace(" ", "")[:50]


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "qa.csv", [{"question": "q?", "answer": "a."}])
    with pytest.raises(InputFileError) as err:
        load_labeled(cfg_for(path))
    assert str(path) in str(err.value) and "'q'" in str(err.value) and "question" in str(err.value)


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text('{"q": "a?", "a": "b.", "topic": "t"}\n\n{"q": "broken\n')
    with pytest.raises(InputFileError) as err:
        load_labeled(cfg_for(path))
    assert err.value.line == 3 and f"{path}:3" in str(err.value)


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("qa.txt", "q,a\n", "unsupported format"),
        ("qa.json", '{"q": 1', "not valid JSON"),
        ("qa.parquet", "not parquet", "Parquet"),
        ("missing.jsonl", None, "not found"),
    ],
)
def test_bad_files(tmp_path: Path, name: str, content: str | None, needle: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputFileError, match=needle) as err:
        load_labeled(cfg_for(path))
    assert str(path) in str(err.value)


def test_non_text_question_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path / "qa.jsonl", [{"q": "fine?", "a": "yes", "topic": "t"}, {"q": 3, "a": "no", "topic": "t"}]
    )
    with pytest.raises(InputFileError, match="line 2") as err:
        load_labeled(cfg_for(path))
    assert err.value.line == 2


def test_identical_questions_become_one_query(tmp_path: Path) -> None:
    rows = [
        *ROWS,
        {"q": "What is gout?", "a": "Gout, as one collection says.", "topic": "Gout"},
        {"q": "what is  gout ?", "a": "Gout, as another collection says.", "topic": "Gout (GARD)"},
    ]
    passages, queries = load_labeled(cfg_for(write(tmp_path / "qa.jsonl", rows)))
    gout = [q for q in queries if q.text.lower().startswith("what is") and "gout" in q.text.lower()]
    assert len(gout) == 1 and len(queries) == 91
    texts = {p.passage_id: p.text for p in passages}
    assert sorted(texts[p] for p in gout[0].positive_ids) == [
        "Gout, as another collection says.",
        "Gout, as one collection says.",
    ]
    # both answers' topics are one group now: neither answer can sit in another split than the question
    assert {p.doc_id for p in passages if p.passage_id in gout[0].positive_ids} == {gout[0].doc_id}
