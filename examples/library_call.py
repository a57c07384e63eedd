"""Call a SIP phone from Python and read its media: sipbridge as a library, no HTTP server.

    python examples/library_call.py --domain 127.0.0.1 --port 5060 \\
        --login alice --password alice-secret --callee bob --seconds 5

Registers as ``login`` when a password is given, calls ``callee``, waits for the
answer, reads the call's stream (H.264 access units and audio frames) for
``seconds`` while printing every status event, hangs up, and prints a JSON summary.
docs/library.md walks through it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from sipbridge import CallStatusEvent, Gateway, Settings, StreamStatusEvent
from sipbridge.settings import SipSettings


async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(sip=SipSettings(host="127.0.0.1", port=0))
    async with Gateway(settings) as gw:
        events = gw.events()  # every typed event from now on
        call = await gw.start_call(  # the fields of /call/startup, in snake case
            callee=args.callee,
            to_stream=f"lib-{args.callee}",
            sip_login=args.login,
            sip_password=args.password,
            sip_domain=args.domain,
            sip_port=args.port,
            sip_outbound_proxy=args.proxy,
            sip_register_required=bool(args.password),
            app_key="example",
        )
        info = await call.established(timeout=30)  # raises CallNotEstablished on failure
        print(f"established: {info.callId} sipStatus={info.sipStatus}", file=sys.stderr)

        frames = {"audio": 0, "video": 0, "keyframes": 0}
        codecs: dict[str, str] = {}
        assert call.stream is not None
        subscription = call.stream.subscribe()  # a custom consumer of the call's stream
        try:
            async with asyncio.timeout(args.seconds):
                async for frame in subscription:  # rtp.frame.MediaFrame
                    frames[frame.kind] += 1
                    frames["keyframes"] += frame.keyframe
                    codecs[frame.kind] = frame.codec
        except TimeoutError:
            pass  # read for long enough
        finally:
            subscription.close()
        await gw.terminate_call(call.call_id)
        final = await call.ended(timeout=10)

        seen: list[str] = []
        while (event := events.get_nowait()) is not None:
            if isinstance(event, CallStatusEvent):
                seen.append(f"call {event.status}")
            elif isinstance(event, StreamStatusEvent):
                seen.append(f"stream {event.name} {event.status}")
        return {"final": final.value, "frames": frames, "codecs": codecs, "events": seen}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", required=True, help="SIP domain (registrar)")
    parser.add_argument("--port", type=int, default=5060, help="SIP port of the domain")
    parser.add_argument("--proxy", default=None, help="outbound proxy host (default: domain)")
    parser.add_argument("--login", default="sipbridge")
    parser.add_argument("--password", default="")
    parser.add_argument("--callee", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
