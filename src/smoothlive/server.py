"""Running the application: uvicorn (uvloop + httptools) on one socket.

The socket is bound here rather than by uvicorn so that ``--port 0`` can be
reported: the line ``smoothlive listening on http://HOST:PORT/`` is printed
once the server accepts connections (scripts and tests wait for it).
uvicorn handles SIGTERM and SIGINT: a first signal drains connections and
runs the shutdown, a second one exits at once. Why uvicorn and not granian:
see ARCHITECTURE.md.
"""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn

from smoothlive.auth.users import ensure_admin
from smoothlive.config import ServerConfig
from smoothlive.http.app import App

log = logging.getLogger("smoothlive")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self.url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            print(f"smoothlive listening on {self.url}", flush=True)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def serve(config: ServerConfig) -> int:
    configure_logging(config.log_level)
    app = App(config)
    password = ensure_admin(app.users)
    if password is not None:
        # Printed once on the terminal, never logged.
        print(
            "smoothlive: created user 'admin' with full access; its password is:\n"
            f"    {password}\n"
            "Keep it: it is not shown again (change it with `smoothlive user add admin "
            "--replace --password-stdin --grant write:/`).",
            flush=True,
        )
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    url = f"{config.scheme}://{shown_host}:{port}/"
    uv_config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=True,
        ssl_certfile=config.tls_cert or None,
        ssl_keyfile=config.tls_key or None,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=10,
        h11_max_incomplete_event_size=16 * 1024,
    )
    server = _Server(uv_config, url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
