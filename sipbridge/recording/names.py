"""Recording file names: the WCS file template, rendered safely inside the output directory.

Theory of operation
-------------------
A template is text with the WCS elements ``{streamName} {startTime} {endTime}
{mediaSessionId} {audioCodec} {videoCodec}`` (the shared REST contract,
``/stream/startRecording``). It may name sub-directories with ``/``; it may
not be absolute, contain ``..`` or empty path components, backslashes or
control characters, nor any other ``{...}``: :func:`parse_template` refuses
those with a message naming the problem.

Values are made file-name safe before they are put in: every character but
ASCII letters, digits, ``.``, ``_`` and ``-`` becomes ``_`` (a stream name
``a/../b`` becomes ``a_.._b``, one harmless component), a value that would be
``.`` or ``..`` becomes ``_``, and each value is cut to :data:`MAX_VALUE`
characters, so a hostile stream name can neither escape the directory nor
make a component longer than file systems allow.

The rendered name gets the container's extension (``.mkv``, ``.mp4``) unless
it already ends with it. :func:`resolve_inside` then joins it to the output
directory and checks, *after* resolving symbolic links, that the result is
still inside: a link in the output directory that points elsewhere is
refused too (:class:`PathEscape`).

``{endTime}`` is unknown while a file is written: the file is written under
the name rendered with :data:`PARTIAL` in its place and renamed when it is
finished. A file left under a ``partial`` name was not finished (the process
was killed); it plays up to its last complete cluster.

``{startTime}``/``{endTime}`` are Unix milliseconds (WCS's form), the wall
clock mapped from the call clock, so consecutive files' names meet exactly.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "ELEMENTS",
    "MAX_VALUE",
    "PARTIAL",
    "FileTemplate",
    "PathEscape",
    "TemplateError",
    "parse_template",
    "resolve_inside",
    "safe_value",
]

#: The elements a template may use (WCS names).
ELEMENTS = frozenset(
    {"streamName", "startTime", "endTime", "mediaSessionId", "audioCodec", "videoCodec"}
)
#: What ``{endTime}`` renders as while the file is being written.
PARTIAL = "partial"
#: The longest value put into a name (a path component is at most 255 bytes).
MAX_VALUE = 64
MAX_TEMPLATE = 200

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")


class TemplateError(ValueError):
    """A file template that cannot be used; the message says why."""


class PathEscape(ValueError):
    """A rendered file name that would land outside the output directory."""


def safe_value(value: str) -> str:
    """``value`` as one safe file name component (see the module doc)."""
    cleaned = _UNSAFE.sub("_", value)[:MAX_VALUE]
    if cleaned in ("", ".", ".."):
        return "_" if cleaned else ""
    return cleaned


@dataclass(frozen=True, slots=True)
class FileTemplate:
    """A checked template; :meth:`render` fills it in."""

    text: str
    elements: frozenset[str]

    @property
    def has_end_time(self) -> bool:
        return "endTime" in self.elements

    def render(self, values: Mapping[str, str], *, extension: str) -> PurePosixPath:
        """The relative path for ``values`` (every element of :data:`ELEMENTS` may be given;
        a missing one renders empty), with ``extension`` (``".mkv"``) appended if absent."""
        safe = {name: safe_value(values.get(name, "")) for name in ELEMENTS}
        rendered = self.text.format_map(safe)
        # A component made empty or "." by empty values (e.g. "{audioCodec}/x" with no
        # audio) gets a placeholder, so the path keeps its shape.
        parts = ["_" if part in ("", ".", "..") else part for part in rendered.split("/")]
        path = PurePosixPath(*parts)
        if not path.name.endswith(extension):
            path = path.with_name(path.name + extension)
        return path


def parse_template(text: str) -> FileTemplate:
    """Check ``text`` (module doc) and return it as a :class:`FileTemplate`.

    Raises :class:`TemplateError` naming the first problem.
    """
    if not text or not text.strip():
        raise TemplateError("the file template is empty")
    if len(text) > MAX_TEMPLATE:
        raise TemplateError(f"the file template is longer than {MAX_TEMPLATE} characters")
    if _FORBIDDEN.search(text):
        raise TemplateError("the file template contains a backslash or a control character")
    if text.startswith("/"):
        raise TemplateError("the file template must be relative to the output directory")
    elements: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"the file template has unbalanced braces ({exc})") from None
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in ELEMENTS:
            known = ", ".join("{" + name + "}" for name in sorted(ELEMENTS))
            raise TemplateError(f"unknown template element {{{field}}} (known: {known})")
        if spec or conversion:
            raise TemplateError(f"template element {{{field}}} takes no format or conversion")
        elements.add(field)
    for part in text.split("/"):
        if part in ("", ".", ".."):
            raise TemplateError(
                f"the file template has an empty, '.' or '..' path component: {text!r}"
            )
    return FileTemplate(text=text, elements=frozenset(elements))


def resolve_inside(directory: Path, relative: PurePosixPath) -> Path:
    """``directory / relative``, checked to stay inside ``directory`` once links are resolved.

    Raises :class:`PathEscape`. Touches the file system (resolves links): call it
    off the event loop.
    """
    if relative.is_absolute() or ".." in relative.parts:
        raise PathEscape(f"file name {str(relative)!r} escapes the output directory")
    base = directory.resolve()
    target = (base / relative).resolve()
    if target == base or not target.is_relative_to(base):
        raise PathEscape(
            f"file name {str(relative)!r} resolves to {str(target)!r}, outside the output "
            f"directory {str(base)!r}"
        )
    return target
