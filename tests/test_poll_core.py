"""The poll core driven directly: pzem.meter.Meter, pzem.poll.Poller and pzem.discovery.Discovery,
with a fake clock, on a real pzem.modbus.Bus talking Modbus-RTU to the simulator.

The fake clock moves only when the test moves it, or when the bus finishes an exchange (WireBus:
a reply or a silence costs the time the test says). So backoffs, deadlines and slots are exact
numbers on the fake clock. The bus's real timeouts are chosen apart from them: short where the
simulator has no meter that would answer, long where one would (a loaded machine must not turn a
reply into a silence). Poller's `publish` gets a small recording stand-in (Published) instead of
a D-Bus service.
"""
import logging

import pytest

from pzem import modbus, models, roles
from pzem.discovery import AGAIN_SECONDS, LIKELY, LIKELY_SECONDS, REST_SECONDS, Discovery
from pzem.meter import MISSES_TO_DISCONNECT, Meter, meter_log
from pzem.meter_map import MeterSpec
from pzem.energy import PhaseEnergy
from pzem.poll import (BACKOFF_SECONDS, FORCE_SECONDS, GARBLED_RETRIES, PROBE_MARGIN,
                       SEARCH_FORCE_SECONDS, START_PASSES, Poller)
from pzemsim import AcMeter, DcMeter
from sim_fixtures import modbus_bus, sim_bus  # noqa: F401 (pytest fixtures)

T0 = 1000.0
POLL_TIMEOUT = 0.1          # fake seconds a request without its own timeout waits for nothing
SCAN_TIMEOUT = 0.05         # fake seconds a discovery probe waits for nothing
SILENCE_WAIT = 0.02         # real seconds waited where the simulator has nobody to answer
ANSWER_WAIT = 1.0           # real seconds allowed for a reply the simulator will send


class Clock(object):
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


class WireBus(object):
    """A real Bus on the simulator that also moves the fake clock on by what each exchange
    costs on the wire: `reply` s when something comes back; when nothing does, `silence` s, or
    else the request's timeout (POLL_TIMEOUT when it gives none). `asked` lists (fake time,
    address) of every request, `timeouts` the timeout each read_input was given."""

    reply_seconds = None

    def __init__(self, sim, bus, clock, reply=0.0, silence=None):
        self.sim = sim
        self.bus = bus
        self.clock = clock
        self.reply = reply
        self.silence = silence
        self.asked = []
        self.timeouts = []

    def read_input(self, address, count, timeout=None):
        self.timeouts.append(timeout)
        meter = self.sim.meter(address)
        answers = meter is not None and 'silent' not in meter.faults
        return self._exchange(address, timeout, self.bus.read_input, address, count,
                              timeout=ANSWER_WAIT if answers else SILENCE_WAIT)

    def read_holding(self, address, start, count):
        assert self.sim.meter(address) is not None, 'a holding read would wait ANSWER_WAIT'
        return self._exchange(address, None, self.bus.read_holding, address, start, count)

    def _exchange(self, address, asked_timeout, call, *args, **kwargs):
        self.asked.append((self.clock(), address))
        try:
            result = call(*args, **kwargs)
        except modbus.NoReply:
            self.clock.now += self.silence if self.silence is not None else (
                asked_timeout or POLL_TIMEOUT)
            raise
        except modbus.ModbusError:
            self.clock.now += self.reply
            raise
        self.clock.now += self.reply
        return result

    def addresses(self, since=0):
        """The addresses asked, in order, from request number `since` on."""
        return [address for _, address in self.asked[since:]]


class Published(object):
    """What Poller needs of a publisher: spec, family, poll(bus), apply(spec), close(), log."""

    def __init__(self, spec, phases):
        self.spec = spec
        self.phases = phases
        self.log = meter_log('ttyPZEM0', spec.addresses)
        self.polls = 0
        self.applied = []
        self.closed = False

    @property
    def family(self):
        return self.phases[0][1].model.family

    def poll(self, bus, retry_until=None, started=None):
        missed = False
        for _, meter in self.phases:
            meter.poll(bus, retry_until=retry_until() if retry_until else None)
            missed = missed or (meter.misses > 0 and meter.connected)
        self.polls += 1
        return missed

    def apply(self, spec):
        self.applied.append(spec)
        self.spec = spec

    def close(self):
        self.closed = True


class Publish(object):
    """Poller's publish(spec, phases): records each call; `refuse` makes it fail (None)."""

    def __init__(self):
        self.calls = []
        self.refuse = False

    def __call__(self, spec, phases):
        self.calls.append((spec, phases))
        return None if self.refuse else Published(spec, phases)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def wire(sim_bus, modbus_bus, clock):  # noqa: F811 (pytest fixtures)
    """wire(*sim meters, reply=0.0, silence=None) -> (sim, WireBus on the sim's port)."""
    def make(*meters, **costs):
        sim = sim_bus(*meters)
        return sim, WireBus(sim, modbus_bus(sim, timeout=ANSWER_WAIT), clock, **costs)
    return make


def ac(address, **values):
    """A PZEM-016 drawing a plausible load."""
    options = dict(voltage=230.0, current=2.0, power=414.0, power_factor=0.9, energy_wh=5000)
    options.update(values)
    return AcMeter(address, **options)


def found(address, model):
    """Poller's found(): a meter the map does not name gets its family's default role."""
    return MeterSpec.single(address, role=roles.DEFAULT_ROLE[model.family])


# -- Meter ------------------------------------------------------------------------------------


def test_meter_disconnects_after_three_misses_in_a_row_and_is_back_at_the_first_answer(
        wire, clock, caplog):
    caplog.set_level(logging.INFO, logger='pzem')
    sim, bus = wire(ac(1))
    meter = Meter('ttyPZEM0', 1, models.AC, clock=clock)
    assert meter.poll(bus) is True and meter.connected
    assert meter.reading['voltage'] == 230.0
    kinds = ('exception', 'bad_crc', 'silent', 'silent')
    for n, kind in enumerate(kinds, 1):
        clock.now += 1.5
        sim.meter(1).inject(kind, count=1)
        changed = meter.poll(bus)
        assert meter.misses == n
        if n < MISSES_TO_DISCONNECT + 1:
            # misses for less than SECONDS_TO_DISCONNECT keep the last good reading published
            assert not changed and meter.connected and meter.reading['voltage'] == 230.0
    assert changed is True and not meter.connected and meter.reading is None
    assert meter.errors == {'no_reply': 2, 'bad_frame': 1, 'exception': 1, 'implausible': 0}
    assert 'not answering (4 polls missed in 6.2 s' in caplog.text
    sim.meter(1).set(voltage=231.0, power=415.8)
    assert meter.poll(bus) is True and meter.connected and meter.misses == 0
    assert meter.reading['voltage'] == 231.0
    assert 'answering again (was: no reply)' in caplog.text


