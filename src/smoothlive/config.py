"""Every server setting in one table: its default, its flag, its variable.

Each setting has a sensible default, a command-line flag and an environment
variable ``SMOOTHLIVE_<NAME>``; the flag wins over the variable, the variable
over the default. Secrets (passwords, keys) are never settings here: they
live in the state dir and never reach a log.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Setting:
    name: str  # attribute of ServerConfig; flag --name-with-dashes; SMOOTHLIVE_NAME
    default: object
    help: str
    type: type = str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "SMOOTHLIVE_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("root", "var/content", "content root: publishing points are .isml files here"),
    Setting("state_dir", "var/state", "runtime state, users and secrets (never served)"),
    Setting("host", "127.0.0.1", "address to listen on"),
    Setting("port", 8080, "port to listen on (0 picks a free one)", int),
    Setting("tls_cert", "", "PEM certificate file: serve HTTPS"),
    Setting("tls_key", "", "PEM private key file for --tls-cert"),
    Setting("realm", "smoothlive", "authentication realm of Basic and Digest challenges"),
    Setting("log_level", "info", "debug, info, warning or error"),
    Setting("http_server", "granian", "granian (default, faster) or uvicorn (fallback)"),
    Setting("workers", 1,
            "processes serving the port: the owner plus workers-1 fronts that answer "
            "players from a cache and relay the rest (granian only)", int),
    Setting("fronts_only", False,
            "with --workers: only the fronts listen on the port; the owner serves them "
            "alone, on its socket (players never wait behind ingest or management; "
            "encoders' POSTs take one relay hop more)", bool),
    Setting("worker_cache_mb", 256,
            "megabytes of answers each front process keeps (fragments, manifests)", int),
    Setting("reconnect_grace", 30.0,
            "seconds a point stays Started after its encoders' connections are lost", float),
    Setting("trusted_proxies", "",
            "comma-separated proxy addresses whose X-Forwarded-For is believed"),
    Setting("archive_allow", "",
            "folders outside the content root that an Archive Path may name "
            "(separated by the OS path separator, ':' on POSIX)"),
    Setting("metrics_token", "",
            "bearer token GET /metrics requires (empty: /metrics is open to anyone "
            "who can reach the server); prefer the variable: a flag shows in ps"),
    Setting("demo", False,
            "create /demo/live.isml and feed it ffmpeg's test signal (make run does)", bool),
    # Limits that hold against hostile or broken clients (README: Limits and timeouts).
    Setting("header_timeout", 30.0,
            "seconds a connection has to send a request's whole head (request line and "
            "headers), counted from its opening or from the end of the previous answer: "
            "slow heads and idle connections are closed", float),
    Setting("max_header_kb", 32,
            "kilobytes of a request's head: a longer one is answered 431; one that "
            "arrives at once may pass somewhat over it, never twice", int),
    Setting("max_connections", 8192,
            "connections each process serves at once (more wait in the listen queue); "
            "lowered to what the open-files limit allows", int),
    Setting("body_timeout", 60.0,
            "seconds an encoder's POST may go without a byte arriving, and a management "
            "request has to send its whole body; then the request is ended (0: never)",
            float),
    Setting("send_timeout", 60.0,
            "seconds an answer may wait on a client that does not read it (or is gone) "
            "before the connection is cut (Linux; 0: never)", float),
)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    root: Path = Path("var/content")
    state_dir: Path = Path("var/state")
    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert: str = ""
    tls_key: str = ""
    realm: str = "smoothlive"
    log_level: str = "info"
    http_server: str = "granian"
    workers: int = 1
    fronts_only: bool = False
    worker_cache_mb: int = 256
    reconnect_grace: float = 30.0
    trusted_proxies: str = ""
    archive_allow: str = ""
    metrics_token: str = field(default="", repr=False)
    demo: bool = False
    header_timeout: float = 30.0
    max_header_kb: int = 32
    max_connections: int = 8192
    send_timeout: float = 60.0
    body_timeout: float = 60.0

    @property
    def archive_allow_paths(self) -> tuple[Path, ...]:
        return tuple(Path(p) for p in self.archive_allow.split(os.pathsep) if p.strip())

    @property
    def trusted_proxy_set(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.trusted_proxies.split(",") if p.strip())

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; defaults come from the environment, else the table."""
    for setting in SETTINGS:
        default = os.environ.get(setting.env, setting.default)
        if setting.type is bool:
            parser.add_argument(
                setting.flag,
                dest=setting.name,
                default=str(default).lower() in ("1", "true", "yes", "on"),
                action=argparse.BooleanOptionalAction,
                help=f"{setting.help} (env {setting.env}=1)",
            )
            continue
        parser.add_argument(
            setting.flag,
            dest=setting.name,
            default=setting.type(default),
            type=setting.type,
            help=f"{setting.help} (env {setting.env}, default {setting.default!s})",
        )


def from_arguments(args: argparse.Namespace) -> ServerConfig:
    values = {s.name: getattr(args, s.name) for s in SETTINGS}
    values["root"] = Path(values["root"])
    values["state_dir"] = Path(values["state_dir"])
    if values["http_server"] not in ("granian", "uvicorn"):
        raise SystemExit("smoothlive: --http-server is granian or uvicorn")
    if not 1 <= values["workers"] <= 64:
        raise SystemExit("smoothlive: --workers is between 1 and 64")
    if values["workers"] > 1 and values["http_server"] != "granian":
        raise SystemExit("smoothlive: --workers above 1 needs --http-server granian")
    if values["fronts_only"] and values["workers"] < 2:
        raise SystemExit("smoothlive: --fronts-only needs --workers 2 or more")
    if values["worker_cache_mb"] < 0:
        raise SystemExit("smoothlive: --worker-cache-mb cannot be negative")
    if not 0.5 <= values["header_timeout"] <= 3600:
        raise SystemExit("smoothlive: --header-timeout is between 0.5 and 3600 seconds")
    if not 8 <= values["max_header_kb"] <= 1024:
        raise SystemExit("smoothlive: --max-header-kb is between 8 and 1024")
    if values["max_connections"] < 1:
        raise SystemExit("smoothlive: --max-connections is at least 1")
    if not 0 <= values["send_timeout"] <= 3600:
        raise SystemExit("smoothlive: --send-timeout is between 0 (never) and 3600 seconds")
    if not 0 <= values["body_timeout"] <= 86400:
        raise SystemExit("smoothlive: --body-timeout is between 0 (never) and 86400 seconds")
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise SystemExit("smoothlive: --tls-cert and --tls-key go together")
    return ServerConfig(**values)
