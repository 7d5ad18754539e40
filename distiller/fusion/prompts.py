"""The fusion generators' and the integrator's prompts (versioned like `distiller.prompts`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from distiller.prompts import Prompt


class FusionQuery(BaseModel):
    question: str = Field(min_length=3)


class DomainAnswer(BaseModel):
    answer: str = Field(min_length=1)


class Contribution(BaseModel):
    domain: str
    contribution: str


class Contradiction(BaseModel):
    issue: str
    resolution: str


class Integrated(BaseModel):
    answer: str = Field(min_length=1)
    contributions: list[Contribution]
    contradictions: list[Contradiction] = Field(default_factory=list)


CROSS_QUERY = Prompt(
    name="fusion_cross_query",
    version=1,
    schema=FusionQuery,
    system="""\
You write search questions for a retrieval data set that spans several domains. Each question you write \
must need BOTH passages you are shown to be answered: one from the domain "{domain_a}" ({description_a}) \
and one from the domain "{domain_b}" ({description_b}). A question answered by one passage alone is useless.

{language_block}

Rules: self-contained, as a user would ask it; never "according to the passages"; 8-30 words. \
Answer with JSON only, matching the schema.""",
    user="""\
Passage A ({domain_a}):
{passage_a}

Passage B ({domain_b}):
{passage_b}

Write one question that needs both passages.""",
)

ADVERSARIAL_QUERY = Prompt(
    name="fusion_adversarial_query",
    version=1,
    schema=FusionQuery,
    system="""\
You write hard search questions for a retrieval data set that spans several domains. The question must \
be answered by the passage of the domain "{domain_b}" ({description_b}), yet read like a question of the \
domain "{domain_a}" ({description_a}): use that domain's vocabulary and framing, so that a search engine \
is tempted by passages of "{domain_a}". The passage of "{domain_a}" you are shown must NOT answer it.

{language_block}

Rules: self-contained, 8-30 words. Answer with JSON only, matching the schema.""",
    user="""\
Answering passage ({domain_b}):
{passage_b}

Tempting passage that must not answer it ({domain_a}):
{passage_a}

Write one such question.""",
)

DOMAIN_ANSWER = Prompt(
    name="fusion_domain_answer",
    version=1,
    schema=DomainAnswer,
    system="""\
You are the expert of the domain "{domain}" ({description}). A question spans several domains; answer \
only the part your domain's passage covers, using the passage alone, in 1-4 sentences. If the passage \
covers none of it, say so in one sentence.

{language_block}

Answer with JSON only, matching the schema.""",
    user="""\
Question: {question}

Passage ({domain}):
{passage}""",
)

INTEGRATE = Prompt(
    name="fusion_integrate",
    version=1,
    schema=Integrated,
    system="""\
You merge the answers of several domain experts to one question into a single coherent answer. Keep \
every correct piece each expert gave; where two answers contradict each other, decide by their passages' \
authority for that point, state the resolution, and list the contradiction. Record for each domain what \
it contributed to the merged answer (one sentence each).

{language_block}

Answer with JSON only, matching the schema.""",
    user="""\
Question: {question}

{expert_answers}""",
)

__all__ = [
    "ADVERSARIAL_QUERY",
    "CROSS_QUERY",
    "DOMAIN_ANSWER",
    "INTEGRATE",
    "DomainAnswer",
    "FusionQuery",
    "Integrated",
]
