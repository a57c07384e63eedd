"""nginx with libnginx-mod-rtmp as a real RTMP server for interop tests.

A private instance (``nginx -p DIR -c DIR/nginx.conf``, ``daemon off;``) on free
127.0.0.1 ports: RTMP with an application ``live`` (``live on; idle_streams off;``
so a player joining an unpublished stream is turned away instead of hanging, and
``wait_key on;`` so a player joining mid-stream starts on a keyframe), and an HTTP
``/stat`` location with ``rtmp_stat all`` (XML) to see who publishes. It is started
through a :class:`~tests.interop.peers.PeerSet` (stopped by PID at teardown) and can
be stopped and started again on the same ports, as a server restart.

Options:

* ``tls=True``: nginx's ``stream`` module (Debian ``libnginx-mod-stream``) also
  listens with TLS on :attr:`NginxRtmp.tls_port` and passes the decrypted bytes to
  the RTMP port, as RTMPS ingest servers do (a TLS terminator in front of plain
  RTMP). The certificate is self-signed, made by the ``openssl`` CLI for
  ``127.0.0.1`` (subjectAltName IP), and is its own CA: :attr:`NginxRtmp.cert_path`
  is the CA file a verifying client needs.
* ``ipv6=True``: the RTMP server also listens on ``[::1]`` (same port);
  :meth:`NginxRtmp.url6` names it.

:meth:`NginxRtmp.pids` lists the master and its workers (the master's process
group), for tests that freeze the server with SIGSTOP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.interop.peers import (
    LOCALHOST,
    ManagedProcess,
    PeerSet,
    free_port,
    require_binary,
    wait_for_port,
    wait_until,
)

__all__ = ["RTMP_MODULE", "STREAM_MODULE", "NginxRtmp", "make_self_signed_cert"]

RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")

_CONFIG = """\
load_module {module};
{stream_module}daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen {host}:{rtmp_port};
{listen6}        chunk_size 4096;
        application {app} {{
            live on;
            idle_streams off;
            wait_key on;
            wait_video on;
        }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{
        listen {host}:{http_port};
        location /stat {{ rtmp_stat all; }}
    }}
}}
{stream}"""

_STREAM = """\
stream {{
    server {{
        listen {host}:{tls_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        proxy_pass {host}:{rtmp_port};
    }}
}}
"""


def make_self_signed_cert(directory: Path, host: str = LOCALHOST) -> tuple[Path, Path]:
    """``(cert, key)``: a self-signed EC certificate for ``host`` (an IP: subjectAltName
    IP, and CA:TRUE so the certificate is also the CA file that verifies it)."""
    require_binary("openssl")
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def _ipv6_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("::1", port))
        except OSError:
            return False
    return True


def _ipv6_answers(port: int) -> bool:
    try:
        with socket.create_connection(("::1", port), timeout=0.5):
            return True
    except OSError:
        return False


class NginxRtmp:
    """A private nginx-rtmp: ``url(name)`` to publish or play, ``stats()`` as XML."""

    def __init__(
        self,
        peers: PeerSet,
        *,
        name: str = "nginx",
        app: str = "live",
        tls: bool = False,
        ipv6: bool = False,
    ) -> None:
        require_binary("nginx")
        if not RTMP_MODULE.exists():
            raise FileNotFoundError(
                f"{RTMP_MODULE} missing: install the Debian package libnginx-mod-rtmp"
            )
        if tls and not STREAM_MODULE.exists():
            raise FileNotFoundError(
                f"{STREAM_MODULE} missing: install the Debian package libnginx-mod-stream"
            )
        self.peers = peers
        self.name = name
        self.app = app
        self.ipv6 = ipv6
        self.workdir = peers.workdir / name
        self.rtmp_port = free_port("tcp")
        while ipv6 and not _ipv6_port_free(self.rtmp_port):
            self.rtmp_port = free_port("tcp")
        self.http_port = free_port("tcp")
        self.tls_port: int | None = free_port("tcp") if tls else None
        self.cert_path: Path | None = None
        self.process: ManagedProcess | None = None
        self.starts = 0
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        stream = ""
        if self.tls_port is not None:
            self.cert_path, key = make_self_signed_cert(self.workdir)
            stream = _STREAM.format(
                host=LOCALHOST,
                tls_port=self.tls_port,
                rtmp_port=self.rtmp_port,
                cert=self.cert_path,
                key=key,
            )
        self.config_path = self.workdir / "nginx.conf"
        self.config_path.write_text(
            _CONFIG.format(
                module=RTMP_MODULE,
                stream_module=f"load_module {STREAM_MODULE};\n" if tls else "",
                dir=self.workdir,
                host=LOCALHOST,
                rtmp_port=self.rtmp_port,
                listen6=f"        listen [::1]:{self.rtmp_port};\n" if ipv6 else "",
                http_port=self.http_port,
                app=app,
                stream=stream,
            )
        )

    def url(self, stream: str) -> str:
        """``rtmp://127.0.0.1:PORT/APP/STREAM``."""
        return f"rtmp://{LOCALHOST}:{self.rtmp_port}/{self.app}/{stream}"

    def tls_url(self, stream: str) -> str:
        """``rtmps://127.0.0.1:TLSPORT/APP/STREAM`` (needs ``tls=True``)."""
        if self.tls_port is None:
            raise RuntimeError(f"{self.name} was made without tls=True")
        return f"rtmps://{LOCALHOST}:{self.tls_port}/{self.app}/{stream}"

    def url6(self, stream: str) -> str:
        """``rtmp://[::1]:PORT/APP/STREAM`` (needs ``ipv6=True``)."""
        if not self.ipv6:
            raise RuntimeError(f"{self.name} was made without ipv6=True")
        return f"rtmp://[::1]:{self.rtmp_port}/{self.app}/{stream}"

    def start(self, timeout: float = 10.0) -> NginxRtmp:
        """Start nginx (again after :meth:`stop`) and wait for every port to answer."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"{self.name} is already running (pid {self.process.pid})")
        self.starts += 1
        self.process = self.peers.process(
            ["nginx", "-p", str(self.workdir), "-c", str(self.config_path)],
            name=f"{self.name}-{self.starts}",
        )
        wait_for_port(self.http_port, "tcp", timeout=timeout)
        wait_for_port(self.rtmp_port, "tcp", timeout=timeout)
        if self.tls_port is not None:
            wait_for_port(self.tls_port, "tcp", timeout=timeout)
        if self.ipv6:
            port = self.rtmp_port
            wait_until(lambda: _ipv6_answers(port), timeout=timeout, what=f"tcp [::1]:{port}")
        return self

    def stop(self) -> None:
        """Stop nginx (its process group, by PID). Idempotent."""
        if self.process is not None:
            self.process.stop()

    def pids(self) -> list[int]:
        """The master's PID first, then its workers' (every process of its group)."""
        if self.process is None or self.process.poll() is not None:
            return []
        master = self.process.pid
        members = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == master:
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Fields after the ")" that ends the command name: state ppid pgrp ...
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == master:
                members.append(int(entry.name))
        return [master, *sorted(members)]

    def signal(self, sig: int) -> list[int]:
        """Send ``sig`` to the master and each worker, by PID; returns the PIDs."""
        pids = self.pids()
        for pid in pids:
            os.kill(pid, sig)
        return pids

    def stats(self) -> ET.Element:
        """The ``rtmp_stat all`` XML document."""
        url = f"http://{LOCALHOST}:{self.http_port}/stat"
        with urllib.request.urlopen(url, timeout=5) as response:
            return ET.fromstring(response.read())

    def publishing(self, stream: str) -> bool:
        """Whether someone publishes ``stream`` in the application right now."""
        for element in self.stats().iter("stream"):
            if element.findtext("name") == stream and element.find("publishing") is not None:
                return True
        return False

    def wait_publishing(self, stream: str, timeout: float = 10.0) -> None:
        wait_until(lambda: self.publishing(stream), timeout=timeout, what=f"{stream} published")
