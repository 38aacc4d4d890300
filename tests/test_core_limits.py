from voice.core.limits import PerKeyRate, PerMinute


def test_turns_past_the_rate_are_refused_until_the_minute_slides_on():
    rate = PerMinute(3)
    assert [rate.allow(t) for t in (0.0, 1.0, 2.0, 3.0, 59.9)] == [True, True, True, False, False]
    assert rate.allow(60.0)  # the turn at 0.0 left the window
    assert not rate.allow(60.5)
    assert rate.allow(61.0) and rate.allow(62.0)
    assert not rate.allow(62.1)  # refusals are not counted: 60, 61, 62 fill it


def test_each_key_has_its_own_minute_and_the_keys_are_bounded():
    rates = PerKeyRate(1, max_keys=2)
    assert rates.allow("a", 0.0) and rates.allow("b", 0.0)
    assert not rates.allow("a", 1.0)
    assert rates.allow("c", 1.0)  # "b" is now the least recently seen, and forgotten
    assert rates.allow("b", 2.0)  # so it starts afresh