def test_an_answer_between_misses_starts_the_count_again(wire, clock):
    sim, bus = wire(ac(1))
    meter = Meter('ttyPZEM0', 1, models.AC, clock=clock)
    meter.poll(bus)
    for _ in range(4):
        sim.meter(1).inject('bad_crc', count=MISSES_TO_DISCONNECT - 1)
        for _ in range(MISSES_TO_DISCONNECT - 1):
            assert meter.poll(bus) is False
        # an answer, even with the registers of the last one, ends the run of misses
        assert meter.poll(bus) is False
        assert meter.connected and meter.misses == 0
    assert meter.errors['bad_frame'] == 4 * (MISSES_TO_DISCONNECT - 1)


def test_unchanged_registers_are_not_fresh_and_changed_ones_are(wire, clock):
    sim, bus = wire(ac(1))
    meter = Meter('ttyPZEM0', 1, models.AC, clock=clock)
    meter.poll(bus)
    assert meter.fresh
    first = meter.reading
    clock.now += 1
    meter.poll(bus)
    assert not meter.fresh and meter.reading is first
    sim.meter(1).set(current=2.1, power=434.7)
    clock.now += 1
    meter.poll(bus)
    assert meter.fresh and meter.reading['current'] == 2.1
    sim.meter(1).inject('exception', count=1)
    meter.poll(bus)
    assert meter.fresh                          # the error counts changed
    meter.poll(bus)
    assert not meter.fresh and meter.misses == 0


def test_an_implausible_reading_is_a_miss_and_never_published(wire, clock):
    sim, bus = wire(ac(1))
    meter = Meter('ttyPZEM0', 1, models.AC, clock=clock)
    meter.poll(bus)
    sim.meter(1).set(power=3000.0)              # 230 V x 2 A cannot draw 3 kW
    assert meter.poll(bus) is False
    assert meter.reading['power'] == 414.0 and meter.errors['implausible'] == 1
    assert meter.misses == 1


def test_an_energy_drop_is_believed_when_the_next_reading_confirms_it(wire, clock):
    sim, bus = wire(ac(1, energy_wh=5000))
    meter = Meter('ttyPZEM0', 1, models.AC, clock=clock)
    meter.poll(bus)
    assert meter.reading['energy'] == 5.0
    sim.meter(1).energy_wh = 0                  # reset with 0x42 (pzemctl reset-energy)
    clock.now += 1
    meter.poll(bus)
    assert meter.reading['energy'] == 5.0 and meter.errors['implausible'] == 1
    clock.now += 1
    meter.poll(bus)
    assert meter.reading['energy'] == 0.0 and meter.misses == 0


def test_an_energy_leap_is_believed_when_the_next_reading_confirms_it(wire, clock):
    sim, bus = wire(ac(1, energy_wh=5000))
    meter = Meter('ttyPZEM0', 1, models.AC, clock=clock)
    meter.poll(bus)
    # 26 kW for 60 s is 0.433 kWh: growth within that is taken at once
    clock.now += 60
    sim.meter(1).energy_wh = 5400
    meter.poll(bus)
    assert meter.reading['energy'] == 5.4 and meter.errors['implausible'] == 0
    clock.now += 60
    sim.meter(1).energy_wh = 7400               # 2 kWh in a minute: after a long absence?
    meter.poll(bus)
    assert meter.reading['energy'] == 5.4 and meter.errors['implausible'] == 1
    clock.now += 1
    sim.meter(1).energy_wh = 7401               # it goes on from there: believed
    meter.poll(bus)
    assert meter.reading['energy'] == 7.401


def test_a_reset_the_driver_made_is_taken_at_once_and_the_totals_go_on(wire, clock):
    sim, bus = wire(ac(1, energy_wh=5000))
    meter = Meter('ttyPZEM0', 1, models.AC, clock=clock,
                  energy=PhaseEnergy(models.AC.max_kw, clock=clock, wall=clock))
    meter.poll(bus)
    clock.now += 1
    sim.meter(1).energy_wh = 5003
    meter.poll(bus)
    assert meter.energy.forward == 5.003
    sim.meter(1).energy_wh = 0                  # the driver's reset (energy_reset), read back
    meter.counter_reset(0.0)
    for counted in (1, 4):
        clock.now += 1
        sim.meter(1).energy_wh = counted
        meter.poll(bus)
        assert meter.reading['energy'] == counted / 1000.0
    # no reading was dropped, and the totals rose by what the meter counted since its zero
    assert meter.errors['implausible'] == 0 and meter.misses == 0
    assert meter.energy.forward == 5.007 and meter.energy.dropped == 0


def test_a_single_junk_energy_value_never_gets_through(wire, clock):
    sim, bus = wire(ac(1, energy_wh=5000))
    meter = Meter('ttyPZEM0', 1, models.AC, clock=clock)
    meter.poll(bus)
    seen = []
    # two different junk values in a row do not confirm each other either
    for energy_wh in (9000000, 5001, 9000000, 5002, 0, 5003, 9000000, 8000000, 5004):
        clock.now += 1
        sim.meter(1).energy_wh = energy_wh
        meter.poll(bus)
        seen.append(meter.reading['energy'])
    assert seen == [5.0, 5.001, 5.001, 5.002, 5.002, 5.003, 5.003, 5.003, 5.004]
    assert meter.errors['implausible'] == 5 and meter.connected


# -- Discovery --------------------------------------------------------------------------------


def asked_by_discovery(d, clock, until, step=1.0):
    """Run a discovery schedule on the fake clock as the poller would, one address whenever
    one is due; [(time, address)]."""
    asked = []
    while clock.now <= until:
        due = d.next_due()
        if due is not None and due[0] <= clock.now:
            assert len(asked) < 10000, 'discovery asks without end'
            d.take(due[1])
            d.asked(due[1])
            asked.append((clock.now, due[1]))
        else:
            clock.now += step
    return asked


def test_discovery_asks_the_likely_addresses_first_then_the_rest_slowly(clock):
    d = Discovery(clock, skip={1, 30})
    assert d.start_up() == [a for a in LIKELY if a != 1]
    asked = asked_by_discovery(d, clock, T0 + 4 * REST_SECONDS + 1)
    likely = [a for a in LIKELY if a != 1]
    rest = [a for a in range(17, 248) if a not in LIKELY and a != 30]
    # the likely addresses, silent, are asked once more AGAIN_SECONDS later, between the rest's
    assert AGAIN_SECONDS < REST_SECONDS
    assert asked == [(T0, a) for a in likely] + [(T0, rest[0])] + [
        (T0 + AGAIN_SECONDS, a) for a in likely] + [
        (T0 + k * REST_SECONDS, a) for k, a in enumerate(rest[:5]) if k > 0]


