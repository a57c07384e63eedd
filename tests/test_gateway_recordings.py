"""The gateway's recordings: automatic recording of a call's stream, and stop()'s order.

The callee is a UDP socket that swallows the INVITE (the call stays PENDING, its
stream reserved); the test publishes a real clip into the call's stream as the
media path would. ``gateway.stop()`` must finish the recording (file complete,
final name) *before* the call's stream ends.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipbridge.callinfo import CallRequest
from sipbridge.gateway import Gateway
from sipbridge.recording import RecordingStatus
from sipbridge.registry import StreamStatus
from sipbridge.settings import RecordSettings, Settings, SipSettings
from tests.recording.media import probe
from tests.rtmp.media import Clip, load_clip, make_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    return load_clip(make_clip(tmp_path_factory.mktemp("clip") / "clip.mkv", seconds=3.0))


@pytest.fixture
def silent_callee() -> Iterator[int]:
    """A UDP port that takes SIP requests and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def request(call_id: str, port: int) -> CallRequest:
    return CallRequest(
        call_id=call_id,
        callee="bob",
        to_stream=f"stream-{call_id}",
        sip_login="alice",
        sip_domain="127.0.0.1",
        sip_port=port,
    )


def gateway_for(directory: Path, *, auto: bool) -> Gateway:
    return Gateway(
        Settings(
            sip=SipSettings(host="127.0.0.1", port=0),
            record=RecordSettings(auto=auto, directory=str(directory)),
        )
    )


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_auto_recording_is_finished_before_the_stream_ends(
    clip: Clip, tmp_path: Path, silent_callee: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = gateway_for(tmp_path / "rec", auto=True)
    await gateway.start()
    try:
        call = gateway.place_call(request("auto1", silent_callee))
        stream = call.stream
        assert stream is not None
        await wait_for(lambda: len(gateway.recordings.find_all()) == 1)
        [pending] = gateway.recordings.find_all()
        assert pending.stream_name == "stream-auto1"
        assert pending.call_id == "auto1"
        assert pending.media_session_id == stream.media_session_id
        assert pending.status is RecordingStatus.PENDING

        # What recordings said when the stream was ended.
        seen_at_end: list[RecordingStatus] = []
        end = stream.end

        def spy(status: StreamStatus) -> None:
            seen_at_end.extend(r.status for r in gateway.recordings.find_all())
            end(status)

        monkeypatch.setattr(stream, "end", spy)
        for index, frame in enumerate(clip.frames):
            stream.publish(frame)
            if index % 20 == 0:
                await asyncio.sleep(0)
        await wait_for(lambda: gateway.recordings.find_all()[0].status is RecordingStatus.RECORDING)
    finally:
        await gateway.stop(timeout=0.5)

    assert seen_at_end == [RecordingStatus.STOPPED]
    [done] = gateway.recordings.find_all()
    assert done.status is RecordingStatus.STOPPED and done.info is None
    [file] = done.files
    assert file.finished and "partial" not in file.file_name
    path = tmp_path / "rec" / file.file_name
    assert float(probe(path)["format"]["duration"]) == pytest.approx(clip.seconds, abs=0.1)
    assert stream.status.is_final


async def test_without_auto_nothing_is_recorded_until_asked(
    clip: Clip, tmp_path: Path, silent_callee: int
) -> None:
    gateway = gateway_for(tmp_path / "rec", auto=False)
    await gateway.start()
    try:
        call = gateway.place_call(request("manual1", silent_callee))
        await asyncio.sleep(0.1)
        assert gateway.recordings.find_all() == []
        assert call.stream is not None
        started = await gateway.recordings.start("stream-manual1")
        assert started.call_id == "manual1"
        assert [r.recording_id for r in gateway.recordings.find_all()] == [started.recording_id]
    finally:
        await gateway.stop(timeout=0.5)
    [done] = gateway.recordings.find_all()
    assert done.status is RecordingStatus.STOPPED
    assert done.files == []  # no frame came: nothing was written
    assert not (tmp_path / "rec").exists() or not any((tmp_path / "rec").iterdir())
