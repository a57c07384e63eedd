"""The brute-force limit on POST /login: LoginRateLimiter on a fake clock (lock-out after ten
failures, Retry-After, unlock after the window, reset on success, the cap on addresses,
independent addresses), and the 429 through an ASGI app with an injected clock."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette

from sipbridge.api.app import create_app
from sipbridge.api.login import SESSION_COOKIE, LoginRoutes, SessionCookie
from sipbridge.api.ratelimit import (
    MAX_CLIENTS,
    MAX_FAILURES,
    WINDOW_SECONDS,
    LoginRateLimiter,
)
from tests.api.fakes import FakeGateway

TOKEN = "t0ken-for-ratelimit"
A = "192.0.2.1"
B = "192.0.2.2"


class FakeClock:
    """Virtual monotonic seconds."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fail(limiter: LoginRateLimiter, client: str, times: int, now: float) -> list[bool]:
    return [limiter.record_failure(client, now) for _ in range(times)]


# ---- the limiter -----------------------------------------------------------------------------


def test_defaults_are_ten_failures_in_five_minutes_for_ten_thousand_addresses() -> None:
    assert (MAX_FAILURES, WINDOW_SECONDS, MAX_CLIENTS) == (10, 300.0, 10_000)


def test_ten_failures_lock_out_with_retry_after() -> None:
    limiter = LoginRateLimiter()
    for i in range(9):
        assert limiter.retry_after(A, 100.0 + i) is None
        assert limiter.record_failure(A, 100.0 + i) is False
    assert limiter.retry_after(A, 109.0) is None
    assert limiter.record_failure(A, 109.0) is True  # the tenth locks
    # Until the first failure (t=100) leaves the 300 s window.
    assert limiter.retry_after(A, 109.0) == 291
    assert limiter.retry_after(A, 399.5) == 1
    assert limiter.retry_after(A, 250.2) == 150  # rounded up: never too early


def test_unlock_after_the_window() -> None:
    limiter = LoginRateLimiter()
    fail(limiter, A, 10, now=0.0)
    assert limiter.retry_after(A, 299.9) == 1
    assert limiter.retry_after(A, 300.0) is None
    # All ten left the window together: the address is forgotten, a fresh count starts.
    assert A not in limiter
    assert fail(limiter, A, 9, now=300.0) == [False] * 9
    assert limiter.retry_after(A, 300.0) is None


def test_the_window_slides() -> None:
    limiter = LoginRateLimiter()
    for i in range(10):
        limiter.record_failure(A, float(i * 10))  # t = 0, 10, ..., 90
    assert limiter.retry_after(A, 95.0) == 205
    # At t=300 the first failure leaves: one more try, and failing it locks again.
    assert limiter.retry_after(A, 300.0) is None
    assert limiter.record_failure(A, 300.0) is True
    assert limiter.retry_after(A, 300.0) == 10  # until t=10 leaves at 310


def test_success_resets_the_count() -> None:
    limiter = LoginRateLimiter()
    fail(limiter, A, 9, now=5.0)
    limiter.record_success(A)
    assert A not in limiter
    assert fail(limiter, A, 9, now=6.0) == [False] * 9
    assert limiter.retry_after(A, 6.0) is None
    assert limiter.record_failure(A, 6.0) is True
    limiter.record_success(B)  # unknown address: nothing happens
    assert len(limiter) == 1


def test_two_addresses_are_independent() -> None:
    limiter = LoginRateLimiter()
    fail(limiter, A, 10, now=0.0)
    assert limiter.retry_after(A, 1.0) == 299
    assert limiter.retry_after(B, 1.0) is None
    assert fail(limiter, B, 9, now=1.0) == [False] * 9
    limiter.record_success(B)
    assert limiter.retry_after(A, 2.0) == 298


def test_the_number_of_addresses_is_capped_dropping_the_oldest() -> None:
    limiter = LoginRateLimiter(max_clients=3)
    limiter.record_failure("a", 1.0)
    limiter.record_failure("b", 2.0)
    limiter.record_failure("c", 3.0)
    limiter.record_failure("a", 4.0)  # a failed last: b is now the oldest
    limiter.record_failure("d", 5.0)
    assert len(limiter) == 3
    assert "b" not in limiter
    assert {"a", "c", "d"} == {x for x in "abcd" if x in limiter}


def test_a_locked_address_dropped_by_the_cap_may_try_again() -> None:
    # The price of bounded memory: many other addresses can push one out.
    limiter = LoginRateLimiter(max_clients=2)
    fail(limiter, A, 10, now=0.0)
    limiter.record_failure(B, 1.0)
    limiter.record_failure("192.0.2.3", 2.0)
    assert A not in limiter
    assert limiter.retry_after(A, 3.0) is None