def test_discovery_asks_likely_addresses_again_every_minute_and_sweeps_the_rest(clock):
    d = Discovery(clock)
    sweep = 247 - len(LIKELY)
    until = sweep * REST_SECONDS + 30
    asked = asked_by_discovery(d, clock, T0 + until)
    likely_times = {}
    for at, address in asked:
        if address in LIKELY:
            likely_times.setdefault(address, []).append(at - T0)
    # silent each time: asked, once more AGAIN_SECONDS later, then LIKELY_SECONDS after that
    round_ = AGAIN_SECONDS + LIKELY_SECONDS
    expected = [t for k in range(int(until // round_) + 1)
                for t in (k * round_, k * round_ + AGAIN_SECONDS) if t <= until]
    assert len(expected) > 30
    assert all(likely_times[a] == expected for a in LIKELY)
    rest = [address for _, address in asked if address not in LIKELY]
    sweep_order = [a for a in range(1, 248) if a not in LIKELY]
    assert rest[:sweep] == sweep_order
    assert len(rest) > sweep + 5 and rest[sweep:] == sweep_order[:len(rest) - sweep]


def test_discovery_skips_what_it_is_told_and_unskip_makes_a_likely_address_due_now(clock):
    d = Discovery(clock)
    # everything likely (at T0, and once more AGAIN_SECONDS later), and 17
    asked_by_discovery(d, clock, T0 + AGAIN_SECONDS)
    d.skip([2, 18, 19])
    clock.now += 10
    assert d.next_due() == (T0 + REST_SECONDS, 21)
    d.take(21)
    assert d.next_due() == (clock.now + REST_SECONDS, 22)
    d.unskip([2])
    assert d.next_due() == (clock.now, 2)


def test_a_requested_sweep_asks_every_address_nobody_named_first_and_in_order(clock):
    d = Discovery(clock, skip={1, 2})
    asked_by_discovery(d, clock, T0 + 1)        # the likely addresses, and 17
    d.skip([40])                # a meter taken out of the map: the sweep looks for it again
    d.sweep(named={1, 2, 9})
    assert d.sweeping and d.sweep_percent() == 0.0
    asked = []
    while d.sweeping:
        _, address = d.next_due()
        d.take(address)
        d.asked(address)
        asked.append(address)
        if address == 100:
            assert d.sweep_percent() == pytest.approx(100.0 * 97 / 244)
            d.skip([120])                       # found while the sweep runs: not asked
    assert asked == [a for a in range(3, 248) if a not in (9, 120)]
    assert d.sweep_percent() == 100.0
    # after it, the background search goes on as before
    assert d.next_due()[1] in LIKELY or d.next_due()[1] == 18


def test_a_sweep_can_be_stopped_and_a_discovery_without_background_does_only_sweeps(clock):
    d = Discovery(clock, background=False)
    assert d.next_due() is None
    d.sweep(named=set())
    assert d.next_due() == (0.0, 1)
    d.take(1)
    d.stop_sweep()
    assert not d.sweeping and d.next_due() is None


# -- Poller: start-up -------------------------------------------------------------------------


def test_start_asks_the_map_first_then_the_likely_addresses(wire, clock):
    sim, bus = wire(ac(30), DcMeter(3, voltage=13.2), reply=0.01)
    publish = Publish()
    spec30, spec5 = MeterSpec.single(30, role='grid'), MeterSpec.single(5, model='ac')
    poller = Poller(bus, 'ttyPZEM0', [spec30, spec5], 1.0, publish, found=found,
                    scan_timeout=SCAN_TIMEOUT, clock=clock)
    assert poller.start(deadline=T0 + 60) == 2
    likely = [a for a in LIKELY if a != 5]
    # every address is first asked for one register (the scan timeout); then 30 is identified
    # (a holding register, then the input registers), 5 (said to be a PZEM-016) stays silent;
    # discovery's 3 is identified by its holding register, then read: it is published with its
    # first reading, as every meter is
    assert bus.addresses() == [30, 30, 30, 5] + likely[:3] + [3, 3] + likely[3:]
    assert bus.timeouts == [SCAN_TIMEOUT, None, SCAN_TIMEOUT] + [SCAN_TIMEOUT] * 3 + [None] + \
        [SCAN_TIMEOUT] * (len(likely) - 3)
    assert [spec.addresses for spec, _ in publish.calls] == [(30,), (3,)]
    assert [p.spec for p in poller.published] == [spec30, publish.calls[1][0]]
    assert publish.calls[1][1][0][1].model is models.DC
    for _, phases in publish.calls:
        assert phases[0][1].connected and phases[0][1].reading is not None
    assert [w.spec for w in poller.waiting] == [spec5]
    assert poller.answered == {30, 3}


def test_start_makes_its_passes_while_nothing_answers(wire, clock):
    sim, bus = wire(silence=0.0)
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(4, model='ac')], 1.0, Publish(),
                    found=found, scan_timeout=SCAN_TIMEOUT, clock=clock)
    assert poller.start(T0 + 60) == 0
    # the map's meter, then the likely addresses; again, while nothing answers; no more
    assert START_PASSES == 3
    assert bus.addresses() == ([4] + [a for a in LIKELY if a != 4]) * START_PASSES


def test_start_passes_end_at_the_deadline(wire, clock):
    sim, bus = wire()
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(4, model='ac')], 1.0, Publish(),
                    found=found, scan_timeout=SCAN_TIMEOUT, clock=clock)
    one_pass = len(LIKELY) * SCAN_TIMEOUT       # 4 and the likely addresses but 4
    deadline = T0 + 1.5 * one_pass
    assert poller.start(deadline) == 0
    every = [4] + [a for a in LIKELY if a != 4]
    assert len(every) < len(bus.asked) < 2 * len(every)
    assert bus.addresses() == (every * 2)[:len(bus.asked)]
    assert clock() <= deadline < clock() + SCAN_TIMEOUT + PROBE_MARGIN


