"""Teachers turn chunks into (passages, queries, Q&A pairs). The offline teacher needs no LLM; LLM
teachers plug in behind the same `GenerationOutput`."""

from distiller.generation.teachers.base import GenerationOutput

__all__ = ["GenerationOutput"]
