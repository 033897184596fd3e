"""Direction and energy in the real driver (issue 10): signed power from a VE.Bus stand-in, the
Forward/Reverse split, counters that never run backwards, the ESS warning and the default roles."""
import dbus
import pytest

from driver_rig import SETTINGS, Rig
from pzemsim import AcMeter, DcMeter

# no search for other meters: it would only slow the start down here
NO_SCAN = '[bus]\nscan = no\n'
SIGNED = NO_SCAN + '[1]\nrole = grid\nsign = vebus\n'
GRID = NO_SCAN + '[1]\nrole = grid\n'
ENERGY_SETTING = '/Settings/Devices/pzem_ttyPZEM0_1/Energy'
ESS_SETTING = '/Settings/CGwacs/RunWithoutGridMeter'
UNSIGNED_WARNING = 'ttyPZEM0:%d: a grid meter without sign = vebus, while ESS regulates on an ' \
                   'external grid meter'

# Replies come late on a busy machine (the simulator shares the test's process): a longer reply
# timeout than the rig's default keeps a slow reply from counting as a missed poll.
PATIENT = ('--interval', '0.2', '--timeout', '0.5')


def patient(tmp_path, meters, text, **options):
    return Rig(tmp_path, meters, text, driver_args=PATIENT, **options)


def multi_input_meter(address=1, energy_wh=1000):
    # 9.2 kW through the Multi's AC input: what it takes in, or what it feeds back
    return AcMeter(address, voltage=230.0, current=40.0, power=9200.0, energy_wh=energy_wh,
                   power_factor=1.0)


def invalid(value):
    return isinstance(value, dbus.Array) and len(value) == 0


def approx(value):
    return lambda v: not invalid(v) and v == pytest.approx(value, abs=1e-9)


def count(rig, meter, seconds):
    """Let the simulated meter count energy at its power for `seconds`; the Wh it counted."""
    before = int(meter.energy_wh)
    meter.accumulate = True
    rig.pump(seconds)
    meter.accumulate = False
    return int(meter.energy_wh) - before


def set_p(rig, vebus, phase, watts):
    assert rig.client.set_value(vebus, '/Ac/ActiveIn/L%d/P' % phase, float(watts)) == 0


@pytest.fixture
def signed(tmp_path):
    """A grid meter with sign = vebus at the input of a single-phase Multi that imports 2 kW."""
    with patient(tmp_path, [multi_input_meter()], SIGNED) as rig:
        rig.vebus = rig.start_vebus(power=(2000.0,))
        rig.start_driver()
        rig.grid = rig.wait_service(rig.service('grid', 1))
        rig.wait_value(rig.grid, '/Ac/L1/Power', approx(9200.0))
        yield rig


def test_power_and_current_follow_the_multi(signed):
    rig, grid = signed, signed.grid
    assert rig.value(grid, '/Ac/L1/Current') == pytest.approx(40.0)
    assert rig.value(grid, '/Ac/Power') == pytest.approx(9200.0)

    set_p(rig, rig.vebus, 1, -9200)                         # feeding back
    rig.wait_value(grid, '/Ac/L1/Power', approx(-9200.0))
    assert rig.value(grid, '/Ac/L1/Current') == pytest.approx(-40.0)
    assert rig.value(grid, '/Ac/Power') == pytest.approx(-9200.0)

    for watts in (0, 25, -25):                              # inside the dead band: sign kept
        set_p(rig, rig.vebus, 1, watts)
        rig.wait_polls(rig.meters[1], 3)
        rig.client.sync(grid)
        assert rig.value(grid, '/Ac/L1/Power') == pytest.approx(-9200.0), watts
        assert rig.value(grid, '/Ac/Power') == pytest.approx(-9200.0), watts

    set_p(rig, rig.vebus, 1, 100)                           # clearly importing again
    rig.wait_value(grid, '/Ac/L1/Power', approx(9200.0))
    assert rig.value(grid, '/Ac/L1/Current') == pytest.approx(40.0)

    set_p(rig, rig.vebus, 1, -5000)
    rig.wait_value(grid, '/Ac/Power', approx(-9200.0))
    rig.stop_vebus(rig.vebus)                               # no Multi: nothing can feed back
    rig.wait_value(grid, '/Ac/Power', approx(9200.0))
    assert rig.value(grid, '/Ac/L1/Current') == pytest.approx(40.0)
    assert rig.driver.poll() is None


