"""The .isml files under the content root: a publishing point is its file.

Writes are atomic (temporary file in the same folder, fsync, rename, fsync
of the folder), so a crash never leaves a half-written point; a create
never replaces an existing file (the temporary file is hard-linked into
place, which fails if the name is taken). Reads are cached by the file's
identity (inode, size, mtime), so enumerating a thousand points costs a
``stat`` each, not a parse each.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from smoothlive.management.settings import Settings
from smoothlive.pubpoint.isml import settings_from_isml, settings_to_isml

log = logging.getLogger("smoothlive.store")

ISML_SUFFIX = ".isml"


class PointFileError(Exception):
    """A .isml file exists but cannot be read as a publishing point."""


@dataclass(frozen=True, slots=True)
class PointFile:
    path: str
    settings: Settings
    modified: float  # seconds since the epoch
    raw: bytes


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(target: Path, data: bytes, *, replace: bool = True, mode: int = 0o644) -> None:
    """Write ``data`` to ``target`` so that readers see the old or the new file, never half.

    With ``replace=False`` the write fails with FileExistsError if ``target``
    exists, atomically (no check-then-write race).
    """
    folder = target.parent
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)
            tmp.unlink()
        fsync_dir(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class IsmlStore:
    """Reads and writes the publishing point files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._cache: dict[str, tuple[tuple[int, int, int], PointFile]] = {}

    def _location(self, path: str) -> Path:
        return self.root.joinpath(*path.strip("/").split("/"))

    def file_of(self, path: str) -> Path:
        """The file for a canonical point path (see ``paths.point_path``).

        A symbolic link that leads out of the root is treated as absent.
        """
        target = self._location(path)
        try:
            resolved = target.resolve()
        except OSError:
            return target
        if resolved != self.root and self.root not in resolved.parents:
            raise FileNotFoundError(path)
        return target

    def exists(self, path: str) -> bool:
        try:
            return self.file_of(path).is_file()
        except OSError:
            return False

    def read(self, path: str) -> PointFile:
        """The point's file, parsed. FileNotFoundError or PointFileError.

        The common case, an unchanged file, costs one ``stat``: the symbolic
        link check of ``file_of`` and the parse happen when the file changes.
        """
        stat = os.stat(self._location(path))
        identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        cached = self._cache.get(path)
        if cached and cached[0] == identity:
            return cached[1]
        target = self.file_of(path)
        raw = target.read_bytes()
        try:
            settings = settings_from_isml(raw)
        except ValueError as exc:
            raise PointFileError(f"{path}: {exc}") from None
        point = PointFile(path, settings, stat.st_mtime, raw)
        self._cache[path] = (identity, point)
        return point

    def write(self, path: str, settings: Settings, *, create: bool) -> PointFile:
        """Write the point's settings; ``create`` refuses an existing file.

        An update keeps what the previous file had that smoothlive does not
        manage (other metas, other body content), as IIS files may carry.
        """
        target = self.file_of(path)
        original = None
        if create:
            target.parent.mkdir(parents=True, exist_ok=True)
        else:
            original = target.read_bytes()
        atomic_write(target, settings_to_isml(settings, original), replace=not create)
        self._cache.pop(path, None)
        return self.read(path)

    def delete(self, path: str) -> None:
        target = self.file_of(path)
        target.unlink()
        fsync_dir(target.parent)
        self._cache.pop(path, None)

    def scan(self) -> list[str]:
        """Every point path under the root, sorted. Hidden folders are skipped."""
        found: list[str] = []
        root_text = str(self.root)
        for folder, dirs, files in os.walk(self.root, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            relative = folder[len(root_text):].replace(os.sep, "/")
            for name in files:
                if name.lower().endswith(ISML_SUFFIX) and not name.startswith("."):
                    found.append(f"{relative}/{name}")
        known = set(found)
        for stale in [p for p in self._cache if p not in known]:
            del self._cache[stale]
        return sorted(found)
