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

The limits that hold against hostile or broken clients (``--header-timeout``,
``--max-header-kb``, ``--max-connections``, ``--send-timeout``) are applied
here for the owner (granian on the port; its Unix socket for the fronts is
served by ``smoothlive.http.h1``, as the fronts themselves are), and
``connection_limit`` for the fronts too; this module imports the application
lazily so that fronts can use it without loading it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from smoothlive.config import ServerConfig

if TYPE_CHECKING:
    from smoothlive.http.app import App

log = logging.getLogger("smoothlive")

READY_TIMEOUT = 30.0
GRACEFUL_SECONDS = 10
# Open files kept for everything but connections (archive and spool files, logs,
# pipes, the event loops' own descriptors) when --max-connections is fitted to
# the open-files limit.
FILE_RESERVE = 1024


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


def connection_limit(wanted: int, servers: int = 1) -> int:
    """Connections each of this process's ``servers`` may hold: ``wanted``, unless the
    open-files limit cannot hold that many (then fewer, with a warning).

    The soft RLIMIT_NOFILE is raised as far as the hard limit allows first: at
    the limit, accept() fails with EMFILE and the server would spin on the
    connections waiting in the listen queue instead of leaving them there.
    (granian's extension raises it to the hard limit itself when it is loaded;
    uvicorn does not.)
    """
    try:
        import resource
    except ImportError:  # not POSIX: nothing to fit
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted * servers + FILE_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("open files limit not raised to %d: %s", target, exc)
    if soft == resource.RLIM_INFINITY:
        return wanted
    fits = max(1, (soft - min(FILE_RESERVE, soft // 2)) // servers)
    if fits < wanted:
        log.warning("open files limited to %d: at most %d connections per server, not %d "
                    "(--max-connections)", soft, fits, wanted)
        return fits
    return wanted


def granian_server(app, config: ServerConfig, *, port: int = 0, connections: int):
    """A granian server of ``app`` with the limits of ``config`` on ``port`` (TLS if
    configured); at most ``connections`` at once.

    HTTP/1.1 only: with HTTP/2 possible granian first reads a new connection's
    first bytes to tell the two apart, with no timeout, so a connection that
    never sends anything would be held forever (and over TLS, HTTP/2 would be
    offered by ALPN with no idle timeout either). The head timeout, from the
    opening of the connection and from the end of each answer, is also the
    idle timeout of kept-alive connections. The read buffer bounds the head.
    """
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.server.embed import Server

    tls = {
        "ssl_cert": Path(config.tls_cert) if config.tls_cert else None,
        "ssl_key": Path(config.tls_key) if config.tls_key else None,
    }
    return Server(
        app,
        address=config.host,
        port=port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        websockets=False,
        backlog=2048,
        backpressure=connections,  # granian holds one permit per open connection
        log_enabled=False,
        http1_settings=HTTP1Settings(
            header_read_timeout=round(config.header_timeout * 1000),
            keep_alive=True,
            max_buffer_size=config.max_header_kb << 10,
        ),
        **tls,
    )


def _set_send_timeout(sock: socket.socket, seconds: float) -> bool:
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is None or seconds <= 0:
        return False
    sock.setsockopt(socket.IPPROTO_TCP, option, round(seconds * 1000))
    return True


def cut_unread_answers(port: int, seconds: float) -> int:
    """``--send-timeout`` on this process's listening sockets on ``port``; how many.

    TCP_USER_TIMEOUT (Linux): a connection whose answer stays unread (the
    client's window closed) or unacknowledged for ``seconds`` is ended by the
    kernel, and the server sees the error and lets it go; accepted connections
    inherit it from the listening socket. granian binds its own sockets and
    has no such setting, so they are found among this process's descriptors.
    """
    if seconds <= 0 or getattr(socket, "TCP_USER_TIMEOUT", None) is None:
        return 0
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return 0
    done = 0
    for name in names:
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            probe = socket.socket(fileno=os.dup(fd))
        except (ValueError, OSError):
            continue
        with probe:
            try:
                if (probe.family in (socket.AF_INET, socket.AF_INET6)
                        and probe.type == socket.SOCK_STREAM
                        and probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                        and probe.getsockname()[1] == port
                        and _set_send_timeout(probe, seconds)):
                    done += 1
            except OSError:
                continue
    return done


async def cut_unread_answers_when_listening(port: int, seconds: float) -> None:
    """``cut_unread_answers`` once the listening socket exists (bounded wait)."""
    if seconds <= 0 or getattr(socket, "TCP_USER_TIMEOUT", None) is None:
        log.info("--send-timeout is not available here: unread answers wait for the client")
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    while not cut_unread_answers(port, seconds):
        if loop.time() > deadline:
            log.warning("--send-timeout not set: no listening socket found on port %d", port)
            return
        await asyncio.sleep(0.05)


class OwnerSocket:
    """The owner's Unix socket for its fronts, served by http/h1.py rather than
    granian: no hand-over between threads for each relayed request and each chunk
    of an encoder's body (BENCHMARKS.md: 100 points relayed by a front took 36-40%
    of a core, all processes counted, against 48% through granian's socket and
    46% straight to the owner on the port). serve() and stop() as granian's."""

    def __init__(self, app, config: ServerConfig, path: Path, connections: int) -> None:
        from smoothlive.http.h1 import H1Server

        self.path = path
        self.server = H1Server(app, header_timeout=config.header_timeout,
                               max_header_kb=config.max_header_kb,
                               max_connections=connections, send_timeout=0)

    async def serve(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        sock.listen(2048)
        sock.setblocking(False)
        try:
            await self.server.serve(sock)
        finally:
            sock.close()

    def stop(self) -> None:
        self.server.stop()


async def _serve_granian(app: App, config: ServerConfig, port: int) -> None:
    # With fronts, the owner also answers their relayed requests on its socket.
    connections = connection_limit(config.max_connections, 2 if config.workers > 1 else 1)
    # With --fronts-only the owner is not on the port: its fronts take every connection.
    owner_listens = not (config.workers > 1 and config.fronts_only)
    servers = [granian_server(app, config, port=port, connections=connections)] \
        if owner_listens else []
    fronts = None
    home = None
    if config.workers > 1:
        from smoothlive.workers.board import ChangeBoard
        from smoothlive.workers.owner import Fronts, OwnerSide, run_dir

        home, temporary = run_dir(config.state_dir)
        board = ChangeBoard(home / "board")
        app.registry.on_change = board.changed
        app.delivery.board = board
        socket_path = home / "owner.sock"
        servers.append(OwnerSocket(OwnerSide(app, board, lifespan=not owner_listens),
                                   config, socket_path, connections))
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

    async def become_ready() -> None:
        if not owner_listens and fronts is not None:  # nobody else will listen
            await fronts.start()
        await _wait_accepting(config.host, port, app.started)

    ready = asyncio.create_task(become_ready())
    done, _ = await asyncio.wait({*serving, ready}, return_when=asyncio.FIRST_COMPLETED)
    demo = None
    try:
        if ready in done:
            ready.result()
            if owner_listens:
                await cut_unread_answers_when_listening(port, config.send_timeout)
            log.info("limits: head within %g s and %d KB, %d connections, unread answers "
                     "cut after %g s", config.header_timeout, config.max_header_kb,
                     connections, config.send_timeout)
            if fronts is not None and owner_listens:
                await fronts.start()
            print(f"smoothlive listening on {listening_url(config, port)}", flush=True)
            if config.demo:
                from smoothlive.demo import Demo

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
    _set_send_timeout(sock, config.send_timeout)  # inherited by accepted connections
    connections = connection_limit(config.max_connections)
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
        access_log=False, server_header=False,
        # uvicorn has no head timeout and no head size setting: the idle timeout, the
        # connection limit (503 above it) and the send timeout (on the socket) apply.
        timeout_keep_alive=config.header_timeout, limit_concurrency=connections,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        ssl_certfile=config.tls_cert or None, ssl_keyfile=config.tls_key or None,
    )
    try:
        _Server(uv_config).run(sockets=[sock])
    finally:
        sock.close()


def serve(config: ServerConfig) -> int:
    from smoothlive.auth.users import ensure_admin
    from smoothlive.http.app import App

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