def test_vebus_key_picks_the_multi_and_a_multi_that_is_off_feeds_nothing_back(tmp_path):
    text = NO_SCAN + '[1]\nrole = grid\nsign = vebus\nvebus = 277\n'
    with patient(tmp_path, [multi_input_meter()], text) as rig:
        rig.start_vebus('ttyS4', 276, (2000.0,))               # the lowest instance imports
        other = rig.start_vebus('ttyS5', 277, (-9200.0,))      # the one the map names exports
        rig.start_driver()
        grid = rig.wait_service(rig.service('grid', 1))
        rig.wait_value(grid, '/Ac/Power', approx(-9200.0))
        assert rig.client.set_value(other, '/State', 0) == 0    # switched off
        rig.wait_value(grid, '/Ac/Power', approx(9200.0))
        assert rig.client.set_value(other, '/State', 9) == 0
        rig.wait_value(grid, '/Ac/Power', approx(-9200.0))


def test_energy_is_split_by_the_direction_it_was_counted_in(signed):
    rig, grid, meter = signed, signed.grid, signed.meters[1]
    rig.wait_value(grid, '/Ac/Energy/Forward', approx(1.0))
    assert rig.value(grid, '/Ac/Energy/Reverse') == 0.0             # valid, not invalid
    assert rig.value(grid, '/Ac/L1/Energy/Reverse') == 0.0

    imported = count(rig, meter, 1.5)
    assert imported > 0
    rig.wait_value(grid, '/Ac/Energy/Forward', approx(1.0 + imported / 1000.0))
    assert rig.value(grid, '/Ac/L1/Energy/Forward') == pytest.approx(1.0 + imported / 1000.0)
    assert rig.value(grid, '/Ac/Energy/Reverse') == 0.0

    set_p(rig, rig.vebus, 1, -9200)
    rig.wait_value(grid, '/Ac/Power', approx(-9200.0))
    exported = count(rig, meter, 1.5)
    assert exported > 0
    rig.wait_value(grid, '/Ac/Energy/Reverse', approx(exported / 1000.0))
    assert rig.value(grid, '/Ac/L1/Energy/Reverse') == pytest.approx(exported / 1000.0)
    assert rig.value(grid, '/Ac/Energy/Forward') == pytest.approx(1.0 + imported / 1000.0)

    set_p(rig, rig.vebus, 1, 3000)
    rig.wait_value(grid, '/Ac/Power', approx(9200.0))
    again = count(rig, meter, 1.0)
    rig.wait_value(grid, '/Ac/Energy/Forward', approx(1.0 + (imported + again) / 1000.0))
    assert rig.value(grid, '/Ac/Energy/Reverse') == pytest.approx(exported / 1000.0)


def test_without_a_sign_reverse_stays_invalid_and_all_counted_is_import(tmp_path):
    with patient(tmp_path, [multi_input_meter()], GRID) as rig:
        rig.start_vebus(power=(-9200.0,))                   # the Multi feeds back; nobody asks
        rig.start_driver()
        grid = rig.wait_service(rig.service('grid', 1))
        rig.wait_value(grid, '/Ac/Energy/Forward', approx(1.0))
        counted = count(rig, rig.meters[1], 1.0)
        rig.wait_value(grid, '/Ac/Energy/Forward', approx(1.0 + counted / 1000.0))
        assert rig.value(grid, '/Ac/Power') == pytest.approx(9200.0)
        assert invalid(rig.value(grid, '/Ac/Energy/Reverse'))
        assert invalid(rig.value(grid, '/Ac/L1/Energy/Reverse'))


