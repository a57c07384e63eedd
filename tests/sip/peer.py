"""A scripted fake SIP peer for sans-IO tests of the user agent, on virtual time.

:class:`Peer` plays the far side of a :class:`~sipbridge.sip.ua.UserAgent`: a
registrar, a proxy, a callee. It drains ``ua.messages_to_send()`` after every
step, round-trips each message through the wire format (``to_bytes`` then
``parse_message``, so the test sees what a real peer would parse), and keeps
them in an inbox stamped with the virtual time they were sent. Tests pop them
with :meth:`Peer.expect_request` / :meth:`Peer.expect_response` and answer with
real responses (:meth:`Peer.reply`, built by ``make_response``) or requests
built by hand (:class:`PeerDialog`).

Time only moves through :meth:`Peer.advance` / :meth:`Peer.run_until`, which
fire ``ua.handle_timer(now)`` at every deadline ``ua.get_timer()`` names, in
order, exactly as the asyncio shell does with ``loop.call_at``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sipbridge.sip.address import NameAddr, Target
from sipbridge.sip.auth import compute_response, parse_authorization
from sipbridge.sip.message import (
    CSeq,
    Headers,
    SipRequest,
    SipResponse,
    generate_branch,
    generate_tag,
    make_response,
    parse_message,
)
from sipbridge.sip.ua import UserAgent

__all__ = [
    "G729_AUDIO",
    "PCMU_AUDIO",
    "PEER",
    "PEER_TCP",
    "Peer",
    "PeerDialog",
    "Sent",
    "check_digest",
    "out_of_dialog_request",
    "sdp_answer",
    "sdp_offer",
]

#: Where the fake peer (proxy/registrar/callee) lives.
PEER = Target("udp", "192.0.2.10", 5060)
PEER_TCP = Target("tcp", "192.0.2.10", 5060)

#: A run of timers longer than this is a livelock in the code under test.
MAX_TIMER_STEPS = 10_000


@dataclass(frozen=True)
class Sent:
    """One message the UA sent: when (virtual time), what (as parsed back), where to."""

    at: float
    message: SipRequest | SipResponse
    target: Target


class Peer:
    """The far end of a :class:`UserAgent`, driven by a test on virtual time."""

    def __init__(self, ua: UserAgent, *, address: Target = PEER, now: float = 0.0) -> None:
        self.ua = ua
        self.address = address
        self.now = now
        self.inbox: deque[Sent] = deque()
        self.log: list[Sent] = []

    # -- time ------------------------------------------------------------------
    def pump(self) -> None:
        """Take what the UA has to send into the inbox (wire round trip)."""
        for message, target in self.ua.messages_to_send():
            parsed = parse_message(message.to_bytes(), stream=target.transport != "udp")
            sent = Sent(self.now, parsed, target)
            self.inbox.append(sent)
            self.log.append(sent)

    def run_until(self, when: float) -> None:
        """Move virtual time to ``when``, firing every UA timer due on the way."""
        self.pump()
        for _ in range(MAX_TIMER_STEPS):
            deadline = self.ua.get_timer()
            if deadline is None or deadline > when:
                break
            self.now = max(self.now, deadline)
            self.ua.handle_timer(self.now)
            self.pump()
        else:
            raise AssertionError(f"timers still due after {MAX_TIMER_STEPS} steps at {self.now}")
        self.now = max(self.now, when)

    def advance(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def act(self, action: Callable[[float], object]) -> None:
        """Call ``action(now)`` on a flow (start, terminate, hold...) and collect the output."""
        action(self.now)
        self.pump()

    # -- what the UA sent --------------------------------------------------------
    def next_sent(self) -> Sent:
        self.pump()
        assert self.inbox, "the UA sent nothing"
        return self.inbox.popleft()

    def expect_request(self, method: str) -> SipRequest:
        """Pop the next message; it must be a ``method`` request sent to this peer."""
        sent = self.next_sent()
        message = sent.message
        assert isinstance(message, SipRequest), f"expected {method}, got {message!r}"
        assert message.method == method, f"expected {method}, got {message!r}"
        return message

    def expect_response(self, status: int) -> SipResponse:
        """Pop the next message; it must be a response with ``status``."""
        sent = self.next_sent()
        message = sent.message
        assert isinstance(message, SipResponse), f"expected {status}, got {message!r}"
        assert message.status == status, f"expected {status}, got {message!r}"
        return message

    def expect_nothing(self) -> None:
        self.pump()
        assert not self.inbox, f"unexpected: {[s.message for s in self.inbox]}"

    def drain(self) -> list[Sent]:
        self.pump()
        out = list(self.inbox)
        self.inbox.clear()
        return out

    # -- answering -----------------------------------------------------------------
    def deliver(self, message: SipRequest | SipResponse, source: Target | None = None) -> None:
        """Hand a message to the UA as the transport would (after a wire round trip)."""
        source = source or self.address
        parsed = parse_message(message.to_bytes(), stream=source.transport != "udp")
        self.ua.receive(parsed, source, self.now)
        self.pump()

    def reply(
        self,
        request: SipRequest,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SipResponse:
        """Answer ``request`` with a real response (RFC 3261 §8.2.6) and deliver it."""
        extra = list(headers)
        if body and not any(name.lower() == "content-type" for name, _ in extra):
            extra.append(("Content-Type", "application/sdp"))
        response = make_response(request, status, reason, to_tag=to_tag, headers=extra, body=body)
        self.deliver(response)
        return response


@dataclass
class PeerDialog:
    """The callee's side of a dialog, for requests the peer sends to the UA (§12.2.1.1).

    Built from the INVITE the UA sent and the 2xx the peer answered.
    """

    call_id: str
    local_tag: str  # the peer's (To tag of the 2xx)
    remote_tag: str  # the UA's (From tag of the INVITE)
    local_uri: str
    remote_uri: str
    remote_target: str  # the UA's Contact
    contact: str = "<sip:bob@192.0.2.10:5060>"
    via_host: str = "192.0.2.10:5060"
    transport: str = "UDP"
    cseq: int = 100
    record_route: list[str] = field(default_factory=list)

    @classmethod
    def from_invite(
        cls, invite: SipRequest, to_tag: str, *, record_route: list[str] | None = None
    ) -> PeerDialog:
        contact = invite.headers.get("Contact")
        assert contact is not None, "INVITE without Contact"
        from_ = invite.from_
        to = invite.to
        assert from_.tag is not None
        return cls(
            call_id=invite.call_id,
            local_tag=to_tag,
            remote_tag=from_.tag,
            local_uri=str(NameAddr(to.uri, to.display_name)),
            remote_uri=str(NameAddr(from_.uri, from_.display_name)),
            remote_target=NameAddr.parse(contact).uri,
            record_route=list(record_route or []),
        )

    def request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        cseq: int | None = None,
    ) -> SipRequest:
        """A request from the peer in this dialog (new branch, CSeq + 1 unless given)."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        out = Headers()
        out.add("Via", f"SIP/2.0/{self.transport} {self.via_host};branch={generate_branch()}")
        out.add("Max-Forwards", "70")
        out.add("From", f"{self.local_uri};tag={self.local_tag}")
        out.add("To", f"{self.remote_uri};tag={self.remote_tag}")
        out.add("Call-ID", self.call_id)
        out.add("CSeq", str(CSeq(cseq, method)))
        if method in ("INVITE", "UPDATE"):
            out.add("Contact", self.contact)
        for name, value in headers:
            out.add(name, value)
        if body:
            out.add("Content-Type", content_type or "application/sdp")
        return SipRequest(headers=out, body=body, method=method, uri=self.remote_target)

    def ack_for(self, request: SipRequest) -> SipRequest:
        """The ACK for our 2xx to ``request`` (a re-INVITE): new branch, same CSeq number."""
        return self.request("ACK", cseq=request.cseq.seq)


