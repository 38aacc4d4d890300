from voice.core.limits import TurnRate


def test_turns_past_the_rate_are_refused_until_the_minute_slides_on():
    rate = TurnRate(3)
    assert [rate.allow(t) for t in (0.0, 1.0, 2.0, 3.0, 59.9)] == [True, True, True, False, False]
    assert rate.allow(60.0)  # the turn at 0.0 left the window
    assert not rate.allow(60.5)
    assert rate.allow(61.0) and rate.allow(62.0)
    assert not rate.allow(62.1)  # refusals are not counted: 60, 61, 62 fill it
