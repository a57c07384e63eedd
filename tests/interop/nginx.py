"""nginx with libnginx-mod-rtmp as a real RTMP server for interop tests.

A private instance (``nginx -p DIR -c DIR/nginx.conf``, ``daemon off;``) on free
127.0.0.1 ports: RTMP with an application ``live`` (``live on; idle_streams off;``
so a player joining an unpublished stream is turned away instead of hanging, and
``wait_key on;`` so a player joining mid-stream starts on a keyframe), and an HTTP
``/stat`` location with ``rtmp_stat all`` (XML) to see who publishes. It is started
through a :class:`~tests.interop.peers.PeerSet` (stopped by PID at teardown) and can
be stopped and started again on the same ports, as a server restart.
"""

from __future__ import annotations

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

__all__ = ["RTMP_MODULE", "NginxRtmp"]

RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")

_CONFIG = """\
load_module {module};
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen {host}:{rtmp_port};
        chunk_size 4096;
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
"""


class NginxRtmp:
    """A private nginx-rtmp: ``url(name)`` to publish or play, ``stats()`` as XML."""

    def __init__(self, peers: PeerSet, *, name: str = "nginx", app: str = "live") -> None:
        require_binary("nginx")
        if not RTMP_MODULE.exists():
            raise FileNotFoundError(
                f"{RTMP_MODULE} missing: install the Debian package libnginx-mod-rtmp"
            )
        self.peers = peers
        self.name = name
        self.app = app
        self.workdir = peers.workdir / name
        self.rtmp_port = free_port("tcp")
        self.http_port = free_port("tcp")
        self.process: ManagedProcess | None = None
        self.starts = 0
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "nginx.conf"
        self.config_path.write_text(
            _CONFIG.format(
                module=RTMP_MODULE,
                dir=self.workdir,
                host=LOCALHOST,
                rtmp_port=self.rtmp_port,
                http_port=self.http_port,
                app=app,
            )
        )

    def url(self, stream: str) -> str:
        """``rtmp://127.0.0.1:PORT/APP/STREAM``."""
        return f"rtmp://{LOCALHOST}:{self.rtmp_port}/{self.app}/{stream}"

    def start(self, timeout: float = 10.0) -> NginxRtmp:
        """Start nginx (again after :meth:`stop`) and wait for both ports to answer."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"{self.name} is already running (pid {self.process.pid})")
        self.starts += 1
        self.process = self.peers.process(
            ["nginx", "-p", str(self.workdir), "-c", str(self.config_path)],
            name=f"{self.name}-{self.starts}",
        )
        wait_for_port(self.http_port, "tcp", timeout=timeout)
        wait_for_port(self.rtmp_port, "tcp", timeout=timeout)
        return self

    def stop(self) -> None:
        """Stop nginx (its process group, by PID). Idempotent."""
        if self.process is not None:
            self.process.stop()

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
