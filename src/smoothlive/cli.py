"""The command line: ``smoothlive serve | user | pubpoint``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from xml.sax.saxutils import escape

from smoothlive import __version__, config


def _serve(args: argparse.Namespace) -> int:
    from smoothlive.server import serve

    return serve(config.from_arguments(args))


# -- pubpoint: the REST client ------------------------------------------------

def _settings_xml(args: argparse.Namespace) -> str:
    """A Settings element from the create flags; the server fills in the rest."""
    if args.settings_file:
        with open(args.settings_file, encoding="utf-8") as handle:
            text = handle.read()
        if text.lstrip().startswith("<?xml"):
            text = text.split("?>", 1)[1]
        return text
    parts = [f"<Title>{escape(args.title or '')}</Title>"]
    if args.source_type:
        parts.append(f"<SourceType>{args.source_type}</SourceType>")
    if args.auto_start is not None:
        parts.append(f"<AutoStart>{str(args.auto_start).lower()}</AutoStart>")
    if args.auto_restart is not None:
        value = str(args.auto_restart).lower()
        parts.append(f"<AutoRestartOnEncoderReconnect>{value}</AutoRestartOnEncoderReconnect>")
    if args.lookahead is not None:
        parts.append(f"<LookAheadChunks>{args.lookahead}</LookAheadChunks>")
    if args.archive is not None:
        parts.append(f'<Archive enabled="{str(args.archive).lower()}" />')
    if args.window_length or args.manifest_version:
        inner = ""
        if args.window_length:
            inner += f"<WindowLength>{escape(args.window_length)}</WindowLength>"
        if args.manifest_version:
            inner += f"<ClientManifestVersion>{args.manifest_version}</ClientManifestVersion>"
        parts.append(f'<ClientConnections enabled="true">{inner}</ClientConnections>')
    return "<Settings>" + "".join(parts) + "</Settings>"


def _print(args: argparse.Namespace, data: object, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=vars))
    else:
        print(text)


def _flatten(data: object, prefix: str = "") -> list[str]:
    if isinstance(data, dict):
        lines = []
        for key, value in data.items():
            lines += _flatten(value, f"{prefix}{key}." if prefix or key else "")
        return lines
    if isinstance(data, list):
        lines = []
        for index, value in enumerate(data):
            lines += _flatten(value, f"{prefix}{index}.")
        return lines
    return [f"{prefix.rstrip('.')}: {data}"]


def _pubpoint(args: argparse.Namespace) -> int:
    from smoothlive.client import ClientError, ManagementClient

    if not args.server:
        print("smoothlive: no server: give --server URL or set SMOOTHLIVE_URL", file=sys.stderr)
        return 2
    password = os.environ.get("SMOOTHLIVE_PASSWORD")
    try:
        with ManagementClient(
            args.server, args.user, password, basic=args.basic, verify=not args.insecure
        ) as client:
            return _run_pubpoint(args, client)
    except ClientError as exc:
        print(f"smoothlive: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"smoothlive: cannot reach {args.server}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # httpx transport errors and the like
        print(f"smoothlive: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _run_pubpoint(args: argparse.Namespace, client) -> int:
    action = args.action
    if action == "list":
        points = client.list(details=args.details)
        text = "\n".join(f"{p.path}\t{p.title}\t{p.updated}" for p in points) or "(none)"
        _print(args, points, text)
    elif action == "create":
        settings = client.create(args.name, _settings_xml(args), args.title or "")
        _print(args, settings, f"created {args.name}")
    elif action == "show":
        settings = client.settings(args.name)
        _print(args, settings, "\n".join(_flatten(settings)))
    elif action == "state":
        if args.value:
            client.set_state(args.name, args.value)
        state = client.state(args.name)
        _print(args, state, "\n".join(_flatten(state)))
    elif action == "stats":
        stats = client.statistics(args.name)
        _print(args, stats, "\n".join(_flatten(stats)) or "(no streams)")
    elif action == "delete":
        client.delete(args.name)
        _print(args, {"deleted": args.name}, f"deleted {args.name}")
    return 0


def _add_pubpoint_parser(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default=os.environ.get("SMOOTHLIVE_URL"),
                        help="server URL (env SMOOTHLIVE_URL)")
    common.add_argument("--user", default=os.environ.get("SMOOTHLIVE_USER"),
                        help="user name (env SMOOTHLIVE_USER; password in SMOOTHLIVE_PASSWORD)")
    common.add_argument("--basic", action="store_true",
                        help="use Basic instead of Digest authentication (HTTPS only!)")
    common.add_argument("--insecure", action="store_true",
                        help="do not verify TLS certificates")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser = sub.add_parser("pubpoint", help="manage publishing points over the REST API")
    actions = parser.add_subparsers(dest="action", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=help_text, parents=[common])

    listing = action("list", "enumerate publishing points")
    listing.add_argument("--details", action="store_true", help="include settings")
    create = action("create", "create a publishing point")
    create.add_argument("name", help="path of the .isml file, e.g. live/ch1.isml")
    create.add_argument("--title")
    create.add_argument("--settings-file", help="file with a <Settings> element to send as is")
    create.add_argument("--source-type", choices=["Push", "Pull"])
    create.add_argument("--auto-start", action=argparse.BooleanOptionalAction, default=None)
    create.add_argument("--auto-restart", action=argparse.BooleanOptionalAction, default=None,
                        help="AutoRestartOnEncoderReconnect")
    create.add_argument("--archive", action=argparse.BooleanOptionalAction, default=None)
    create.add_argument("--lookahead", type=int, help="LookAheadChunks")
    create.add_argument("--window-length", help="DVR window, xs:duration such as PT30M")
    create.add_argument("--manifest-version", choices=["2.0", "2.2"])
    for name, help_text in (("show", "show settings"), ("stats", "show statistics"),
                            ("delete", "delete a publishing point")):
        action(name, help_text).add_argument("name")
    state = action("state", "show or set the state")
    state.add_argument("name")
    state.add_argument("value", nargs="?", choices=["Idle", "Started", "Stopped"])
    parser.set_defaults(func=_pubpoint)


def _add_replay_parser(sub: argparse._SubParsersAction) -> None:
    from smoothlive.replay import add_arguments

    parser = sub.add_parser(
        "replay", help="push recorded ingest captures as live encoders (benchmarks, soak tests)",
        description="Replay .ismv ingest captures exactly as an encoder pushes them: one "
        "chunked POST per file to <URL>/Streams(<file stem>), timestamps rewritten per loop.")
    add_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    from smoothlive.usercli import add_user_parser

    parser = argparse.ArgumentParser(
        prog="smoothlive", description="A live Smooth Streaming origin server.")
    parser.add_argument("--version", action="version", version=f"smoothlive {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    config.add_arguments(serve)
    serve.set_defaults(func=_serve)
    add_user_parser(sub)
    _add_pubpoint_parser(sub)
    _add_replay_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
