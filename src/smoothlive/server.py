"""Running the application: granian embedded in this process, or uvicorn.

Both run the same plain ASGI application in this one process (one event
loop, uvloop); with ``--workers`` above 1 (granian only) this process is the
owner and starts front processes on the same port (``smoothlive.workers``).
granian is the default because it carries the real
application 1.5-1.7 times faster (ARCHITECTURE.md has the figures); uvicorn
stays selectable (``--http-server uvicorn``) as a fallback, since granian's
embedded mode is young.

The line ``smoothlive listening on http://HOST:PORT/`` is printed once the
socket accepts connections and the application has started (scripts and
tests wait for it). The first SIGTERM or SIGINT stops gracefully (the
lifespan shutdown runs); a second one exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from smoothlive.auth.users import ensure_admin
from smoothlive.config import ServerConfig
from smoothlive.demo import Demo
from smoothlive.http.app import App

log = logging.getLogger("smoothlive")

READY_TIMEOUT = 30.0
GRACEFUL_SECONDS = 10


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def free_port(host: str) -> int:
    """A port nobody listens on now, for ``--port 0`` with servers that bind themselves."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def listening_url(config: ServerConfig, port: int) -> str:
    host = f"[{config.host}]" if ":" in config.host else config.host
    return f"{config.scheme}://{host}:{port}/"


async def _wait_accepting(host: str, port: int, started: asyncio.Event) -> None:
    """Until the socket accepts connections and the application has started."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            break
        except OSError:
            if loop.time() > deadline:
                raise RuntimeError(f"the server did not start listening on {host}:{port}") from None
            await asyncio.sleep(0.01)
    await asyncio.wait_for(started.wait(), READY_TIMEOUT)


def _install_signals(stop) -> None:
    """First signal: graceful stop. Second: exit at once."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def handler(signum: int) -> None:
        if received:
            log.warning("second signal: exiting at once")
            os._exit(1)
        received.append(signum)
        log.info("%s: shutting down", signal.Signals(signum).name)
        stop()
        loop.call_later(GRACEFUL_SECONDS, _give_up)

    def _give_up() -> None:
        log.warning("graceful shutdown took over %d s: exiting", GRACEFUL_SECONDS)
        os._exit(1)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, handler, signum)


def _granian(app, config: ServerConfig, port: int = 0, uds: Path | None = None):
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.server.embed import Server

    tls = {} if uds is not None else {
        "ssl_cert": Path(config.tls_cert) if config.tls_cert else None,
        "ssl_key": Path(config.tls_key) if config.tls_key else None,
    }
    where = {"uds": uds} if uds is not None else {"address": config.host, "port": port}
    return Server(
        app,
        **where,
        interface=Interfaces.ASGI,
        websockets=False,
        backlog=2048,
        log_enabled=False,
        http1_settings=HTTP1Settings(header_read_timeout=30_000, max_buffer_size=1 << 20),
        **tls,
    )


async def _serve_granian(app: App, config: ServerConfig, port: int) -> None:
    server = _granian(app, config, port=port)
    servers = [server]
    fronts = None
    home = None
    if config.workers > 1:
        from smoothlive.workers.board import ChangeBoard
        from smoothlive.workers.owner import Fronts, OwnerSide, run_dir

        home, temporary = run_dir(config.state_dir)
        board = ChangeBoard(home / "board")
        app.registry.on_change = board.changed
        socket_path = home / "owner.sock"
        servers.append(_granian(OwnerSide(app, board), config, uds=socket_path))
        fronts = Fronts(config, port, socket_path, home / "board")

    stopping: list[asyncio.Task[None]] = []

    async def stop_all() -> None:
        app.drain()
        if fronts is not None:
            await fronts.stop()
        for each in servers:
            each.stop()

    def stop() -> None:
        stopping.append(asyncio.get_running_loop().create_task(stop_all()))

    _install_signals(stop)
    serving = [asyncio.create_task(each.serve()) for each in servers]
    ready = asyncio.create_task(_wait_accepting(config.host, port, app.started))
    done, _ = await asyncio.wait({*serving, ready}, return_when=asyncio.FIRST_COMPLETED)
    demo = None
    try:
        if ready in done:
            ready.result()
            if fronts is not None:
                await fronts.start()
            print(f"smoothlive listening on {listening_url(config, port)}", flush=True)
            if config.demo:
                demo = Demo(app.registry, listening_url(config, port))
                await demo.start()
        await asyncio.gather(*serving)
    finally:
        if demo is not None:
            await demo.stop()
        if fronts is not None:
            await fronts.stop()
        if home is not None:
            from smoothlive.workers.owner import remove_run_dir

            remove_run_dir(home, temporary)


def _serve_uvicorn(app: App, config: ServerConfig, port: int) -> None:
    import uvicorn

    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    sock.listen(2048)
    url = listening_url(config, sock.getsockname()[1])

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            # Same behaviour as with granian: graceful first, at once second,
            # and a clean exit status rather than uvicorn's re-raised signal.
            if self.should_exit:
                log.warning("second signal: exiting at once")
                os._exit(1)
            log.info("%s: shutting down", signal.Signals(sig).name)
            app.drain()
            self.should_exit = True

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                print(f"smoothlive listening on {url}", flush=True)

    uv_config = uvicorn.Config(
        app, loop="uvloop", http="httptools", lifespan="on", log_config=None,
        access_log=False, server_header=False, timeout_keep_alive=30,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        ssl_certfile=config.tls_cert or None, ssl_keyfile=config.tls_key or None,
    )
    try:
        _Server(uv_config).run(sockets=[sock])
    finally:
        sock.close()


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
    if config.http_server == "uvicorn":
        _serve_uvicorn(app, config, port=config.port)
        return 0
    import uvloop

    port = config.port or free_port(config.host)
    uvloop.run(_serve_granian(app, config, port))
    return 0