def out_of_dialog_request(
    method: str,
    *,
    uri: str = "sip:gw@192.0.2.1:5070",
    call_id: str = "ood-1@192.0.2.10",
    to_tag: str | None = None,
    body: bytes = b"",
) -> SipRequest:
    """A request from a stranger (not in any dialog of the UA)."""
    headers = Headers()
    headers.add("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch={generate_branch()}")
    headers.add("Max-Forwards", "70")
    headers.add("From", f"<sip:carol@example.net>;tag={generate_tag()}")
    headers.add("To", f"<{uri}>" + (f";tag={to_tag}" if to_tag else ""))
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"1 {method}")
    if method == "INVITE":
        headers.add("Contact", "<sip:carol@192.0.2.10:5060>")
    if body:
        headers.add("Content-Type", "application/sdp")
    return SipRequest(headers=headers, body=body, method=method, uri=uri)


def check_digest(
    request: SipRequest,
    header: str,
    *,
    username: str,
    password: str,
    realm: str,
    nonce: str,
) -> dict[str, str]:
    """Assert that ``request`` carries valid digest credentials in ``header``; return them."""
    value = request.headers.get(header)
    assert value is not None, f"{request!r} has no {header}"
    params = parse_authorization(value)
    assert params["username"] == username
    assert params["realm"] == realm
    assert params["nonce"] == nonce
    assert params["uri"] == request.uri
    expected = compute_response(
        algorithm=params.get("algorithm", "MD5"),
        username=username,
        realm=realm,
        password=password,
        method=request.method,
        uri=params["uri"],
        nonce=nonce,
        qop=params.get("qop"),
        nc=params.get("nc"),
        cnonce=params.get("cnonce"),
        body=request.body,
    )
    assert params["response"] == expected, "digest response does not verify"
    return params


def _sdp(
    *,
    version: int,
    address: str,
    audio: str | None,
    video: str | None,
    direction: str,
) -> bytes:
    lines = [
        "v=0",
        f"o=bob 4242 {version} IN IP4 {address}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
    ]
    if audio is not None:
        lines += audio.split("\n")
        lines.append(f"a={direction}")
    if video is not None:
        lines += video.split("\n")
        lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


PCMU_AUDIO = (
    "m=audio 50000 RTP/AVP 0 101\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-16"
)
G729_AUDIO = "m=audio 50000 RTP/AVP 18\na=rtpmap:18 G729/8000"


def sdp_answer(
    *,
    version: int = 1,
    address: str = "192.0.2.50",
    audio: str | None = PCMU_AUDIO,
    video: str | None = None,
    direction: str = "sendrecv",
) -> bytes:
    """The callee's SDP answer (PCMU + telephone-event by default)."""
    return _sdp(version=version, address=address, audio=audio, video=video, direction=direction)


def sdp_offer(
    *,
    version: int = 2,
    address: str = "192.0.2.50",
    direction: str = "sendrecv",
) -> bytes:
    """An offer from the peer in a re-INVITE (audio PCMU + telephone-event)."""
    return _sdp(version=version, address=address, audio=PCMU_AUDIO, video=None, direction=direction)
