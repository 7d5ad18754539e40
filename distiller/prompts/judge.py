"""The validation judge: is a Q&A pair grounded in its source, and does a query's passage answer it?
And the mining guard's judge: does a mined negative answer its query after all (a false negative)?

The judge writes its analysis before its checks and verdict (reasoning first makes verdicts more
reliable), answers at temperature 0, and reports each check separately so that a rejection says why.
The checks are phrased so that `true` is good, and a row is approved only when every check holds and the
verdict agrees (see `distiller.generation.validation.decide`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from distiller.prompts import Prompt


class Verdict(BaseModel):
    analysis: str = Field(description="Your reasoning, before the checks: 1-4 sentences.")
    grounded: bool
    no_hallucination: bool
    complete: bool
    factually_correct: bool
    problems: list[str] = Field(default_factory=list, description="One short sentence per problem found.")
    verdict: Literal["approve", "reject"]


_OUTRO = """\
verdict: "approve" only if all four checks hold; otherwise "reject".
The material may be written in {language_name}; write your analysis and problems in English.
Answer with JSON only, matching the schema: analysis first."""

JUDGE_QA = Prompt(
    name="judge_qa",
    version=1,
    schema=Verdict,
    temperature=0.0,
    system="""\
You are a meticulous reviewer of a question-answer data set for the domain "{domain}". You check one \
generated pair against the source passage it was made from. Judge by the source, and by well-established \
knowledge of the domain for factual errors only.

Checks (true is good):
- grounded: every claim of the answer is stated in the source or follows directly from it.
- no_hallucination: the answer adds no names, numbers, dates, conditions or facts that are absent from \
the source.
- complete: the answer addresses every part of the question.
- factually_correct: nothing in the question or the answer is wrong.
- problems: each problem you found, one short sentence each (an empty list if none).
"""
    + _OUTRO,
    user="""\
Question: {question}
Answer: {answer}

Source:
{source}""",
)

JUDGE_QUERY = Prompt(
    name="judge_query",
    version=1,
    schema=Verdict,
    temperature=0.0,
    system="""\
You are a meticulous reviewer of a search data set for the domain "{domain}". You check one generated \
search query against the passage that is meant to answer it (its positive). A query whose positive does \
not answer it teaches a search engine the wrong thing.

Checks (true is good):
- grounded: the query asks about something the passage actually covers.
- no_hallucination: the query does not presuppose facts that are absent from or contradict the passage.
- complete: the passage answers the query fully, not just mentions its topic.
- factually_correct: the query's premises are correct.
- problems: each problem you found, one short sentence each (an empty list if none).
"""
    + _OUTRO,
    user="""\
Query: {question}

Passage:
{source}""",
)


class NegativeCheck(BaseModel):
    analysis: str = Field(description="Your reasoning, before the answer: 1-3 sentences.")
    answers_query: bool = Field(description="True if the passage answers the query, fully or in part.")


JUDGE_NEGATIVE = Prompt(
    name="judge_negative",
    version=1,
    schema=NegativeCheck,
    temperature=0.0,
    system="""\
You check a search engine's training data for the domain "{domain}". A passage was picked as a *negative* \
for a query: a passage that looks relevant but does not answer it. Passages that do answer the query (false \
negatives) teach the search engine to push a right answer away, so they must be found.

answers_query: true if a user who asked the query would accept the passage as an answer, fully or in \
part; false if it is only about the same topic, or answers a different question.
The material may be written in {language_name}; write your analysis in English.
Answer with JSON only, matching the schema: analysis first.""",
    user="""\
Query: {question}

Passage:
{source}""",
)

__all__ = ["JUDGE_NEGATIVE", "JUDGE_QA", "JUDGE_QUERY", "NegativeCheck", "Verdict"]