def test_a_meter_whose_first_reply_is_lost_is_published_by_start_s_second_pass(
        wire, clock, caplog):
    caplog.set_level(logging.INFO, logger='pzem')
    sim, bus = wire(ac(4))
    sim.meter(4).inject('silent', count=1)
    publish = Publish()
    spec = MeterSpec.single(4, model='ac')
    poller = Poller(bus, 'ttyPZEM0', [spec], 1.0, publish, found=found,
                    scan_timeout=SCAN_TIMEOUT, clock=clock)
    assert poller.start(T0 + 60) == 1
    others = [a for a in LIKELY if a != 4]
    # pass 1: 4 is silent, and so is every likely address; pass 2: 4 is asked and read, the
    # likely addresses are asked once more; then no third pass
    assert bus.addresses() == [4] + others + [4, 4] + others
    assert [s for s, _ in publish.calls] == [spec] and not poller.waiting
    assert 'does not answer' not in caplog.text


def test_start_stops_at_the_deadline(wire, clock):
    sim, bus = wire(ac(1))
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(1, model='ac')], 1.0, Publish(),
                    found=found, scan_timeout=SCAN_TIMEOUT, clock=clock)
    deadline = T0 + 0.3
    assert poller.start(deadline) == 1
    asked = bus.addresses()
    assert asked[:2] == [1, 1]                  # asked, then read
    assert asked[2:] == [a for a in LIKELY if a != 1][:len(asked) - 2]
    assert 2 <= len(asked) - 2 < len(LIKELY) - 1
    assert bus.timeouts == [SCAN_TIMEOUT, None] + [SCAN_TIMEOUT] * (len(asked) - 2)
    # never past the deadline, and one more probe would not have fitted
    assert clock() <= deadline < clock() + SCAN_TIMEOUT + PROBE_MARGIN


def test_start_without_time_left_asks_nothing_and_the_first_tick_catches_up(wire, clock):
    sim, bus = wire(ac(1))
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(1, model='ac')], 1.0, Publish(),
                    found=found, scan_timeout=SCAN_TIMEOUT, clock=clock)
    assert poller.start(T0) == 0
    assert bus.asked == []
    poller.tick()
    assert len(poller.published) == 1
    # 1 is asked, then read; the rest of the slot (room for every silent one) goes to discovery
    assert bus.addresses() == [1, 1] + [a for a in LIKELY if a != 1] + [17]
    assert clock() + SCAN_TIMEOUT + PROBE_MARGIN <= T0 + poller.slot


def test_a_garbled_reply_is_asked_again_at_once(wire, clock):
    sim, bus = wire(ac(1))
    sim.meter(1).inject('bad_crc', count=GARBLED_RETRIES - 1)
    publish = Publish()
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(1, model='ac')], 1.0, publish,
                    scan=False, clock=clock)
    assert poller.start(T0 + 10) == 1
    # the one-register reads that are garbled, the one that is not, then the meter's read
    assert bus.addresses() == [1] * (GARBLED_RETRIES + 1)
    assert bus.timeouts == [poller.scan_timeout] * GARBLED_RETRIES + [None]


def test_a_meter_that_only_garbles_waits_its_backoff_after_the_retries(wire, clock):
    sim, bus = wire(ac(1))
    sim.meter(1).inject('bad_crc')
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(1, model='ac')], 1.0, Publish(),
                    scan=False, clock=clock)
    assert poller.start(T0 + 10) == 0
    # nothing is published, so start makes all its passes: each one the retries and no more
    assert bus.addresses() == [1] * GARBLED_RETRIES * START_PASSES
    assert poller.waiting[0].due == T0 + BACKOFF_SECONDS[0]
    sim.meter(1).clear_faults()
    asked = len(bus.asked)
    clock.now = T0 + BACKOFF_SECONDS[0] - 0.5
    poller.tick()
    assert len(bus.asked) == asked
    clock.now = T0 + BACKOFF_SECONDS[0]
    poller.tick()
    assert bus.asked[asked:] == [(T0 + BACKOFF_SECONDS[0], 1)] * 2     # asked, read
    assert len(poller.published) == 1


def test_a_garbled_unmapped_address_is_asked_again_at_once_then_left_for_a_minute(wire, clock):
    sim, bus = wire(ac(2))
    sim.meter(2).inject('bad_crc')
    poller = Poller(bus, 'ttyPZEM0', [], 1.0, Publish(), found=found,
                    scan_timeout=SCAN_TIMEOUT, clock=clock)
    assert poller.start(T0 + 0.2) == 0
    assert bus.addresses() == [1] + [2] * GARBLED_RETRIES + [3, 4]
    step = 0.5
    while clock.now < T0 + AGAIN_SECONDS + LIKELY_SECONDS + 2 * step:
        clock.now += step
        poller.tick()
    times = {}
    for at, address in bus.asked:
        times.setdefault(address, []).append(at)
    # each time GARBLED_RETRIES requests at once; like the silent 1, once more AGAIN_SECONDS
    # later (as soon as a tick comes), then it waits its minute
    first, again, minute = times[2][::GARBLED_RETRIES]
    assert times[2] == [first] * GARBLED_RETRIES + [again] * GARBLED_RETRIES + [
        minute] * GARBLED_RETRIES
    assert first == T0 + SCAN_TIMEOUT
    assert AGAIN_SECONDS <= again - first < AGAIN_SECONDS + step
    assert LIKELY_SECONDS <= minute - again < LIKELY_SECONDS + step
    assert len(times[1]) == 3 and times[1][1] - times[1][0] < AGAIN_SECONDS + step


def test_a_likely_address_whose_reply_was_lost_is_asked_again_after_3_s(wire, clock):
    sim, bus = wire(ac(1), ac(5))
    sim.meter(5).inject('silent', count=1)      # the start's probe of 5 gets no reply
    publish = Publish()
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(1, model='ac')], 1.0, publish,
                    found=found, scan_timeout=SCAN_TIMEOUT, clock=clock)
    assert poller.start(T0 + 60) == 1           # 1 answers: one pass
    assert [a for a in bus.addresses() if a == 5] == [5] and not poller.waiting
    step = 0.5
    while len(poller.published) < 2 and clock.now < T0 + LIKELY_SECONDS:
        clock.now += step
        poller.tick()
    times = [at for at, a in bus.asked if a == 5]
    first, again = times[:2]
    # asked once more AGAIN_SECONDS later (at the first tick then, and within its slot), then
    # identified (holding register refused: a PZEM-016, whose input registers are read) and
    # published: no minute's wait
    assert times == [first] + [again] * 3
    assert AGAIN_SECONDS <= again - first < AGAIN_SECONDS + step + poller.slot
    assert [p.spec.addresses for p in poller.published] == [(1,), (5,)]


# -- Poller: the poll loop --------------------------------------------------------------------


