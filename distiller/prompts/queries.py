"""Search queries: from a concept of the knowledge base (bootstrap mode) or from a chunk (document mode).

The caller plans every query's complexity and type (the slots) from the template's mixes, so the mix of
the data set is what the user configured rather than what the model likes to write."""

from __future__ import annotations

from pydantic import BaseModel, Field

from distiller.prompts import Prompt


class QueryItem(BaseModel):
    text: str = Field(min_length=3)
    complexity: str = ""
    query_type: str = ""
    answer_type: str = ""
    key_concepts: list[str] = Field(default_factory=list)


class QueryBatch(BaseModel):
    queries: list[QueryItem]


_SYSTEM = """\
You write realistic search queries for the domain "{domain}": what people type into a search engine or a \
document search when they need information. They train and test a retrieval model.

{domain_guidance}

{language_block}

Every query fills one slot, which fixes its complexity and its type.
Complexity:
{complexity_lines}
Types:
{query_type_lines}

Rules:
- Write as the user would: natural, specific and self-contained; never "the text", "this passage", \
"the concept above".
- {grounding}
- Do not copy the wording of the material; paraphrase as someone who does not know the answer yet.
- Vary the wording and the first word across queries.
- complexity and query_type: copy those of the slot.
- answer_type: the kind of answer the query expects, one of: {answer_types}.
- key_concepts: the 1-4 domain terms the query is about.
Answer with JSON only, matching the schema: exactly one query per slot, in slot order."""

FROM_CONCEPT = Prompt(
    name="queries_from_concept",
    version=1,
    schema=QueryBatch,
    system=_SYSTEM.replace(
        "{grounding}",
        "Each query must be answerable by one good document about the concept (or relationship) given.",
    ),
    user="""\
{material}

Write {n} queries about this, one per slot:
{slots}""",
)

FROM_CHUNK = Prompt(
    name="queries_from_chunk",
    version=1,
    schema=QueryBatch,
    system=_SYSTEM.replace(
        "{grounding}",
        "The passage must answer each query completely; never ask about what it only mentions in passing.",
    ),
    user="""\
Passage (from {source}):
{passage}

Write {n} queries that this passage answers, one per slot:
{slots}""",
)

__all__ = ["FROM_CHUNK", "FROM_CONCEPT", "QueryBatch", "QueryItem"]
