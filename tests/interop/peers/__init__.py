"""Real third-party SIP peers for interop tests: Kamailio, sipp, any program.

Theory of operation
-------------------
Every peer is a child process started by a test, bound to 127.0.0.1 on free
ports, with its stdout and stderr in one log file under the test's artifacts
directory. A :class:`ManagedProcess` remembers the PID of what it started and
stops exactly that (its own process group: SIGTERM, a grace period, SIGKILL);
fixtures call :meth:`ManagedProcess.stop` in their finalizers, so nothing
outlives a test even when it fails.

Readiness and outcomes are observed the way a user would: a port that answers,
a line in a log, an exit code, sipp's message trace. Polling with short sleeps
is deliberate here: these tests drive real programs on the wall clock, unlike
the sans-IO unit tests that run on virtual time.

Facts about the peers that shaped this module:

* sipp maps every message to a call by Call-ID. A UAC scenario (one that
  starts with ``<send>``) discards a request with an unknown Call-ID, so one
  scenario cannot REGISTER and then take the INVITE a proxy forwards from
  another UA. :class:`RegisteredCallee` therefore registers with one sipp
  (``uac_register.xml``) and answers with a second one, in server mode, on the
  same local port, i.e. on the registered Contact.
* sipp exits 0 when every call succeeded, 1 when one failed, 255 when the
  global ``-timeout`` passed (with ``-timeout_error``) or on a fatal error. It
  listens on 0.0.0.0 unless given ``-bind_local``, and opens a UDP control
  socket on 0.0.0.0:8888 unless given ``-ci``/``-cp``. With ``-mp P`` it binds
  the audio and video echo ports P and P+2 (not the RTCP ports).
* Kamailio 5.6's ``db_text`` needs the ``ha1``/``ha1b`` columns declared
  ``(string,null)`` when ``calculate_ha1`` is on, or every REGISTER fails.
"""

from tests.interop.peers.base import (
    DEBIAN_PACKAGES,
    LOCALHOST,
    REPO_ROOT,
    SCENARIOS_DIR,
    ManagedProcess,
    PeerError,
    PeerTimeout,
    PortKind,
    free_port,
    port_is_bound,
    port_is_free,
    require_binary,
    sip_ping,
    tcp_port_answers,
    wait_for_port,
    wait_until,
)
from tests.interop.peers.kamailio import Kamailio
from tests.interop.peers.peerset import PeerSet, peer_set
from tests.interop.peers.sipp import (
    RegisteredCallee,
    Sipp,
    SipTraceEntry,
    parse_sipp_trace,
    scenario_path,
)

__all__ = [
    "DEBIAN_PACKAGES",
    "LOCALHOST",
    "REPO_ROOT",
    "SCENARIOS_DIR",
    "Kamailio",
    "ManagedProcess",
    "PeerError",
    "PeerSet",
    "PeerTimeout",
    "PortKind",
    "RegisteredCallee",
    "SipTraceEntry",
    "Sipp",
    "free_port",
    "parse_sipp_trace",
    "peer_set",
    "port_is_bound",
    "port_is_free",
    "require_binary",
    "scenario_path",
    "sip_ping",
    "tcp_port_answers",
    "wait_for_port",
    "wait_until",
]
