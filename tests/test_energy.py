"""pzem.energy.PhaseEnergy and the stored text, with fake monotonic and wall clocks."""
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from pzem import energy, models
from pzem.energy import PhaseEnergy, Saved

MAX_KW = models.AC.max_kw       # 26 kW
WALL0 = 1764590000.0
IMPORT, EXPORT = 1, -1


class Clock(object):
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clocks():
    return Clock(1000.0), Clock(WALL0)


def phase(clocks, saved=None):
    clock, wall = clocks
    p = PhaseEnergy(MAX_KW, clock=clock, wall=wall)
    p.restore(saved)
    return p


def later(clocks, seconds):
    for c in clocks:
        c.now += seconds


def totals(p):
    return p.forward, p.reverse


# --- first start and the split by sign -----------------------------------------------------


def test_first_reading_without_saved_totals_starts_at_the_counter(clocks):
    p = phase(clocks)
    assert totals(p) == (None, None) and p.saved() is None and not p.changed
    assert p.book(1234.567, EXPORT) is None
    # an upgrade from 1.0.0 published the raw counter: VRM sees no drop
    assert totals(p) == (1234.567, 0.0)
    assert p.changed


def test_increments_go_to_forward_or_reverse_by_sign(clocks):
    p = phase(clocks)
    p.book(100.0, IMPORT)
    later(clocks, 60)
    assert p.book(100.05, IMPORT) is None
    later(clocks, 60)
    assert p.book(100.08, EXPORT) is None
    later(clocks, 60)
    assert p.book(100.081, EXPORT) is None
    later(clocks, 60)
    p.book(100.1, IMPORT)
    assert totals(p) == (100.069, 0.031)
    assert p.dropped == 0 and p.last_drop is None


def test_no_change_books_nothing(clocks):
    p = phase(clocks)
    p.book(5.0, IMPORT)
    p.saved()
    later(clocks, 60)
    assert p.book(5.0, EXPORT) is None
    assert totals(p) == (5.0, 0.0) and not p.changed


# --- resets, wrap, replaced meters ---------------------------------------------------------


def test_reset_to_zero_keeps_the_totals_and_books_what_follows(clocks):
    p = phase(clocks)
    p.book(500.0, IMPORT)
    later(clocks, 10)
    assert p.book(0.0, IMPORT) is None          # pzemctl reset-energy
    assert totals(p) == (500.0, 0.0)
    later(clocks, 60)
    p.book(0.01, IMPORT)
    later(clocks, 60)
    p.book(0.03, EXPORT)
    assert totals(p) == (500.01, 0.02)


def test_wrap_books_what_the_meter_counted_since_zero(clocks):
    p = phase(clocks)
    p.book(9999.99, IMPORT)
    later(clocks, 10)
    assert p.book(0.005, IMPORT) is None
    assert totals(p) == (10000.0 - 0.005, 0.0)     # 9999.99 + 0.005
    assert p.forward == 9999.995


def test_replaced_meter_starting_at_zero(clocks):
    p = phase(clocks)
    p.book(3000.0, IMPORT)
    later(clocks, 120)
    assert p.book(0.002, EXPORT) is None
    assert totals(p) == (3000.0, 0.002)


@pytest.mark.parametrize('used_counter', [1500.0, 4500.0])
def test_replaced_meter_with_a_used_counter_is_dropped_and_counted(clocks, used_counter):
    p = phase(clocks)
    p.book(3000.0, IMPORT)
    later(clocks, 60)
    reason = p.book(used_counter, IMPORT)
    assert reason and 'not booked' in reason and p.last_drop == reason
    assert p.dropped == 1
    assert totals(p) == (3000.0, 0.0)
    assert p.changed            # the new baseline must be stored, or a restart books the leap
    later(clocks, 60)
    assert p.book(used_counter + 0.01, IMPORT) is None     # the baseline moved to the new meter
    assert totals(p) == (3000.01, 0.0) and p.dropped == 1


def test_leap_after_a_long_silence_that_is_plausible_is_booked(clocks):
    p = phase(clocks)
    p.book(10.0, EXPORT)
    later(clocks, 10 * 3600)                     # 10 h without an answer; 26 kW could do 260 kWh
    assert p.book(30.0, EXPORT) is None
    assert totals(p) == (10.0, 20.0)


def test_the_limit_is_max_power_over_the_elapsed_time_plus_two_wh(clocks):
    p = phase(clocks)
    p.book(0.0, IMPORT)
    later(clocks, 3600)
    assert p.book(26.002, IMPORT) is None        # exactly 26 kWh in an hour + 2 Wh slack
    assert p.book(26.004, IMPORT) is None        # 2 Wh at once
    assert p.book(26.007, IMPORT) is not None    # 3 Wh at once
    assert totals(p) == (26.004, 0.0) and p.dropped == 1


def test_monotonic_clock_jumps_are_ignored_by_later_readings(clocks):
    clock, wall = clocks
    p = phase(clocks)
    p.book(1.0, IMPORT)
    wall.now -= 86400                            # NTP moves the wall clock back a day
    clock.now += 60
    assert p.book(1.1, IMPORT) is None
    assert totals(p) == (1.1, 0.0)


# --- restart with saved totals -------------------------------------------------------------


def test_restart_books_energy_counted_while_stopped_as_import(clocks):
    p = phase(clocks, Saved(10.0, 2.0, 1000.0, WALL0 - 3600))
    assert totals(p) == (10.0, 2.0) and not p.changed
    assert p.book(1005.0, EXPORT) is None        # 5 kWh in the hour the driver was stopped
    assert totals(p) == (15.0, 2.0)
    later(clocks, 60)
    p.book(1005.1, EXPORT)                       # from now on the sign counts again
    assert totals(p) == (15.0, 2.1)


