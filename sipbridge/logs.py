"""Logging set-up: text or JSON lines on stderr, with secrets masked.

Theory of operation
-------------------
:func:`configure_logging` installs one handler on the root logger. Every
record that reaches it first passes :class:`RedactingFilter`, which rewrites
the record in place (message, string ``extra`` fields, exception and stack
text) so that no formatter can print a secret:

* any string registered with :func:`register_secret` (the gateway registers
  each SIP password it is given, each RTMP push its stream key), replaced
  wherever it occurs. Registrations are counted: :func:`unregister_secret`
  undoes one, and the string stays masked while another holder still has it
  registered (two pushes with the same key), so the set does not grow with
  every push a long-running gateway makes;
* ``password=...`` / ``"sipPassword": "..."`` style key/value pairs whose key
  names a password, secret or token;
* the ``response="..."`` of an ``Authorization: Digest`` header (RFC 3261
  §22.4) and the credentials of ``Authorization: Bearer``/``Basic``.

SIP message traces go to the :data:`SIP_TRACE_LOGGER` logger at DEBUG. It is
switched on by ``[log] sip_trace`` alone, independent of ``[log] level``.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from typing import Any, TextIO

import msgspec

from sipbridge.settings import LogSettings

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "SIP_TRACE_LOGGER",
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "clear_secrets",
    "configure_logging",
    "redact",
    "register_secret",
    "secret_count",
    "unregister_secret",
]

MASK = "***"
SIP_TRACE_LOGGER = "sipbridge.sip.trace"
# Shorter strings are not masked by value: masking "abc" everywhere would mangle
# every log line, and the key/value patterns still catch them in "password=abc".
MIN_SECRET_LENGTH = 4

_secrets_lock = threading.Lock()
# Secret -> number of registrations not yet undone.
_secrets: dict[str, int] = {}
_secrets_re: re.Pattern[str] | None = None


def register_secret(secret: str) -> None:
    """Mask ``secret`` wherever it appears in a log record from now on (thread-safe).

    Each call counts: the secret stays masked until :func:`unregister_secret` has been
    called as many times.
    """
    global _secrets_re
    if len(secret) < MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        count = _secrets.get(secret, 0)
        _secrets[secret] = count + 1
        if count == 0:
            _secrets_re = _compile_secrets(_secrets)


def unregister_secret(secret: str) -> None:
    """Undo one :func:`register_secret`; the last one stops masking ``secret``.

    Unknown (or too short) secrets are ignored (thread-safe).
    """
    global _secrets_re
    with _secrets_lock:
        count = _secrets.get(secret)
        if count is None:
            return
        if count > 1:
            _secrets[secret] = count - 1
            return
        del _secrets[secret]
        _secrets_re = _compile_secrets(_secrets)


def secret_count() -> int:
    """How many distinct secrets are masked now (for tests and diagnostics)."""
    with _secrets_lock:
        return len(_secrets)


def clear_secrets() -> None:
    """Forget every registered secret."""
    global _secrets_re
    with _secrets_lock:
        _secrets.clear()
        _secrets_re = None


def _compile_secrets(secrets: dict[str, int]) -> re.Pattern[str] | None:
    if not secrets:
        return None
    # Longest first, so a secret containing another is masked whole.
    ordered = sorted(secrets, key=lambda s: (-len(s), s))
    return re.compile("|".join(re.escape(s) for s in ordered))


_KEY_VALUE_RE = re.compile(
    r"""(?P<key>["']?\b[\w-]*(?:password|passwd|secret|api_?token)["']?\s*[=:]\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;&}\]]+)""",
    re.IGNORECASE,
)
_DIGEST_RESPONSE_RE = re.compile(
    r"""(?P<key>\bDigest\b[^\r\n]*?\bresponse\s*=\s*)(?P<value>"[^"\r\n]*"|[^\s,]+)""",
    re.IGNORECASE,
)
_AUTH_TOKEN_RE = re.compile(r"(?P<key>\b(?:Bearer|Basic)\s+)(?P<value>[A-Za-z0-9._~+/=-]+)")


def _mask_value(match: re.Match[str]) -> str:
    value = match["value"]
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match['key']}{quote}{MASK}{quote}"


def redact(text: str) -> str:
    """Return ``text`` with registered secrets and credential patterns replaced by ``***``."""
    pattern = _secrets_re  # one read: a concurrent register_secret swaps the whole pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _KEY_VALUE_RE.sub(_mask_value, text)
    text = _DIGEST_RESPONSE_RE.sub(_mask_value, text)
    return _AUTH_TOKEN_RE.sub(_mask_value, text)


# Attributes every LogRecord has; anything else was passed through ``extra=``.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and k[0] != "_"}


class RedactingFilter(logging.Filter):
    """Rewrite a record so that no secret survives into any formatter's output.

    Attach it to a handler (filters on a logger do not see records propagated
    from child loggers). It never drops a record.
    """

    _exc_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # bad %-args: keep the raw text rather than lose it
            message = f"{record.msg!s} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        for key, value in _extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exc_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds: ``2024-05-01T12:00:00.123Z``."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger>: <msg> key=value ...`` for humans."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_timestamp(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        )
        extras = _extra_fields(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _json_default(value: object) -> str:
    # Log fields are for reading: anything msgspec cannot encode is logged as its str().
    return str(value)


_json_encoder = msgspec.json.Encoder(enc_hook=_json_default)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, then ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extra_fields(record).items():
            doc.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        try:
            return _json_encoder.encode(doc).decode()
        except (TypeError, ValueError, OverflowError):  # e.g. non-str keys in an extra dict
            doc = {
                k: v if isinstance(v, str | int | float | bool) else str(v) for k, v in doc.items()
            }
            return _json_encoder.encode(doc).decode()


class _GatewayHandler(logging.StreamHandler[TextIO]):
    """Marks the handler configure_logging installed, so a second call replaces it."""


def configure_logging(settings: LogSettings, *, stream: TextIO | None = None) -> None:
    """Install the gateway's log handler on the root logger (idempotent).

    ``stream`` defaults to stderr (journald captures it under systemd).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _GatewayHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _GatewayHandler(sys.stderr if stream is None else stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if settings.json else TextFormatter())
    root.addHandler(handler)
    root.setLevel(settings.level)
    # The trace logger has its own level: on at DEBUG when asked for, even at level=INFO,
    # and off otherwise, even at level=DEBUG (traces are large and hold SIP headers).
    logging.getLogger(SIP_TRACE_LOGGER).setLevel(
        logging.DEBUG if settings.sip_trace else logging.CRITICAL + 1
    )
