"""RecordingManager: start/stop/find_all on a real registry, automatic recording, hooks."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sipbridge.errors import Conflict, InvalidRequest, NotFound
from sipbridge.recording import (
    RecordingManager,
    RecordingStatus,
    RecordingStorageError,
)
from sipbridge.recording.hooks import FileEvent, FinishHooks, command_argv
from sipbridge.registry import Stream, StreamRegistry, StreamStatus
from sipbridge.settings import RecordSettings
from tests.recording.media import decode_errors, packets, probe, wait_for
from tests.rtmp.media import Clip


def settings(directory: Path, **fields: Any) -> RecordSettings:
    return RecordSettings(directory=str(directory), **fields)


async def publish(stream: Stream, clip: Clip, start: int = 0, stop: int | None = None) -> None:
    for index, frame in enumerate(clip.frames[start:stop]):
        stream.publish(frame)
        if index % 20 == 0:
            await asyncio.sleep(0)


@pytest.fixture
def registry() -> StreamRegistry:
    return StreamRegistry()


async def test_start_stop_find_all(clip: Clip, registry: StreamRegistry, tmp_path: Path) -> None:
    manager = RecordingManager(registry, settings(tmp_path / "rec"))
    stream = registry.reserve("call1", call_id="c1")
    info = await manager.start(stream_name="call1")
    assert info.status is RecordingStatus.PENDING
    assert info.media_session_id == stream.media_session_id
    assert info.stream_name == "call1"
    assert info.call_id == "c1"
    await publish(stream, clip)
    await wait_for(lambda: manager.find_all()[0].file_name is not None)
    found = manager.find_all()
    assert [r.recording_id for r in found] == [info.recording_id]
    assert found[0].status is RecordingStatus.RECORDING
    assert found[0].file_name is not None and "partial" in found[0].file_name
    stopped = await manager.stop(media_session_id=stream.media_session_id)
    assert stopped.status is RecordingStatus.STOPPED
    [file] = stopped.files
    assert file.finished and file.error is None
    assert stopped.file_name == file.file_name
    assert "partial" not in file.file_name
    assert file.duration == pytest.approx(clip.seconds, abs=0.1)
    path = tmp_path / "rec" / file.file_name
    assert len(packets(path)["video"]) == len(clip.video)
    # An ended recording answers as it is; WCS's find_all fields are there.
    again = await manager.stop(stream_name="call1")
    assert again.recording_id == info.recording_id
    wire = json.loads(msgspec.json.encode(manager.find_all()))
    assert wire[0]["fileName"] == file.file_name
    assert wire[0]["mediaSessionId"] == stream.media_session_id
    assert stream.status is StreamStatus.PUBLISHING  # stopping a recording never ends the stream
    await manager.close()


async def test_start_again_cuts_a_new_file(
    clip: Clip, registry: StreamRegistry, tmp_path: Path
) -> None:
    manager = RecordingManager(registry, settings(tmp_path))
    stream = registry.reserve("call1")
    first = await manager.start(stream_name="call1")
    await publish(stream, clip, 0, 150)
    again = await manager.start(
        media_session_id=stream.media_session_id, file_template="{streamName}-second-{startTime}"
    )
    assert again.recording_id == first.recording_id
    await publish(stream, clip, 150)
    stream.end(StreamStatus.UNPUBLISHED)  # the call hangs up: the recording ends by itself
    await wait_for(lambda: manager.find_all()[0].status.is_final)
    info = manager.find_all()[0]
    assert info.status is RecordingStatus.STOPPED
    assert len(info.files) == 2
    assert info.files[0].file_name.startswith("call1-")
    assert info.files[1].file_name.startswith("call1-second-")
    assert info.files[1].start_time == info.files[0].end_time
    total = sum(len(packets(tmp_path / f.file_name)["video"]) for f in info.files)
    assert total == len(clip.video)
    await manager.close()


async def test_automatic_recording_without_rest(
    clip: Clip, registry: StreamRegistry, tmp_path: Path
) -> None:
    manager = RecordingManager(registry, settings(tmp_path, auto=True))
    stream = registry.reserve("call1", call_id="c1")
    manager.stream_published(stream)  # what the gateway does for every call's stream
    manager.stream_published(stream)  # twice is harmless
    await wait_for(lambda: len(manager.find_all()) == 1)
    await publish(stream, clip)
    stream.end(StreamStatus.UNPUBLISHED)
    await wait_for(lambda: manager.find_all()[0].status.is_final)
    [info] = manager.find_all()
    assert info.status is RecordingStatus.STOPPED
    [file] = info.files
    path = tmp_path / file.file_name
    streams = {s["codec_type"]: s["codec_name"] for s in probe(path)["streams"]}
    assert streams == {"video": "h264", "audio": "pcm_mulaw"}
    assert float(probe(path)["format"]["duration"]) == pytest.approx(clip.seconds, abs=0.1)
    assert decode_errors(path) == ""
    await manager.close()


async def test_auto_off_records_nothing(registry: StreamRegistry, tmp_path: Path) -> None:
    manager = RecordingManager(registry, settings(tmp_path))
    manager.stream_published(registry.reserve("call1"))
    await asyncio.sleep(0.05)
    assert manager.find_all() == []


async def test_auto_with_a_bad_directory_fails_visibly_never_raises(
    registry: StreamRegistry, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    manager = RecordingManager(registry, settings(blocker / "rec", auto=True))
    stream = registry.reserve("call1")
    manager.stream_published(stream)
    await wait_for(lambda: len(manager.find_all()) == 1)
    [info] = manager.find_all()
    assert info.status is RecordingStatus.FAILED
    assert info.info is not None
    assert info.info.startswith("Failed by recorder error: recording directory")
    assert "cannot be created: Not a directory" in info.info
    assert stream.status is StreamStatus.PENDING  # the call's stream is untouched


async def test_request_errors(registry: StreamRegistry, tmp_path: Path) -> None:
    manager = RecordingManager(registry, settings(tmp_path))
    registry.reserve("call1")
    with pytest.raises(InvalidRequest) as bad:
        await manager.start()
    assert bad.value.field == "mediaSessionId"
    with pytest.raises(NotFound) as missing:
        await manager.start(stream_name="nope")
    assert missing.value.message == "no stream named 'nope'"
    with pytest.raises(NotFound):
        await manager.start(media_session_id="00000000-0000-0000-0000-000000000000")
    with pytest.raises(InvalidRequest) as template:
        await manager.start(stream_name="call1", file_template="../../{streamName}")
    assert template.value.field == "config.fileTemplate"
    assert "'..' path component" in template.value.message
    with pytest.raises(InvalidRequest) as rotation:
        await manager.start(stream_name="call1", rotation="soon")
    assert rotation.value.field == "config.rotation"
    with pytest.raises(NotFound) as never:
        await manager.stop(stream_name="call1")
    assert never.value.message == "stream 'call1' is not being recorded"
    ended = registry.reserve("gone")
    ended.end(StreamStatus.UNPUBLISHED)
    with pytest.raises(NotFound, match="has ended"):
        await manager.start(stream_name="gone")
    assert manager.find_all() == []


async def test_storage_errors_are_clear(registry: StreamRegistry, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    manager = RecordingManager(registry, settings(blocker))
    registry.reserve("call1")
    with pytest.raises(RecordingStorageError) as caught:
        await manager.start(stream_name="call1")
    assert caught.value.status == 500
    assert caught.value.message.endswith("is not a directory")
    # A link inside the directory that leads out of it is refused before any file.
    out = tmp_path / "out"
    out.mkdir()
    (out / "call1").symlink_to(tmp_path)
    manager = RecordingManager(registry, settings(out, file_template="{streamName}/{startTime}"))
    with pytest.raises(InvalidRequest, match="outside the output directory"):
        await manager.start(stream_name="call1")


async def test_close_finishes_every_file_and_refuses_new_ones(
    clip: Clip, registry: StreamRegistry, tmp_path: Path
) -> None:
    manager = RecordingManager(registry, settings(tmp_path))
    streams = [registry.reserve(name) for name in ("a", "b")]
    for stream in streams:
        await manager.start(stream_name=stream.name)
    for stream in streams:
        await publish(stream, clip, 0, 200)
    await manager.close()
    infos = manager.find_all()
    assert [i.status for i in infos] == [RecordingStatus.STOPPED] * 2
    for info in infos:
        [file] = info.files
        assert file.finished and "partial" not in file.file_name
        assert float(probe(tmp_path / file.file_name)["format"]["duration"]) > 2.0
    with pytest.raises(Conflict, match="shutting down"):
        await manager.start(stream_name="a")


# ---- finish hooks ---------------------------------------------------------------------------


def event(**fields: Any) -> FileEvent:
    base: dict[str, Any] = {
        "recording_id": "r1", "media_session_id": "m1", "stream_name": "call; rm -rf /",
        "file_name": "a b.mkv", "path": "/rec/a b.mkv", "status": "FINISHED", "error": None,
        "start_time": 1000, "end_time": 2000, "duration": 1.0, "bytes": 10,
        "audio_codec": "PCMU", "video_codec": "H264",
    }  # fmt: skip
    base.update(fields)
    return FileEvent(**base)


def test_command_placeholders_stay_one_argument() -> None:
    argv = command_argv(["/bin/up", "{path}", "--name={streamName}", "{duration}s"], event())
    assert argv == ["/bin/up", "/rec/a b.mkv", "--name=call; rm -rf /", "1.000s"]


class _Sink(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(self.rfile.read(length))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[bytes]]]:
    _Sink.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Sink.bodies
    server.shutdown()
    server.server_close()


async def test_hooks_run_when_a_file_is_finished(
    clip: Clip, registry: StreamRegistry, tmp_path: Path, webhook: tuple[str, list[bytes]]
) -> None:
    url, bodies = webhook
    marker = tmp_path / "hook.txt"
    script = "import sys; open(sys.argv[1], 'w').write('|'.join(sys.argv[2:]))"
    command = [sys.executable, "-c", script, str(marker), "{fileName}", "{streamName}", "{status}"]
    out = tmp_path / "rec"
    manager = RecordingManager(
        registry, settings(out, on_finish_command=command, on_finish_url=url, rotate_duration=3.0)
    )
    stream = registry.reserve("call1")
    await manager.start(stream_name="call1")
    await publish(stream, clip)
    stream.end(StreamStatus.UNPUBLISHED)
    await wait_for(lambda: manager.find_all()[0].status.is_final)
    await manager.close()  # waits for the hooks of the last files
    info = manager.find_all()[0]
    assert len(info.files) == 2
    posted = [json.loads(body) for body in bodies]
    assert sorted(p["fileName"] for p in posted) == sorted(f.file_name for f in info.files)
    assert {p["event"] for p in posted} == {"RecordingFileFinished"}
    assert {p["status"] for p in posted} == {"FINISHED"}
    assert all(Path(p["path"]).is_file() for p in posted)
    assert posted[0]["mediaSessionId"] == stream.media_session_id
    name, stream_name, status = marker.read_text().split("|")
    assert name in {f.file_name for f in info.files}
    assert (stream_name, status) == ("call1", "FINISHED")


async def test_failing_hooks_are_only_logged(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    hooks = FinishHooks(
        [sys.executable, "-c", "import sys, time; time.sleep(30)"],
        "http://127.0.0.1:9/nothing-listens",
        timeout=0.5,
    )
    await asyncio.wait_for(hooks.run(event()), 10)
    assert "killed after" in caplog.text
    assert "recording webhook for a b.mkv" in caplog.text
    missing = FinishHooks([str(tmp_path / "no-such-program")], timeout=1.0)
    await missing.run(event())
    assert "cannot start" in caplog.text
