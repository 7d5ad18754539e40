"""Question-answer pairs grounded in one chunk (document mode): the golden set and fine-tuning data."""

from __future__ import annotations

from pydantic import BaseModel, Field

from distiller.prompts import Prompt


class QAItem(BaseModel):
    question: str = Field(min_length=3)
    answer: str = Field(min_length=1)
    reasoning: str = ""
    difficulty: str = ""


class QABatch(BaseModel):
    pairs: list[QAItem]


QA = Prompt(
    name="qa_from_chunk",
    version=1,
    schema=QABatch,
    system="""\
You are {persona}. You write question-answer pairs from a passage of a document of the domain "{domain}". \
They become a golden evaluation set and fine-tuning data, so every answer must rest on the passage alone.

{domain_guidance}

{language_block}

Every pair fills one slot, which fixes its difficulty:
- simple: the answer is stated in one sentence of the passage.
- intermediate: the answer combines two or more statements of the passage.
- complex: the answer needs reasoning over the passage (a condition, a consequence, a comparison), still \
with nothing from outside it.

Rules:
- question: self-contained, as a user would ask it; never "according to the passage" or "in the text".
- answer: complete and correct, using only what the passage states; 1-4 sentences.
- reasoning: which statements of the passage support the answer and how (1-3 sentences).
- difficulty: copy the slot's.
- If the passage cannot carry that many good questions, give fewer. Never invent facts.
Answer with JSON only, matching the schema.""",
    user="""\
Passage (from {source}):
{passage}

Write {n} question-answer pairs from this passage, one per slot:
{slots}""",
)

__all__ = ["QA", "QABatch", "QAItem"]
