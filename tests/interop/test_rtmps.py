"""RtmpPusher to ``rtmps://`` (TLS) and to IPv6 literal URLs, against a real nginx-rtmp.

TLS: nginx's ``stream`` module terminates TLS in front of nginx-rtmp, as RTMPS
ingest servers do (:class:`~tests.interop.nginx.NginxRtmp` with ``tls=True``, a
self-signed certificate made by ``openssl``). The push goes to
``rtmps://127.0.0.1:TLSPORT/live/KEY``; a real ffmpeg pulls it over plain RTMP and
the file must be H.264 + AAC that decodes cleanly.

Certificate checking: like FFmpeg's TLS layer, our publisher (Python's ``ssl``)
accepts any certificate unless ``tls_verify`` is set; these tests pin that down
(the default push to a self-signed server succeeds) and check the ``tls_verify``
option: with the server's own certificate as CA file it connects, with another
CA (or the system bundle) the open fails and the push never gets ``CONNECTED``.

IPv6: nginx also listens on ``[::1]``; a push to ``rtmp://[::1]:PORT/live/KEY``
must publish (nginx sees a client from ``::1``), read back over IPv4.

How long the TLS connection took (start of the attempt to ``CONNECTED``) is kept in
``rtmps-figures.json`` in the artifacts, not asserted.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from rtmp.pusher import FAILED_INFO, PushConfig, PushStatus, RtmpPusher
from tests.interop.nginx import NginxRtmp, make_self_signed_cert
from tests.interop.peers import PeerSet
from tests.interop.test_rtmp_push import (
    check_pulled,
    live_clip,  # noqa: F401 - the module-scoped fixture, shared
    new_stream,
    start_pull,
    wait_for,
)
from tests.rtmp.media import Clip, feed_realtime

pytestmark = pytest.mark.interop


async def push_and_pull(
    nginx: NginxRtmp,
    peers: PeerSet,
    clip: Clip,
    out: Path,
    *,
    target: str,
    name: str,
    config: dict[str, object] | None = None,
) -> tuple[RtmpPusher, list[PushStatus], float]:
    """Push ``clip`` in real time to ``target``, pull stream ``name`` over plain RTMP into
    ``out``; returns the pusher, its statuses and the seconds from start to CONNECTED."""
    statuses: list[PushStatus] = []
    stream = new_stream()
    push_config = PushConfig(url=target, rw_timeout=5.0, **config or {})  # type: ignore[arg-type]
    pusher = RtmpPusher(stream, push_config, on_status=lambda s, _: statuses.append(s))
    started = time.monotonic()
    await pusher.start()
    feeder = asyncio.create_task(feed_realtime(stream, clip.frames))
    try:
        await wait_for(lambda: pusher.status is PushStatus.PROCESSED_REMOTE, 10, "PROCESSED_REMOTE")
        await asyncio.to_thread(nginx.wait_publishing, name)
        pull = start_pull(peers, nginx.url(name), out, name=f"pull-{name}")
        async with asyncio.timeout(20):
            await feeder
        stream.end()
        await wait_for(lambda: pusher.status is PushStatus.STOPPED, 10, "STOPPED")
        await asyncio.to_thread(pull.wait, 15)
    finally:
        feeder.cancel()
        await pusher.stop()
    assert pusher.stats.connected_at is not None
    return pusher, statuses, pusher.stats.connected_at - started


async def test_push_over_rtmps_and_pull(peers: PeerSet, live_clip: Clip, tmp_path: Path) -> None:  # noqa: F811
    nginx = NginxRtmp(peers, tls=True).start()
    target = nginx.tls_url("tls-key")
    assert target.startswith("rtmps://127.0.0.1:")
    # Default: no certificate check, so nginx's self-signed certificate is accepted.
    pusher, statuses, connect_s = await push_and_pull(
        nginx, peers, live_clip, tmp_path / "pulled.flv", target=target, name="tls-key"
    )
    assert statuses == [PushStatus.CONNECTED, PushStatus.PROCESSED_REMOTE, PushStatus.STOPPED]
    assert pusher.stats.reconnects == 0
    assert pusher.stats.video_frames_sent == len(live_clip.video)
    frames, seconds = check_pulled(tmp_path / "pulled.flv", min_seconds=5.0)
    (peers.log_dir / "rtmps-figures.json").write_text(
        json.dumps(
            {
                "rtmps_connect_s": round(connect_s, 3),
                "pulled_video_frames": frames,
                "pulled_seconds": round(seconds, 3),
                "bytes_sent": pusher.stats.bytes,
            },
            indent=1,
        )
    )


async def test_tls_verify_with_the_servers_ca(
    peers: PeerSet,
    live_clip: Clip,  # noqa: F811
    tmp_path: Path,
) -> None:
    nginx = NginxRtmp(peers, tls=True).start()
    assert nginx.cert_path is not None
    pusher, statuses, _ = await push_and_pull(
        nginx,
        peers,
        live_clip,
        tmp_path / "pulled.flv",
        target=nginx.tls_url("verified"),
        name="verified",
        config={"tls_verify": True, "tls_ca_file": str(nginx.cert_path)},
    )
    assert statuses[:2] == [PushStatus.CONNECTED, PushStatus.PROCESSED_REMOTE]
    assert pusher.stats.reconnects == 0
    check_pulled(tmp_path / "pulled.flv", min_seconds=5.0)


@pytest.mark.parametrize("ca", ["other", "system"])
async def test_tls_verify_refuses_an_unknown_certificate(
    peers: PeerSet,
    live_clip: Clip,  # noqa: F811
    tmp_path: Path,
    ca: str,
) -> None:
    nginx = NginxRtmp(peers, tls=True).start()
    other_ca, _ = make_self_signed_cert(tmp_path)
    statuses: list[tuple[PushStatus, str | None]] = []
    stream = new_stream()
    config = PushConfig(
        url=nginx.tls_url("refused"),
        tls_verify=True,
        tls_ca_file=str(other_ca) if ca == "other" else None,
        retry_initial=0.05,
        retry_max=0.1,
        max_retries=2,
    )
    pusher = RtmpPusher(stream, config, on_status=lambda s, i: statuses.append((s, i)))
    await pusher.start()
    feeder = asyncio.create_task(feed_realtime(stream, live_clip.frames, speed=4.0))
    try:
        await wait_for(lambda: pusher.status is PushStatus.FAILED, 20, "FAILED")
    finally:
        feeder.cancel()
        await pusher.stop()
    assert PushStatus.CONNECTED not in [s for s, _ in statuses]
    pending = [info for status, info in statuses if status is PushStatus.PENDING]
    # OpenSSL's reason for the failed chain, e.g. "self-signed certificate".
    assert pending, statuses
    assert all(info and info.startswith("TLS certificate verify failed: ") for info in pending), (
        statuses
    )
    assert statuses[-1] == (PushStatus.FAILED, FAILED_INFO)
    assert not nginx.publishing("refused")


async def test_push_to_an_ipv6_literal(
    peers: PeerSet,
    live_clip: Clip,  # noqa: F811
    tmp_path: Path,
) -> None:
    nginx = NginxRtmp(peers, ipv6=True).start()
    target = nginx.url6("v6-key")
    assert target.startswith("rtmp://[::1]:")
    pusher, statuses, _ = await push_and_pull(
        nginx, peers, live_clip, tmp_path / "pulled.flv", target=target, name="v6-key"
    )
    assert statuses == [PushStatus.CONNECTED, PushStatus.PROCESSED_REMOTE, PushStatus.STOPPED]
    assert pusher.log_url == f"rtmp://[::1]:{nginx.rtmp_port}/live/***"
    frames, _ = check_pulled(tmp_path / "pulled.flv", min_seconds=5.0)
    assert frames > 0


async def test_nginx_sees_the_ipv6_client(
    peers: PeerSet,
    live_clip: Clip,  # noqa: F811
) -> None:
    nginx = NginxRtmp(peers, ipv6=True).start()
    stream = new_stream()
    pusher = RtmpPusher(stream, PushConfig(url=nginx.url6("who"), rw_timeout=5.0))
    await pusher.start()
    feeder = asyncio.create_task(feed_realtime(stream, live_clip.frames))
    try:
        await wait_for(lambda: pusher.status is PushStatus.PROCESSED_REMOTE, 10, "PROCESSED_REMOTE")
        await asyncio.to_thread(nginx.wait_publishing, "who")
        addresses = [
            client.findtext("address")
            for element in nginx.stats().iter("stream")
            if element.findtext("name") == "who"
            for client in element.iter("client")
        ]
    finally:
        feeder.cancel()
        await pusher.stop()
    assert addresses == ["::1"]
