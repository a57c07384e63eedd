"""The password audit of gateway logs (tests/interop/gateway_process.py) is complete
and really catches a leak."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.conftest import KAMAILIO_USERS
from tests.interop.gateway_process import TEST_SECRETS, running_gateway


def test_secrets_cover_every_kamailio_password() -> None:
    assert set(KAMAILIO_USERS.values()) <= set(TEST_SECRETS)


@pytest.mark.interop
def test_a_leaked_password_fails_the_audit(tmp_path: Path) -> None:
    with (
        pytest.raises(AssertionError, match="contains secrets"),
        running_gateway(tmp_path) as gateway,
        gateway.log_path.open("a") as log,
    ):
        # Stands in for a leak: the audit reads the whole log file.
        log.write("DEBUG oops sipPassword=alice-secret\n")