def test_a_silent_mapped_meter_costs_one_scan_timeout_not_a_poll_timeout(wire, clock):
    sim, bus = wire()
    group = MeterSpec((('L1', 1), ('L2', 2)), role='grid', group='house')
    specs = [MeterSpec.single(4, model='ac'), MeterSpec.single(5), group]
    poller = Poller(bus, 'ttyPZEM0', specs, 1.0, Publish(), scan=False,
                    scan_timeout=SCAN_TIMEOUT, clock=clock)
    assert poller.start(T0 + 10) == 0
    # nothing answers: start makes its START_PASSES passes over the map, no more
    assert bus.addresses() == [4, 5, 1, 2] * START_PASSES
    assert bus.timeouts == [SCAN_TIMEOUT] * 4 * START_PASSES
    assert clock() == pytest.approx(T0 + 4 * SCAN_TIMEOUT * START_PASSES)


def test_a_silent_mapped_meter_is_asked_again_after_growing_pauses(wire, clock, caplog):
    caplog.set_level(logging.INFO, logger='pzem')
    sim, bus = wire(silence=0.0)
    publish = Publish()
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(4, model='ac')], 1.0, publish,
                    scan=False, clock=clock)
    assert poller.start(T0 + 10) == 0
    assert 'the map names a meter here, but it does not answer' in caplog.text
    # start's passes ask it at once (no time passes: silence=0.0); each counts as a silence
    backoffs = BACKOFF_SECONDS[START_PASSES - 1:]
    end = T0 + sum(backoffs) + BACKOFF_SECONDS[-1]
    while clock.now < end:
        clock.now += 0.5
        poller.tick()
    times = [at for at, _ in bus.asked]
    pauses = [b - a for a, b in zip(times, times[1:])]
    assert pauses == [0.0] * (START_PASSES - 1) + list(backoffs) + [BACKOFF_SECONDS[-1]]
    sim.add(ac(4))
    for _ in range(int(BACKOFF_SECONDS[-1] / 0.5)):
        clock.now += 0.5
        poller.tick()
    assert len(poller.published) == 1 and not poller.waiting
    assert 'answering now' in caplog.text


def tick_slots(poller, clock, start, ticks):
    """Tick `ticks` times, one slot apart on the fake clock."""
    for k in range(ticks):
        clock.now = start + k * poller.slot
        poller.tick()


def test_discovery_waits_for_room_in_the_slot_and_is_forced_after_a_while(wire, clock):
    # each poll takes 0.2 s of a 0.25 s slot: no room for a 0.07 s probe
    sim, bus = wire(ac(1), reply=0.2)
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(1, model='ac')], 0.25, Publish(),
                    found=found, scan_timeout=SCAN_TIMEOUT, clock=clock)
    assert poller.start(T0 + 0.1) == 1 and bus.addresses() == [1, 1]    # asked, then read
    start = T0 + 1
    forced = int(FORCE_SECONDS / 0.25)
    tick_slots(poller, clock, start, 2 * forced + 2)
    assert poller.published[0].polls == 2 * forced + 2
    probes = [(at, a) for at, a in bus.asked[1:] if a != 1]
    # a probe goes right after the poll of the tick FORCE_SECONDS after the first tick that
    # had one waiting; the count starts again with the next tick
    assert probes == [(pytest.approx(start + forced * 0.25 + 0.2), 2),
                      (pytest.approx(start + (2 * forced + 1) * 0.25 + 0.2), 3)]


def test_discovery_probes_while_the_slot_has_room_and_never_past_it(wire, clock):
    sim, bus = wire(ac(1), reply=0.2)
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(1, model='ac')], 1.0, Publish(),
                    found=found, scan_timeout=SCAN_TIMEOUT, clock=clock)
    assert poller.start(T0 + 0.1) == 1
    asked = len(bus.asked)
    start = T0 + 1
    tick_slots(poller, clock, start, 3)
    # each slot: the poll (0.2 s), then silent probes (SCAN_TIMEOUT each) while one more fits
    fits = int((poller.slot - 0.2 - SCAN_TIMEOUT - PROBE_MARGIN) / SCAN_TIMEOUT + 1e-9) + 1
    assert fits > 2
    likely = [a for a in LIKELY if a != 1] + [17]
    assert bus.addresses(asked) == [1] + likely[:fits] + [1] + likely[fits:2 * fits] + [1]
    for at, address in bus.asked[asked:]:
        k = int((at - start) // poller.slot)
        if address != 1:
            assert at + SCAN_TIMEOUT + PROBE_MARGIN <= start + (k + 1) * poller.slot


def test_a_polling_thread_makes_the_search_s_silent_asks_itself_at_tick_s_times(wire, clock):
    # The driver's poll thread calls poll_next() and wants_probe(), and has the main loop run
    # probe(started) only when wants_probe() says so. The search's asks, which nearly always
    # meet silence, wants_probe() makes itself: here the forced one, when tick() would make it.
    sim, bus = wire(ac(1), reply=0.2)
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(1, model='ac')], 0.25, Publish(),
                    found=found, scan_timeout=SCAN_TIMEOUT, clock=clock)
    assert poller.start(T0 + 0.1) == 1
    start = T0 + 1
    forced = int(FORCE_SECONDS / 0.25)
    for k in range(2 * forced + 2):
        clock.now = max(clock.now, start + k * 0.25)
        assert not poller.wants_probe(poller.poll_next())
    # as in test_discovery_waits_for_room_in_the_slot_and_is_forced_after_a_while
    assert [(at, a) for at, a in bus.asked[1:] if a != 1] == [
        (pytest.approx(start + forced * 0.25 + 0.2), 2),
        (pytest.approx(start + (2 * forced + 1) * 0.25 + 0.2), 3)]
    quiet = Poller(bus, 'ttyPZEM0', [], 1.0, Publish(), scan=False, clock=clock)
    assert not quiet.wants_probe(quiet.poll_next())     # nothing to probe, ever


