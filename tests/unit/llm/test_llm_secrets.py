"""API keys never appear in a log line, the ledger, the cache, an exception message or a result."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import pytest
from helpers.llm_fixtures import make_requests

from distiller.config import LLMConfig
from distiller.errors import ConfigError
from distiller.llm import Budget, CallCache, Ledger, LLMClient
from distiller.llm.secrets import install_log_redaction, redact, register_secret, resolve_api_key, safe_url
from distiller.testing.llm_server import LLMTestServer


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_no_secret_in_any_artifact_of_a_run(
    llm_server: LLMTestServer, fake_key: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, provider: str
) -> None:
    caplog.set_level(logging.DEBUG)  # everything the SDKs, httpx and we log
    run_dir, cache_dir = tmp_path / "run", tmp_path / "cache"
    ledger = Ledger.in_run(run_dir)
    cfg = llm_server.llm_config(provider, max_retries=1)  # type: ignore[arg-type]
    errors: list[str] = []
    with CallCache.in_dir(cache_dir) as cache:
        # The key comes from the environment (fake_key), as in production.
        client = LLMClient(cfg, budget=Budget(5.0), cache=cache, ledger=ledger)
        llm_server.inject("500", "500", "malformed", "429")
        results = client.run_batch_sync(make_requests(4))
        # A server that echoes the key in its error (the 401 fault does): recorded, redacted.
        llm_server.fault_fn = lambda req: "401"
        results += client.run_batch_sync(make_requests(2, prefix="later"))
        errors += [r.error or "" for r in results]
        try:
            raise RuntimeError(f"a stage failed while using {fake_key}")
        except RuntimeError:
            logging.getLogger("distiller.test").exception("stage crashed")
    ledger.flush()

    # The test means something: the key really went over the wire, and was really echoed back.
    assert llm_server.requests and all(r.api_key == fake_key for r in llm_server.requests)
    assert [r.status for r in results] == ["ok"] * 4 + ["failed"] * 2
    assert any("***" in e for e in errors), errors

    artifacts = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in artifacts} >= {"ledger.parquet", "llm_cache.sqlite"}
    for p in artifacts:  # parquet, sqlite and its -wal / -shm files, anything else written
        assert fake_key.encode() not in p.read_bytes(), p
    assert ledger.entries and all(fake_key not in (e.error or "") for e in ledger.entries)
    assert any("***" in (e.error or "") for e in ledger.entries)
    for e in errors:
        assert fake_key not in e
    assert caplog.records
    assert fake_key not in caplog.text
    assert "stage crashed" in caplog.text and "a stage failed while using ***" in caplog.text
    assert fake_key not in repr(client.__dict__)


def test_redact_and_log_records() -> None:
    register_secret("sk-abcdef-redact-me")
    register_secret("no")  # too short to mask anything safely: ignored
    assert redact("key=sk-abcdef-redact-me; no") == "key=***; no"
    install_log_redaction()
    record = logging.getLogger("x").makeRecord(
        "x", logging.INFO, __file__, 1, "using %s", ("sk-abcdef-redact-me",), None
    )
    assert record.getMessage() == "using ***"


def test_safe_url_drops_what_may_carry_a_key() -> None:
    assert safe_url("https://user:sk-pass@host:8443/v1?key=sk-q#frag") == "https://host:8443/v1"


def test_key_from_env_and_a_clear_error_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_TEACHER_KEY", "sk-from-env-123456")
    cfg = LLMConfig(provider="anthropic", api_key_env="MY_TEACHER_KEY")
    key = resolve_api_key(cfg)
    assert key is not None and key.get_secret_value() == "sk-from-env-123456"
    assert "sk-from-env" not in repr(key) and redact("sk-from-env-123456") == "***"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        resolve_api_key(LLMConfig(provider="openai"))
    # A self-hosted server (base_url) usually needs no key.
    assert resolve_api_key(LLMConfig(provider="openai", base_url="http://127.0.0.1:8000/v1")) is None


def test_key_from_a_prefect_secret_block(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[str] = []

    class FakeSecret:
        @classmethod
        def load(cls, name: str) -> FakeSecret:
            loaded.append(name)
            return cls()

        def get(self) -> str:
            return "sk-from-prefect-block-999"

    # The real Secret.load needs a Prefect API; the call shape is what is tested here.
    fake_module = types.ModuleType("prefect.blocks.system")
    fake_module.Secret = FakeSecret  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prefect.blocks.system", fake_module)
    key = resolve_api_key(LLMConfig(provider="openai", api_key_secret_block="teacher-key"))
    assert loaded == ["teacher-key"]
    assert key is not None and key.get_secret_value() == "sk-from-prefect-block-999"
    assert redact("Bearer sk-from-prefect-block-999") == "Bearer ***"