def test_addresses_whose_window_passed_are_forgotten() -> None:
    limiter = LoginRateLimiter()
    for i in range(100):
        limiter.record_failure(f"198.51.100.{i}", float(i))
    assert len(limiter) == 100
    limiter.retry_after(A, 349.5)  # any call forgets: 0..49 left the window
    assert len(limiter) == 50
    limiter.record_failure(A, 1000.0)
    assert len(limiter) == 1


def test_lock_out_is_logged_once_with_the_address(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="sipbridge.api.ratelimit")
    limiter = LoginRateLimiter(max_failures=3)
    fail(limiter, A, 3, now=0.0)
    fail(limiter, B, 2, now=0.0)
    messages = [r.getMessage() for r in caplog.records if r.name == "sipbridge.api.ratelimit"]
    assert messages == [f"login: {A} locked out after 3 failed logins within 300 s"]
    assert caplog.records[0].levelname == "WARNING"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_failures": 0}, "max_failures must be at least 1, not 0"),
        ({"window": 0.0}, "window must be positive, not 0.0"),
        ({"window": float("nan")}, "window must be positive, not nan"),
        ({"max_clients": 0}, "max_clients must be at least 1, not 0"),
    ],
)
def test_limits_are_checked(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        LoginRateLimiter(**kwargs)  # type: ignore[arg-type]
    assert str(excinfo.value) == message


@given(
    st.lists(
        st.tuples(st.integers(0, 20), st.floats(0, 50), st.booleans()),
        max_size=200,
    )
)
def test_memory_stays_bounded(events: list[tuple[int, float, bool]]) -> None:
    limiter = LoginRateLimiter(max_failures=3, window=10.0, max_clients=5)
    now = 0.0
    for client, step, success in events:
        now += step
        name = f"10.0.0.{client}"
        if success:
            limiter.record_success(name)
        elif limiter.retry_after(name, now) is None:
            limiter.record_failure(name, now)
        else:
            wait = limiter.retry_after(name, now)
            assert wait is not None and 1 <= wait <= 10
        assert len(limiter) <= 5


# ---- through ASGI ----------------------------------------------------------------------------


def login_app(clock: FakeClock) -> Starlette:
    routes = LoginRoutes(SessionCookie(TOKEN), limiter=LoginRateLimiter(), clock=clock)
    return Starlette(routes=routes.routes())


def client_from(app: Starlette, host: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gw.example")


async def post_login(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/login", data={"token": token, "next": "/"})


async def test_right_token_is_refused_while_locked_then_accepted_after_the_window() -> None:
    clock = FakeClock()
    app = login_app(clock)
    async with client_from(app, A) as client:
        for _ in range(10):
            assert (await post_login(client, "wrong")).status_code == 403
        clock.now += 100.0
        locked = await post_login(client, TOKEN)
        assert locked.status_code == 429
        assert locked.headers["retry-after"] == "200"
        assert "Wait 200 seconds" in locked.text
        assert "set-cookie" not in locked.headers
        # An empty token is not even looked at either.
        assert (await post_login(client, "")).status_code == 429
        clock.now += 200.0
        accepted = await post_login(client, TOKEN)
        assert accepted.status_code == 303
        assert SESSION_COOKIE in accepted.headers["set-cookie"]


async def test_addresses_are_counted_apart_through_asgi() -> None:
    clock = FakeClock()
    app = login_app(clock)
    async with client_from(app, A) as attacker, client_from(app, B) as operator:
        for _ in range(10):
            await post_login(attacker, "guess")
        assert (await post_login(attacker, TOKEN)).status_code == 429
        assert (await post_login(operator, TOKEN)).status_code == 303


async def test_success_clears_the_failures_through_asgi() -> None:
    clock = FakeClock()
    app = login_app(clock)
    async with client_from(app, A) as client:
        for _ in range(9):
            assert (await post_login(client, "wrong")).status_code == 403
        assert (await post_login(client, TOKEN)).status_code == 303
        for _ in range(9):
            assert (await post_login(client, "wrong")).status_code == 403
        assert (await post_login(client, TOKEN)).status_code == 303


async def test_the_gateway_app_answers_429_after_ten_failures(gateway: FakeGateway) -> None:
    app = create_app(gateway, api_token=TOKEN)
    async with client_from(app, A) as client, client_from(app, B) as other:
        statuses = [(await post_login(client, f"guess{i}")).status_code for i in range(11)]
        assert statuses == [403] * 10 + [429]
        locked = await post_login(client, TOKEN)
        assert locked.status_code == 429
        assert 299 <= int(locked.headers["retry-after"]) <= 300
        assert locked.headers["content-type"] == "text/html; charset=utf-8"
        assert 'id="login-form"' in locked.text
        assert (await post_login(other, TOKEN)).status_code == 303
