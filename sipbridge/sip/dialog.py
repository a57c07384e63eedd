"""Dialog state of a UAC (RFC 3261 §12).

A dialog is identified by Call-ID, local tag and remote tag (§12). The UAC
creates it from a 2xx (or 1xx with a To tag, an early dialog) to its INVITE:
the route set is the Record-Route of the response in reverse order, the remote
target is the response's Contact (§12.1.2). Requests inside the dialog are
built by :meth:`Dialog.create_request` (§12.2.1.1), loose or strict routing
applied; requests from the peer are checked by :meth:`Dialog.check_request`
(§12.2.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipbridge.sip.address import NameAddr, SipParseError, SipUri
from sipbridge.sip.message import CSeq, Headers, SipRequest, SipResponse

__all__ = ["Dialog", "DialogError"]

#: Methods that refresh the remote target (§12.2.1.2; RFC 3311 §5.1 for UPDATE).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE"})


class DialogError(ValueError):
    """A request does not fit the dialog; ``status`` is the response to send (§12.2.2)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _is_loose(route: str) -> bool:
    try:
        uri = NameAddr.parse(route).sip_uri
    except SipParseError:
        return False
    return "lr" in uri.params


@dataclass
class Dialog:
    """One confirmed or early dialog, seen from the UAC side (RFC 3261 §12.1.2)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 1
    remote_seq: int | None = None
    early: bool = False

    @classmethod
    def from_response(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """Create the UAC's dialog from a 1xx/2xx response with a To tag (§12.1.2)."""
        to = response.to
        if to.tag is None:
            raise DialogError("response without a To tag creates no dialog", 400)
        from_ = request.from_
        if from_.tag is None:
            raise DialogError("our request has no From tag", 500)
        contacts = response.headers.get_all("Contact")
        if contacts:
            remote_target = NameAddr.parse(contacts[0]).uri
        elif response.status >= 200:
            raise DialogError("2xx to INVITE without a Contact", 400)
        else:
            remote_target = request.uri
        routes = list(reversed(response.headers.get_all("Record-Route")))
        return cls(
            call_id=response.call_id,
            local_tag=from_.tag,
            remote_tag=to.tag,
            local_uri=str(NameAddr(from_.uri, from_.display_name)),
            remote_uri=str(NameAddr(to.uri, to.display_name)),
            remote_target=remote_target,
            route_set=routes,
            local_seq=request.cseq.seq,
            early=response.status < 200,
        )

    def confirm(self, response: SipResponse) -> None:
        """An early dialog becomes confirmed by the 2xx (§12.1.2, §13.2.2.4)."""
        self.early = False
        routes = response.headers.get_all("Record-Route")
        if routes:
            self.route_set = list(reversed(routes))
        contacts = response.headers.get_all("Contact")
        if contacts:
            self.remote_target = NameAddr.parse(contacts[0]).uri

    def matches(self, message: SipRequest | SipResponse) -> bool:
        """Whether a message belongs to this dialog by Call-ID and tags."""
        try:
            if message.call_id != self.call_id:
                return False
            if isinstance(message, SipRequest):
                return message.from_.tag == self.remote_tag and message.to.tag == self.local_tag
            return message.from_.tag == self.local_tag and message.to.tag == self.remote_tag
        except SipParseError:
            return False

    def next_hop_uri(self) -> SipUri:
        """The URI the request goes to before DNS: first route or remote target (§8.1.2)."""
        text = NameAddr.parse(self.route_set[0]).uri if self.route_set else self.remote_target
        return SipUri.parse(text)

    def create_request(
        self,
        method: str,
        *,
        via: str,
        contact: str | None = None,
        cseq: int | None = None,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipRequest:
        """A request within the dialog (§12.2.1.1).

        The local CSeq is incremented except for ACK and CANCEL, which reuse
        the INVITE's number (pass it as ``cseq``). Loose routing puts the route
        set in Route headers; a strict first route becomes the Request-URI
        and the remote target goes last in the Route set.
        """
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        headers = Headers()
        headers.add("Via", via)
        headers.add("Max-Forwards", "70")
        uri = self.remote_target
        routes = list(self.route_set)
        if routes and not _is_loose(routes[0]):
            uri = NameAddr.parse(routes[0]).uri
            routes = [*routes[1:], f"<{self.remote_target}>"]
        for route in routes:
            headers.add("Route", route)
        headers.add("From", f"{self.local_uri};tag={self.local_tag}")
        headers.add("To", f"{self.remote_uri};tag={self.remote_tag}")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", str(CSeq(cseq, method)))
        if contact is not None:
            headers.add("Contact", contact)
        for name, value in extra or ():
            headers.add(name, value)
        if body and content_type:
            headers.add("Content-Type", content_type)
        return SipRequest(headers=headers, body=body, method=method, uri=uri)

    def check_request(self, request: SipRequest) -> None:
        """Validate a request from the peer in this dialog and update state (§12.2.2).

        Raises :class:`DialogError` with 500 for a CSeq lower than the last one
        (out of order); ACK and CANCEL do not advance the remote sequence.
        """
        seq = request.cseq.seq
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and seq <= self.remote_seq:
                raise DialogError(f"CSeq {seq} not above {self.remote_seq}", 500)
            self.remote_seq = seq
        if request.method in TARGET_REFRESH_METHODS:
            contacts = request.headers.get_all("Contact")
            if contacts:
                self.remote_target = NameAddr.parse(contacts[0]).uri
