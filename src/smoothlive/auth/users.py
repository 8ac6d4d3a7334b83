"""The management API's users, kept in ``<state-dir>/users.toml``.

Each user has:

* an argon2id hash (argon2-cffi ``PasswordHasher`` defaults) checked for HTTP Basic;
* the RFC 7616 HA1 values H(user:realm:password) for Digest with MD5 and SHA-256. These
  are password-equivalent, exactly like the entries of Apache's ``htdigest`` files: whoever
  reads them can pass Digest authentication without knowing the password (RFC 7616
  section 5.2). That is why the file is written with mode 0600 and must be guarded like a
  private key;
* grants (``read:/events/**``, ``write:/``...), see ``grants.py``.

The realm the HA1 values were computed for is stored once at the top of the file. If it
differs from the realm the server is configured with, Digest cannot work for those users
(Basic still does); a warning is logged once.

The server only reads the file: ``refresh()`` reloads it when its (mtime_ns, size, inode)
changed, so ``smoothlive user ...`` edits apply without a restart. A missing file is an
empty store; a corrupt one is logged and the last good users stay in force. Writers (the
CLI) take an advisory lock, re-read the file, and replace it atomically.

File format::

    version = 1
    realm = "smoothlive"

    [users.admin]
    argon2 = "$argon2id$v=19$..."
    ha1_md5 = "..."
    ha1_sha256 = "..."
    grants = ["write:/"]
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import tempfile
import threading
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from argon2 import PasswordHasher

from smoothlive.auth.digest import digest_ha1
from smoothlive.auth.grants import Grant, parse_grant

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, os.replace still atomic
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

USERS_FILE = "users.toml"
DEFAULT_REALM = "smoothlive"
FORMAT_VERSION = 1
MAX_PASSWORD = 1024

_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEX_LEN = {"ha1_md5": 32, "ha1_sha256": 64}
_HEX = re.compile(r"[0-9a-f]+")

_Signature = tuple[int, int, int]


class UserFileError(ValueError):
    """users.toml exists but cannot be used."""


class UserExistsError(ValueError):
    """``add`` without ``replace`` for a name that is taken."""


@dataclass(frozen=True)
class User:
    name: str
    argon2_hash: str
    ha1_md5: str
    ha1_sha256: str
    grants: tuple[Grant, ...]


def users_path(state_dir: str | os.PathLike[str]) -> Path:
    """Where the users file lives inside a state directory."""
    return Path(state_dir) / USERS_FILE


def validate_name(name: str) -> str:
    """1-64 letters, digits or ``._-@``: safe in logs, TOML keys and Digest headers."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid user name {name!r}: use 1-64 letters, digits, '.', '_', '-' or '@'"
        )
    return name


def validate_password(password: str) -> str:
    """Non-empty, bounded, and free of control characters (RFC 7617 section 2)."""
    if not password:
        raise ValueError("the password must not be empty")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"the password must be at most {MAX_PASSWORD} characters")
    if _CONTROL.search(password):
        raise ValueError("the password must not contain control characters")
    return password


