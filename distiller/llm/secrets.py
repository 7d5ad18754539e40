"""API keys: where they come from, and keeping them out of every log line, file and error message.

A key is read from an environment variable or a Prefect Secret block, handed to the provider's client,
and registered here. Every registered value is replaced by `***` in any text passed to `redact()`, and
(once `install_log_redaction()` has run) in every log record created in this process, whichever handler
later formats it — including pytest's and Prefect's, which are added after us. The config never holds
a key, so the manifest cannot leak one.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from distiller.config import LLMConfig
from distiller.errors import ConfigError

DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
MASK = "***"
_MIN_SECRET_LEN = 6  # shorter values would mask innocent text ("EMPTY", "none") and protect nothing

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | SecretStr | None) -> None:
    """Remember a value that must never be shown."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if raw and len(raw) >= _MIN_SECRET_LEN:
        with _lock:
            _secrets.add(raw)


def redact(text: str) -> str:
    """`text` with every registered secret replaced by `***`."""
    if not _secrets or not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)  # longest first: a key that contains another
    for s in secrets:
        if s in text:
            text = text.replace(s, MASK)
    return text


def redact_exception(exc: BaseException) -> str:
    """`Type: message` of an exception, safe to store or print."""
    return redact(f"{type(exc).__name__}: {exc}")


def safe_url(url: str | None) -> str | None:
    """A URL without user info, query or fragment: the parts that may carry a key (`?key=...`)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def resolve_api_key(cfg: LLMConfig) -> SecretStr | None:
    """The endpoint's key, from its Prefect Secret block or environment variable, registered for redaction.

    Returns None when no key is set and the endpoint is a custom `base_url` (self-hosted servers such as
    vLLM or Ollama usually need none). A hosted endpoint with no key is a configuration error.
    """
    if cfg.offline:
        return None
    value: str | None
    if cfg.api_key_secret_block:
        value = _load_secret_block(cfg.api_key_secret_block)
        source = f"Prefect Secret block {cfg.api_key_secret_block!r}"
    else:
        env = cfg.api_key_env or DEFAULT_KEY_ENV[cfg.provider]
        value = os.environ.get(env) or None
        source = f"environment variable {env}"
    if value:
        register_secret(value)
        return SecretStr(value)
    if cfg.base_url:
        return None
    raise ConfigError(
        f"no API key for the {cfg.provider} endpoint (model {cfg.model!r}): {source} is not set. "
        "Set it, or name another variable with api_key_env, or a Prefect Secret block with "
        "api_key_secret_block."
    )


def _load_secret_block(name: str) -> str:
    # Imported here: the domain layer stays Prefect-free unless a block is actually configured.
    from prefect.blocks.system import Secret

    try:
        block: Any = Secret.load(name)
    except Exception as e:  # Prefect raises ValueError for a missing block, httpx errors with no server
        raise ConfigError(f"cannot load the Prefect Secret block {name!r}: {type(e).__name__}: {e}") from None
    value = block.get()
    if not isinstance(value, str) or not value:
        raise ConfigError(f"the Prefect Secret block {name!r} does not hold a non-empty string")
    return value


# -- logging ----------------------------------------------------------------------------------------------
_installed = False


def install_log_redaction() -> None:
    """Redact registered secrets from every log record created from now on (idempotent).

    A record factory rather than a handler filter: filters on a logger miss records from its children,
    and filters on handlers miss handlers added later (pytest's caplog, Prefect's API log handler).
    """
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _secrets:
            _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a malformed format string: leave it to the handler to report
        return
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[1] is not None:
        # Formatted now so the handler uses our redacted text instead of formatting the raw exception.
        text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = redact(text)


__all__ = [
    "DEFAULT_KEY_ENV",
    "install_log_redaction",
    "redact",
    "redact_exception",
    "register_secret",
    "resolve_api_key",
    "safe_url",
]
