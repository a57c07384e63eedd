"""Our RTMP publisher (:class:`rtmp.connection.RtmpConnection`) against a real nginx-rtmp.

The protocol engine alone, without the pusher: a publish is accepted (nginx lists
the stream as publishing), a second publish of the same name is refused with
nginx's own ``NetStream.Publish.BadName`` (a typed :class:`RtmpRefused` with the
server's code and description), and a close (``FCUnpublish`` + ``deleteStream``)
ends the publishing on the server.
"""

from __future__ import annotations

import asyncio

import pytest

from rtmp.connection import RtmpConnection, RtmpRefused
from rtmp.flv import aac_body
from rtmp.urls import parse_rtmp_url
from tests.interop.nginx import NginxRtmp
from tests.interop.peers import PeerSet

pytestmark = pytest.mark.interop


async def test_publish_refusal_and_close(peers: PeerSet) -> None:
    nginx = NginxRtmp(peers).start()
    url = parse_rtmp_url(nginx.url("direct"))
    connected: list[bool] = []
    first = await RtmpConnection.open(
        url, connect_timeout=5.0, rw_timeout=5.0, on_connected=lambda: connected.append(True)
    )
    try:
        assert connected == [True]
        first.send_metadata({"audiocodecid": 10.0})
        first.send_audio(0, aac_body(b"\x11\x90", sequence_header=True))
        await first.drain()
        await asyncio.to_thread(nginx.wait_publishing, "direct")
        with pytest.raises(RtmpRefused) as refused:
            await RtmpConnection.open(url, connect_timeout=5.0, rw_timeout=5.0)
        assert refused.value.code == "NetStream.Publish.BadName"
        assert refused.value.description == "Already publishing"
        assert str(refused.value) == "NetStream.Publish.BadName: Already publishing"
        assert first.error is None  # the first publish is untouched
    finally:
        await first.close()
    for _ in range(50):
        if not nginx.publishing("direct"):
            break
        await asyncio.sleep(0.1)
    assert not nginx.publishing("direct")
