"""A real HTTP server on 127.0.0.1 that speaks OpenAI Chat Completions (`POST /v1/chat/completions`) and
Anthropic Messages (`POST /v1/messages`), for tests and benchmarks of anything that calls an LLM.

- Answers come from a pluggable `responder(ChatRequest) -> dict | str | Reply`; the default builds a
  valid instance of the request's JSON schema, so a stage under test gets well-formed rows for free.
- Faults are programmable: a FIFO (`server.inject("429", "drop", Fault("timeout", sleep_s=3))`, one per
  request in arrival order) and/or a function (`server.fault_fn = lambda req: ...`) to target requests
  by content. Kinds: 429 (with Retry-After), 500, 401 (echoes the key it got, to test redaction), drop
  (connection closed, no response), timeout (sleeps past the client's timeout), malformed (not JSON),
  truncated (finish_reason "length" / stop_reason "max_tokens"), wrong_schema (valid JSON, wrong
  fields), no_usage (no `usage` object), bad_body (a 200 whose body is not JSON).
- It counts requests (`count`, `counts[path]`) and keeps them (`requests`) with arrival times.
- It bills like a provider, at `input_price_per_mtok` / `output_price_per_mtok`: every request it starts
  answering is billed (`billed_usd`, `billed_calls`, `billed_input_tokens`, `billed_output_tokens`) the
  moment the answer is made, before any latency or `timeout` sleep, so a client that gave up (timeout,
  killed) or a `drop` is billed too; error answers (429, 500, 401) and `bad_body` are not. This is the
  ground truth a spend audit compares the ledger against.
- `fault_rate` (with `seed`): that share of requests gets a random fault from `random_faults`.
- Batch APIs: OpenAI's Files + Batch API (`POST /v1/files`, `POST /v1/batches`, `GET /v1/batches[/{id}]`,
  `GET /v1/files/{id}/content`) and Anthropic's Message Batches (`POST /v1/messages/batches`, `GET
  /v1/messages/batches/{id}[/results]`). A batch ends on its `batch_polls`-th retrieve (or once
  `batch_delay_s` has passed); its requests are answered then, by the same responder, and billed at
  `batch_discount` (0.5: half price) in the same counters; `batches_created` lists the submissions.
  `fault_fn` applies to batch items too: a content fault (malformed, wrong_schema, truncated, no_usage)
  shapes the answer, any other fault makes the item an error (not billed).
- Usage: `with LLMTestServer() as srv: ...`, the `llm_server` pytest fixture (tests/llm_fixtures.py),
  or `python -m distiller.testing.llm_server --port 8099 --latency 0.2` for manual runs.

Nothing is logged: requests carry API keys.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import signal
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, cast

FaultKind = Literal[
    "429", "500", "401", "drop", "timeout", "malformed", "truncated", "wrong_schema", "no_usage", "bad_body"
]
FAULT_KINDS: tuple[str, ...] = FaultKind.__args__  # type: ignore[attr-defined]
NOT_BILLED = frozenset({"429", "500", "401", "bad_body"})
"""Faults that are an error answer: the provider bills nothing for them."""
RANDOM_FAULTS: tuple[str, ...] = ("429", "500", "drop", "timeout", "malformed", "truncated", "wrong_schema")


@dataclass
class Fault:
    kind: FaultKind
    retry_after: float | None = 0.05
    """429 only: the Retry-After header in seconds (None: no header)."""
    sleep_s: float = 2.0
    """timeout only: how long the server sleeps before answering (set it past the client's timeout)."""


@dataclass
class ChatRequest:
    """One request as the server saw it, normalized across the two APIs."""

    api: Literal["openai", "anthropic"]
    path: str
    model: str
    messages: list[dict[str, str]]
    """role/content pairs, content flattened to text; Anthropic's `system` is the first, role system."""
    schema: dict[str, Any] | None
    """The answer's JSON schema: OpenAI response_format json_schema, or the forced Anthropic tool's input."""
    schema_name: str | None
    max_tokens: int
    body: dict[str, Any]
    api_key: str | None
    received_at: float = field(default_factory=time.monotonic)

    @property
    def prompt(self) -> str:
        return "\n".join(m["content"] for m in self.messages)

    @property
    def first_user(self) -> str:
        """The original prompt (parse-retry turns come after it)."""
        return next((m["content"] for m in self.messages if m["role"] == "user"), "")

    @property
    def last_user(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")


@dataclass
class Reply:
    """A responder's answer when it wants to set the usage or truncation itself."""

    content: Any
    input_tokens: int | None = None
    output_tokens: int | None = None
    truncated: bool = False


Responder = Callable[[ChatRequest], Any]
"""request -> dict (the JSON answer; a tool_use block for Anthropic), str (raw text) or Reply."""


# -- answers from a schema ------------------------------------------------------------------------------
def stub_instance(schema: dict[str, Any], hint: str = "", *, _root: dict[str, Any] | None = None) -> Any:
    """A value that validates against a (pydantic-made) JSON schema: strings say which field and quote
    `hint`, numbers are their minimum or 1, lists have their minimum length (at least 1)."""
    root = _root or schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return stub_instance(root.get("$defs", {})[name], hint, _root=root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return stub_instance(options[0], hint, _root=root)
    typ = schema.get("type", "object")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "string")
    if typ == "object":
        props: dict[str, Any] = schema.get("properties", {})
        return {name: _field_value(name, sub, hint, root) for name, sub in props.items()}
    if typ == "array":
        n = max(1, int(schema.get("minItems", 1)))
        return [stub_instance(schema.get("items", {"type": "string"}), hint, _root=root) for _ in range(n)]
    if typ == "integer":
        return int(schema.get("minimum", 1))
    if typ == "number":
        return float(schema.get("minimum", 0.5))
    if typ == "boolean":
        return True
    if typ == "null":
        return None
    text = f"stub: {hint}" if hint else "stub"
    return text.ljust(int(schema.get("minLength", 0)), ".")


def _field_value(name: str, sub: dict[str, Any], hint: str, root: dict[str, Any]) -> Any:
    value = stub_instance(sub, hint, _root=root)
    if isinstance(value, str) and value.startswith("stub"):
        value = f"{name} for: {hint}" if hint else f"{name}"
        value = value.ljust(int(sub.get("minLength", 0)), ".")
    return value


def default_responder(req: ChatRequest) -> Any:
    hint = " ".join(req.first_user.split())[:80]
    if req.schema:
        return stub_instance(req.schema, hint)
    return {"answer": f"answer for: {hint}"}


def approx_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


# -- the server -----------------------------------------------------------------------------------------
class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a "timeout" fault's sleeping thread must not hold up stop()
    request_queue_size = 256  # 32+ clients connecting at once: a short backlog costs 1 s SYN retries
    owner: LLMTestServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        # A client that died (SIGKILL) or gave up resets its connections: expected, not worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real APIs
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed ACK
    # (~40 ms a response), which would cap any benchmark far below concurrency / latency.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # never log: requests carry keys
        return

    def do_GET(self) -> None:
        if self.server.owner._handle_get(self):
            return
        if self.path.split("?")[0] in ("/health", "/v1/models"):
            self._send(200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            self.server.owner._handle(self, raw)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout): fine
            self.close_connection = True

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class LLMTestServer:
    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        input_price_per_mtok: float = 0.0,
        output_price_per_mtok: float = 0.0,
        fault_rate: float = 0.0,
        slow_s: float = 2.0,
        seed: int = 0,
    ) -> None:
        self.responder: Responder = responder or default_responder
        self.latency_s = latency_s
        self.input_price_per_mtok = input_price_per_mtok
        self.output_price_per_mtok = output_price_per_mtok
        self.fault_rate = fault_rate
        self.slow_s = slow_s
        """How long a random `timeout` fault sleeps (set it past the client's timeout)."""
        self.random_faults: tuple[str, ...] = RANDOM_FAULTS
        self._rng = random.Random(seed)
        self._billed = Decimal(0)
        self.billed_calls = 0
        self.billed_input_tokens = 0
        self.billed_output_tokens = 0
        self.fault_fn: Callable[[ChatRequest], Fault | str | None] | None = None
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self.counts: Counter[str] = Counter()
        self.faults_served: Counter[str] = Counter()
        self.requests: list[ChatRequest] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Batch APIs (module doc)
        self.batch_polls = 2
        self.batch_delay_s: float | None = None
        self.batch_discount = 0.5
        self.batches_created: list[str] = []
        self.batch_requests: list[ChatRequest] = []
        self._files: dict[str, bytes] = {}
        self._batches: dict[str, dict[str, Any]] = {}

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> LLMTestServer:
        httpd = _HTTPServer((self._host, self._port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LLMTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def llm_config(self, provider: Literal["openai", "anthropic"] = "openai", **overrides: Any) -> Any:
        """An `LLMConfig` pointing at this server: free (price 0), short timeout, quick retries."""
        from distiller.config import LLMConfig

        base = {
            "provider": provider,
            "model": "test-model",
            "base_url": self.openai_base_url if provider == "openai" else self.anthropic_base_url,
            "input_price_per_mtok": 0.0,
            "output_price_per_mtok": 0.0,
            "timeout_s": 5.0,
            "max_retries": 3,
            "max_concurrency": 8,
        }
        return LLMConfig(**{**base, **overrides})

    # -- programming ---------------------------------------------------------------------------------
    def inject(self, *faults: Fault | str) -> None:
        """Queue faults; each of the next requests takes one, in arrival order."""
        with self._lock:
            self._faults.extend(f if isinstance(f, Fault) else Fault(f) for f in faults)  # type: ignore[arg-type]

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.counts.clear()
            self.faults_served.clear()
            self.requests.clear()
            self.batches_created.clear()
            self.batch_requests.clear()
            self._billed = Decimal(0)
            self.billed_calls = self.billed_input_tokens = self.billed_output_tokens = 0

    @property
    def billed_usd(self) -> float:
        """What a provider would have billed so far (exact sum, as a float)."""
        with self._lock:
            return float(self._billed)

    def _bill(self, input_tokens: int, output_tokens: int, factor: Decimal = Decimal(1)) -> None:
        cost = (
            (
                Decimal(str(self.input_price_per_mtok)) * input_tokens
                + Decimal(str(self.output_price_per_mtok)) * output_tokens
            )
            * factor
            / 1_000_000
        )
        with self._lock:
            self._billed += cost
            self.billed_calls += 1
            self.billed_input_tokens += input_tokens
            self.billed_output_tokens += output_tokens

    def billing(self) -> dict[str, float | int]:
        with self._lock:
            return {
                "billed_usd": float(self._billed),
                "billed_calls": self.billed_calls,
                "input_tokens": self.billed_input_tokens,
                "output_tokens": self.billed_output_tokens,
            }

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    # -- batch APIs ----------------------------------------------------------------------------------
    def _batch_post(self, h: _Handler, path: str, raw: bytes) -> None:
        now = int(time.time())
        if path == "/v1/files":
            fields = _multipart(h.headers.get("content-type", ""), raw)
            data = fields.get("file", b"")
            fid = f"file-{uuid.uuid4().hex[:16]}"
            with self._lock:
                self._files[fid] = data
            purpose = fields.get("purpose", b"batch").decode()
            h._send(200, _file_object(fid, data, purpose, now))
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            h._send(400, _error("openai", "invalid_request_error", "the request body is not JSON"))
            return
        if path == "/v1/batches":
            with self._lock:
                input_file = self._files.get(body.get("input_file_id", ""))
            if input_file is None:
                h._send(404, _error("openai", "invalid_request_error", "no such input file"))
                return
            items = [json.loads(line) for line in input_file.decode().splitlines() if line.strip()]
            bid = f"batch_{uuid.uuid4().hex[:16]}"
            obj: dict[str, Any] = {
                "id": bid,
                "object": "batch",
                "endpoint": body.get("endpoint", "/v1/chat/completions"),
                "input_file_id": body["input_file_id"],
                "completion_window": body.get("completion_window", "24h"),
                "status": "in_progress",
                "created_at": now,
                "metadata": body.get("metadata"),
                "request_counts": {"total": len(items), "completed": 0, "failed": 0},
            }
            api: Literal["openai", "anthropic"] = "openai"
        else:
            items = body.get("requests", [])
            bid = f"msgbatch_{uuid.uuid4().hex[:16]}"
            obj = {
                "id": bid,
                "type": "message_batch",
                "processing_status": "in_progress",
                "created_at": _iso(now),
                "expires_at": _iso(now + 86400),
                "ended_at": None,
                "archived_at": None,
                "cancel_initiated_at": None,
                "results_url": None,
                "request_counts": {
                    "processing": len(items),
                    "succeeded": 0,
                    "errored": 0,
                    "canceled": 0,
                    "expired": 0,
                },
            }
            api = "anthropic"
        with self._lock:
            self._batches[bid] = {
                "api": api,
                "obj": obj,
                "items": items,
                "polls": 0,
                "t0": time.monotonic(),
                "headers": h.headers,
            }
            self.batches_created.append(bid)
        h._send(200, obj)

    def _handle_get(self, h: _Handler) -> bool:
        """Batch and file reads; False: not a batch route."""
        parts = h.path.split("?")[0].strip("/").split("/")
        if parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[3] == "content":
            with self._lock:
                self.counts[h.path] += 1
                data = self._files.get(parts[2])
            if data is None:
                h._send(404, _error("openai", "invalid_request_error", "no such file"))
            else:
                h._send(200, data)
            return True
        if parts == ["v1", "batches"]:  # list, newest first
            with self._lock:
                listed = [b["obj"] for b in reversed(self._batches.values()) if b["api"] == "openai"]
            first, last = (listed[0]["id"], listed[-1]["id"]) if listed else (None, None)
            h._send(
                200,
                {"object": "list", "data": listed, "first_id": first, "last_id": last, "has_more": False},
            )
            return True
        if parts[:2] == ["v1", "batches"] and len(parts) == 3:
            api, bid, results = "openai", parts[2], False
        elif parts[:3] == ["v1", "messages", "batches"] and len(parts) in (4, 5):
            api, bid, results = "anthropic", parts[3], len(parts) == 5
        else:
            return False
        with self._lock:
            self.counts[h.path.split("?")[0]] += 1
            batch = self._batches.get(bid)
        if batch is None:
            h._send(404, _error(api, "not_found_error", f"no batch {bid}"))
            return True
        if results:
            h._send(200, "".join(json.dumps(r) + "\n" for r in batch.get("results", [])).encode())
            return True
        batch["polls"] += 1
        due = batch["polls"] >= self.batch_polls or (
            self.batch_delay_s is not None and time.monotonic() - batch["t0"] >= self.batch_delay_s
        )
        if due and "results" not in batch:
            self._run_batch(batch)
        h._send(200, batch["obj"])
        return True

    def _run_batch(self, batch: dict[str, Any]) -> None:
        """Answer every request of a batch and bill it at the batch price."""
        api, obj = batch["api"], batch["obj"]
        out: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item in batch["items"]:
            cid = item["custom_id"]
            body = item["body"] if api == "openai" else item["params"]
            path = item.get("url", "/v1/chat/completions") if api == "openai" else "/v1/messages"
            req = _parse_request(api, path, body, batch["headers"])
            with self._lock:
                self.batch_requests.append(req)
            fault = self.fault_fn(req) if self.fault_fn is not None else None
            if isinstance(fault, str):
                fault = Fault(fault)  # type: ignore[arg-type]
            if fault is not None and fault.kind not in ("malformed", "wrong_schema", "truncated", "no_usage"):
                with self._lock:
                    self.faults_served[fault.kind] += 1
                err = {"code": "server_error", "message": f"batch item failed ({fault.kind})"}
                if api == "openai":
                    errors.append(
                        {"id": f"batch_req_{cid}", "custom_id": cid, "response": None, "error": err}
                    )
                else:
                    result = {"type": "errored", "error": {"type": "error", "error": {"type": "api_error"}}}
                    errors.append({"custom_id": cid, "result": result})
                continue
            if fault is not None:
                with self._lock:
                    self.faults_served[fault.kind] += 1
            answer = self.responder(req)
            reply = answer if isinstance(answer, Reply) else Reply(content=answer)
            resp, in_tok, out_tok = self._build(api, req, reply, fault)
            self._bill(in_tok, out_tok, Decimal(str(self.batch_discount)))
            if api == "openai":
                response = {"status_code": 200, "request_id": uuid.uuid4().hex, "body": resp}
                out.append({"id": f"batch_req_{cid}", "custom_id": cid, "response": response, "error": None})
            else:
                out.append({"custom_id": cid, "result": {"type": "succeeded", "message": resp}})
        now = int(time.time())
        if api == "openai":
            with self._lock:
                oid, eid = f"file-{uuid.uuid4().hex[:16]}", f"file-{uuid.uuid4().hex[:16]}"
                self._files[oid] = "".join(json.dumps(r) + "\n" for r in out).encode()
                self._files[eid] = "".join(json.dumps(r) + "\n" for r in errors).encode()
            obj.update(
                status="completed",
                completed_at=now,
                output_file_id=oid,
                error_file_id=eid if errors else None,
                request_counts={
                    "total": len(out) + len(errors),
                    "completed": len(out),
                    "failed": len(errors),
                },
            )
            batch["results"] = out + errors
        else:
            batch["results"] = out + errors
            obj.update(
                processing_status="ended",
                ended_at=_iso(now),
                results_url=f"{self.url}/v1/messages/batches/{obj['id']}/results",
                request_counts={
                    "processing": 0,
                    "succeeded": len(out),
                    "errored": len(errors),
                    "canceled": 0,
                    "expired": 0,
                },
            )

    # -- serving -------------------------------------------------------------------------------------
    def _handle(self, h: _Handler, raw: bytes) -> None:
        path = h.path.split("?")[0]
        with self._lock:
            self.counts[path] += 1
        if path in ("/v1/files", "/v1/batches", "/v1/messages/batches"):
            self._batch_post(h, path, raw)
            return
        if path.endswith("/chat/completions"):
            api: Literal["openai", "anthropic"] = "openai"
        elif path.endswith("/messages"):
            api = "anthropic"
        else:
            h._send(404, {"error": {"message": f"no route {path}", "type": "not_found"}})
            return
        try:
            request_body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            h._send(400, _error(api, "invalid_request_error", "the request body is not JSON"))
            return
        req = _parse_request(api, path, request_body, h.headers)
        with self._lock:
            self.requests.append(req)
            fault: Fault | str | None = self._faults.popleft() if self._faults else None
        if fault is None and self.fault_fn is not None:
            fault = self.fault_fn(req)
        if fault is None and self.fault_rate and self.random_faults:
            with self._lock:
                if self._rng.random() < self.fault_rate:
                    fault = Fault(self._rng.choice(self.random_faults), sleep_s=self.slow_s)  # type: ignore[arg-type]
        if isinstance(fault, str):
            fault = Fault(fault)  # type: ignore[arg-type]
        body: dict[str, Any] | None = None
        if fault is None or fault.kind not in NOT_BILLED:
            # Billed as soon as the answer is made, as a provider does: whether the client is still
            # there to read it (a timeout, a kill, a dropped connection) changes nothing.
            answer = self.responder(req)
            reply = answer if isinstance(answer, Reply) else Reply(content=answer)
            body, in_tok, out_tok = self._build(api, req, reply, fault)
            self._bill(in_tok, out_tok)
        if self.latency_s:
            time.sleep(self.latency_s)
        if fault is not None:
            with self._lock:
                self.faults_served[fault.kind] += 1
            if self._transport_fault(h, api, req, fault):
                return
        assert body is not None
        h._send(200, body)

    def _transport_fault(self, h: _Handler, api: str, req: ChatRequest, fault: Fault) -> bool:
        """Faults that replace the answer; True when the response has been dealt with."""
        kind = fault.kind
        if kind == "429":
            headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            h._send(429, _error(api, "rate_limit_error", "rate limited by the test server"), headers)
        elif kind == "500":
            h._send(500, _error(api, "api_error", "internal error in the test server"))
        elif kind == "401":
            # Echo the key, as some servers do: the client must keep it out of its error messages.
            h._send(401, _error(api, "authentication_error", f"invalid API key: {req.api_key}"))
        elif kind == "drop":
            h.close_connection = True  # no status line at all: the client sees the connection close
        elif kind == "bad_body":
            h._send(200, b"<html>this is not JSON</html>")
        elif kind == "timeout":
            time.sleep(fault.sleep_s)
            return False  # then answer normally, to a client that has stopped listening
        else:
            return False
        return True

    def _build(
        self, api: str, req: ChatRequest, reply: Reply, fault: Fault | None
    ) -> tuple[dict[str, Any], int, int]:
        """The response body and the usage billed for it (also when the body leaves it out)."""
        kind = fault.kind if fault else None
        content: Any = reply.content
        truncated = reply.truncated or kind == "truncated"
        if kind == "wrong_schema":
            content = {"unexpected_field": "this is not the schema you asked for"}
        structured = not isinstance(content, str)
        text = content if isinstance(content, str) else json.dumps(content)
        if kind == "malformed":
            text, structured = '{"answer": "this JSON never ends', False
        if truncated:
            text, structured = text[: max(1, len(text) // 2)], False
        in_tok = reply.input_tokens
        if in_tok is None:
            in_tok = approx_tokens(req.prompt + json.dumps(req.schema or {}))
        out_tok = reply.output_tokens
        if out_tok is None:
            out_tok = req.max_tokens if truncated else min(req.max_tokens, approx_tokens(text))
        if api == "openai":
            resp: dict[str, Any] = {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": req.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "length" if truncated else "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": in_tok,
                    "completion_tokens": out_tok,
                    "total_tokens": in_tok + out_tok,
                },
            }
        else:
            if structured and req.schema_name:
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": f"toolu_{uuid.uuid4().hex[:12]}",
                    "name": req.schema_name,
                    "input": content,
                }
                stop = "tool_use"
            else:
                block, stop = {"type": "text", "text": text}, "end_turn"
            resp = {
                "id": f"msg_{uuid.uuid4().hex[:12]}",
                "type": "message",
                "role": "assistant",
                "model": req.model,
                "content": [block],
                "stop_reason": "max_tokens" if truncated else stop,
                "stop_sequence": None,
                "usage": {"input_tokens": in_tok, "output_tokens": out_tok},
            }
        if kind == "no_usage":
            resp.pop("usage")
        return resp, in_tok, out_tok


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _file_object(fid: str, data: bytes, purpose: str, now: int) -> dict[str, Any]:
    return {
        "id": fid,
        "object": "file",
        "bytes": len(data),
        "created_at": now,
        "filename": "batch.jsonl",
        "purpose": purpose,
        "status": "processed",
    }


def _multipart(content_type: str, raw: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body (the OpenAI SDK's file upload)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    out: dict[str, bytes] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True)
            out[str(name)] = payload if isinstance(payload, bytes) else b""
    return out


def _error(api: str, kind: str, message: str) -> dict[str, Any]:
    if api == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "code": None, "param": None}}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, dict):
                parts.append(p.get("text") or (json.dumps(p["input"]) if "input" in p else ""))
            else:
                parts.append(str(p))
        return "".join(parts)
    return "" if content is None else str(content)


def _parse_request(
    api: Literal["openai", "anthropic"], path: str, body: dict[str, Any], headers: Any
) -> ChatRequest:
    messages = [
        {"role": m.get("role", "user"), "content": _text(m.get("content"))} for m in body.get("messages", [])
    ]
    schema: dict[str, Any] | None = None
    name: str | None = None
    # OpenAI sends `Authorization: Bearer`; Anthropic's API takes `x-api-key` (anthropic 2.x sends Bearer).
    key = (
        headers.get("x-api-key")
        or (headers.get("authorization") or "").removeprefix("Bearer ").strip()
        or None
    )
    if api == "openai":
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            schema = fmt["json_schema"].get("schema")
            name = fmt["json_schema"].get("name")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 1024
    else:
        if body.get("system"):
            messages.insert(0, {"role": "system", "content": _text(body["system"])})
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {}
        forced = next((t for t in tools if t.get("name") == choice.get("name")), tools[0] if tools else None)
        if forced is not None:
            schema, name = forced.get("input_schema"), forced.get("name")
        max_tokens = body.get("max_tokens") or 1024
    return ChatRequest(
        api=api,
        path=path,
        model=str(body.get("model", "")),
        messages=messages,
        schema=schema,
        schema_name=name,
        max_tokens=int(max_tokens),
        body=body,
        api_key=key,
    )


def _load_responder(spec: str) -> Responder:
    import importlib
    import inspect

    module, _, name = spec.partition(":")
    obj = getattr(importlib.import_module(module), name)
    # a class named by the spec is instantiated; a function is the responder itself
    return cast("Responder", obj() if inspect.isclass(obj) else obj)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--input-price", type=float, default=0.0, help="USD per million input tokens")
    parser.add_argument("--output-price", type=float, default=0.0, help="USD per million output tokens")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of requests given a fault")
    parser.add_argument("--slow", type=float, default=2.0, help="seconds a 'timeout' fault sleeps")
    parser.add_argument("--batch-polls", type=int, default=2, help="retrieves before a batch ends")
    parser.add_argument("--batch-delay", type=float, default=None, help="or seconds before a batch ends")
    parser.add_argument(
        "--responder",
        help="module:name of a responder (a callable, or a class to instantiate) to answer with instead of "
        "schema stubs, e.g. helpers.generation_responder:ScriptedTeacher with PYTHONPATH=tests",
    )
    args = parser.parse_args(argv)
    server = LLMTestServer(
        latency_s=args.latency,
        host=args.host,
        port=args.port,
        input_price_per_mtok=args.input_price,
        output_price_per_mtok=args.output_price,
        fault_rate=args.fault_rate,
        slow_s=args.slow,
    )
    server.batch_polls, server.batch_delay_s = args.batch_polls, args.batch_delay
    if args.responder:
        server.responder = _load_responder(args.responder)
    # The handler before the address is printed: a caller that read it may stop the server at once (on a
    # busy machine, before this thread got any further).
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print(
        f"LLM test server on {server.url} (OpenAI base_url {server.openai_base_url}, Anthropic base_url "
        f"{server.anthropic_base_url}); latency {args.latency}s. Ctrl-C to stop.",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        while not stop.wait(0.5):
            pass
    server.stop()


if __name__ == "__main__":
    main()


__all__ = [
    "FAULT_KINDS",
    "ChatRequest",
    "Fault",
    "FaultKind",
    "LLMTestServer",
    "Reply",
    "Responder",
    "default_responder",
    "stub_instance",
]
