"""Documents for a query: positives that answer it and hard negatives that look relevant but do not.

Contrastive negatives are made by six strategies, each a different way to be close and still wrong; the
caller assigns them in turn so every strategy is equally represented. A negative is asked for at the
same length as the query's positive: were negatives shorter or longer, length alone would tell them
apart and the student would learn that instead of relevance.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from distiller.prompts import Prompt, numbered

STRATEGIES: dict[str, str] = {
    "topical_shift": "same broad topic and vocabulary, but it answers a neighbouring question",
    "entity_substitution": "the same kind of information about a different entity (another concept, "
    "product, law, condition, organisation...)",
    "temporal_variance": "the same subject at another time (a former rule, an older version, a planned "
    "change), so its facts do not hold for the query",
    "scope_mismatch": "too general or too narrow: about the whole field or one special case, and the "
    "answer is not in it",
    "premise_alteration": "answers the question under a changed premise or condition (another "
    "jurisdiction, group, setting or assumption)",
    "perspective_shift": "the same subject from another stakeholder's perspective or purpose, without "
    "what the query needs",
}
RELATED = "related"
"""The strategy label of a negative asked for without `contrastive` (look relevant, do not answer)."""


class PositiveDoc(BaseModel):
    text: str = Field(min_length=1)


class NegativeDoc(BaseModel):
    strategy: str = ""
    text: str = Field(min_length=1)
    explanation: str = Field(default="", description="Why this document does not answer the query.")


class DocumentSet(BaseModel):
    answer: str = Field(min_length=1, description="The short correct answer, consistent with the positives.")
    reasoning: str = ""
    positives: list[PositiveDoc] = Field(min_length=1)
    negatives: list[NegativeDoc] = Field(default_factory=list)


class NegativeSet(BaseModel):
    negatives: list[NegativeDoc]


def negatives_request(strategies: list[str], words: str) -> str:
    """The user prompt's request for negatives: one slot per strategy, or none."""
    if not strategies:
        return "Write no negative documents (negatives: [])."
    return (
        f"Write {len(strategies)} negative document(s), each of {words} words, one per slot, in slot "
        f"order:\n{numbered(strategies)}"
    )


def strategy_lines(contrastive: bool) -> str:
    if not contrastive:
        return f"- {RELATED}: on the query's topic and looking relevant, but without its answer"
    return "\n".join(f"- {name}: {what}" for name, what in STRATEGIES.items())


_NEGATIVE_RULES = """\
Negatives must look relevant to the query (its topic, its vocabulary) and still not answer it. Each one \
follows the strategy named in its slot:
{strategy_lines}
- explanation: one sentence on why the negative does not answer the query.
- strategy: copy the slot's."""

_DOCUMENT_STYLE = """\
Write every document like a real document of the domain (a guide, a manual section, an encyclopedia or \
textbook passage), not like a chat answer: it never repeats the query, never addresses the reader's \
question, and never says that it is (or is not) an answer. Keep to the number of words asked for."""

DOCUMENTS = Prompt(
    name="documents_for_query",
    version=1,
    schema=DocumentSet,
    system="""\
You are {persona}. You write the documents of a search corpus for the domain "{domain}": for a user's \
query, positives that answer it and negatives that look relevant but do not. They train a retrieval model \
to tell the two apart.

{domain_guidance}

{language_block}

"""
    + _DOCUMENT_STYLE
    + """
Positives contain the complete, correct answer to the query, with the context such a document would have.
"""
    + _NEGATIVE_RULES
    + """
Also give answer (the short correct answer to the query, 1-3 sentences, consistent with the positives) and \
reasoning (1-2 sentences on how the positive answers the query).
Answer with JSON only, matching the schema.""",
    user="""\
Query: {query}
(complexity: {complexity}; type: {query_type}; about: {about})

Write {n_pos} positive document(s), each of {words} words.
{negatives_request}""",
)

NEGATIVES = Prompt(
    name="negatives_for_chunk_query",
    version=1,
    schema=NegativeSet,
    system="""\
You are {persona}. You write hard negatives for a search corpus of the domain "{domain}": documents that \
look relevant to a user's query but do not answer it. They train a retrieval model to tell them from the \
passage that does answer it.

{domain_guidance}

{language_block}

"""
    + _DOCUMENT_STYLE
    + "\n"
    + _NEGATIVE_RULES
    + """
A negative must not contain the answer that the given passage contains.
Answer with JSON only, matching the schema.""",
    user="""\
Query: {query}
Passage that answers it:
{passage}

{negatives_request}""",
)

__all__ = [
    "DOCUMENTS",
    "NEGATIVES",
    "RELATED",
    "STRATEGIES",
    "DocumentSet",
    "NegativeDoc",
    "NegativeSet",
    "PositiveDoc",
    "negatives_request",
    "strategy_lines",
]