def test_a_requested_search_on_a_port_without_one_finds_a_meter_and_tells_its_progress(
        wire, clock):
    # each poll takes 0.2 s of a 0.25 s slot: no room, so the search is forced, every
    # SEARCH_FORCE_SECONDS instead of FORCE_SECONDS
    sim, bus = wire(ac(1), ac(4), reply=0.2, silence=SCAN_TIMEOUT)
    changes = []
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(1, model='ac')], 0.25, Publish(),
                    found=found, scan=False, scan_timeout=SCAN_TIMEOUT, clock=clock,
                    changed=lambda: changes.append(clock.now))
    assert poller.start(T0 + 0.1) == 1 and len(changes) == 1    # 1 published
    assert poller.search_percent() is None and poller.discovery is None
    poller.search(True)
    assert poller.search_percent() == 0.0
    start = T0 + 1
    tick_slots(poller, clock, start, int(4 * SEARCH_FORCE_SECONDS / 0.25) + 2)
    probes = [(at - start, a) for at, a in bus.asked[2:] if a != 1]
    assert [a for _, a in probes][:3] == [2, 3, 4]
    assert probes[2][0] < 4 * SEARCH_FORCE_SECONDS < FORCE_SECONDS
    assert [p.spec.address for p in poller.published] == [1, 4] and len(changes) == 2
    assert poller.search_percent() == pytest.approx(100.0 * 3 / 246)
    poller.search(False)
    assert poller.search_stopped and poller.search_percent() is None
    assert poller.discovery is None             # the port searches no more by itself
    before = len(bus.asked)
    tick_slots(poller, clock, clock.now + 1, int(FORCE_SECONDS / poller.slot) + 2)
    assert {a for _, a in bus.asked[before:]} == {1, 4}


def test_apply_map_tells_that_the_meters_changed(wire, clock):
    sim, bus = wire(ac(1))
    changes = []
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(1, model='ac')], 1.0, Publish(),
                    scan=False, scan_timeout=SCAN_TIMEOUT, clock=clock,
                    changed=lambda: changes.append('changed'))
    poller.start(T0 + 0.1)
    poller.apply_map([MeterSpec.single(1, model='ac', name='Pump')])
    assert changes == ['changed', 'changed']


def test_a_polling_thread_hands_over_an_address_that_answers_and_the_map_s_meters(wire, clock):
    sim, bus = wire(ac(1))
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(1, model='ac'),
                                      MeterSpec.single(4, model='ac')], 1.0, Publish(),
                    found=found, scan_timeout=SCAN_TIMEOUT, clock=clock)
    assert poller.start(T0 + 0.1) == 1 and bus.addresses() == [1, 1, 4]     # 4 is silent
    sim.add(ac(5))
    handed = []
    for k in range(4):
        clock.now = T0 + 1 + k
        started = poller.poll_next()
        before = len(bus.asked)
        if poller.wants_probe(started):
            handed.append((k, bus.addresses(before)))
            poller.probe(started)
    # tick 0: the thread asks 2 and 3 (silent), then 5, which answers: handed over, and
    # probe() asks 5 again, identifies it (a holding read refused, the input read), publishes
    # it and goes on with the search while the slot has room (up to 12). Tick 1 polls 5; the
    # thread asks 13, after which 4, the map's, is due: handed over unasked; probe() asks it.
    assert handed == [(0, [2, 3, 5]), (1, [13])]
    assert bus.addresses(3)[:7] == [1, 2, 3, 5, 5, 5, 5]
    assert [p.spec.addresses for p in poller.published] == [(1,), (5,)]
    tick_1 = bus.addresses(3).index(13) - 1
    assert bus.addresses(3)[tick_1:tick_1 + 3] == [5, 13, 4]


def test_a_polling_thread_hands_over_a_garbled_address_for_its_retries(wire, clock):
    sim, bus = wire(ac(1))
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(1, model='ac')], 1.0, Publish(),
                    found=found, scan_timeout=SCAN_TIMEOUT, clock=clock)
    assert poller.start(T0 + 0.1) == 1 and bus.addresses() == [1, 1, 2]
    sim.add(ac(3))
    sim.meter(3).inject('bad_crc', count=1)
    clock.now = T0 + 1
    started = poller.poll_next()
    assert poller.wants_probe(started)          # 3 garbled: something is there
    assert bus.addresses(3) == [1, 3]
    poller.probe(started)                       # asked again at once: identified, published
    assert bus.addresses(3)[:5] == [1, 3, 3, 3, 3]
    assert [p.spec.addresses for p in poller.published] == [(1,), (3,)]


def test_each_tick_polls_the_next_published_meter(wire, clock):
    sim, bus = wire(ac(1), ac(2))
    specs = [MeterSpec.single(1, model='ac'), MeterSpec.single(2, model='ac')]
    poller = Poller(bus, 'ttyPZEM0', specs, 1.0, Publish(), scan=False, clock=clock)
    assert poller.start(T0 + 10) == 2
    assert poller.slot == 0.5
    for _ in range(5):
        poller.tick()
    # start asks each, then reads it; each tick reads one
    assert bus.addresses() == [1, 1, 2, 2] + [1, 2, 1, 2, 1]
    assert [p.polls for p in poller.published] == [3, 2]


def test_a_failed_read_is_asked_again_at_once_while_the_slot_has_room(wire, clock):
    sim, bus = wire(ac(1), reply=0.05)
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(1, role='grid')], 1.0, Publish(),
                    scan=False, clock=clock)
    poller.start(T0 + 10)
    since = len(bus.asked)
    sim.meter(1).inject('bad_crc', count=3)
    poller.tick()
    # one meter, a 1-s slot: room for several tries, each 0.05 s on the fake clock
    assert bus.addresses(since) == [1, 1, 1, 1]
    assert poller.published[0].phases[0][1].misses == 0


def test_a_meter_whose_poll_missed_takes_every_other_slot_until_it_answers(wire, clock):
    sim, bus = wire(ac(1), ac(2), ac(3), reply=0.01)
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(a, role='acload') for a in (1, 2, 3)],
                    0.3, Publish(), scan=False, clock=clock)
    poller.start(T0 + 10)
    since = len(bus.asked)
    # a 0.1-s slot has no room to ask again within it: the next slot is the meter's
    sim.meter(1).inject('no_reply', count=1)
    for _ in range(4):
        poller.tick()
    assert bus.addresses(since) == [1, 1, 2, 3]
    since = len(bus.asked)
    sim.meter(1).inject('no_reply', count=3)
    for _ in range(7):
        poller.tick()
    # every other slot, not one after the other: the others keep their turns between
    assert bus.addresses(since) == [1, 1, 2, 1, 3, 1, 1]


def test_a_meter_that_went_invalid_takes_no_extra_slots(wire, clock):
    sim, bus = wire(ac(1), ac(2), reply=0.01, silence=0.9)
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(a, role='acload') for a in (1, 2)],
                    0.2, Publish(), scan=False, clock=clock)
    poller.start(T0 + 10)
    sim.meter(1).inject('silent')
    while poller.published[0].phases[0][1].connected:
        poller.tick()
    since = len(bus.asked)
    for _ in range(6):
        poller.tick()
    assert bus.addresses(since) in ([1, 2] * 3, [2, 1] * 3)