class Forward(object):
    """Every value of /Ac/Energy/Forward and /Ac/L1/Energy/Forward seen: read many times, and
    each one the service announced."""

    PATHS = ('/Ac/Energy/Forward', '/Ac/L1/Energy/Forward')

    def __init__(self, rig, name):
        self.rig, self.name = rig, name
        self.read = []

    def now(self):
        values = [self.rig.value(self.name, p) for p in self.PATHS]
        self.read.extend(values)
        return values[0]

    def wait(self, kwh):
        pump = self.rig.pump
        for _ in range(500):
            if self.now() == pytest.approx(kwh, abs=1e-9):
                return
            pump(0.01)
        raise AssertionError('Forward stayed %r, not %r' % (self.read[-1], kwh))

    def stays(self, kwh, meter):
        """Several polls later (and sampled all along) Forward is still `kwh`."""
        target = meter.stats['requests'] + 4
        while meter.stats['requests'] < target:
            assert self.now() == pytest.approx(kwh, abs=1e-9)
            self.rig.pump(0.02)

    def announced(self):
        self.rig.client.sync(self.name)
        return [item['Value'] for _, _, _, payload in
                self.rig.signals.signals(self.name, 'ItemsChanged')
                for path, item in payload.items() if path in self.PATHS]


def nondecreasing(values):
    values = [v for v in values if not invalid(v)]
    return all(a <= b for a, b in zip(values, values[1:]))


def test_counters_never_run_backwards(tmp_path):
    # the meter's counter close to its wrap at 9999.99 kWh
    with patient(tmp_path, [multi_input_meter(energy_wh=9999986)], GRID) as rig:
        rig.start_driver()
        grid = rig.wait_service(rig.service('grid', 1))
        forward = Forward(rig, grid)
        forward.wait(9999.986)
        meter = rig.meters[1]
        meter.energy_wh += 2
        forward.wait(9999.988)

        meter.energy_wh = 1                                 # the wrap: 9999.99 -> 0 and on
        forward.wait(9999.989)

        meter.energy_wh = 0                                 # pzemctl reset-energy
        forward.stays(9999.989, meter)
        meter.energy_wh = 2
        forward.wait(9999.991)

        new = AcMeter(1, voltage=231.0, current=40.0, power=9240.0, energy_wh=0,
                      power_factor=1.0)                     # a replaced meter, counting from 0
        rig.sim.meters[rig.sim.meters.index(meter)] = new
        rig.wait_value(grid, '/Ac/L1/Voltage', approx(231.0))
        forward.stays(9999.991, new)
        new.energy_wh = 2
        forward.wait(9999.993)

        assert rig.value(grid, '/Pzem/Errors/EnergyDropped') == 0
        new.energy_wh += 500000                             # 500 kWh at once: no meter can
        rig.wait_value(grid, '/Pzem/Errors/EnergyDropped', lambda v: v == 1)
        forward.stays(9999.993, new)
        new.energy_wh += 2                                  # counting goes on from there
        forward.wait(9999.995)

        assert nondecreasing(forward.read), forward.read
        announced = forward.announced()
        assert len(announced) >= 10 and nondecreasing(announced), announced
        assert rig.value(grid, '/Pzem/Errors/EnergyDropped') == 1
        log = rig.log()
        assert log.count('ttyPZEM0:1: energy count not booked: 500000 Wh in ') == 1
        assert 'is more than 26 kW can count; not booked' in log


def test_a_restart_keeps_the_totals_and_books_what_was_counted_while_stopped(tmp_path):
    with patient(tmp_path, [multi_input_meter(energy_wh=5000)], GRID) as rig:
        meter = rig.meters[1]
        rig.start_driver()
        grid = rig.wait_service(rig.service('grid', 1))
        forward = Forward(rig, grid)
        forward.wait(5.0)
        meter.energy_wh = 0                                 # a reset: the total stays 5.000
        forward.stays(5.0, meter)
        meter.energy_wh = 2
        forward.wait(5.002)

        assert rig.stop_driver() == 0
        assert rig.log().rstrip('\n').endswith('INFO stopping: asked to (SIGTERM)')
        saved = rig.value(SETTINGS, ENERGY_SETTING)
        assert saved.startswith('1 t=') and saved.endswith(' L1=5.002/0.000@0.002'), saved

        meter.energy_wh += 3                                # counted while the driver was off
        rig.start_driver()
        rig.wait_service(grid)
        assert forward.now() >= 5.002                       # never below what VRM already has
        meter.set(voltage=230.2)                            # the next fresh reading
        forward.wait(5.005)
        assert nondecreasing(forward.read), forward.read


