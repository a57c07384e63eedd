"""What runs when a recording file is finished: a command and/or a webhook.

Both run off the event loop's critical path, in background tasks the
:class:`~sipbridge.recording.manager.RecordingManager` owns, each bounded by
``timeout`` seconds; a failing or slow hook is logged and never touches the
call, the stream or the next files.

Command (``[record] on_finish_command``): an argv list run with
:func:`asyncio.create_subprocess_exec`, no shell, stdin closed. In every
argument the placeholders ``{path}`` (absolute), ``{fileName}`` (relative to
the output directory), ``{streamName}``, ``{mediaSessionId}``,
``{recordingId}``, ``{startTime}``, ``{endTime}`` (Unix ms), ``{duration}``
(seconds), ``{bytes}`` and ``{status}`` are replaced by plain substitution (a
stream name cannot inject arguments: it stays inside its one argument). On
timeout the process is killed.

Webhook (``[record] on_finish_url``): ``POST`` of the :class:`FileEvent` as
JSON (``Content-Type: application/json``) with :mod:`urllib.request` in a
worker thread; any 2xx is success; redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.error
import urllib.request
from collections.abc import Sequence

import msgspec

__all__ = ["FileEvent", "FinishHooks", "command_argv"]

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


class FileEvent(msgspec.Struct, kw_only=True, rename="camel"):
    """A finished (or failed) recording file, as the hooks receive it."""

    event: str = "RecordingFileFinished"
    recording_id: str
    media_session_id: str
    stream_name: str
    file_name: str
    path: str
    status: str
    """``FINISHED`` (closed cleanly) or ``FAILED`` (a write error: playable up to it)."""
    error: str | None
    start_time: int
    end_time: int | None
    duration: float
    bytes: int
    audio_codec: str | None
    video_codec: str | None


def command_argv(template: Sequence[str], event: FileEvent) -> list[str]:
    """``template`` with the placeholders of the module doc replaced in every argument."""
    values = {
        "{path}": event.path,
        "{fileName}": event.file_name,
        "{streamName}": event.stream_name,
        "{mediaSessionId}": event.media_session_id,
        "{recordingId}": event.recording_id,
        "{startTime}": str(event.start_time),
        "{endTime}": "" if event.end_time is None else str(event.end_time),
        "{duration}": f"{event.duration:.3f}",
        "{bytes}": str(event.bytes),
        "{status}": event.status,
    }
    argv = []
    for argument in template:
        for key, value in values.items():
            argument = argument.replace(key, value)
        argv.append(argument)
    return argv


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class FinishHooks:
    """Runs the configured hooks for one finished file (:meth:`run` never raises)."""

    def __init__(
        self, command: Sequence[str] = (), url: str | None = None, *, timeout: float = 10.0
    ) -> None:
        self.command = list(command)
        self.url = url or None
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    @property
    def enabled(self) -> bool:
        return bool(self.command) or self.url is not None

    async def run(self, event: FileEvent) -> None:
        """Run the command and the webhook for ``event`` concurrently; log outcomes."""
        jobs = []
        if self.command:
            jobs.append(self._run_command(event))
        if self.url is not None:
            jobs.append(self._post(event))
        if jobs:
            await asyncio.gather(*jobs)

    async def _run_command(self, event: FileEvent) -> None:
        argv = command_argv(self.command, event)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            log.warning("recording hook %s: cannot start: %s", argv[0], exc.strerror or exc)
            return
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            log.warning(
                "recording hook %s for %s: killed after %.0f s", argv[0], event.file_name,
                self.timeout,
            )  # fmt: skip
            return
        tail = output.decode(errors="replace").strip()[-500:]
        if process.returncode == 0:
            log.info("recording hook %s for %s: done", argv[0], event.file_name)
        else:
            log.warning(
                "recording hook %s for %s: exit %s: %s",
                argv[0],
                event.file_name,
                process.returncode,
                tail,
            )

    async def _post(self, event: FileEvent) -> None:
        assert self.url is not None
        url = self.url
        body = _encoder.encode(event)
        try:
            status = await asyncio.wait_for(
                asyncio.to_thread(self._post_blocking, url, body), self.timeout + 1.0
            )
        except TimeoutError:
            log.warning("recording webhook for %s: no answer in %.0f s", event.file_name,
                        self.timeout)  # fmt: skip
            return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            log.warning("recording webhook for %s: %s", event.file_name, reason)
            return
        if 200 <= status < 300:
            log.info("recording webhook for %s: %d", event.file_name, status)
        else:
            log.warning("recording webhook for %s: HTTP %d", event.file_name, status)

    def _post_blocking(self, url: str, body: bytes) -> int:
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
