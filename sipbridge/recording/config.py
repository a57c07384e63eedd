"""What one recording is configured with: the ``[record]`` settings plus a request's overrides.

``rotation`` in a ``/stream/startRecording`` request (WCS's ``config.rotation``) is
parsed by :func:`parse_rotation`: a number of seconds (``20``, ``"20"``, ``"1.5"``),
a size with a unit (``"20M"``: 20 MiB; ``K``, ``M``, ``G``, binary multiples), or
``"off"``/``"disabled"``/``""``/``0`` for no rotation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from sipbridge.recording.container import ContainerFormat
from sipbridge.recording.names import FileTemplate, parse_template

__all__ = ["RecorderConfig", "Rotation", "parse_rotation"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG])i?B?\s*$", re.IGNORECASE)
_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3}
_OFF = frozenset({"", "off", "disabled", "none", "no", "false", "0"})
#: Files smaller than this or shorter than this would be rotated too often to be useful.
MIN_ROTATE_BYTES = 64 * 1024
MIN_ROTATE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Rotation:
    """When a file is ended and the next one started (0: never, for that criterion)."""

    seconds: float = 0.0
    bytes: int = 0


def parse_rotation(value: object) -> Rotation:
    """A request's ``rotation`` (module doc); :class:`ValueError` with the reason."""
    if value is None or isinstance(value, bool):
        if value:
            raise ValueError("rotation: expected seconds or a size such as '20M', got true")
        return Rotation()
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.lower() in _OFF:
            return Rotation()
        size = _SIZE.match(text)
        if size is not None:
            count = float(size[1]) * _UNITS[size[2].upper()]
            if count < MIN_ROTATE_BYTES:
                raise ValueError(f"rotation: a size of at least 64K, got {value!r}")
            return Rotation(bytes=int(count))
        try:
            seconds = float(text)
        except ValueError:
            raise ValueError(
                f"rotation: expected seconds (e.g. 600) or a size (e.g. '20M'), got {value!r}"
            ) from None
    else:
        raise ValueError(f"rotation: expected a number or a string, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"rotation: seconds must be a positive number, got {value!r}")
    if seconds == 0:
        return Rotation()
    if seconds < MIN_ROTATE_SECONDS:
        raise ValueError(f"rotation: at least {MIN_ROTATE_SECONDS:g} s, got {value!r}")
    return Rotation(seconds=seconds)


@dataclass(frozen=True)
class RecorderConfig:
    """Everything one recording's worker needs; built by the manager from the settings."""

    directory: Path
    template: FileTemplate
    format: ContainerFormat = "mkv"
    audio: Literal["copy", "aac"] = "copy"
    aac_bitrate: int = 64_000
    aac_sample_rate: int = 48_000
    rotate_seconds: float = 0.0
    rotate_bytes: int = 0
    fragment: float = 1.0
    """Longest stretch of media (seconds) a crash may lose: cluster/fragment duration."""
    video_wait: float = 2.0
    """Seconds of audio to wait for the first video keyframe before starting audio-only."""
    queue_frames: int = 1000

    @classmethod
    def default(
        cls, directory: Path, template: str = "{streamName}-{startTime}-{endTime}"
    ) -> RecorderConfig:
        """A configuration for ``directory`` with defaults (tests and library users)."""
        return cls(directory=directory, template=parse_template(template))

    def with_overrides(
        self, *, template: FileTemplate | None = None, rotation: Rotation | None = None
    ) -> RecorderConfig:
        """This configuration with a request's template and rotation."""
        config = self
        if template is not None:
            config = replace(config, template=template)
        if rotation is not None:
            config = replace(config, rotate_seconds=rotation.seconds, rotate_bytes=rotation.bytes)
        return config