def test_a_count_too_large_for_the_time_stopped_is_not_booked_and_says_so(tmp_path):
    with patient(tmp_path, [multi_input_meter(energy_wh=5000)], GRID) as rig:
        meter = rig.meters[1]
        rig.start_driver()
        grid = rig.wait_service(rig.service('grid', 1))
        Forward(rig, grid).wait(5.0)
        assert rig.stop_driver() == 0

        meter.energy_wh += 500000               # 500 kWh in the seconds the driver was off
        rig.start_driver()
        rig.wait_service(grid)
        forward = Forward(rig, grid)
        meter.set(voltage=230.2)                # the next fresh reading
        rig.wait_value(grid, '/Ac/L1/Voltage', approx(230.2))
        forward.stays(5.0, meter)
        assert rig.value(grid, '/Pzem/Errors/EnergyDropped') == 1
        assert rig.log().count('ttyPZEM0:1: energy count not booked: 500000 Wh in ') == 1


def test_a_three_phase_group_takes_each_phase_sign_from_the_multi(tmp_path):
    text = (NO_SCAN + '[4]\ngroup = house\nphase = L1\nrole = grid\nsign = vebus\n'
            '[5]\ngroup = house\nphase = L2\n[6]\ngroup = house\nphase = L3\n')
    meters = [AcMeter(4, voltage=230.0, current=2.0, power=400.2, energy_wh=1000,
                      power_factor=0.87),
              AcMeter(5, voltage=231.0, current=1.0, power=231.0, energy_wh=2000,
                      power_factor=1.0),
              AcMeter(6, voltage=229.0, current=3.0, power=618.3, energy_wh=3500,
                      power_factor=0.9)]
    with patient(tmp_path, meters, text) as rig:
        vebus = rig.start_vebus(power=(1000.0, -2000.0, 500.0))
        rig.start_driver()
        grid = rig.wait_service(rig.service('grid', 4))
        rig.wait_value(grid, '/Ac/L2/Power', approx(-231.0))
        v = {p: item['Value'] for p, item in rig.items(grid).items()}
        assert (v['/Ac/L1/Power'], v['/Ac/L2/Power'], v['/Ac/L3/Power']) == \
            (pytest.approx(400.2), pytest.approx(-231.0), pytest.approx(618.3))
        assert (v['/Ac/L1/Current'], v['/Ac/L2/Current'], v['/Ac/L3/Current']) == \
            (pytest.approx(2.0), pytest.approx(-1.0), pytest.approx(3.0))
        assert v['/Ac/Power'] == pytest.approx(400.2 - 231.0 + 618.3)

        rig.meters[5].energy_wh += 2                        # L2 exports
        rig.meters[4].energy_wh += 1                        # L1 imports
        rig.wait_value(grid, '/Ac/L2/Energy/Reverse', approx(0.002))
        rig.wait_value(grid, '/Ac/L1/Energy/Forward', approx(1.001))
        rig.wait_value(grid, '/Ac/Energy/Reverse', approx(0.002))
        assert rig.value(grid, '/Ac/Energy/Forward') == pytest.approx(1.001 + 2.0 + 3.5)
        assert rig.value(grid, '/Ac/L2/Energy/Forward') == pytest.approx(2.0)

        set_p(rig, vebus, 1, -3000)                         # the signs swap per phase
        set_p(rig, vebus, 2, 3000)
        rig.wait_value(grid, '/Ac/Power', approx(-400.2 + 231.0 + 618.3))
        assert rig.value(grid, '/Ac/L1/Current') == pytest.approx(-2.0)
        assert rig.value(grid, '/Ac/L2/Current') == pytest.approx(1.0)


def add_ess_setting(rig, value):
    [result] = rig.client.call(SETTINGS, '/', 'AddSettings',
                               [{'path': ESS_SETTING, 'default': value}], signature='aa{sv}',
                               interface='com.victronenergy.Settings')
    assert result['error'] == 0


