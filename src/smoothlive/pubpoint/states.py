"""Publishing point states and every legal move between them, as tables.

The states and their meaning come from the IIS guide "About Publishing Point
States" and the REST page "Update Publishing Point State":

* Idle (IIS Manager's *Shutdown*): can neither receive nor serve.
* Starting: ready for an encoder; moves to Started when the first fragment
  arrives.
* Started (*Live*): receiving and serving.
* Stopping: transition to Stopped (DVR-only).
* Stopped (*DVR-only*): no live input, the presentation stays watchable.
* ShuttingDown: transition to Idle; the live presentation is dropped.
* Error: entered automatically, with a LastError HResult.

A client may ask only for Idle, Started or Stopped. Starting, Stopping and
ShuttingDown are transition states and Error is automatic: asking for them is
MPE_MGMT_STATE_TRANSITION_NOT_SUPPORTED. Asking for the current state is a
no-op. Any move not in ``REQUESTED_MOVES`` is MPE_MGMT_STATE_TRANSITION_INVALID
(Stopped -> Started and Idle -> Stopped among them: IIS requires a shut down
first; AutoRestartOnEncoderReconnect is the way around it for encoders).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from smoothlive.management.errors import ManagementError, MgmtError


class State(Enum):
    IDLE = "Idle"
    STARTING = "Starting"
    STARTED = "Started"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    SHUTTING_DOWN = "ShuttingDown"
    ERROR = "Error"

    @classmethod
    def parse(cls, text: str) -> State:
        """The state named ``text`` (exact spelling of the schema's Value element)."""
        for state in cls:
            if state.value == text:
                return state
        raise ValueError(f"unknown publishing point state {text!r}")


REQUESTABLE = frozenset({State.IDLE, State.STARTED, State.STOPPED})


@dataclass(frozen=True, slots=True)
class Move:
    """A change of state: pass through ``via`` (if any), end in ``to``."""

    to: State
    via: State | None = None


# (current state, requested state) -> the move. Same-state requests are
# no-ops and are not listed; everything else not listed is invalid.
REQUESTED_MOVES: dict[tuple[State, State], Move] = {
    (State.IDLE, State.STARTED): Move(State.STARTING),
    (State.STARTING, State.STOPPED): Move(State.STOPPED, via=State.STOPPING),
    (State.STARTING, State.IDLE): Move(State.IDLE, via=State.SHUTTING_DOWN),
    (State.STARTED, State.STOPPED): Move(State.STOPPED, via=State.STOPPING),
    (State.STARTED, State.IDLE): Move(State.IDLE, via=State.SHUTTING_DOWN),
    (State.STOPPED, State.IDLE): Move(State.IDLE, via=State.SHUTTING_DOWN),
    (State.ERROR, State.IDLE): Move(State.IDLE),
}

# A point already in, or heading for, the requested state is left alone:
# Starting becomes Started by itself when the encoder's first fragment
# arrives, Stopping and ShuttingDown end by themselves.
ALREADY_THERE: dict[State, frozenset[State]] = {
    State.STARTED: frozenset({State.STARTED, State.STARTING}),
    State.STOPPED: frozenset({State.STOPPED, State.STOPPING}),
    State.IDLE: frozenset({State.IDLE, State.SHUTTING_DOWN}),
}


class Event(Enum):
    """Things that happen to a point without a client asking."""

    FIRST_FRAGMENT = "first fragment arrived"
    SOURCE_ENDED = "every source sent end of stream"
    FAILED = "an unrecoverable error"


# (current state, event) -> the move. Events in other states are ignored.
EVENT_MOVES: dict[tuple[State, Event], Move] = {
    (State.STARTING, Event.FIRST_FRAGMENT): Move(State.STARTED),
    (State.STARTED, Event.SOURCE_ENDED): Move(State.STOPPED, via=State.STOPPING),
    **{
        (state, Event.FAILED): Move(State.ERROR)
        for state in State
        if state is not State.IDLE
    },
}

# What a point comes back as after the server restarts: a live input cannot
# survive a restart, so a live point waits for its encoder again.
RECOVERED_STATE: dict[State, State] = {
    State.IDLE: State.IDLE,
    State.STARTING: State.STARTING,
    State.STARTED: State.STARTING,
    State.STOPPING: State.STOPPED,
    State.STOPPED: State.STOPPED,
    State.SHUTTING_DOWN: State.IDLE,
    State.ERROR: State.ERROR,
}


def requested_move(current: State, wanted: State) -> Move | None:
    """The move a client's PUT state asks for; None when nothing is to be done.

    Raises ManagementError with the table's error when the request is refused.
    """
    if wanted not in REQUESTABLE:
        raise ManagementError(
            MgmtError.STATE_TRANSITION_NOT_SUPPORTED, f"{wanted.value} cannot be requested")
    if current in ALREADY_THERE[wanted]:
        return None
    if current in (State.STOPPING, State.SHUTTING_DOWN):
        raise ManagementError(
            MgmtError.PUBLISHING_POINT_LOCKED, f"point is {current.value}")
    move = REQUESTED_MOVES.get((current, wanted))
    if move is None:
        raise ManagementError(
            MgmtError.STATE_TRANSITION_INVALID, f"{current.value} -> {wanted.value}")
    return move


def event_move(current: State, event: Event) -> Move | None:
    """The automatic move ``event`` causes in ``current``; None if it causes none."""
    return EVENT_MOVES.get((current, event))


def state_table_markdown() -> str:
    """The requested-moves table as Markdown, for the README (kept in sync by a test)."""
    wanted_states = [State.IDLE, State.STARTED, State.STOPPED]
    lines = [
        "| current \\ requested | " + " | ".join(s.value for s in wanted_states) + " |",
        "|---|" + "---|" * len(wanted_states),
    ]
    for current in State:
        cells = []
        for wanted in wanted_states:
            try:
                move = requested_move(current, wanted)
            except ManagementError as exc:
                cells.append(exc.error.symbol)
                continue
            if move is None:
                cells.append("no change")
            elif move.via:
                cells.append(f"{move.via.value} → {move.to.value}")
            else:
                cells.append(move.to.value)
        lines.append(f"| {current.value} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