def _parse(data: bytes) -> tuple[str, dict[str, User]]:
    """(realm, users) from the file's bytes; ``UserFileError`` on anything unexpected."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserFileError(f"not valid TOML: {exc}") from None
    if doc.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        raise UserFileError(f"unsupported version {doc.get('version')!r}")
    realm = doc.get("realm")
    if not isinstance(realm, str):
        raise UserFileError("'realm' must be a string")
    table = doc.get("users", {})
    if not isinstance(table, dict):
        raise UserFileError("'users' must be a table")
    users: dict[str, User] = {}
    for name, entry in table.items():
        try:
            validate_name(name)
        except ValueError as exc:
            raise UserFileError(str(exc)) from None
        if not isinstance(entry, dict):
            raise UserFileError(f"user {name!r} must be a table")
        fields = {}
        for key in ("argon2", "ha1_md5", "ha1_sha256"):
            value = entry.get(key)
            if not isinstance(value, str):
                raise UserFileError(f"user {name!r}: {key!r} must be a string")
            fields[key] = value
        if not fields["argon2"].startswith("$argon2"):
            raise UserFileError(f"user {name!r}: 'argon2' is not an argon2 hash")
        for key, length in _HEX_LEN.items():
            if len(fields[key]) != length or not _HEX.fullmatch(fields[key]):
                raise UserFileError(f"user {name!r}: {key!r} must be {length} lowercase hex")
        grants = entry.get("grants", [])
        if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants):
            raise UserFileError(f"user {name!r}: 'grants' must be a list of strings")
        try:
            parsed = tuple(parse_grant(g) for g in grants)
        except ValueError as exc:
            raise UserFileError(f"user {name!r}: {exc}") from None
        users[name] = User(name, fields["argon2"], fields["ha1_md5"], fields["ha1_sha256"], parsed)
    return realm, users


def _render(realm: str, users: dict[str, User]) -> bytes:
    doc = {
        "version": FORMAT_VERSION,
        "realm": realm,
        "users": {
            user.name: {
                "argon2": user.argon2_hash,
                "ha1_md5": user.ha1_md5,
                "ha1_sha256": user.ha1_sha256,
                "grants": [str(g) for g in user.grants],
            }
            for user in sorted(users.values(), key=lambda u: u.name)
        },
    }
    return tomli_w.dumps(doc).encode("utf-8")


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX); directories cannot be opened on Windows."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platform without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class UserStore:
    """The users of one ``users.toml``, loaded in memory and reloaded on change."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        realm: str = DEFAULT_REALM,
        *,
        hasher: PasswordHasher | None = None,
        load: bool = True,
    ) -> None:
        """``load=False`` skips the initial (forgiving) load, for tools using ``read_file``."""
        self.path = Path(path)
        self.realm = realm
        self._hasher = hasher or PasswordHasher()
        self._file_realm = realm
        self._users: dict[str, User] = {}
        self._signature: _Signature | None = None
        self._warned_realm: str | None = None
        self._thread_lock = threading.Lock()
        if load:
            self.refresh()

    # -- reading ------------------------------------------------------------------

    def get(self, name: str) -> User | None:
        return self._users.get(name)

    def users(self) -> list[User]:
        return sorted(self._users.values(), key=lambda u: u.name)

    @property
    def file_realm(self) -> str:
        """The realm the stored HA1 values were computed for."""
        return self._file_realm

    @property
    def digest_usable(self) -> bool:
        return self._file_realm == self.realm

    def digest_ha1(self, name: str, algorithm: str) -> str | None:
        """The stored HA1 for Digest ("MD5" or "SHA-256"), None if unknown or unusable."""
        if not self.digest_usable:
            return None
        user = self._users.get(name)
        if user is None:
            return None
        return {"MD5": user.ha1_md5, "SHA-256": user.ha1_sha256}.get(algorithm)

    def refresh(self) -> bool:
        """Reload the file if its (mtime_ns, size, inode) changed; True when reloaded.

        Never raises for a bad file: it is logged and the last good users stay.
        """
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                signature = (st.st_mtime_ns, st.st_size, st.st_ino)
                if signature == self._signature:
                    return False
                data = f.read()
        except FileNotFoundError:
            if self._signature is None and not self._users:
                return False
            self._adopt(self.realm, {}, None)
            return True
        except OSError as exc:
            log.error("cannot read %s: %s; keeping %d users", self.path, exc, len(self._users))
            return False
        try:
            realm, users = _parse(data)
        except UserFileError as exc:
            log.error(
                "%s is corrupt (%s); keeping the %d users loaded before",
                self.path,
                exc,
                len(self._users),
            )
            self._signature = signature  # do not log again until the file changes
            return False
        if st.st_mode & 0o077:
            log.warning(
                "%s is readable by other users (mode %o); it should be 0600",
                self.path,
                st.st_mode & 0o777,
            )
        self._adopt(realm, users, signature)
        return True

    def _adopt(self, realm: str, users: dict[str, User], signature: _Signature | None) -> None:
        self._file_realm = realm
        self._users = users
        self._signature = signature
        if users and realm != self.realm and self._warned_realm != realm:
            self._warned_realm = realm
            log.warning(
                "%s holds Digest credentials for realm %r but the configured realm is %r: "
                "Digest is disabled for its users until their passwords are set again "
                "(Basic still works)",
                self.path,
                realm,
                self.realm,
            )

    # -- writing ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize writers: a thread lock plus an advisory lock on ``users.toml.lock``."""
        with self._thread_lock:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if fcntl is None:  # pragma: no cover
                yield
                return
            lock_path = self.path.with_name(self.path.name + ".lock")
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def read_file(self) -> tuple[str, list[User]]:
        """(realm, users) read from disk now; ``UserFileError`` when corrupt (for tools)."""
        realm, users = self._read_strict()
        return realm, sorted(users.values(), key=lambda u: u.name)

    def _read_strict(self) -> tuple[str, dict[str, User]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return self.realm, {}
        try:
            return _parse(data)
        except UserFileError as exc:
            raise UserFileError(f"{self.path} is corrupt: {exc}; fix or move it first") from None

    def _write(self, realm: str, users: dict[str, User]) -> None:
        """Replace the file atomically: temp file in the same dir, fsync, rename, fsync dir."""
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                os.chmod(tmp, 0o600)
                f.write(_render(realm, users))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(directory)
        st = os.stat(self.path)
        self._adopt(realm, users, (st.st_mtime_ns, st.st_size, st.st_ino))

    def _make_user(self, name: str, password: str, grants: Iterable[Grant | str]) -> User:
        validate_name(name)
        validate_password(password)
        parsed = tuple(dict.fromkeys(g if isinstance(g, Grant) else parse_grant(g) for g in grants))
        return User(
            name=name,
            argon2_hash=self._hasher.hash(password),
            ha1_md5=digest_ha1(name, self.realm, password, "MD5"),
            ha1_sha256=digest_ha1(name, self.realm, password, "SHA-256"),
            grants=parsed,
        )

    def _check_realm(self, realm: str, users: dict[str, User]) -> None:
        if users and realm != self.realm:
            raise ValueError(
                f"{self.path} holds Digest credentials for realm {realm!r}, not {self.realm!r}; "
                f"use --realm {realm} (or remove all users to switch realms)"
            )

    def add(
        self,
        name: str,
        password: str,
        grants: Iterable[Grant | str] = (),
        replace: bool = False,
    ) -> User:
        """Create (or with ``replace``, overwrite) a user; ``ValueError`` on bad input.

        ``UserExistsError`` (a ``ValueError``) when the name is taken and not ``replace``.
        """
        user = self._make_user(name, password, grants)  # argon2 outside the lock: slow
        with self._locked():
            realm, users = self._read_strict()
            self._check_realm(realm, users)
            if name in users and not replace:
                raise UserExistsError(f"user {name!r} already exists (use --replace)")
            users[name] = user
            self._write(self.realm, users)
        return user

    def add_first(self, name: str, password: str, grants: Iterable[Grant | str]) -> bool:
        """Add ``name`` only if the file holds no users at all; True when added."""
        user = self._make_user(name, password, grants)
        with self._locked():
            realm, users = self._read_strict()
            if users:
                self._adopt(realm, users, self._signature)
                return False
            self._write(self.realm, {name: user})
        return True

    def remove(self, name: str) -> bool:
        """Delete a user; False when there was no such user."""
        with self._locked():
            realm, users = self._read_strict()
            if users.pop(name, None) is None:
                return False
            self._write(realm, users)
        return True


def ensure_admin(store: UserStore) -> str | None:
    """First start: create ``admin`` with a random password and ``write:/``.

    Returns the password so the caller can show it once on the terminal; it must never be
    logged. Returns None when the store already has users, or when the file is corrupt
    (which is logged: it is not overwritten).
    """
    store.refresh()
    if store.users():
        return None
    password = secrets.token_urlsafe(18)
    try:
        added = store.add_first("admin", password, [Grant("write", "/")])
    except UserFileError as exc:
        log.error("not creating the first admin user: %s", exc)
        return None
    return password if added else None
