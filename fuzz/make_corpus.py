"""Rebuild the kept seed corpus ``fuzz/corpus/<target>/`` from the test vectors.

Seeds: the RFC 4475 torture messages (tests/vectors/rfc4475), the real SDPs
(tests/vectors/sdp), the RFC digest examples (tests/vectors/auth), the RTP
and RTCP datagrams (tests/vectors/rtp), real H264 streams packetized as the
H264 harness reads them, and AMF0 commands and RTMP chunks as a server sends
them. Seed names are content hashes, so rebuilding is idempotent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from rtmp.amf0 import AmfValue, EcmaArray, encode_all
from rtmp.chunks import ChunkWriter
from rtp.h264_bits import first_mb_in_slice, is_vcl, split_annexb

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
CORPUS = ROOT / "fuzz" / "corpus"


def _hex_datagrams(path: Path) -> list[bytes]:
    datagrams: list[bytes] = []
    digits: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text == "--":
            datagrams.append(bytes.fromhex("".join(digits)))
            digits = []
        else:
            digits.append(text)
    datagrams.append(bytes.fromhex("".join(digits)))
    return datagrams


def _h264_records(stream: bytes, *, mtu: int) -> bytes:
    """An H264 harness input: single NAL packets and FU-A fragments, marker on AU ends."""
    out = bytearray(b"\x00")
    units: list[list[bytes]] = [[]]
    seen_slice = False
    for nal in split_annexb(stream):
        kind = nal[0] & 0x1F
        if seen_slice and (kind in (6, 7, 8, 9) or (is_vcl(kind) and first_mb_in_slice(nal) == 0)):
            units.append([])
            seen_slice = False
        units[-1].append(nal)
        seen_slice = seen_slice or is_vcl(kind)
    for unit in units[:6]:
        payloads: list[bytes] = []
        for nal in unit:
            if len(nal) <= mtu:
                payloads.append(nal)
                continue
            body = nal[1:]
            pieces = [body[i : i + mtu] for i in range(0, len(body), mtu)]
            for index, piece in enumerate(pieces):
                start, end = index == 0, index == len(pieces) - 1
                fu_header = (0x80 * start) | (0x40 * end) | (nal[0] & 0x1F)
                payloads.append(bytes([(nal[0] & 0xE0) | 28, fu_header]) + piece)
        for index, payload in enumerate(payloads):
            last = index == len(payloads) - 1
            flags = (1 if last else 0) | ((1 if index == 0 else 0) << 4)
            out += bytes([flags]) + len(payload).to_bytes(2, "big") + payload
    return bytes(out)


def seeds() -> dict[str, list[bytes]]:
    """Seed inputs per target."""
    auth = json.loads((VECTORS / "auth" / "rfc_examples.json").read_text(encoding="utf-8"))
    digest = [entry["challenge"].encode() for entry in auth if "challenge" in entry]
    digest += [
        b'Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f6'
        b'00bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", '
        b'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"',
        b'Digest realm="atlanta.com", nonce="84a4cc6f3082121f32b42a2187831a9e", '
        b'algorithm=SHA-256, qop="auth", stale=FALSE, userhash=true',
        b'Digest realm="a", nonce="b", algorithm=MD5, Digest realm="c", nonce="d"',
    ]
    rtp_dir = VECTORS / "rtp"
    datagrams = [d for path in sorted(rtp_dir.glob("*.hex")) for d in _hex_datagrams(path)]
    rtp = [d for d in datagrams if not 192 <= d[1] <= 223]
    rtcp = [d for d in datagrams if 192 <= d[1] <= 223]
    h264 = [
        _h264_records((VECTORS / "h264" / name).read_bytes()[:14000], mtu=mtu)
        for name, mtu in (("baseline_320x240.h264", 1200), ("slices_320x240.h264", 400))
    ]
    commands: list[tuple[AmfValue, ...]] = [
        (
            "_result",
            1.0,
            {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
            {"level": "status", "code": "NetConnection.Connect.Success", "objectEncoding": 0.0},
        ),
        ("_result", 4.0, None, 1.0),
        ("onStatus", 0.0, None, {"level": "status", "code": "NetStream.Publish.Start"}),
        ("@setDataFrame", "onMetaData", EcmaArray(width=320.0, height=240.0, stereo=True)),
        ("_error", 5.0, None, {"level": "error", "description": "x", "list": [1.0, "a", None]}),
    ]
    amf0 = [encode_all(*command) for command in commands]
    chunks = []
    for chunk_size in (128, 60):
        writer = ChunkWriter(chunk_size)
        stream = bytearray(b"\x00")  # the harness's split-point byte
        if chunk_size != 128:
            stream += writer.write(2, 1, 0, 0, chunk_size.to_bytes(4, "big"))
        stream += writer.write(2, 5, 0, 0, (2500000).to_bytes(4, "big"))
        stream += writer.write(2, 6, 0, 0, (2500000).to_bytes(4, "big") + b"\x02")
        for index, payload in enumerate(amf0[:3]):
            stream += writer.write(3, 20, 0, index, payload)
        stream += writer.write(2, 4, 0, 0, b"\x00\x00\x00\x00\x00\x01")
        chunks.append(bytes(stream))
    return {
        "sip_message": [p.read_bytes() for p in sorted((VECTORS / "rfc4475").glob("*.dat"))],
        "sip_address": [
            b'"Alice \\"A\\"" <sip:alice@atlanta.com;transport=tcp>;tag=1928301774',
            b"sip:+1-212-555-1212:1234@gateway.com;user=phone",
            b"<sips:[2001:db8::10]:5061;maddr=239.255.255.1;ttl=15>",
            b"sip:%61lice@atlanta.com;lr?subject=project%20x&priority=urgent",
            b"Bob <sip:bob@biloxi.com>, <sip:carol@chicago.com>;q=0.5",
            b"tel:+358-555-1234567;postd=pp22",
        ],
        "sdp": [p.read_bytes() for p in sorted((VECTORS / "sdp").glob("*.sdp"))],
        "digest": digest,
        "rtp": rtp,
        "rtcp": rtcp,
        "h264": h264,
        "amf0": amf0,
        "rtmp_chunks": chunks,
    }


def main() -> None:
    """Write the corpus, replacing what was there."""
    for target, inputs in seeds().items():
        directory = CORPUS / target
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        for data in inputs:
            (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)
        print(f"{target}: {len(inputs)} seeds")


if __name__ == "__main__":
    main()
