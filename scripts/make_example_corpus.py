"""Build examples/medquad-mini/ from the MedQuAD development split (CC BY 4.0).

Run once by a developer (needs ../shared/data and fpdf2); the output is committed. Each document is one
topic's questions and answers, written in the formats the ingest stage reads (md, txt, html, jsonl, pdf)
so the demo exercises every reader."""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path

import pandas as pd

TOPICS = [
    "familial porencephaly",
    "Repetitive Motion Disorders",
    "benign essential blepharospasm",
    "neurohypophyseal diabetes insipidus",
    "Aicardi syndrome",
    "deoxyguanosine kinase deficiency",
    "Celiac artery compression syndrome",
    "Inflammatory Myopathies",
    "Schnitzler syndrome",
    "Parasites - Echinococcosis",
    "Nonalcoholic steatohepatitis",
    "familial pityriasis rubra pilaris",
    "Hendra Virus Disease (HeV)",
    "hypermethioninemia",
    "genitopatellar syndrome",
    "isolated Pierre Robin sequence",
    "familial paroxysmal kinesigenic dyskinesia",
    "MYH9-related disorder",
]
FORMATS = ["md"] * 10 + ["txt"] * 3 + ["html"] * 2 + ["pdf"] + ["jsonl"] * 2


def slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s.lower()).strip("-").replace("--", "-")


def main(src: Path, out: Path) -> None:
    qa = pd.read_parquet(src)
    out.mkdir(parents=True, exist_ok=True)
    jsonl_rows = []
    for topic, fmt in zip(TOPICS, FORMATS, strict=True):
        rows = qa[qa.focus == topic].sort_values("qid")
        pairs = [(r.question.strip(), " ".join(r.answer.split())) for r in rows.itertuples()]
        name = slug(topic)
        if fmt == "md":
            body = f"# {topic}\n\n" + "\n\n".join(f"## {q}\n\n{a}" for q, a in pairs) + "\n"
            (out / f"{name}.md").write_text(body, encoding="utf-8")
        elif fmt == "txt":
            body = f"{topic}\n\n" + "\n\n".join(f"{q}\n{a}" for q, a in pairs) + "\n"
            (out / f"{name}.txt").write_text(body, encoding="utf-8")
        elif fmt == "html":
            items = "\n".join(f"<h2>{html.escape(q)}</h2>\n<p>{html.escape(a)}</p>" for q, a in pairs)
            body = (
                f"<!doctype html><html><head><title>{html.escape(topic)}</title>"
                f"<style>body{{font-family:serif}}</style></head><body><h1>{html.escape(topic)}</h1>\n"
                f"{items}\n<script>console.log('ignored')</script></body></html>\n"
            )
            (out / f"{name}.html").write_text(body, encoding="utf-8")
        elif fmt == "pdf":
            from fpdf import FPDF

            pdf = FPDF()
            pdf.set_title(topic)
            pdf.add_page()
            pdf.set_font("Helvetica", size=11)
            for q, a in pairs:
                text = f"{q}\n{a}\n".encode("latin-1", "replace").decode("latin-1")
                pdf.multi_cell(0, 6, text)
                pdf.ln(2)
            pdf.output(str(out / f"{name}.pdf"))
        else:
            text = "\n\n".join(f"{q}\n{a}" for q, a in pairs)
            jsonl_rows.append({"id": name, "title": topic, "text": text})
    with (out / "more-topics.jsonl").open("w", encoding="utf-8") as f:
        for row in jsonl_rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
