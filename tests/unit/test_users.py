"""users.toml: atomic 0600 writes, reload on change, survival of a corrupt file."""

from __future__ import annotations

import logging
import os
import stat
import tomllib
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from smoothlive.auth.digest import digest_ha1
from smoothlive.auth.grants import Grant
from smoothlive.auth.users import (
    UserExistsError,
    UserFileError,
    UserStore,
    ensure_admin,
    users_path,
)

# cheap parameters keep the suite fast; verification reads them from the hash itself
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def make_store(tmp_path: Path, realm: str = "smoothlive") -> UserStore:
    return UserStore(users_path(tmp_path / "state"), realm, hasher=FAST)


def bump(path: Path) -> None:
    """Make sure a rewrite is seen even on filesystems with coarse timestamps."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_missing_file_is_empty_store(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    assert store.users() == []
    assert store.get("admin") is None
    assert store.refresh() is False


def test_add_writes_0600_file_with_hashes(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    user = store.add("alice", "pw one", ["read:/events/**", Grant("write", "/live/")])
    assert user.grants == (Grant("read", "/events/**"), Grant("write", "/live/"))
    mode = stat.S_IMODE(store.path.stat().st_mode)
    assert mode == 0o600
    doc = tomllib.loads(store.path.read_text())
    assert doc["realm"] == "smoothlive"
    entry = doc["users"]["alice"]
    assert entry["grants"] == ["read:/events/**", "write:/live/"]
    assert entry["ha1_md5"] == digest_ha1("alice", "smoothlive", "pw one", "MD5")
    assert entry["ha1_sha256"] == digest_ha1("alice", "smoothlive", "pw one", "SHA-256")
    assert FAST.verify(entry["argon2"], "pw one")
    assert "pw one" not in store.path.read_text()
    assert store.digest_ha1("alice", "SHA-256") == entry["ha1_sha256"]


def test_default_hasher_is_argon2id(tmp_path: Path) -> None:
    store = UserStore(users_path(tmp_path), "smoothlive")
    assert store.add("a", "pw").argon2_hash.startswith("$argon2id$")


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path, monkeypatch) -> None:
    store = make_store(tmp_path)
    store.add("alice", "pw")
    before = store.path.read_bytes()
    inode = store.path.stat().st_ino

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        store.add("bob", "pw")
    monkeypatch.undo()
    assert store.path.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["users.toml", "users.toml.lock"]

    store.add("bob", "pw")
    assert store.path.stat().st_ino != inode  # replaced, not rewritten in place
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["users.toml", "users.toml.lock"]


def test_add_existing_needs_replace(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.add("alice", "one")
    with pytest.raises(UserExistsError):
        store.add("alice", "two")
    old_hash = store.get("alice").argon2_hash
    store.add("alice", "two", ["write:/"], replace=True)
    assert store.get("alice").argon2_hash != old_hash
    assert store.get("alice").grants == (Grant("write", "/"),)


@pytest.mark.parametrize("name", ["", "a" * 65, "al ice", "a/b", "a:b", "é", 'a"'])
def test_invalid_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="user name"):
        make_store(tmp_path).add(name, "pw")


def test_valid_name_characters(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.add("first.last-1_x@example.org", "pw")
    assert make_store(tmp_path).get("first.last-1_x@example.org") is not None


@pytest.mark.parametrize("password", ["", "a\nb", "a\x00b"])
def test_invalid_passwords(tmp_path: Path, password: str) -> None:
    with pytest.raises(ValueError, match="password"):
        make_store(tmp_path).add("alice", password)


def test_invalid_grant(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="grant"):
        make_store(tmp_path).add("alice", "pw", ["write:../x"])


def test_remove(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.add("alice", "pw")
    store.add("bob", "pw")
    assert store.remove("alice") is True
    assert store.remove("alice") is False
    assert [u.name for u in make_store(tmp_path).users()] == ["bob"]


def test_refresh_sees_changes_from_another_instance(tmp_path: Path) -> None:
    server = make_store(tmp_path)
    cli = make_store(tmp_path)
    cli.add("alice", "pw")
    assert server.get("alice") is None
    assert server.refresh() is True
    assert server.get("alice") is not None
    assert server.refresh() is False  # unchanged: no reload

    cli.add("alice", "new", ["read:/"], replace=True)
    assert server.refresh() is True
    assert server.get("alice").grants == (Grant("read", "/"),)

    cli.remove("alice")
    server.refresh()
    assert server.get("alice") is None


def test_deleted_file_empties_the_store(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.add("alice", "pw")
    store.path.unlink()
    assert store.refresh() is True
    assert store.users() == []


def test_corrupt_file_keeps_last_good_users(tmp_path: Path, caplog) -> None:
    store = make_store(tmp_path)
    store.add("alice", "pw")
    store.path.write_text("this is [not toml")
    bump(store.path)
    with caplog.at_level(logging.ERROR, logger="smoothlive.auth.users"):
        assert store.refresh() is False
    assert store.get("alice") is not None
    assert "corrupt" in caplog.text
    caplog.clear()
    assert store.refresh() is False  # logged once per change, not every second
    assert caplog.text == ""

    # writers refuse to clobber a corrupt file
    with pytest.raises(UserFileError):
        store.add("bob", "pw")

    # structurally wrong content counts as corrupt too
    store.path.write_text('realm = "smoothlive"\n[users.alice]\nargon2 = 1\n')
    bump(store.path)
    store.refresh()
    assert store.get("alice") is not None

    # a good file again is picked up
    make_store(tmp_path).path.unlink()
    good = make_store(tmp_path)
    good.add("carol", "pw")
    store.refresh()
    assert [u.name for u in store.users()] == ["carol"]


def test_corrupt_file_at_start_is_empty_not_fatal(tmp_path: Path, caplog) -> None:
    path = users_path(tmp_path)
    path.write_text("\x00garbage")
    with caplog.at_level(logging.ERROR):
        store = UserStore(path, hasher=FAST)
    assert store.users() == []
    assert ensure_admin(store) is None  # and the file is not overwritten
    assert path.read_text() == "\x00garbage"


def test_realm_mismatch_disables_digest_only(tmp_path: Path, caplog) -> None:
    make_store(tmp_path, realm="old").add("alice", "pw")
    with caplog.at_level(logging.WARNING, logger="smoothlive.auth.users"):
        store = make_store(tmp_path, realm="smoothlive")
        store.refresh()
        bump(store.path)
        store.refresh()
    assert caplog.text.count("realm") >= 1
    assert len([r for r in caplog.records if "realm" in r.getMessage()]) == 1  # once
    assert store.get("alice") is not None  # Basic still works
    assert store.digest_ha1("alice", "MD5") is None
    assert not store.digest_usable
    with pytest.raises(ValueError, match="realm"):
        store.add("bob", "pw")


def test_ensure_admin_once(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    password = ensure_admin(store)
    assert password is not None and len(password) >= 24
    admin = store.get("admin")
    assert admin is not None and admin.grants == (Grant("write", "/"),)
    assert FAST.verify(admin.argon2_hash, password)
    assert ensure_admin(store) is None
    assert ensure_admin(make_store(tmp_path)) is None


def test_ensure_admin_leaves_existing_users_alone(tmp_path: Path) -> None:
    make_store(tmp_path).add("alice", "pw")
    fresh = make_store(tmp_path)
    assert ensure_admin(fresh) is None
    assert [u.name for u in fresh.users()] == ["alice"]


def test_ensure_admin_never_logs_the_password(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.DEBUG):
        password = ensure_admin(make_store(tmp_path))
    assert password and password not in caplog.text