def test_a_group_is_published_when_one_phase_answers(wire, clock):
    sim, bus = wire(ac(2))
    publish = Publish()
    group = MeterSpec((('L1', 1), ('L2', 2), ('L3', 3)), role='grid', group='house')
    poller = Poller(bus, 'ttyPZEM0', [group], 1.0, publish, scan=False, clock=clock)
    assert poller.start(T0 + 10) == 1
    # each phase is asked for one register; each that answers is read, and one is enough
    assert bus.addresses() == [1, 2, 2, 3]
    assert bus.timeouts == [poller.scan_timeout] * 2 + [None, poller.scan_timeout]
    (spec, phases), = publish.calls
    assert spec == group
    assert [(phase, m.address, m.model) for phase, m in phases] == [
        ('L1', 1, models.AC), ('L2', 2, models.AC), ('L3', 3, models.AC)]
    assert [m.reading is not None for _, m in phases] == [False, True, False]
    sim.add(ac(3))
    poller.tick()
    assert [m.connected for _, m in phases] == [False, True, True]


def test_a_group_is_published_with_every_phase_s_first_reading(wire, clock):
    sim, bus = wire(ac(4), ac(5), ac(6))
    publish = Publish()
    group = MeterSpec((('L1', 4), ('L2', 5), ('L3', 6)), role='grid', group='house')
    poller = Poller(bus, 'ttyPZEM0', [group], 1.0, publish, scan=False, clock=clock)
    # right after power-up: nonsense, for the brief ask and the first read
    sim.meter(5).inject('junk_values', count=2)
    assert poller.start(T0 + 10) == 1
    (spec, phases), = publish.calls
    assert [m.connected and m.reading['voltage'] for _, m in phases] == [230.0] * 3
    assert phases[1][1].errors['implausible'] == 1


def test_a_dc_meter_is_published_with_its_first_reading(wire, clock):
    sim, bus = wire(DcMeter(3, voltage=13.2, current=2.0, power=26.4))
    publish = Publish()
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(3, role='dcsource')], 1.0, publish,
                    scan=False, clock=clock)
    assert poller.start(T0 + 10) == 1
    meter = publish.calls[0][1][0][1]
    assert meter.model is models.DC and meter.connected and meter.reading['voltage'] == 13.2


def test_a_meter_that_answers_without_a_good_reading_is_not_published_yet(wire, clock):
    sim, bus = wire(ac(1))
    publish = Publish()
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(1, role='grid')], 1.0, publish,
                    scan=False, clock=clock)
    sim.meter(1).inject('junk_values')
    assert poller.start(T0 + 10) == 0 and not publish.calls
    assert poller.waiting and 1 in poller.answered
    sim.meter(1).clear_faults()
    clock.now += BACKOFF_SECONDS[0]
    poller.tick()
    assert len(publish.calls) == 1 and publish.calls[0][1][0][1].connected


def test_a_group_with_no_phase_answering_waits(wire, clock):
    sim, bus = wire(silence=0.0)
    publish = Publish()
    group = MeterSpec((('L1', 1), ('L2', 2)), role='grid', group='house')
    poller = Poller(bus, 'ttyPZEM0', [group], 1.0, publish, scan=False, clock=clock)
    assert poller.start(T0 + 10) == 0
    # one register each, no more, in each of start's passes
    assert bus.addresses() == [1, 2] * START_PASSES and not publish.calls
    assert bus.timeouts == [poller.scan_timeout] * 2 * START_PASSES
    assert poller.waiting[0].due == T0 + BACKOFF_SECONDS[START_PASSES - 1]


def test_a_role_of_the_other_family_is_refused_and_not_asked_again(wire, clock, caplog):
    sim, bus = wire(DcMeter(3, voltage=13.2))
    publish = Publish()
    spec = MeterSpec.single(3, role='grid')
    poller = Poller(bus, 'ttyPZEM0', [spec], 1.0, publish, found=found,
                    scan_timeout=SCAN_TIMEOUT, clock=clock)
    assert poller.start(T0 + 0.1) == 0
    assert not publish.calls and poller.refused == [spec] and not poller.waiting
    assert 'a DC meter (PZEM-017) answers, but the map gives it role grid' in caplog.text
    assert 3 in poller.answered
    while clock.now < T0 + AGAIN_SECONDS + 1:
        clock.now += 0.5
        poller.tick()
    # asked, then identified by its shunt range register; then discovery passes it by, also
    # when it asks the likely addresses once more
    assert bus.addresses()[:2] == [3, 3] and 3 not in bus.addresses(2)
    assert all(bus.addresses().count(a) == 2 for a in LIKELY if a != 3)


def test_a_publish_that_fails_leaves_the_meter_waiting(wire, clock):
    sim, bus = wire(ac(1))
    publish = Publish()
    publish.refuse = True
    poller = Poller(bus, 'ttyPZEM0', [MeterSpec.single(1, model='ac')], 1.0, publish,
                    scan=False, clock=clock)
    assert poller.start(T0 + 10) == 0
    # nothing published: each of start's passes tries again
    assert len(publish.calls) == START_PASSES
    assert poller.waiting[0].due == T0 + BACKOFF_SECONDS[1]
    publish.refuse = False
    clock.now = T0 + BACKOFF_SECONDS[1] - 0.5
    poller.tick()
    assert len(publish.calls) == START_PASSES
    clock.now = T0 + BACKOFF_SECONDS[1]
    poller.tick()
    assert len(poller.published) == 1 and len(publish.calls) == START_PASSES + 1


# -- Poller: following the map ----------------------------------------------------------------


def does_not_answer(caplog, address):
    """The "does not answer" warnings logged for `address`."""
    return [r for r in caplog.records if 'but it does not answer' in r.getMessage() and
            r.getMessage().startswith('ttyPZEM0:%d:' % address)]


