"""The publishing points of a server: their files, runtime state and locks.

The registry is where a management operation becomes a change: it checks
the operation against the state tables, takes the point's lock (a second
conflicting operation meanwhile gets MPE_MGMT_PUBLISHING_POINT_LOCKED),
writes the .isml file or the state file atomically and moves the state.

Runtime state (State, LastError) is not part of the .isml file: it lives
in ``<state-dir>/points/``, one small JSON file per point, never served.
After a restart, ``RECOVERED_STATE`` says what each point comes back as.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from smoothlive.archive.writer import ArchiveJournal
from smoothlive.management.errors import (
    E_FAIL,
    ManagementError,
    MgmtError,
)
from smoothlive.management.settings import Settings, with_generated_keys
from smoothlive.pubpoint.live import LivePoint
from smoothlive.pubpoint.paths import InvalidPointPath, point_path
from smoothlive.pubpoint.states import (
    RECOVERED_STATE,
    Event,
    Move,
    State,
    event_move,
    requested_move,
)
from smoothlive.pubpoint.store import IsmlStore, PointFile, PointFileError, atomic_write

log = logging.getLogger("smoothlive.pubpoint")

# HResult reported as LastError when a Pull point is started: pulling from
# another server is not implemented yet (E_NOTIMPL).
E_NOTIMPL = 0x80004001


# Archive folders a live presentation's DVR window is read back from after a restart
# (one per restart of the server or of its encoders' archive): the newest ones.
MAX_RESTORED_ARCHIVES = 16


@dataclass
class PointRuntime:
    """What a point is doing now; persisted in the state dir."""

    path: str
    state: State = State.IDLE
    last_error: int | None = None
    changed: float = field(default_factory=time.time)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    live: LivePoint | None = field(default=None, repr=False)
    # The archive folders of its live presentation (a restart reads the DVR window back).
    archives: list[str] = field(default_factory=list)


class Registry:
    """All points of the content root, and the only writer of their files."""

    def __init__(
        self,
        store: IsmlStore,
        state_dir: Path,
        wall_clock: Callable[[], float] = time.time,
        reconnect_grace: float = 30.0,
        archive_allow: tuple[Path, ...] = (),
    ) -> None:
        self.store = store
        self.state_dir = state_dir
        self.reconnect_grace = reconnect_grace
        # Folders outside the content root that an Archive Path may name.
        self.archive_allow = tuple(Path(os.path.realpath(p)) for p in archive_allow)
        self.journal = ArchiveJournal(state_dir / "archives-open")
        self.spool_root = state_dir / "spool"
        self.points_dir = state_dir / "points"
        self.points_dir.mkdir(parents=True, exist_ok=True)
        self._clock = wall_clock
        self._runtime: dict[str, PointRuntime] = {}
        self._creating: set[str] = set()
        # Called with a point's path whenever what players read of it may have
        # changed (front processes' caches follow it); nothing by default.
        self.on_change: Callable[[str], None] = _nothing

    # -- runtime state -------------------------------------------------

    def _state_file(self, path: str) -> Path:
        return self.points_dir / (hashlib.sha256(path.encode()).hexdigest()[:32] + ".json")

    def recover(self) -> None:
        """Load every saved runtime state, moved as a restart requires.

        A live presentation that was being archived comes back from its
        archive (the DVR window: Started points, waiting for their encoders as
        Starting, and Stopped ones, watchable as they were); one that was not
        archived does not survive (spools are dropped).
        """
        shutil.rmtree(self.spool_root, ignore_errors=True)
        # Archives a crash left open: cut to the last whole fragment and finished.
        self.journal.recover_all()
        for state_file in self.points_dir.glob("*.json"):
            try:
                saved = json.loads(state_file.read_bytes())
                path = saved["path"]
                state = RECOVERED_STATE[State.parse(saved["state"])]
                last_error = saved.get("last_error")
                archives = [Path(folder) for folder in saved.get("archives") or []
                            if isinstance(folder, str) and folder]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("ignoring unreadable state file %s: %s", state_file.name, exc)
                continue
            if not self.store.exists(path):
                state_file.unlink(missing_ok=True)
                continue
            runtime = PointRuntime(path, state, last_error, self._clock())
            self._runtime[path] = runtime
            if state is State.STARTING or (state is State.STOPPED and archives):
                point = self.readable(path)
                if point is not None:
                    live = self._make_live(runtime, point, restore=archives)
                    if state is State.STOPPED and not live.presentation.stream_indexes:
                        live.close()  # nothing read back: as before, no presentation
                        runtime.live = None
            if state.value != saved["state"]:
                log.info("%s: was %s before the restart, now %s", path, saved["state"], state.value)
                self._save_state(runtime)

    def runtimes(self) -> dict[str, PointRuntime]:
        """The points with a runtime state (the others are Idle), by path: read only."""
        return self._runtime

    def runtime(self, path: str) -> PointRuntime:
        runtime = self._runtime.get(path)
        if runtime is None:
            runtime = self._runtime[path] = PointRuntime(path, changed=self._clock())
        return runtime

    def _save_state(self, runtime: PointRuntime) -> None:
        data = {
            "path": runtime.path,
            "state": runtime.state.value,
            "last_error": runtime.last_error,
            "changed": runtime.changed,
            "archives": runtime.archives,
        }
        atomic_write(self._state_file(runtime.path), json.dumps(data).encode(), mode=0o600)

    async def _set_state(
        self, runtime: PointRuntime, state: State, last_error: int | None = None
    ) -> None:
        runtime.state = state
        runtime.last_error = last_error if state is State.ERROR else None
        runtime.changed = self._clock()
        self.on_change(runtime.path)
        try:
            await asyncio.to_thread(self._save_state, runtime)
        except OSError as exc:  # a full disk: the state holds, in memory, all the same
            log.error("%s: %s, but the state file cannot be written (%s): a restart of "
                      "the server would not know it", runtime.path, state.value, exc)
            return
        log.info("%s: %s", runtime.path, state.value)

    # -- reading -------------------------------------------------------

    def get(self, path: str) -> PointFile:
        """The point's file; MPE_MGMT_PUBLISHING_POINT_NOT_FOUND if there is none."""
        try:
            return self.store.read(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            # (a folder may be named like a point: it is not one)
            raise ManagementError(MgmtError.PUBLISHING_POINT_NOT_FOUND, path) from None
        except PointFileError as exc:
            raise ManagementError(MgmtError.INTERNAL, str(exc), internal=E_FAIL) from None

    async def paths(self) -> list[str]:
        """Every valid point path under the root."""
        found = await asyncio.to_thread(self.store.scan)
        valid = []
        for path in found:
            try:
                valid.append(point_path(path, decode=False))
            except InvalidPointPath:
                continue
        return valid

    def readable(self, path: str) -> PointFile | None:
        """The point's file, or None (logged) when it cannot be read."""
        try:
            return self.store.read(path)
        except FileNotFoundError:
            return None
        except (OSError, PointFileError) as exc:
            log.warning("skipping unreadable publishing point %s: %s", path, exc)
            return None

    # -- archives --------------------------------------------------------

    def archive_base(self, path: str, settings: Settings) -> Path:
        """Where a point's archives go: ``<Archive Path or <root>/archives>/<point path>``.

        A relative Archive Path is taken from the content root. A Path outside
        the root must lie in a folder the operator allowed (``--archive-allow``):
        otherwise MPE_MGMT_INVALID_DATA, so a management user cannot make the
        server write anywhere it can.
        """
        root = self.store.root
        configured = settings.archive.path
        base = root / "archives" if not configured else root / configured.replace("\\", "/")
        real = Path(os.path.realpath(base))
        inside = [root, *self.archive_allow]
        if not any(real == folder or folder in real.parents for folder in inside):
            raise ManagementError(
                MgmtError.INVALID_DATA,
                f"Archive Path {configured!r} is outside the content root and not allowed")
        relative = path.strip("/")
        if relative.lower().endswith(".isml"):
            relative = relative[: -len(".isml")]
        return real.joinpath(*relative.split("/"))

    def check_settings(self, path: str, settings: Settings) -> None:
        """What the schema cannot say about settings, checked before they are written."""
        if settings.archive.enabled or settings.archive.path:
            self.archive_base(path, settings)

    # -- operations ----------------------------------------------------

    def _lock(self, runtime: PointRuntime) -> asyncio.Lock:
        if runtime.lock.locked():
            raise ManagementError(MgmtError.PUBLISHING_POINT_LOCKED, runtime.path)
        return runtime.lock

    async def create(self, path: str, settings: Settings) -> PointFile:
        if path in self._creating:
            raise ManagementError(MgmtError.PUBLISHING_POINT_LOCKED, path)
        self.check_settings(path, settings)
        settings = with_generated_keys(settings, _new_key)
        self._creating.add(path)
        try:
            try:
                point = await asyncio.to_thread(self.store.write, path, settings, create=True)
            except FileExistsError:
                raise ManagementError(MgmtError.PUBLISHING_POINT_ALREADY_EXISTS, path) from None
            except (NotADirectoryError, FileNotFoundError) as exc:
                raise ManagementError(MgmtError.SLUG_HEADER_INVALID, str(exc)) from None
        finally:
            self._creating.discard(path)
        runtime = self._runtime[path] = PointRuntime(path, changed=self._clock())
        await asyncio.to_thread(self._save_state, runtime)
        log.info("%s: created", path)
        return point

    async def update_settings(self, path: str, settings: Settings) -> PointFile:
        self.get(path)
        self.check_settings(path, settings)
        settings = with_generated_keys(settings, _new_key)
        runtime = self.runtime(path)
        async with self._lock(runtime):
            if runtime.state is not State.IDLE:
                raise ManagementError(
                    MgmtError.PUBLISHING_POINT_IN_USE, f"{path} is {runtime.state.value}")
            point = await asyncio.to_thread(self.store.write, path, settings, create=False)
        log.info("%s: settings updated", path)
        return point

    async def request_state(self, path: str, wanted: State) -> None:
        point = self.get(path)
        runtime = self.runtime(path)
        async with self._lock(runtime):
            move = requested_move(runtime.state, wanted)
            if move is None:
                return
            await self._apply(runtime, move)
            if move.to is State.STARTING:
                self._make_live(runtime, point)
            if move.to is State.STARTING and point.settings.source_type == "Pull":
                log.error(
                    "%s: cannot start: pulling from another server (SourceType Pull) "
                    "is not supported yet", path)
                await self._set_state(runtime, State.ERROR, E_NOTIMPL)

    async def _leave(self, runtime: PointRuntime, transition: State) -> None:
        """The work of a transition state: Stopping ends the inputs and keeps the
        presentation watchable (DVR-only); ShuttingDown drops the presentation
        and its spool (an archive stays)."""
        live = runtime.live
        if live is None:
            return
        if transition is State.STOPPING:
            live.stop_inputs()
        elif transition is State.SHUTTING_DOWN:
            live.close()
            runtime.live = None

    def _make_live(self, runtime: PointRuntime, point: PointFile,
                   restore: list[Path] | None = None) -> LivePoint:
        """A new live presentation for the point; with ``restore``, its DVR window read
        back from those archive folders (after a restart)."""
        if runtime.live is not None:
            runtime.live.close()
        if runtime.archives:  # a new presentation: not those archives' window
            runtime.archives = []
            self._save_state_now(runtime)
        spool = self.spool_root / self._state_file(runtime.path).stem
        path = runtime.path

        async def on_event(event: Event, last_error: int | None = None) -> None:
            await self.event(path, event, last_error)

        archive_base = None
        if point.settings.archive.enabled:
            try:
                archive_base = self.archive_base(path, point.settings)
            except ManagementError as exc:  # the file was edited by hand: say so, go on
                log.error("%s: not archiving: %s", path, exc.detail)
        def on_archive(folder: Path) -> None:
            runtime.archives = [*runtime.archives, str(folder)][-MAX_RESTORED_ARCHIVES:]
            self._save_state_now(runtime)

        live = runtime.live = LivePoint(
            path, point.settings, spool, on_event, self.reconnect_grace,
            archive_base=archive_base, journal=self.journal,
            on_change=lambda: self.on_change(path), on_archive=on_archive)
        folders = [folder for folder in restore or () if archive_base is not None
                   and archive_base in folder.parents and folder.is_dir()]
        if folders:
            try:
                if live.restore_window(folders, live=runtime.state is not State.STOPPED):
                    runtime.archives = [str(folder) for folder in folders]
                    self._save_state_now(runtime)
            except (OSError, ValueError) as exc:  # the window is lost, the point is not
                log.error("%s: DVR window not read back: %s", path, exc)
        self.on_change(path)
        return live

    def _save_state_now(self, runtime: PointRuntime) -> None:
        """The state file rewritten from the event loop (rare: a new presentation, a new
        archive folder); a failure is logged, the state holds in memory."""
        try:
            self._save_state(runtime)
        except OSError as exc:
            log.error("%s: the state file cannot be written (%s)", runtime.path, exc)

    def drain(self) -> None:
        """The server is stopping: end every ingest (points keep their state)."""
        for runtime in self._runtime.values():
            if runtime.live is not None:
                runtime.live.end_inputs()

    async def finish_archives(self) -> None:
        """The server is stopping: finish every archive being written (mfra, .ismc)."""
        done = []
        for runtime in self._runtime.values():
            live = runtime.live
            if live is not None and live.archive is not None:
                live.finish_archive(report=False)  # the point keeps its state
                if live.archive_done is not None:
                    done.append(live.archive_done)
        if done:
            await asyncio.gather(*done, return_exceptions=True)
            log.info("%d archive(s) finished", len(done))

    def live(self, path: str) -> LivePoint | None:
        runtime = self._runtime.get(path)
        return runtime.live if runtime is not None else None

    async def open_ingest(self, path: str, stream_id: str, event_id: str | None) -> LivePoint:
        """An encoder starts a push: the point it may push to, started if the rules say so.

        Starting/Started take it. Idle starts with AutoStart and refuses
        otherwise; Stopped restarts with AutoRestartOnEncoderReconnect (the
        presentation continues) and refuses otherwise; Error refuses.
        """
        point = self.get(path)
        runtime = self.runtime(path)
        if runtime.state in (State.STARTING, State.STARTED) and runtime.live is not None:
            return runtime.live
        # Encoders racing each other (one POST per bitrate, all at once) wait
        # for one another here rather than being refused as LOCKED.
        async with runtime.lock:
            state = runtime.state
            if state in (State.STARTING, State.STARTED):
                return runtime.live or self._make_live(runtime, point)
            if state is State.IDLE and point.settings.auto_start:
                await self._apply(runtime, Move(State.STARTING))
                return self._make_live(runtime, point)
            if state is State.IDLE:
                raise ManagementError(MgmtError.PUBLISHING_POINT_NOT_STARTED,
                                      f"{path} is Idle and AutoStart is off")
            if state is State.STOPPED and point.settings.auto_restart_on_encoder_reconnect:
                await self._apply(runtime, Move(State.STARTING))
                if runtime.live is None:
                    return self._make_live(runtime, point)
                runtime.live.resume()
                return runtime.live
            raise ManagementError(MgmtError.STATE_TRANSITION_INVALID,
                                  f"{path} is {state.value}: push refused")

    async def autostart_for_player(self, path: str) -> None:
        """A player asks for an Idle point with AutoStart: start it, as IIS does."""
        point = self.get(path)
        runtime = self.runtime(path)
        if runtime.state is State.IDLE and point.settings.auto_start and not runtime.lock.locked():
            async with runtime.lock:
                if runtime.state is State.IDLE:
                    await self._apply(runtime, Move(State.STARTING))
                    self._make_live(runtime, point)

    async def event(self, path: str, event: Event, last_error: int | None = None) -> None:
        """Apply an automatic move (first fragment, end of stream, failure)."""
        runtime = self.runtime(path)
        async with runtime.lock:
            move = event_move(runtime.state, event)
            if move is not None:
                await self._apply(runtime, move, last_error)

    async def _apply(
        self, runtime: PointRuntime, move: Move, last_error: int | None = None
    ) -> None:
        """Make a move of the tables: through its transition state, if any, to its end."""
        if move.via is not None:
            await self._set_state(runtime, move.via)
            await self._leave(runtime, move.via)
        elif move.to is State.IDLE and runtime.live is not None:
            # Error -> Idle has no ShuttingDown step: its presentation goes all the same.
            await self._leave(runtime, State.SHUTTING_DOWN)
        await self._set_state(runtime, move.to, last_error)

    async def delete(self, path: str) -> None:
        self.get(path)
        runtime = self.runtime(path)
        async with self._lock(runtime):
            # A running point is stopped and shut down first, as IIS does.
            if runtime.state in (State.STARTING, State.STARTED):
                await self._apply(runtime, Move(State.STOPPED, via=State.STOPPING))
            if runtime.state is not State.IDLE:
                await self._apply(runtime, Move(State.IDLE, via=State.SHUTTING_DOWN))
            try:
                await asyncio.to_thread(self.store.delete, path)
            except FileNotFoundError:
                raise ManagementError(MgmtError.PUBLISHING_POINT_NOT_FOUND, path) from None
            self._state_file(path).unlink(missing_ok=True)
            self._runtime.pop(path, None)
        log.info("%s: deleted", path)


def _nothing(path: str) -> None:
    pass


def _new_key() -> str:
    """An AES-128 key for HLS Encryption enabled without one: stored with the settings."""
    return secrets.token_hex(16).upper()
