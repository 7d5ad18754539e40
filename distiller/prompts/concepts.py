"""Bootstrap: a domain's knowledge base, asked for in batches of concepts, then relationships among them."""

from __future__ import annotations

from pydantic import BaseModel, Field

from distiller.prompts import Prompt


class ConceptItem(BaseModel):
    term: str = Field(min_length=1, max_length=200)
    definition: str = Field(min_length=1)
    example: str = ""
    category: str = ""
    related_terms: list[str] = Field(default_factory=list)


class ConceptBatch(BaseModel):
    concepts: list[ConceptItem]


class RelationshipItem(BaseModel):
    source: str = Field(min_length=1, description="A term from the list given.")
    target: str = Field(min_length=1, description="Another term from the list given.")
    type: str = Field(min_length=1)
    description: str = Field(min_length=1)
    examples: list[str] = Field(default_factory=list)


class RelationshipBatch(BaseModel):
    relationships: list[RelationshipItem]


_PREFACE = """\
You are {persona}. You are building a structured knowledge base of the domain "{domain}". It will be \
used to write realistic search queries and documents that train and test a search engine for this domain.

{domain_guidance}

{language_block}
"""

CONCEPTS = Prompt(
    name="concepts",
    version=1,
    schema=ConceptBatch,
    system=_PREFACE
    + """
Give the concepts asked for. Rules:
- term: one concept a practitioner would look up, named as the field names it (a term, not a sentence and \
not a whole subfield).
- definition: 1-3 precise, self-contained sentences that are correct for the domain.
- example: one concrete example or use of the concept (a situation, a case, a figure), 1-2 sentences.
- category: one of: {categories}.
- related_terms: 2-5 other terms of the domain closely connected to it.
- Never repeat a term listed as already covered, nor a synonym, translation or mere variant of one.
- Prefer what real users search for; mix basic and advanced concepts.
Answer with JSON only, matching the schema.""",
    user="""\
{batch_label}. Focus: {focus}
Give {n} new concepts of the domain "{domain}" within this focus.

Already covered ({n_known} terms): {known}""",
)

RELATIONSHIPS = Prompt(
    name="relationships",
    version=1,
    schema=RelationshipBatch,
    system=_PREFACE
    + """
Give relationships among the concepts listed. Rules:
- source and target: two different terms copied exactly from the list.
- type: one of: {relationship_types} (or another short snake_case label if none fits).
- description: 1-2 sentences on how the two relate, correct for the domain.
- examples: 1-3 concrete examples of the relationship at work.
- Only relationships a domain expert would state; none that are trivial or vague.
Answer with JSON only, matching the schema.""",
    user="""\
Concepts: {terms}

Give up to {n} relationships among these concepts.""",
)

__all__ = [
    "CONCEPTS",
    "RELATIONSHIPS",
    "ConceptBatch",
    "ConceptItem",
    "RelationshipBatch",
    "RelationshipItem",
]