def test_an_unsigned_grid_meter_is_warned_about_while_ess_uses_an_external_meter(tmp_path):
    text = NO_SCAN + '[1]\nrole = grid\n[2]\nrole = grid\nsign = vebus\n'
    with patient(tmp_path, [multi_input_meter(1), multi_input_meter(2)], text) as rig:
        add_ess_setting(rig, 0)
        rig.start_driver()
        rig.wait_service(rig.service('grid', 1))
        rig.wait_service(rig.service('grid', 2))
        rig.wait_log(UNSIGNED_WARNING % 1)
        assert rig.client.set_value(SETTINGS, ESS_SETTING, 1) == 0
        assert rig.client.set_value(SETTINGS, ESS_SETTING, 0) == 0
        rig.wait_log(UNSIGNED_WARNING % 1, count=2)
        rig.wait_polls(rig.meters[1], 5)
        log = rig.log()
        assert log.count(UNSIGNED_WARNING % 1) == 2, log
        assert UNSIGNED_WARNING % 2 not in log
        line = next(l for l in log.splitlines() if UNSIGNED_WARNING % 1 in l)
        assert line.startswith('WARNING ttyPZEM0:1: ')
        assert 'add "sign = vebus" to its section' in line
        assert 'set Grid metering to Inverter/Charger' in line


def test_no_warning_while_ess_uses_the_multi(tmp_path):
    with patient(tmp_path, [multi_input_meter(1)], GRID) as rig:
        add_ess_setting(rig, 1)
        rig.start_driver()
        rig.wait_service(rig.service('grid', 1))
        assert rig.client.set_value(SETTINGS, ESS_SETTING, 0) == 0     # now it matters
        rig.wait_log(UNSIGNED_WARNING % 1)
        assert rig.log().count(UNSIGNED_WARNING % 1) == 1


def test_default_and_new_roles(tmp_path):
    text = '[1]\nrole = evcharger\n[2]\nrole = heatpump\nposition = 1\n'
    meters = [multi_input_meter(1), multi_input_meter(2), multi_input_meter(3),
              DcMeter(4, voltage=13.2, current=5.0, power=66.0, energy_wh=500)]
    with patient(tmp_path, meters, text) as rig:
        rig.start_driver()
        ev = rig.wait_service(rig.service('evcharger', 1))
        heat = rig.wait_service(rig.service('heatpump', 2))
        load = rig.wait_service(rig.service('acload', 3))       # the map does not name 3 or 4
        dc = rig.wait_service(rig.service('dcsource', 4))
        for name, position in ((ev, 0), (heat, 1), (load, 0)):
            rig.wait_value(name, '/Connected', lambda v: v == 1)
            items = rig.items(name)
            assert items['/IsGenericEnergyMeter']['Value'] == 1, name
            assert isinstance(items['/IsGenericEnergyMeter']['Value'], dbus.Int32)
            assert items['/Position']['Value'] == position, name
            # these roles only consume: export is a known 0, as Victron's meters publish it
            for path in ('/Ac/Energy/Reverse', '/Ac/L1/Energy/Reverse'):
                assert items[path]['Value'] == 0.0, (name, path)
                assert isinstance(items[path]['Value'], dbus.Double), (name, path)
        assert rig.value(ev, '/Role') == 'evcharger'
        rig.wait_value(dc, '/History/EnergyOut', approx(0.5))
        assert '/IsGenericEnergyMeter' not in rig.items(dc)
        for address in (3, 4):
            assert not rig.client.owner(rig.service('grid', address))


def test_a_dc_counter_never_runs_backwards_either(tmp_path):
    text = NO_SCAN + '[3]\nrole = dcsource\n'
    with patient(tmp_path, [DcMeter(3, voltage=13.2, current=5.0, power=66.0, energy_wh=500)],
             text) as rig:
        rig.start_driver()
        dc = rig.wait_service(rig.service('dcsource', 3))
        meter = rig.meters[3]
        rig.wait_value(dc, '/History/EnergyOut', approx(0.5))
        meter.energy_wh = 0                                 # reset
        rig.wait_polls(meter, 4)
        rig.client.sync(dc)
        assert rig.value(dc, '/History/EnergyOut') == pytest.approx(0.5)
        meter.energy_wh = 2
        rig.wait_value(dc, '/History/EnergyOut', approx(0.502))
        assert '/History/EnergyIn' not in rig.items(dc)
