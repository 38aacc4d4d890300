"""MarkLedger: echoed marks give the played position; marks echoed after a clear do not."""

from voice.core.marks import MarkLedger


def send(ledger, n, ms=20.0, now=0.0):
    return [ledger.sent(ms, now) for _ in range(n)]


def test_echoes_advance_the_played_position_and_free_the_lead():
    ledger = MarkLedger()
    ledger.start_response()
    names = send(ledger, 5)
    assert len(set(names)) == 5
    assert ledger.outstanding_ms == 100 and ledger.played_ms == 0
    assert ledger.echoed(names[0])
    assert ledger.played_ms == 20 and ledger.outstanding_ms == 80
    assert ledger.echoed(names[2])  # an echo implies the ones before it
    assert ledger.played_ms == 60 and ledger.outstanding_ms == 40 and ledger.pending == 2


def test_marks_echoed_after_a_clear_mean_dropped_not_played():
    ledger = MarkLedger()
    ledger.start_response()
    names = send(ledger, 5)
    ledger.echoed(names[1])
    ledger.clear()
    assert ledger.outstanding_ms == 0
    for name in names[2:]:
        assert ledger.echoed(name)
    assert ledger.played_ms == 40 and ledger.pending == 0


def test_a_new_response_counts_from_zero_and_old_echoes_do_not_move_it():
    ledger = MarkLedger()
    ledger.start_response()
    old = send(ledger, 3)
    ledger.start_response()
    new = send(ledger, 2)
    assert ledger.outstanding_ms == 100
    ledger.echoed(old[-1])
    assert ledger.played_ms == 0 and ledger.outstanding_ms == 40
    ledger.echoed(new[0])
    assert ledger.played_ms == 20 and ledger.sent_ms == 40


def test_unknown_and_repeated_marks_are_reported():
    ledger = MarkLedger()
    ledger.start_response()
    (name,) = send(ledger, 1)
    assert not ledger.echoed("nonsense")
    assert ledger.echoed(name)
    assert not ledger.echoed(name)


def test_overdue_echoes_free_the_lead_but_never_count_as_played():
    ledger = MarkLedger(grace_s=1.0)
    ledger.start_response()
    send(ledger, 3, ms=100.0, now=10.0)
    assert ledger.next_deadline() == 10.0 + 0.1 + 1.0
    assert ledger.expire(10.5) == 0
    assert ledger.expire(20.0) == 3
    assert ledger.outstanding_ms == 0 and ledger.played_ms == 0
    assert ledger.pending == 0 and ledger.next_deadline() is None and ledger.expired == 3
