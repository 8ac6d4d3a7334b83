"""``smoothlive user``: manage who may use the management REST API.

Users live in ``<state-dir>/users.toml`` (see ``smoothlive.auth.users``). A running server
notices changes within about a second, so there is nothing to restart.

Exit codes: 0 success, 1 the operation failed (no such user, user exists, unusable file),
2 usage error (bad name, grant or password; no way to read a password).
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from smoothlive.auth.grants import Grant, parse_grant
from smoothlive.auth.users import (
    DEFAULT_REALM,
    UserExistsError,
    UserFileError,
    UserStore,
    users_path,
    validate_name,
    validate_password,
)

ENV_STATE_DIR = "SMOOTHLIVE_STATE_DIR"
ENV_REALM = "SMOOTHLIVE_REALM"
DEFAULT_STATE_DIR = "var/state"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_user_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``user`` command group (add, list, remove) to the main CLI's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir",
        metavar="DIR",
        help=f"state directory holding users.toml (default: ${ENV_STATE_DIR} or "
        f"{DEFAULT_STATE_DIR})",
    )
    common.add_argument(
        "--realm",
        help=f"authentication realm the Digest credentials are made for (default: "
        f"${ENV_REALM} or {DEFAULT_REALM})",
    )

    user = subparsers.add_parser(
        "user",
        help="manage management-API users",
        description="Manage the users of the management REST API. A running server picks "
        "changes up within a second.",
    )
    commands = user.add_subparsers(dest="user_command", metavar="COMMAND", required=True)

    add = commands.add_parser(
        "add",
        parents=[common],
        help="create a user (or change one with --replace)",
        description="Create a user. Grants look like write:/ (everything), "
        "read:/events/** or write:/live/ch*.isml; write implies read.",
    )
    add.add_argument("name", help="1-64 letters, digits, '.', '_', '-' or '@'")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
    add.add_argument(
        "--grant",
        action="append",
        default=[],
        metavar="GRANT",
        help="read:PATTERN or write:PATTERN; repeat for several",
    )
    add.add_argument(
        "--replace",
        action="store_true",
        help="overwrite an existing user's password and grants",
    )
    add.set_defaults(func=_run_add)

    listing = commands.add_parser("list", parents=[common], help="show users and their grants")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_run_list)

    remove = commands.add_parser("remove", parents=[common], help="delete a user")
    remove.add_argument("name")
    remove.set_defaults(func=_run_remove)


def _error(message: str) -> None:
    print(f"smoothlive user: error: {message}", file=sys.stderr)


def _store(args: argparse.Namespace) -> UserStore:
    state_dir = args.state_dir or os.environ.get(ENV_STATE_DIR) or DEFAULT_STATE_DIR
    realm = args.realm or os.environ.get(ENV_REALM) or DEFAULT_REALM
    return UserStore(users_path(Path(state_dir)), realm, load=False)


def _read_password(name: str, from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"Password for {name}: ")
        if getpass.getpass("Same password again: ") != password:
            raise _CliError("the passwords do not match", EXIT_FAILED)
    else:
        raise _CliError(
            "no password: use --password-stdin, or run on a terminal to be prompted", EXIT_USAGE
        )
    try:
        return validate_password(password)
    except ValueError as exc:
        raise _CliError(str(exc), EXIT_USAGE) from None


_Command = Callable[[argparse.Namespace], int]


def _run(func: _Command) -> _Command:
    """Turn ``_CliError``, ``UserFileError`` and ``OSError`` into one stderr line."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except _CliError as exc:
            _error(str(exc))
            return exc.code
        except (UserFileError, OSError) as exc:
            _error(str(exc))
            return EXIT_FAILED

    return wrapper


@_run
def _run_add(args: argparse.Namespace) -> int:
    """``smoothlive user add NAME``."""
    try:
        validate_name(args.name)
        grants: list[Grant] = [parse_grant(text) for text in args.grant]
    except ValueError as exc:
        raise _CliError(str(exc), EXIT_USAGE) from None
    password = _read_password(args.name, args.password_stdin)
    store = _store(args)
    try:
        user = store.add(args.name, password, grants, replace=args.replace)
    except UserExistsError as exc:
        raise _CliError(str(exc), EXIT_FAILED) from None
    except UserFileError:
        raise
    except ValueError as exc:  # realm mismatch: input was validated above
        raise _CliError(str(exc), EXIT_FAILED) from None
    verb = "updated" if args.replace else "added"
    shown = ", ".join(str(g) for g in user.grants) or "no grants"
    print(f"{verb} user {user.name} ({shown}) in {store.path}")
    if not user.grants:
        print(
            f"hint: {user.name} can log in but may do nothing; add e.g. --grant write:/ "
            "(everything) or --grant read:/events/** with --replace",
            file=sys.stderr,
        )
    return EXIT_OK


@_run
def _run_list(args: argparse.Namespace) -> int:
    """``smoothlive user list``: names and grants, never hashes."""
    store = _store(args)
    realm, users = store.read_file()
    if args.json:
        rows = [{"name": u.name, "grants": [str(g) for g in u.grants]} for u in users]
        print(json.dumps(rows, indent=2))
    elif not users:
        print(f"no users in {store.path}")
    else:
        width = max(len(u.name) for u in users)
        for u in users:
            shown = ", ".join(str(g) for g in u.grants) or "(no grants)"
            print(f"{u.name:<{width}}  {shown}")
    if users and realm != store.realm:
        print(
            f"warning: the file's Digest realm is {realm!r}, not {store.realm!r}: "
            "Digest will not work for these users (Basic will)",
            file=sys.stderr,
        )
    return EXIT_OK


@_run
def _run_remove(args: argparse.Namespace) -> int:
    """``smoothlive user remove NAME``."""
    store = _store(args)
    if not store.remove(args.name):
        raise _CliError(f"no user named {args.name!r} in {store.path}", EXIT_FAILED)
    print(f"removed user {args.name}")
    return EXIT_OK
