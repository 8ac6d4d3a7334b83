"""``smoothlive user add|list|remove`` driven through argparse, as the main CLI does."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from smoothlive.auth.digest import digest_ha1
from smoothlive.auth.grants import Grant
from smoothlive.auth.users import UserStore, users_path
from smoothlive.usercli import add_user_parser


class FakeStdin(io.StringIO):
    def __init__(self, text: str, tty: bool = False) -> None:
        super().__init__(text)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.fixture(autouse=True)
def fast_argon2(monkeypatch) -> None:
    """Cheap argon2 parameters for the CLI's hashing; verification is unaffected."""
    monkeypatch.setattr(
        "smoothlive.auth.users.PasswordHasher",
        lambda: PasswordHasher(time_cost=1, memory_cost=8, parallelism=1),
    )


@pytest.fixture
def state(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.delenv("SMOOTHLIVE_STATE_DIR", raising=False)
    monkeypatch.delenv("SMOOTHLIVE_REALM", raising=False)
    return tmp_path / "state"


def run(argv: list[str], stdin: str = "", *, tty: bool = False, monkeypatch=None) -> int:
    parser = argparse.ArgumentParser(prog="smoothlive")
    add_user_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    if monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", FakeStdin(stdin, tty))
    return args.func(args)


def stored(state: Path, realm: str = "smoothlive") -> UserStore:
    return UserStore(users_path(state), realm)


def test_add_with_password_stdin(state: Path, monkeypatch, capsys) -> None:
    code = run(
        [
            "user",
            "add",
            "alice",
            "--password-stdin",
            "--grant",
            "write:/",
            "--grant",
            "read:/events/**",
            "--state-dir",
            str(state),
        ],
        "pa ss:word\n",
        monkeypatch=monkeypatch,
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "alice" in out and "write:/" in out and "pa ss:word" not in out
    user = stored(state).get("alice")
    assert user.grants == (Grant("write", "/"), Grant("read", "/events/**"))
    assert PasswordHasher().verify(user.argon2_hash, "pa ss:word")  # newline stripped
    assert user.ha1_md5 == digest_ha1("alice", "smoothlive", "pa ss:word", "MD5")


def test_crlf_is_stripped(state: Path, monkeypatch) -> None:
    run(
        ["user", "add", "a", "--password-stdin", "--state-dir", str(state)],
        "pw\r\n",
        monkeypatch=monkeypatch,
    )
    assert PasswordHasher().verify(stored(state).get("a").argon2_hash, "pw")


def test_no_grant_prints_hint(state: Path, monkeypatch, capsys) -> None:
    assert (
        run(
            ["user", "add", "a", "--password-stdin", "--state-dir", str(state)],
            "pw\n",
            monkeypatch=monkeypatch,
        )
        == 0
    )
    assert "hint" in capsys.readouterr().err
    assert stored(state).get("a").grants == ()


def test_env_defaults(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SMOOTHLIVE_STATE_DIR", str(tmp_path / "env-state"))
    monkeypatch.setenv("SMOOTHLIVE_REALM", "studio")
    assert run(["user", "add", "a", "--password-stdin"], "pw\n", monkeypatch=monkeypatch) == 0
    store = stored(tmp_path / "env-state", realm="studio")
    assert store.file_realm == "studio"
    assert store.get("a").ha1_sha256 == digest_ha1("a", "studio", "pw", "SHA-256")


def test_default_state_dir_is_relative(tmp_path: Path, monkeypatch, state: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["user", "add", "a", "--password-stdin"], "pw\n", monkeypatch=monkeypatch) == 0
    assert (tmp_path / "var" / "state" / "users.toml").exists()


def test_prompts_twice_on_a_tty(state: Path, monkeypatch) -> None:
    answers = iter(["typed", "typed"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert (
        run(["user", "add", "a", "--state-dir", str(state)], tty=True, monkeypatch=monkeypatch) == 0
    )
    assert PasswordHasher().verify(stored(state).get("a").argon2_hash, "typed")


def test_prompt_mismatch(state: Path, monkeypatch, capsys) -> None:
    answers = iter(["one", "two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert (
        run(["user", "add", "a", "--state-dir", str(state)], tty=True, monkeypatch=monkeypatch) == 1
    )
    assert "do not match" in capsys.readouterr().err
    assert stored(state).get("a") is None


def test_no_password_source_is_usage_error(state: Path, monkeypatch, capsys) -> None:
    assert (
        run(
            ["user", "add", "a", "--state-dir", str(state)],
            "pw\n",
            tty=False,
            monkeypatch=monkeypatch,
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--password-stdin" in err


@pytest.mark.parametrize(
    ("argv", "stdin", "needle"),
    [
        (["user", "add", "bad name", "--password-stdin"], "pw\n", "user name"),
        (["user", "add", "a", "--password-stdin", "--grant", "admin:/"], "pw\n", "grant"),
        (["user", "add", "a", "--password-stdin", "--grant", "read:/../x"], "pw\n", "grant"),
        (["user", "add", "a", "--password-stdin"], "\n", "empty"),
        (["user", "add", "a", "--password-stdin"], "", "empty"),
    ],
)
def test_usage_errors(state: Path, monkeypatch, capsys, argv, stdin, needle) -> None:
    assert run([*argv, "--state-dir", str(state)], stdin, monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not users_path(state).exists()


def test_existing_user_needs_replace(state: Path, monkeypatch, capsys) -> None:
    base = ["user", "add", "a", "--password-stdin", "--state-dir", str(state)]
    assert run(base, "one\n", monkeypatch=monkeypatch) == 0
    assert run(base, "two\n", monkeypatch=monkeypatch) == 1
    assert "already exists" in capsys.readouterr().err
    assert run([*base, "--replace", "--grant", "read:/"], "two\n", monkeypatch=monkeypatch) == 0
    user = stored(state).get("a")
    assert PasswordHasher().verify(user.argon2_hash, "two")
    assert user.grants == (Grant("read", "/"),)


def test_realm_mismatch_is_refused(state: Path, monkeypatch, capsys) -> None:
    base = ["user", "add", "a", "--password-stdin", "--state-dir", str(state)]
    assert run(base, "pw\n", monkeypatch=monkeypatch) == 0
    assert run([*base, "--replace", "--realm", "other"], "pw\n", monkeypatch=monkeypatch) == 1
    assert "realm" in capsys.readouterr().err


def test_list_text_and_json(state: Path, monkeypatch, capsys) -> None:
    assert run(["user", "list", "--state-dir", str(state)]) == 0
    assert "no users" in capsys.readouterr().out
    for name, grant in [("zed", "read:/events/**"), ("amy", "write:/")]:
        run(
            ["user", "add", name, "--password-stdin", "--grant", grant, "--state-dir", str(state)],
            "pw\n",
            monkeypatch=monkeypatch,
        )
    run(
        ["user", "add", "nog", "--password-stdin", "--state-dir", str(state)],
        "pw\n",
        monkeypatch=monkeypatch,
    )
    capsys.readouterr()

    assert run(["user", "list", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["amy  write:/", "nog  (no grants)", "zed  read:/events/**"]

    assert run(["user", "list", "--json", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == [
        {"name": "amy", "grants": ["write:/"]},
        {"name": "nog", "grants": []},
        {"name": "zed", "grants": ["read:/events/**"]},
    ]
    assert "argon2" not in out and "ha1" not in out


def test_list_corrupt_file_fails(state: Path, capsys) -> None:
    state.mkdir()
    users_path(state).write_text("[[[")
    assert run(["user", "list", "--state-dir", str(state)]) == 1
    err = capsys.readouterr().err
    assert "corrupt" in err and err.count("\n") == 1


def test_remove(state: Path, monkeypatch, capsys) -> None:
    run(
        ["user", "add", "a", "--password-stdin", "--state-dir", str(state)],
        "pw\n",
        monkeypatch=monkeypatch,
    )
    assert run(["user", "remove", "a", "--state-dir", str(state)]) == 0
    assert stored(state).get("a") is None
    capsys.readouterr()
    assert run(["user", "remove", "a", "--state-dir", str(state)]) == 1
    assert "no user named" in capsys.readouterr().err


def test_subcommand_is_required() -> None:
    parser = argparse.ArgumentParser(prog="smoothlive")
    add_user_parser(parser.add_subparsers(dest="command", required=True))
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["user"])
    assert exc.value.code == 2