def test_restart_after_a_reset_while_stopped(clocks):
    p = phase(clocks, Saved(10.0, 2.0, 1000.0, WALL0 - 3600))
    assert p.book(0.5, IMPORT) is None
    assert totals(p) == (10.5, 2.0)


def test_restart_with_a_leap_beyond_max_power_in_the_wall_time_is_dropped(clocks):
    p = phase(clocks, Saved(10.0, 2.0, 1000.0, WALL0 - 60))
    reason = p.book(1100.0, IMPORT)              # 100 kWh in a minute
    assert reason and p.dropped == 1
    assert totals(p) == (10.0, 2.0)
    later(clocks, 60)
    p.book(1100.01, IMPORT)
    assert totals(p) == (10.01, 2.0)


def test_restart_with_the_wall_clock_behind_the_save_drops(clocks):
    p = phase(clocks, Saved(10.0, 2.0, 1000.0, WALL0 + 600))
    assert 'clock went back' in p.book(1000.001, IMPORT)
    assert totals(p) == (10.0, 2.0) and p.dropped == 1
    q = phase(clocks, Saved(10.0, 2.0, 1000.0, WALL0 + 600))
    assert q.book(1000.0, IMPORT) is None        # nothing counted: nothing to drop
    assert q.dropped == 0


# --- what is saved -------------------------------------------------------------------------


def test_saved_holds_totals_counter_and_wall_time_of_the_reading(clocks):
    p = phase(clocks)
    p.book(7.5, IMPORT)
    later(clocks, 30)
    p.book(7.6, EXPORT)
    later(clocks, 100)
    assert p.changed
    assert p.saved() == Saved(7.5, 0.1, 7.6, WALL0 + 30)
    assert not p.changed
    p.unsaved()                                  # the write failed: write again next time
    assert p.changed


def test_a_restored_phase_that_never_answers_keeps_its_saved_totals(clocks):
    saved = Saved(10.0, 2.0, 1000.0, WALL0 - 60)
    p = phase(clocks, saved)
    assert p.saved() == saved and not p.changed


# --- never backwards -----------------------------------------------------------------------

step = st.tuples(
    st.floats(0, 7200),                                           # seconds since the last poll
    st.sampled_from(['grow', 'grow', 'grow', 'reset', 'replace', 'restart']),
    st.integers(0, 60000),                                        # Wh: growth or a new counter
    st.sampled_from([IMPORT, EXPORT]))


@hsettings(max_examples=150, deadline=None)
@given(st.integers(0, 9999999), st.lists(step, max_size=40))
def test_totals_never_decrease(start, steps):
    """Through growth, resets, replaced meters and restarts (via the stored text): totals only
    grow, by the meter's increment in the direction of the sign, or not at all when dropped."""
    clocks = (Clock(0.0), Clock(WALL0))
    p = phase(clocks)
    counter = start
    p.book(counter / 1000.0, IMPORT)
    before = totals(p)
    since = 0.0                 # seconds since the last reading, across restarts
    restarted = False
    for seconds, kind, wh, sign in steps:
        later(clocks, seconds)
        since += seconds
        if kind == 'restart':
            text = energy.encode({'L1': p.saved()})
            p, restarted = phase(clocks, energy.decode(text)['L1']), True
            continue
        last = counter
        counter = {'grow': min(counter + wh, 9999999), 'reset': 0, 'replace': wh}[kind]
        reason = p.book(counter / 1000.0, sign)
        now = totals(p)
        assert now[0] >= before[0] and now[1] >= before[1]
        grown = (round((now[0] - before[0]) * 1000), round((now[1] - before[1]) * 1000))
        increment = counter - last if counter >= last else counter
        if reason is not None:
            assert grown == (0, 0)
        elif sign == IMPORT or restarted:
            assert grown == (increment, 0)
        else:
            assert grown == (0, increment)
        # the stored time is whole seconds (rounded down): up to 1 s more
        assert sum(grown) <= MAX_KW * (since + 1.0) / 3.6 + energy.SLACK_WH
        before, since, restarted = now, 0.0, False


# --- the stored text -----------------------------------------------------------------------


def test_text_round_trip():
    phases = {'L1': Saved(12.345, 0.0, 1234.567, WALL0 + 0.7),
              'L3': Saved(9999.999, 123456.789, 0.001, WALL0 + 5)}
    text = energy.encode(phases)
    assert text == '1 t=1764590000 L1=12.345/0.000@1234.567 L3=9999.999/123456.789@0.001'
    assert energy.decode(text) == {'L1': Saved(12.345, 0.0, 1234.567, WALL0),
                                   'L3': Saved(9999.999, 123456.789, 0.001, WALL0)}


def test_empty_text_is_nothing_saved():
    assert energy.decode('') == {}


@pytest.mark.parametrize('text', [
    'garbage', '2 t=1764590000 L1=1.000/0.000@1.000', '1 t=1764590000', '1 L1=1.000/0.000@1.000',
    '1 t=x L1=1.000/0.000@1.000', '1 t=1764590000 L4=1.000/0.000@1.000',
    '1 t=1764590000 L1=1.000/0.000', '1 t=1764590000 L1=-1.000/0.000@1.000',
    '1 t=1764590000 L1=1.0/0.000@1.000', '1 t=1764590000 L1=nan/0.000@1.000',
    '1 t=1764590000 L1=1.000/0.000@1.000 L1=2.000/0.000@1.000'])
def test_garbage_text_is_refused_with_a_reason(text):
    with pytest.raises(ValueError) as e:
        energy.decode(text)
    assert str(e.value)