def test_a_silent_mapped_meter_is_reported_once_and_a_map_edit_keeps_that(wire, clock, caplog):
    caplog.set_level(logging.INFO, logger='pzem')
    sim, bus = wire(silence=0.0)
    four = MeterSpec.single(4, model='ac')
    poller = Poller(bus, 'ttyPZEM0', [four], 1.0, Publish(), scan=False, clock=clock)
    assert poller.start(T0 + 10) == 0
    assert len(does_not_answer(caplog, 4)) == 1
    waiting, = poller.waiting
    due, silent = waiting.due, waiting.silent
    # a new role for 4, and 6 added: 4 keeps its silence count and its next time
    four_grid, six = MeterSpec.single(4, model='ac', role='grid'), MeterSpec.single(6)
    poller.apply_map([four_grid, six])
    assert [w.spec for w in poller.waiting] == [four_grid, six]
    assert poller.waiting[0] is waiting and (waiting.due, waiting.silent) == (due, silent)
    assert not does_not_answer(caplog, 6)
    asked = len(bus.asked)
    clock.now += 1
    poller.tick()                               # 6 is asked: silent, and reported after start
    assert bus.addresses(asked) == [6]
    assert len(does_not_answer(caplog, 6)) == 1
    asked = len(bus.asked)
    end = clock.now + 2 * BACKOFF_SECONDS[-1]
    while clock.now < end:
        clock.now += 1
        poller.tick()
    # both asked again and again, neither reported again
    assert bus.addresses(asked).count(4) > 2 and bus.addresses(asked).count(6) > 2
    assert len(does_not_answer(caplog, 4)) == 1 and len(does_not_answer(caplog, 6)) == 1
    assert 'role grid' not in caplog.text       # the warning was not repeated for the new role


def started_with(wire, clock, specs, *meters, deadline=T0 + 0.1):
    """A started Poller with discovery, on a simulator with `meters`."""
    sim, bus = wire(*meters)
    publish = Publish()
    poller = Poller(bus, 'ttyPZEM0', specs, 1.0, publish, found=found,
                    scan_timeout=SCAN_TIMEOUT, clock=clock)
    poller.start(deadline)
    return sim, bus, publish, poller


def test_apply_map_changes_roles_in_place_closes_removed_meters_and_waits_for_new_ones(
        wire, clock):
    # 1 is in the map; 2 is found by discovery (and added to the map by found())
    one = MeterSpec.single(1, role='acload')
    sim, bus, publish, poller = started_with(wire, clock, [one], ac(1), ac(2),
                                             deadline=T0 + 60)
    first, second = poller.published
    assert second.spec == MeterSpec.single(2, role='acload')
    asked = len(bus.asked)
    one_genset, five = MeterSpec.single(1, role='genset'), MeterSpec.single(5, model='ac')
    poller.apply_map([one_genset, five])        # 2 taken out, 5 added
    assert first.applied == [one_genset] and not first.closed
    assert second.closed and poller.published == [first]
    assert [w.spec for w in poller.waiting] == [five]
    clock.now += LIKELY_SECONDS + 1             # every likely address is due again
    for _ in range(4):
        poller.tick()
        clock.now += 1
    # the new meter first; then discovery (the rest's first address, and the likely ones in
    # the order they were asked before), without 2
    probes = [a for a in bus.addresses(asked) if a != 1]
    assert probes[:4] == [5, 17, 3, 4]
    assert 2 not in probes and set(LIKELY) - {1, 2} <= set(probes)
    assert len(publish.calls) == 2


def test_apply_map_with_a_role_of_the_other_family_takes_the_meter_off(wire, clock):
    one = MeterSpec.single(1, role='acload')
    sim, bus, publish, poller = started_with(wire, clock, [one], ac(1))
    published, = poller.published
    one_dc = MeterSpec.single(1, role='dcload')
    poller.apply_map([one_dc])
    assert published.closed and not published.applied and not poller.published
    poller.tick()
    assert poller.refused == [one_dc] and not poller.waiting


def test_apply_map_moves_a_meter_into_a_group(wire, clock):
    one = MeterSpec.single(1, role='acload')
    sim, bus, publish, poller = started_with(wire, clock, [one], ac(1), ac(2))
    group = MeterSpec((('L1', 1), ('L2', 2)), role='grid', group='house')
    single_one, found_two = poller.published
    poller.apply_map([group])
    assert single_one.closed and found_two.closed and not poller.published
    poller.tick()
    assert [p.spec for p in poller.published] == [group]


def test_a_meter_taken_out_of_the_map_during_its_garbled_retries_is_not_asked_again(
        wire, clock):
    sim, bus = wire(ac(1), reply=1.0)           # a reply takes a whole slot
    spec = MeterSpec.single(1, model='ac')
    publish = Publish()
    poller = Poller(bus, 'ttyPZEM0', [spec], 1.0, publish, scan=False, clock=clock)
    sim.meter(1).inject('bad_crc', count=1)
    poller.tick()                               # garbled: to be asked again at the next tick
    assert poller.slot == 1.0 and bus.addresses() == [1]
    poller.apply_map([])
    sim.meter(1).clear_faults()
    poller.tick()
    assert bus.addresses() == [1] and not publish.calls


def test_a_meter_taken_out_of_the_map_during_its_garbled_retries_is_not_found_again(
        wire, clock):
    sim, bus = wire(ac(1), reply=1.0)           # a reply takes a whole slot
    spec = MeterSpec.single(1, model='ac')
    publish = Publish()
    poller = Poller(bus, 'ttyPZEM0', [spec], 1.0, publish, found=found,
                    scan_timeout=SCAN_TIMEOUT, clock=clock)
    sim.meter(1).inject('bad_crc', count=1)
    poller.tick()                               # garbled: to be asked again at the next tick
    assert bus.addresses() == [1]
    poller.apply_map([])
    sim.meter(1).clear_faults()
    poller.tick()
    # found() would write it back into the map the user just took it out of
    assert not publish.calls and not poller.published
    assert 1 not in bus.addresses(1) and len(bus.asked) > 2     # discovery went on without it


def test_a_device_that_answers_but_is_no_pzem_does_not_hold_up_the_start(wire, clock):
    sim, bus = wire(ac(2), reply=0.05)
    sim.meter(2).inject('exception')            # refuses every request: not a PZEM
    poller = Poller(bus, 'ttyPZEM0', [], 1.0, Publish(), found=found,
                    scan_timeout=SCAN_TIMEOUT, clock=clock)
    poller.start(T0 + 2)
    assert 3 in bus.addresses()


def test_a_device_that_answers_but_is_no_pzem_does_not_starve_the_map_s_meters(wire, clock):
    sim, bus = wire(ac(2), reply=0.01, silence=0.0)
    sim.meter(2).inject('exception')
    spec = MeterSpec.single(4, model='ac')
    poller = Poller(bus, 'ttyPZEM0', [spec], 1.0, Publish(), found=found,
                    scan_timeout=SCAN_TIMEOUT, clock=clock)
    poller.start(T0 + 0.3)                      # 4 (silent), then 1, and 2 (refuses all)
    assert bus.addresses()[:3] == [4, 1, 2]
    asked = len(bus.asked)
    for _ in range(10):
        clock.now += 1
        poller.tick()
    assert 4 in bus.addresses(asked)            # its backoff (2 s) is over long before
