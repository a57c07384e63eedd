"""Tests for sipbridge.logs: text/JSON formatting, secret masking, SIP trace switch."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from sipbridge.logs import (
    MASK,
    SIP_TRACE_LOGGER,
    RedactingFilter,
    clear_secrets,
    configure_logging,
    redact,
    register_secret,
    secret_count,
    unregister_secret,
)
from sipbridge.settings import LogSettings

PASSWORD = "hunter2-very-secret"


@pytest.fixture(autouse=True)
def _isolated_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    trace = logging.getLogger(SIP_TRACE_LOGGER)
    trace_level = trace.level
    clear_secrets()
    yield
    clear_secrets()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    trace.setLevel(trace_level)


def _configure(**kwargs: object) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(LogSettings(**kwargs), stream=stream)  # type: ignore[arg-type]
    return stream


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_registered_password_masked_in_text_mode() -> None:
    stream = _configure()
    register_secret(PASSWORD)
    logging.getLogger("sipbridge.test").info("registering with %s now", PASSWORD)
    out = stream.getvalue()
    assert PASSWORD not in out
    assert f"sipbridge.test: registering with {MASK} now" in out
    assert " INFO " in out


def test_registered_password_masked_in_json_mode() -> None:
    stream = _configure(json=True)
    register_secret(PASSWORD)
    logging.getLogger("sipbridge.test").warning(
        "auth failed for %s", PASSWORD, extra={"callId": "c-1", "detail": f"pw={PASSWORD}"}
    )
    (line,) = _lines(stream)
    assert PASSWORD not in line
    doc = json.loads(line)
    assert doc["msg"] == f"auth failed for {MASK}"
    assert doc["level"] == "WARNING"
    assert doc["logger"] == "sipbridge.test"
    assert doc["callId"] == "c-1"
    assert doc["detail"] == f"pw={MASK}"
    assert doc["ts"].endswith("Z")
    assert doc["ts"][10] == "T"


def test_text_mode_appends_extra_fields() -> None:
    stream = _configure()
    logging.getLogger("sipbridge.calls").info("answered", extra={"callId": "abc"})
    (line,) = _lines(stream)
    assert line.endswith("INFO sipbridge.calls: answered callId=abc")


def test_password_in_traceback_masked() -> None:
    stream = _configure(json=True)
    register_secret(PASSWORD)
    try:
        raise RuntimeError(f"login failed with {PASSWORD}")
    except RuntimeError:
        logging.getLogger("sipbridge.test").exception("boom")
    doc = json.loads(stream.getvalue())
    assert PASSWORD not in stream.getvalue()
    assert doc["msg"] == "boom"
    assert f"RuntimeError: login failed with {MASK}" in doc["exc"]


def test_unregistered_secret_is_no_longer_masked() -> None:
    register_secret(PASSWORD)
    assert redact(PASSWORD) == MASK
    unregister_secret(PASSWORD)
    assert redact(PASSWORD) == PASSWORD


def test_registrations_are_counted() -> None:
    register_secret(PASSWORD)
    register_secret(PASSWORD)  # a second holder (two pushes with one stream key)
    assert secret_count() == 1
    unregister_secret(PASSWORD)
    assert redact(PASSWORD) == MASK  # the other holder still has it
    unregister_secret(PASSWORD)
    assert redact(PASSWORD) == PASSWORD
    assert secret_count() == 0
    unregister_secret(PASSWORD)  # one too many: ignored, never negative
    register_secret(PASSWORD)
    assert redact(PASSWORD) == MASK


def test_register_unregister_does_not_grow() -> None:
    for index in range(1000):
        key = f"stream-key-{index:04d}"
        register_secret(key)
        unregister_secret(key)
    assert secret_count() == 0
    assert redact("stream-key-0001") == "stream-key-0001"


def test_unregister_thread_safe() -> None:
    secret = "shared-stream-key"

    def worker() -> None:
        for _ in range(500):
            register_secret(secret)
            unregister_secret(secret)

    register_secret(secret)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert redact(secret) == MASK  # the first registration is still held
    unregister_secret(secret)
    assert secret_count() == 0


def test_short_secrets_are_not_registered() -> None:
    register_secret("abc")
    assert redact("abc tab cab") == "abc tab cab"


def test_longest_secret_masked_whole() -> None:
    register_secret("secret1")
    register_secret("secret1-longer")
    assert redact("x secret1-longer y secret1") == f"x {MASK} y {MASK}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=abc rest", f"password={MASK} rest"),
        ("user=bob, password = 'x y'", f"user=bob, password = '{MASK}'"),
        (
            '{"sipPassword": "p@ss", "sipLogin": "bob"}',
            f'{{"sipPassword": "{MASK}", "sipLogin": "bob"}}',
        ),
        ("sip_password=abc&x=1", f"sip_password={MASK}&x=1"),
        ("api_token: tok123", f"api_token: {MASK}"),
        ("Authorization: Bearer abc.def-123", f"Authorization: Bearer {MASK}"),
        (
            'Authorization: Digest username="bob", realm="r", nonce="n", uri="sip:x", '
            'response="6629fae49393a05397450978507c4ef1", algorithm=MD5',
            'Authorization: Digest username="bob", realm="r", nonce="n", uri="sip:x", '
            f'response="{MASK}", algorithm=MD5',
        ),
        (
            "Proxy-Authorization: Digest username=bob,response=abcdef,nonce=n",
            f"Proxy-Authorization: Digest username=bob,response={MASK},nonce=n",
        ),
        ("nothing secret here: 200 OK", "nothing secret here: 200 OK"),
    ],
)
def test_pattern_redaction(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_digest_in_multiline_sip_trace_masked() -> None:
    message = (
        "REGISTER sip:example.com SIP/2.0\r\n"
        'Authorization: Digest username="bob", response="deadbeef", nonce="n1"\r\n'
        "CSeq: 2 REGISTER\r\n"
    )
    out = redact(message)
    assert "deadbeef" not in out
    assert 'nonce="n1"' in out
    assert "CSeq: 2 REGISTER\r\n" in out


def test_filter_handles_bad_format_args() -> None:
    record = logging.makeLogRecord({"msg": "value %d", "args": ("x",), "levelno": logging.INFO})
    assert RedactingFilter().filter(record) is True
    assert record.args is None
    assert "value %d" in record.getMessage()


def test_level_respected_and_reconfigure_replaces_handler() -> None:
    stream = _configure(level="WARNING")
    log = logging.getLogger("sipbridge.test")
    log.info("hidden")
    log.warning("shown")
    assert _lines(stream)[0].endswith("WARNING sipbridge.test: shown")
    assert len(_lines(stream)) == 1

    second = _configure(level="DEBUG")
    log.debug("debug now")
    assert len(_lines(stream)) == 1  # the first handler was removed
    assert _lines(second)[0].endswith("DEBUG sipbridge.test: debug now")


def test_sip_trace_switch() -> None:
    trace = logging.getLogger(SIP_TRACE_LOGGER)
    off = _configure(level="DEBUG", sip_trace=False)
    trace.debug("INVITE sip:a@b SIP/2.0")
    assert off.getvalue() == ""

    on = _configure(level="INFO", sip_trace=True)
    trace.debug("INVITE sip:a@b SIP/2.0")
    logging.getLogger("sipbridge.other").debug("not at INFO")
    assert _lines(on) == [_lines(on)[0]]
    assert _lines(on)[0].endswith("DEBUG sipbridge.sip.trace: INVITE sip:a@b SIP/2.0")


def test_json_mode_encodes_unusual_extras() -> None:
    stream = _configure(json=True)
    logging.getLogger("sipbridge.test").info(
        "x", extra={"addr": ("127.0.0.1", 5060), "obj": object(), "m": {1: "a"}}
    )
    doc = json.loads(stream.getvalue())
    assert doc["msg"] == "x"
    assert "addr" in doc
    assert doc["obj"].startswith("<object object")


def test_register_secret_thread_safe() -> None:
    secrets = [f"password-{i:04d}" for i in range(200)]

    def worker(chunk: list[str]) -> None:
        for s in chunk:
            register_secret(s)

    threads = [threading.Thread(target=worker, args=(secrets[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(redact(f"[{s}]") == f"[{MASK}]" for s in secrets)
