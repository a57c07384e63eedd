"""A gateway-like process for the crash tests: one stream recorded automatically.

``python -m tests.recording.crash_child CLIP OUT FORMAT`` publishes CLIP's frames in
real time (looped, the call clock running on) into a registry stream that a
:class:`RecordingManager` with ``auto = true`` records into OUT. It prints ``START``
when the first frame is published and ``OPEN <file>`` once the first file is open.
SIGTERM finishes the recording as the service does (``manager.close()``), prints
``CLOSED`` and exits 0; SIGKILL is the crash.

With a fourth argument LIMIT, files may not grow past LIMIT bytes (``RLIMIT_FSIZE``:
the kernel fails the write with EFBIG, as a full disk fails it with ENOSPC): the
child prints ``FAILED <info>`` when the recording fails, publishes one more
second, prints ``STREAM <status>`` and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from sipbridge.recording import RecordingManager
from sipbridge.registry import StreamRegistry
from sipbridge.settings import RecordSettings
from tests.rtmp.media import clip_frames


async def main(clip: Path, out: Path, fmt: str, limit: int | None) -> int:
    frames = clip_frames(clip)
    if limit is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a dead process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    failed_at: float | None = None
    period = round(len([f for f in frames if f.kind == "video"]) / 25, 3)
    registry = StreamRegistry()
    stream = registry.reserve("crash", call_id="c1")
    stream.track("video")
    stream.track("audio")
    settings = RecordSettings(auto=True, directory=str(out), format=fmt)  # type: ignore[arg-type]
    manager = RecordingManager(registry, settings)
    manager.stream_published(stream)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("START", flush=True)
    start = time.monotonic()
    loop_index = 0
    opened = False
    while not stop.is_set():
        for frame in frames:
            shifted = replace(frame, pts=(frame.pts or 0.0) + loop_index * period)
            due = start + (shifted.pts or 0.0) - (frames[0].pts or 0.0)
            delay = due - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                break
            stream.publish(shifted)
            found = manager.find_all()
            if not opened and found and found[0].file_name:
                print("OPEN", found[0].file_name, flush=True)
                opened = True
            if failed_at is None and found and found[0].status == "FAILED":
                print("FAILED", found[0].info, flush=True)
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > 1.0:
                print("STREAM", stream.status.value, stream.subscribers, flush=True)
                stop.set()
        loop_index += 1
    await manager.close()
    print("CLOSED", flush=True)
    return 0


if __name__ == "__main__":
    limit = int(sys.argv[4]) if len(sys.argv) > 4 else None
    sys.exit(asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], limit)))
