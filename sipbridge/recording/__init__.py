"""Recording of registry streams to crash-safe files (see docs/recording.md).

:class:`RecordingManager` is the gateway's face (``/stream/startRecording``,
``/recorder/*``, automatic recording); :class:`Recorder` records one stream.
"""

from sipbridge.recording.config import RecorderConfig, Rotation, parse_rotation
from sipbridge.recording.manager import (
    RecordingFileInfo,
    RecordingInfo,
    RecordingManager,
    RecordingStorageError,
)
from sipbridge.recording.recorder import FAILED_INFO, Recorder, RecorderStats, RecordingStatus
from sipbridge.recording.segments import RecordedFile

__all__ = [
    "FAILED_INFO",
    "RecordedFile",
    "Recorder",
    "RecorderConfig",
    "RecorderStats",
    "RecordingFileInfo",
    "RecordingInfo",
    "RecordingManager",
    "RecordingStatus",
    "RecordingStorageError",
    "Rotation",
    "parse_rotation",
]
