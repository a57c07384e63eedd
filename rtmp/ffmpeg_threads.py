"""Keep FFmpeg from starting worker threads of its own in the gateway's process.

FFmpeg sizes its automatic thread pools by ``av_cpu_count()``: every codec
context opened with ``thread_count`` 0 and every filter graph (PyAV's
``AudioResampler``, and the one PyAV's audio encoder builds to cut frames to the
codec's frame size) starts one worker per core. The gateway's FFmpeg work is
small and per call (20 ms audio frames to AAC), so those pools bring nothing but
threads: four per RTMP push on a 2-core host, 34 on a 16-core one; measured
with 100 pushes: 400 threads. ``av_cpu_force_count(1)`` (libavutil, ``cpu.h``)
makes every such pool a single thread, that is none; the pushes' encoding runs
in :func:`rtmp.writer.aac_pool` instead. PyAV does not expose the call, so it
goes through :mod:`ctypes` to the libavutil PyAV itself loaded.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import av  # noqa: F401  (loads libavutil into the process)

__all__ = ["limit_ffmpeg_threads"]

log = logging.getLogger(__name__)

_done = False


def _loaded_libavutil() -> str | None:
    """The path of the libavutil mapped into this process (Linux ``/proc``), if any."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split()[-1] if len(line.split()) >= 6 else ""
        if "libavutil" in Path(path).name:
            return path
    return None


def limit_ffmpeg_threads() -> bool:
    """Make FFmpeg's automatic thread counts 1 in this process (once); True if it did."""
    global _done
    if _done:
        return True
    path = _loaded_libavutil()
    if path is None:
        log.debug("libavutil not found in /proc/self/maps: FFmpeg thread pools left as is")
        return False
    try:
        libavutil = ctypes.CDLL(path)
        libavutil.av_cpu_force_count.argtypes = [ctypes.c_int]
        libavutil.av_cpu_force_count.restype = None
        libavutil.av_cpu_force_count(1)
    except (OSError, AttributeError) as exc:
        log.debug("av_cpu_force_count unavailable (%s): FFmpeg thread pools left as is", exc)
        return False
    _done = True
    return True
