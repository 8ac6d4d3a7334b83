"""The publishing point state tables (sans-IO)."""

from __future__ import annotations

import pytest

from smoothlive.management.errors import ManagementError, MgmtError
from smoothlive.pubpoint.states import (
    EVENT_MOVES,
    RECOVERED_STATE,
    REQUESTED_MOVES,
    Event,
    Move,
    State,
    event_move,
    requested_move,
    state_table_markdown,
)

IDL, STG, STD, SPG, SPD, SD, E = (
    State.IDLE, State.STARTING, State.STARTED, State.STOPPING, State.STOPPED,
    State.SHUTTING_DOWN, State.ERROR)

# The whole requested-move matrix, written out by hand from the IIS guide.
EXPECTED = {
    (IDL, IDL): None, (IDL, STD): Move(STG), (IDL, SPD): MgmtError.STATE_TRANSITION_INVALID,
    (STG, IDL): Move(IDL, SD), (STG, STD): None, (STG, SPD): Move(SPD, SPG),
    (STD, IDL): Move(IDL, SD), (STD, STD): None, (STD, SPD): Move(SPD, SPG),
    (SPG, IDL): MgmtError.PUBLISHING_POINT_LOCKED, (SPG, STD): MgmtError.PUBLISHING_POINT_LOCKED,
    (SPG, SPD): None,
    (SPD, IDL): Move(IDL, SD), (SPD, STD): MgmtError.STATE_TRANSITION_INVALID, (SPD, SPD): None,
    (SD, IDL): None, (SD, STD): MgmtError.PUBLISHING_POINT_LOCKED,
    (SD, SPD): MgmtError.PUBLISHING_POINT_LOCKED,
    (E, IDL): Move(IDL), (E, STD): MgmtError.STATE_TRANSITION_INVALID,
    (E, SPD): MgmtError.STATE_TRANSITION_INVALID,
}


@pytest.mark.parametrize(("current", "wanted"), list(EXPECTED))
def test_requested_moves_match_the_iis_guide(current, wanted):
    expected = EXPECTED[(current, wanted)]
    if isinstance(expected, MgmtError):
        with pytest.raises(ManagementError) as caught:
            requested_move(current, wanted)
        assert caught.value.error is expected
    else:
        assert requested_move(current, wanted) == expected


@pytest.mark.parametrize("wanted", [STG, SPG, SD, E])
@pytest.mark.parametrize("current", list(State))
def test_transition_and_automatic_states_cannot_be_requested(current, wanted):
    with pytest.raises(ManagementError) as caught:
        requested_move(current, wanted)
    assert caught.value.error is MgmtError.STATE_TRANSITION_NOT_SUPPORTED


def test_every_table_move_ends_in_a_resting_state():
    resting = {IDL, STG, STD, SPD, E}
    for move in [*REQUESTED_MOVES.values(), *EVENT_MOVES.values()]:
        assert move.to in resting
        assert move.via in (None, SPG, SD)


def test_events():
    assert event_move(STG, Event.FIRST_FRAGMENT) == Move(STD)
    assert event_move(STD, Event.FIRST_FRAGMENT) is None
    assert event_move(STD, Event.SOURCE_ENDED) == Move(SPD, SPG)
    assert event_move(IDL, Event.FAILED) is None
    assert event_move(STD, Event.FAILED) == Move(E)


def test_restart_recovery():
    assert RECOVERED_STATE[STD] is STG
    assert RECOVERED_STATE[STG] is STG
    assert RECOVERED_STATE[SPG] is SPD
    assert RECOVERED_STATE[SPD] is SPD
    assert RECOVERED_STATE[SD] is IDL
    assert set(RECOVERED_STATE) == set(State)


def test_readme_shows_the_table_as_the_code_has_it():
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert state_table_markdown() in readme
