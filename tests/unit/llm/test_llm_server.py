"""The loopback LLM server itself: wire formats, counting, responders, schema stubs, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from distiller.testing.llm_server import ChatRequest, LLMTestServer, Reply, stub_instance


class Inner(BaseModel):
    term: str = Field(min_length=2)
    weight: float = Field(ge=0.0, le=1.0)


class Nested(BaseModel):
    kind: Literal["factoid", "howto"]
    queries: list[str] = Field(min_length=2)
    inner: Inner
    extra: Inner | None = None
    tags: list[Inner] = Field(default_factory=list)
    n: int = Field(ge=3)


def test_stub_instance_validates_against_nested_pydantic_schemas() -> None:
    value = stub_instance(Nested.model_json_schema(), "about aspirin")
    parsed = Nested.model_validate(value)
    assert parsed.kind == "factoid" and len(parsed.queries) == 2 and parsed.n == 3
    assert "about aspirin" in parsed.queries[0]


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_wire_formats_usage_and_counts(llm_server: LLMTestServer) -> None:
    schema = Inner.model_json_schema()
    status, body = _post(
        f"{llm_server.openai_base_url}/chat/completions",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hello"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "Inner", "schema": schema}},
            "max_tokens": 50,
        },
    )
    assert status == 200 and body["object"] == "chat.completion"
    assert Inner.model_validate_json(body["choices"][0]["message"]["content"])
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] > 0 and 0 < body["usage"]["completion_tokens"] <= 50

    llm_server.inject("truncated")
    status, body = _post(
        f"{llm_server.anthropic_base_url}/v1/messages",
        {
            "model": "m",
            "system": "be brief",
            "max_tokens": 40,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "tools": [{"name": "Inner", "input_schema": schema}],
            "tool_choice": {"type": "tool", "name": "Inner"},
        },
    )
    assert status == 200 and body["stop_reason"] == "max_tokens" and body["usage"]["output_tokens"] == 40
    status, body = _post(
        f"{llm_server.anthropic_base_url}/v1/messages",
        {
            "model": "m",
            "max_tokens": 40,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "Inner", "input_schema": schema}],
        },
    )
    assert body["content"][0]["type"] == "tool_use" and Inner.model_validate(body["content"][0]["input"])
    assert body["stop_reason"] == "tool_use"
    llm_server.inject("429")
    status, body = _post(f"{llm_server.anthropic_base_url}/v1/messages", {"model": "m", "messages": []})
    assert status == 429 and body["type"] == "error"
    assert llm_server.count == 4
    assert llm_server.counts == {"/v1/chat/completions": 1, "/v1/messages": 3}
    assert llm_server.faults_served == {"truncated": 1, "429": 1}
    assert llm_server.requests[1].messages[0] == {"role": "system", "content": "be brief"}


def test_responder_builds_answers_from_the_prompt(llm_server: LLMTestServer) -> None:
    def responder(req: ChatRequest) -> Reply:
        word = req.first_user.split()[-1]
        return Reply(content={"term": word.upper(), "weight": 0.5}, input_tokens=7, output_tokens=3)

    llm_server.responder = responder
    _, body = _post(
        f"{llm_server.openai_base_url}/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "define aspirin"}]},
    )
    assert json.loads(body["choices"][0]["message"]["content"]) == {"term": "ASPIRIN", "weight": 0.5}
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_runs_as_a_module_for_manual_use() -> None:
    port = 18000 + int(time.time() * 1000) % 2000
    proc = subprocess.Popen(
        [sys.executable, "-m", "distiller.testing.llm_server", "--port", str(port), "--latency", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert f"http://127.0.0.1:{port}" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0


@pytest.mark.parametrize("kind", ["drop", "bad_body", "no_usage", "wrong_schema", "malformed"])
def test_faults_over_the_wire(llm_server: LLMTestServer, kind: str) -> None:
    llm_server.inject(kind)
    url = f"{llm_server.openai_base_url}/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    if kind == "drop":
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            _post(url, body)
        return
    req = urllib.request.Request(url, data=json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=5) as resp:
        raw = resp.read()
    if kind == "bad_body":
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw)
        return
    answer = json.loads(raw)
    if kind == "no_usage":
        assert "usage" not in answer
    elif kind == "wrong_schema":
        assert "unexpected_field" in json.loads(answer["choices"][0]["message"]["content"])
    else:
        with pytest.raises(json.JSONDecodeError):
            json.loads(answer["choices"][0]["message"]["content"])
