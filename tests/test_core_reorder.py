"""ReorderBuffer: numbered frames in any order, out in order with lost ones marked."""

import pytest

from voice.core.reorder import MAX_FILL, ReorderBuffer


def test_frames_in_order_leave_at_once():
    buffer = ReorderBuffer(3)
    assert [buffer.push(n, n) for n in (1, 2, 3)] == [[1], [2], [3]]
    assert buffer.held == 0


def test_a_late_frame_inside_the_window_is_put_back_in_place():
    buffer = ReorderBuffer(3)
    assert buffer.push(1, 1) == [1]
    assert buffer.push(3, 3) == []
    assert buffer.push(4, 4) == []
    assert buffer.push(2, 2) == [2, 3, 4]


def test_a_frame_missing_for_a_whole_window_is_declared_lost():
    buffer = ReorderBuffer(3)
    buffer.push(1, 1)
    assert buffer.push(3, 3) == []
    assert buffer.push(4, 4) == []
    assert buffer.push(5, 5) == [None, 3, 4, 5]
    assert buffer.push(2, 2) == []  # too late now: dropped
    assert buffer.late == 1


def test_duplicates_are_dropped_and_counted():
    buffer = ReorderBuffer(2)
    buffer.push(1, 1)
    buffer.push(3, 3)
    assert buffer.push(3, 3) == [] and buffer.push(1, 1) == []
    assert buffer.late == 2


def test_window_zero_never_waits():
    buffer = ReorderBuffer(0)
    buffer.push(1, 1)
    assert buffer.push(4, 4) == [None, None, 4]


def test_a_known_lost_frame_is_filled_without_waiting():
    buffer = ReorderBuffer(3)
    buffer.push(1, 1)
    assert buffer.push(2, None) == [None]
    assert buffer.push(3, 3) == [3]


def test_a_huge_jump_resyncs_without_filling_seconds_of_silence():
    buffer = ReorderBuffer(1)
    buffer.push(1, 1)
    jump = 2 + MAX_FILL + 10
    assert buffer.push(jump, "x") == ["x"]
    assert buffer.push(jump + 1, "y") == ["y"]


def test_negative_window_is_refused():
    with pytest.raises(ValueError):
        ReorderBuffer(-1)
