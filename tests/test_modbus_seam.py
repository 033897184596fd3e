"""pzem.modbus, the seam to pymodbus, against the simulator on a pty (pymodbus 2.x and 3.x)."""

import itertools
import os
import subprocess
import sys
import termios
import textwrap
import threading
import time

import pymodbus
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pzem import modbus
from pzem.modbus import Bus, BadFrame, ExceptionReply, ModbusError, NoReply, PortGone
from pzem.rtu import ANSWER, PENDING, REFUSED, SPOILT, failure, find_reply, request_frame
from pzemsim import AcMeter, DcMeter, with_crc
from sim_fixtures import ScriptedMeter, modbus_bus, sim_bus  # noqa: F401 (pytest fixtures)

H = bytes.fromhex
DRIVER_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           'package', 'opt', 'pzem')
AC_CAPTURE = [2257, 108, 0, 244, 0, 38, 0, 500, 100, 0]      # 225.7 V ... (reference 2.6)
DC_CAPTURE = [1344, 10, 13, 0, 2, 0, 0, 0]


def esphome_ac(address=1):
    return AcMeter(address, voltage=225.7, current=0.108, power=24.4, energy_wh=38,
                   power_factor=1.0)


def one_sentence(error):
    text = str(error)
    assert text[0].isupper() and text[-1] in '.?' and '\n' not in text, text
    assert text.count('. ') == 0, text
    return text


# -- naming and pymodbus version ---------------------------------------------------------------

@pytest.mark.parametrize('port, name, path', [
    ('ttyUSB0', 'ttyUSB0', '/dev/ttyUSB0'),
    ('/dev/ttyUSB0', 'ttyUSB0', '/dev/ttyUSB0'),
    ('/tmp/x/ttyUSB0', 'ttyUSB0', '/tmp/x/ttyUSB0'),
])
def test_port_name_and_path(port, name, path):
    bus = Bus(port)
    assert (bus.port_name, bus.path) == (name, path)


@pytest.mark.pymodbus
def test_the_address_keyword_matches_the_installed_pymodbus():
    from pzem import pymodbus_link
    if pymodbus.__version__.startswith('2.'):
        assert pymodbus_link.ADDRESS_KEYWORD == 'unit'
        assert pymodbus_link.CLIENT_OPTIONS['method'] == 'rtu'
    else:
        assert pymodbus_link.ADDRESS_KEYWORD in ('slave', 'device_id')
        assert pymodbus_link.CLIENT_OPTIONS['retries'] == 0
    if pymodbus.__version__ == '3.16.1':
        assert pymodbus_link.ADDRESS_KEYWORD == 'device_id'


# -- requests that work ------------------------------------------------------------------------

def test_reads(sim_bus, modbus_bus):
    sim = sim_bus(esphome_ac(1), DcMeter(2, voltage=13.44, current=0.10, power=1.3, energy_wh=2))
    bus = modbus_bus(sim)
    assert bus.read_input(1, 10) == AC_CAPTURE
    assert bus.read_input(2, 8) == DC_CAPTURE
    assert bus.read_input(1, 1) == [2257]
    assert bus.stats == {'requests': 3, 'no_reply': 0, 'bad_frame': 0, 'exception': 0,
                         'strays': 0, 'dropped_bytes': 0}


def test_holding_reads(sim_bus, modbus_bus):
    bus = modbus_bus(sim_bus(AcMeter(1, power_alarm_w=2300), DcMeter(2, current_range=300)))
    assert bus.read_holding(1, 1, 2) == [2300, 1]
    assert bus.read_holding(1, 2, 1) == [1]
    assert bus.read_holding(2, 0, 4) == [30000, 700, 2, 3]


@pytest.mark.pymodbus
def test_writes(sim_bus, modbus_bus):
    ac, dc = AcMeter(1), DcMeter(2)
    bus = modbus_bus(sim_bus(ac, dc))
    assert bus.write_register(1, 1, 1500) is None
    assert ac.power_alarm_w == 1500
    bus.write_register(2, 3, 2)
    assert dc.current_range == 200
    assert bus.read_holding(2, 3, 1) == [2]


@pytest.mark.pymodbus
def test_address_change(sim_bus, modbus_bus):
    meter = esphome_ac(1)
    bus = modbus_bus(sim_bus(meter))
    bus.write_register(1, 2, 5)
    assert meter.address == 5
    assert bus.read_input(5, 10) == AC_CAPTURE
    with pytest.raises(NoReply):
        bus.read_input(1, 10)


def test_reset_energy(sim_bus, modbus_bus):
    meter = AcMeter(1, energy_wh=65353)
    bus = modbus_bus(sim_bus(meter))
    assert bus.read_input(1, 10)[5:7] == [65353, 0]
    assert bus.reset_energy(1) is None
    assert meter.energy_wh == 0
    assert bus.read_input(1, 10)[5:7] == [0, 0]


@pytest.mark.pymodbus
def test_general_address_with_one_meter(sim_bus, modbus_bus):
    meter = DcMeter(7)
    bus = modbus_bus(sim_bus(meter))
    assert bus.read_holding(0xF8, 2, 1) == [7]
    bus.write_register(0xF8, 2, 12)
    assert meter.address == 12
    assert bus.read_holding(12, 2, 1) == [12]


def test_general_address_with_two_meters_is_garbled(sim_bus, modbus_bus):
    bus = modbus_bus(sim_bus(AcMeter(1), DcMeter(2)))
    with pytest.raises(BadFrame) as caught:
        bus.read_holding(0xF8, 2, 1)
    assert '0xF8' in one_sentence(caught.value)


def test_requests_out_of_range_are_refused_before_sending(sim_bus, modbus_bus):
    bus = modbus_bus(sim_bus(AcMeter(1)))
    for call in (lambda: bus.read_input(0, 10), lambda: bus.read_input(249, 10),
                 lambda: bus.read_input(1, 0), lambda: bus.read_input(1, 126),
                 lambda: bus.write_register(1, 1, 70000), lambda: bus.reset_energy(0)):
        with pytest.raises(ValueError):
            call()
    assert bus.stats['requests'] == 0


# -- each fault, mapped --------------------------------------------------------------------------

@pytest.fixture
def faulty(sim_bus, modbus_bus):
    meter = esphome_ac(1)
    sim = sim_bus(meter)
    return meter, modbus_bus(sim, timeout=0.2), sim


@pytest.mark.parametrize('fault, options, error, words', [
    ('no_reply', {}, NoReply, ['No reply from meter 1 on ttyPZEM0 within 0.2 s', 'powered']),
    ('silent', {}, NoReply, ['No reply from meter 1']),
    ('bad_crc', {}, BadFrame, ['Meter 1 on ttyPZEM0 sent a garbled reply', 'wiring']),
    ('truncated', {}, BadFrame, ['incomplete reply (12 of 25 bytes)']),
    ('truncated', {'keep': 1}, BadFrame, ['incomplete reply (1 of 25 bytes)']),
    ('wrong_address', {}, NoReply, ['No reply from meter 1 on ttyPZEM0 within 0.2 s, but '
                                    'address 2 answered: probably late']),
    ('exception', {'code': 4}, ExceptionReply, ['exception 4 (slave device failure)']),
    ('exception', {'code': 2}, ExceptionReply, ['exception 2 (illegal data address)',
                                                'does not exist on this meter model']),
])
def test_each_fault_maps_to_its_error(faulty, fault, options, error, words):
    meter, bus, sim = faulty
    meter.inject(fault, count=1, **options)
    with pytest.raises(error) as caught:
        bus.read_input(1, 10)
    text = one_sentence(caught.value)
    for word in words:
        assert word in text
    assert bus.read_input(1, 10) == AC_CAPTURE         # the next request is fine again
    key = {NoReply: 'no_reply', BadFrame: 'bad_frame', ExceptionReply: 'exception'}[error]
    assert bus.stats[key] == 1 and bus.stats['requests'] == 2


@pytest.mark.pymodbus
def test_exception_reply_carries_code_and_meaning(faulty):
    meter, bus, sim = faulty
    meter.inject('exception', count=1, code=3)
    with pytest.raises(ExceptionReply) as caught:
        bus.write_register(1, 1, 100)
    assert (caught.value.code, caught.value.meaning) == (3, 'illegal data value')
    assert isinstance(caught.value, ModbusError)


@pytest.mark.pymodbus
def test_real_exceptions_from_the_meter(sim_bus, modbus_bus):
    bus = modbus_bus(sim_bus(AcMeter(1), DcMeter(2)))
    with pytest.raises(ExceptionReply) as caught:
        bus.read_input(2, 10)                           # the AC count asked of a DC meter
    assert caught.value.code == 2
    with pytest.raises(ExceptionReply) as caught:
        bus.write_register(1, 2, 0xF8)                  # not a valid meter address
    assert caught.value.code == 3
    with pytest.raises(ExceptionReply):
        bus.read_holding(1, 0, 1)


def test_junk_values_with_a_valid_crc_pass_the_seam(faulty):
    # Right after power-up a PZEM sends nonsense with a good CRC: only plausibility checks
    # above the seam can catch it.
    meter, bus, sim = faulty
    meter.inject('junk_values', count=1)
    junk = bus.read_input(1, 10)
    assert len(junk) == 10 and junk != AC_CAPTURE


@pytest.mark.pymodbus
def test_faults_on_writes_and_resets(faulty):
    meter, bus, sim = faulty
    meter.inject('wrong_address', count=1)
    with pytest.raises(NoReply, match='address 2 answered'):
        bus.write_register(1, 1, 1000)
    meter.inject('bad_crc', count=1)
    with pytest.raises(BadFrame):
        bus.reset_energy(1)
    meter.inject('exception', count=1, code=4)
    with pytest.raises(ExceptionReply) as caught:
        bus.reset_energy(1)                             # the C2 exception of reference 3.1
    assert caught.value.code == 4
    meter.inject('truncated', count=1)
    with pytest.raises(BadFrame, match='incomplete reply'):
        bus.reset_energy(1)
    meter.inject('no_reply', count=1)
    with pytest.raises(NoReply):
        bus.reset_energy(1)
    bus.reset_energy(1)
    assert meter.energy_wh == 0


def test_a_broken_answer_does_not_cost_the_timeout(sim_bus, modbus_bus):
    meter = esphome_ac(1)
    bus = modbus_bus(sim_bus(meter), timeout=1.0)
    for fault in ('bad_crc', 'exception'):
        meter.inject(fault, count=1)
        started = time.monotonic()
        with pytest.raises(ModbusError):
            bus.read_input(1, 10)
        assert time.monotonic() - started < 0.3, fault


@pytest.mark.parametrize('fault, options', [
    ('garbage_before', {}), ('garbage_before', {'junk': b'\x01'}),
    ('garbage_before', {'junk': bytes(30)}), ('stray', {}), ('stray', {'address': 9}),
    ('stretched', {}), ('stretched', {'pieces': 25, 'gap': 0.005}), ('noise', {}),
])
def test_noise_strays_and_gaps_around_the_answer_are_passed_over(faulty, fault, options):
    meter, bus, sim = faulty
    meter.inject(fault, count=1, **options)
    assert bus.read_input(1, 10) == AC_CAPTURE
    time.sleep(0.02)                                    # noise comes 10 ms after the reply
    assert bus.read_input(1, 10) == AC_CAPTURE
    assert bus.stats['no_reply'] == bus.stats['bad_frame'] == 0


def test_a_frame_from_another_address_is_passed_over_and_the_wait_goes_on(sim_bus, modbus_bus):
    # Meter 2's late reply arrives while meter 1 is asked: dropped, and meter 1's answer taken.
    meter = esphome_ac(1)
    sim = sim_bus(meter, DcMeter(2), wire_time=True, turnaround=0.15)
    bus = modbus_bus(sim, timeout=0.1)
    with pytest.raises(NoReply):
        bus.read_input(2, 8)
    assert bus.read_input(1, 10, timeout=0.5) == AC_CAPTURE
    assert [s[0] for s in bus.strays] == [2] and bus.stats['strays'] == 1


def test_a_late_reply_lands_in_the_next_exchange_and_costs_only_its_own(faulty):
    meter, bus, sim = faulty
    meter.inject('late', count=1, delay=0.3)            # after the bus's 0.2 s timeout
    with pytest.raises(NoReply):
        bus.read_input(1, 10)
    meter.set(voltage=230.0)
    # The late reply (225.7 V) comes while this read waits: it has the answer's shape and is
    # a true reading, only older; the answer to this request then comes after it.
    assert bus.read_input(1, 10) in (AC_CAPTURE, [2300] + AC_CAPTURE[1:])
    time.sleep(0.05)
    assert bus.read_input(1, 10) == [2300] + AC_CAPTURE[1:]     # back in step
    assert bus.read_holding(1, 2, 1) == [1]


def test_a_reply_to_another_request_is_passed_over(sim_bus, modbus_bus):
    meter = esphome_ac(1)
    bus = modbus_bus(sim_bus(meter), timeout=0.2)
    assert bus.read_holding(1, 2, 1) == [1]
    meter.inject('previous', count=1)                   # the holding read's reply again
    with pytest.raises(BadFrame, match='answered with function 3 to a function 4 request: a '
                       'late reply to an earlier request'):
        bus.read_input(1, 10)
    assert bus.read_input(1, 10) == AC_CAPTURE


def test_a_reply_that_comes_between_exchanges_is_dropped_before_the_next_request(
        sim_bus, modbus_bus):
    meter = esphome_ac(1)
    sim = sim_bus(meter, DcMeter(2))
    bus = modbus_bus(sim, timeout=0.1)
    meter.inject('late', count=1, delay=0.15)
    with pytest.raises(NoReply):
        bus.read_input(1, 10)
    time.sleep(0.2)                                     # the late reply is in, unread
    assert bus.read_input(1, 1) == [2257]               # not the 10-register reply
    assert bus.stats['dropped_bytes'] == 25 and bus.stats['strays'] == 0


def test_exception_reply_after_a_timeout_is_quick(sim_bus, modbus_bus):
    # pymodbus 2.x would read it as a full-length reply and wait out the timeout.
    meter = esphome_ac(1)
    bus = modbus_bus(sim_bus(meter), timeout=0.5)
    meter.inject('no_reply', count=1)
    with pytest.raises(NoReply):
        bus.read_input(1, 10)
    meter.inject('exception', count=1)
    started = time.monotonic()
    with pytest.raises(ExceptionReply):
        bus.read_input(1, 10)
    assert time.monotonic() - started < 0.2


def test_frame_pymodbus_cannot_decode_leaves_the_bus_usable(sim_bus, modbus_bus):
    # pymodbus 2.5.3 raises struct.error on this (function 0x2B, good CRC) and stays busy.
    meter = ScriptedMeter(1, with_crc(H('01 2B 07 AD 38 C2')) + bytes(9))
    bus = modbus_bus(sim_bus(meter), timeout=0.5)
    with pytest.raises(BadFrame):
        bus.read_input(1, 2)
    meter.reply = with_crc(H('01 04 04 00 01 00 02'))
    started = time.monotonic()
    assert bus.read_input(1, 2) == [1, 2]
    assert time.monotonic() - started < 0.1


def test_wrong_length_reply(sim_bus, modbus_bus):
    meter = ScriptedMeter(1, with_crc(H('01 04 10') + bytes(16)))
    bus = modbus_bus(sim_bus(meter), timeout=0.1)
    with pytest.raises(BadFrame, match='16 data bytes where 20 were asked'):
        bus.read_input(1, 10)


@pytest.mark.pymodbus
def test_changed_echo_is_rejected(sim_bus, modbus_bus):
    meter = ScriptedMeter(1, with_crc(H('01 06 00 01 03 E9')))
    bus = modbus_bus(sim_bus(meter))
    with pytest.raises(BadFrame, match='did not echo the request exactly'):
        bus.write_register(1, 1, 1000)
    assert meter.requests == [with_crc(H('01 06 00 01 03 E8'))]


@pytest.mark.pymodbus
def test_local_echo(sim_bus, modbus_bus):
    sim = sim_bus(esphome_ac(1), echo=True)
    bus = modbus_bus(sim, local_echo=True)
    assert bus.read_input(1, 10) == AC_CAPTURE
    bus.reset_energy(1)
    assert bus.read_holding(0xF8, 2, 1) == [1]
    bus.write_register(1, 1, 1800)                      # through pymodbus
    assert bus.read_holding(1, 1, 1) == [1800]


@pytest.mark.pymodbus
def test_local_echo_missing(sim_bus, modbus_bus):
    bus = modbus_bus(sim_bus(esphome_ac(1)), local_echo=True)
    for call in (lambda: bus.read_input(1, 10), lambda: bus.read_holding(0xF8, 2, 1)):
        with pytest.raises(BadFrame) as caught:
            call()
        assert 'turn local_echo off' in one_sentence(caught.value)
    # A reset's or a write's reply is the request byte for byte, so it passes for the echo:
    # no reply then.
    with pytest.raises(NoReply):
        bus.reset_energy(1)
    with pytest.raises(NoReply):
        bus.write_register(1, 1, 1800)


def test_bytes_after_a_good_frame_do_not_spoil_the_next_read(sim_bus, modbus_bus):
    meter = ScriptedMeter(1, frame_of([1, 2, 3]) + H('01 04 06 00'))
    bus = modbus_bus(sim_bus(meter))
    assert bus.read_input(1, 3) == [1, 2, 3]
    meter.reply = frame_of([4, 5, 6])
    assert bus.read_input(1, 3) == [4, 5, 6]
    assert bus.stats['bad_frame'] == 0


class PollRecorder(object):
    """The Bus's own select.poll object, recording the timeout of each wait (ms)."""

    def __init__(self, poll):
        self._poll = poll
        self.waits = []

    def poll(self, timeout):
        self.waits.append(timeout)
        return self._poll.poll(timeout)


class FarEnd(object):
    """The other end of a bare pty: answers each 8-byte request with the next of `replies`
    (None: silence), and keeps what it was sent."""

    def __init__(self, master, replies):
        self.master = master
        self.replies = list(replies)
        self.requests = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        data = b''
        while self.replies:
            chunk = os.read(self.master, 100)
            data += chunk
            while len(data) >= 8 and self.replies:
                self.requests.append(data[:8])
                data = data[8:]
                reply = self.replies.pop(0)
                if reply:
                    os.write(self.master, reply)


@pytest.fixture
def bare_pty():
    """bare_pty(baudrate, timeout) -> (the Bus's master end, an open Bus on the slave)."""
    opened = []

    def make(baudrate=1200, timeout=0.15):
        master, slave = os.openpty()
        bus = Bus(os.ttyname(slave), baudrate=baudrate, timeout=timeout)
        bus.open()
        opened.append((bus, master, slave))
        return master, bus

    yield make
    for bus, master, slave in opened:
        bus.close()
        os.close(master)
        os.close(slave)


def test_requests_keep_3_5_characters_of_silence_on_the_line(bare_pty):
    # The Bus itself on a bare pty, the test on the other end: a request goes out only after
    # t3.5 of silence since the last byte on the line. After a reply that is a wait; after
    # a silence the line has been quiet since the request's end, so the next goes at once.
    # 1200 baud 8N2 (11 bits a character): a t3.5 of 32 ms, longer than a busy machine's stall
    master, bus = bare_pty(baudrate=1200, timeout=0.15)
    t35 = 3.5 * 11 / 1200
    far = FarEnd(master, [frame_of([1, 2, 3]), None, None])
    bus._poll = recorder = PollRecorder(bus._poll)
    assert bus.read_input(1, 3) == [1, 2, 3]
    replied = time.monotonic()
    settle = len(recorder.waits)
    with pytest.raises(NoReply):
        bus.read_input(2, 3)                            # right after the reply: waits t3.5
    assert 0 < recorder.waits[settle] <= 1000 * t35
    assert time.monotonic() - replied >= t35
    settle = len(recorder.waits)
    with pytest.raises(NoReply):
        bus.read_input(3, 3)                            # after 0.15 s of silence: at once
    assert recorder.waits[settle] == 0
    far.thread.join(1.0)
    assert far.requests == [request_frame(a, 4, 0, 3) for a in (1, 2, 3)]


def test_after_a_broken_reply_the_next_request_waits_for_a_quiet_line(bare_pty):
    # The rest of a garbled reply may still be on its way: the next request goes only once
    # the line has been quiet for t3.5, and what came meanwhile is dropped, not taken.
    master, bus = bare_pty(baudrate=1200, timeout=0.15)
    t35 = 3.5 * 11 / 1200
    broken = bytearray(frame_of([1, 2, 3]))
    broken[4] ^= 0xFF
    far = FarEnd(master, [bytes(broken), None])
    with pytest.raises(BadFrame, match='garbled'):
        bus.read_input(1, 3)
    failed = time.monotonic()
    os.write(master, frame_of([7, 8, 9]) + frame_of([4, 5, 6]))     # late, after the failure
    with pytest.raises(NoReply):
        bus.read_input(1, 3)                            # neither is this request's answer
    far.thread.join(1.0)
    assert far.requests == [request_frame(1, 4, 0, 3)] * 2
    assert bus.stats['dropped_bytes'] == 22
    assert time.monotonic() - failed >= t35


def test_input_that_came_before_a_request_is_never_its_answer(bare_pty):
    master, bus = bare_pty(baudrate=9600, timeout=0.1)
    os.write(master, frame_of([1, 2, 3]))              # came while nobody asked
    far = FarEnd(master, [None])
    with pytest.raises(NoReply):
        bus.read_input(1, 3)
    far.thread.join(1.0)
    assert bus.stats['dropped_bytes'] == 11


@pytest.mark.pymodbus
@pytest.mark.parametrize('fault, options, error, words', [
    ('no_reply', {}, NoReply, ['No reply from meter 1 on ttyPZEM0 within 0.2 s']),
    ('bad_crc', {}, BadFrame, ['garbled']),
    ('truncated', {}, BadFrame, ['incomplete reply (4 of 8 bytes)']),
    ('exception', {'code': 3}, ExceptionReply, ['exception 3 (illegal data value)']),
])
def test_each_fault_on_a_write_through_pymodbus(faulty, fault, options, error, words):
    meter, bus, sim = faulty
    meter.inject(fault, count=1, **options)
    with pytest.raises(error) as caught:
        bus.write_register(1, 1, 1000)
    text = one_sentence(caught.value)
    for word in words:
        assert word in text
    bus.write_register(1, 1, 1200)                      # the next request is fine again
    assert meter.power_alarm_w == 1200
    assert bus.read_input(1, 10) == AC_CAPTURE


def test_reads_load_neither_pymodbus_nor_pyserial(sim_bus):
    # The driver only reads: it must not pay pymodbus's (or pyserial's) memory. A write does
    # load pymodbus, in pzemctl.
    sim = sim_bus(esphome_ac(1), DcMeter(2))
    script = textwrap.dedent('''
        import sys
        import pzem.driver
        from pzem.modbus import Bus
        def loaded():
            return sorted(m for m in sys.modules if m.split('.')[0] in ('pymodbus', 'serial'))
        with Bus(sys.argv[1], timeout=0.5) as bus:
            print(bus.read_input(1, 10), bus.read_holding(2, 0, 1), loaded())
            bus.write_register(1, 1, 1500)
            print('pymodbus' in loaded())
    ''')
    done = subprocess.run([sys.executable, '-c', script, sim.link], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=DRIVER_PATH), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ['%s [30000] []' % AC_CAPTURE, 'True']


@pytest.mark.parametrize('options, stop_bits, parity_bits, speed', [
    ({}, termios.CSTOPB, 0, termios.B9600),
    ({'baudrate': 4800, 'stopbits': 1, 'parity': 'E'}, 0, termios.PARENB, termios.B4800),
    ({'baudrate': 2400, 'stopbits': 1, 'parity': 'O'}, 0, termios.PARENB | termios.PARODD,
     termios.B2400),
])
def test_the_port_is_set_as_asked(sim_bus, modbus_bus, options, stop_bits, parity_bits, speed):
    bus = modbus_bus(sim_bus(AcMeter(1)), **options)
    with open(bus.path, 'rb', buffering=0) as port:     # a second look at the same tty
        iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(port)
    assert cflag & termios.CSIZE == termios.CS8
    assert cflag & termios.CSTOPB == stop_bits
    assert cflag & termios.PARODD == parity_bits & termios.PARODD   # a pty drops PARENB
    assert (ispeed, ospeed) == (speed, speed)
    assert not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)
    assert not iflag & (termios.IXON | termios.ICRNL) and not oflag & termios.OPOST


# -- the port -----------------------------------------------------------------------------------

def test_missing_port(tmp_path):
    bus = Bus(str(tmp_path / 'ttyUSB9'))
    with pytest.raises(PortGone) as caught:
        bus.open()
    text = one_sentence(caught.value)
    assert str(tmp_path / 'ttyUSB9') in text and 'does not exist' in text


def test_bare_name_means_dev():
    bus = Bus('ttyNoSuchPZEM')
    with pytest.raises(PortGone, match='/dev/ttyNoSuchPZEM does not exist'):
        bus.open()


def test_busy_port(sim_bus, modbus_bus):
    sim = sim_bus(AcMeter(1))
    modbus_bus(sim)
    with pytest.raises(PortGone, match='in use by another program'):
        Bus(sim.link).open()


def test_not_a_serial_port(tmp_path):
    plain = tmp_path / 'ttyFILE'
    plain.write_text('')
    with pytest.raises(PortGone, match='check that it is a serial device'):
        Bus(str(plain)).open()


def test_request_before_open(tmp_path):
    with pytest.raises(PortGone, match='not open'):
        Bus(str(tmp_path / 'ttyUSB0')).read_input(1, 10)


def test_port_gone_mid_run(sim_bus, modbus_bus):
    sim = sim_bus(esphome_ac(1))
    bus = modbus_bus(sim)
    assert bus.read_input(1, 10) == AC_CAPTURE
    sim.stop()                                          # the USB adapter is pulled
    with pytest.raises(PortGone) as caught:
        bus.read_input(1, 10)
    assert 'went away' in one_sentence(caught.value)
    with pytest.raises(PortGone, match='not open'):
        bus.read_input(1, 10)
    with pytest.raises(PortGone, match='does not exist'):
        bus.open()
    sim.start()                                         # plugged in again
    bus.open()
    assert bus.read_input(1, 10) == AC_CAPTURE


def test_port_gone_during_a_silent_wait(sim_bus, modbus_bus):
    meter = esphome_ac(1)
    sim = sim_bus(meter)
    bus = modbus_bus(sim, timeout=0.3)
    meter.inject('silent')
    for operation in (lambda: bus.read_input(1, 10), lambda: bus.reset_energy(1)):
        bus.open()
        stopper = threading.Timer(0.1, sim.stop)
        stopper.start()
        with pytest.raises(PortGone):
            operation()
        stopper.join()
        sim.start()


# -- only the answer ever yields registers ----------------------------------------------------------

def frame_of(words, address=1, function=4):
    return with_crc(bytes((address, function, 2 * len(words))) + b''.join(
        w.to_bytes(2, 'big') for w in words))


ANSWER_WORDS = [0x0913, 0x0580, 0x0000]         # what meter 1 answers to "read 3 input registers"
REQUEST = request_frame(1, 4, 0, 3)


def flipped(frame, bit):
    frame = bytearray(frame)
    frame[bit // 8 % len(frame)] ^= 1 << (bit % 8)
    return bytes(frame)


# what may come back besides the answer: noise, frames of other meters (late replies), frames of
# meter 1 of another shape (a reply to an earlier request), a broken copy of the answer
others = st.one_of(
    st.binary(min_size=1, max_size=12),
    st.tuples(st.lists(st.integers(0, 0xFFFF), max_size=10), st.integers(2, 247),
              st.sampled_from([3, 4])).map(lambda t: frame_of(*t)),
    st.lists(st.integers(0, 0xFFFF), max_size=10).filter(lambda w: len(w) != 3).map(frame_of),
    st.integers(0, 11 * 8 - 1).map(lambda bit: flipped(frame_of(ANSWER_WORDS), bit)),
    st.integers(2, 247).map(lambda a: with_crc(bytes((a, 0x84, 2)))),
)
# everything that came since the request: the answer (or not) among the rest, in any order
streams = st.tuples(st.lists(others, max_size=5), st.lists(others, max_size=5),
                    st.booleans()).map(
    lambda t: (b''.join(t[0]) + (frame_of(ANSWER_WORDS) if t[2] else b'') + b''.join(t[1]),
               t[2]))


def answer_frames(data):
    """The registers of every good frame of the answer's shape anywhere in `data` (found by
    trying every offset: no framing, so no mistake of the framing can hide one)."""
    found = []
    for i in range(len(data) - 10):
        frame = data[i:i + 11]
        if frame[:3] == bytes((1, 4, 6)) and with_crc(frame[:-2]) == frame:
            found.append([int.from_bytes(frame[j:j + 2], 'big') for j in (3, 5, 7)])
    return found


@settings(max_examples=1500, deadline=None)
@given(streams)
def test_find_reply_takes_the_answer_and_only_the_answer(stream):
    data, sent = stream
    found = find_reply(REQUEST, 3, data)
    candidates = answer_frames(data)
    if found.outcome == ANSWER:
        assert found.value in candidates                # never a wrong value
    if sent and candidates == [ANSWER_WORDS]:
        # the answer is there and nothing else could pass for it: it is taken, whatever
        # noise, strays and broken copies came before or after it
        assert (found.outcome, found.value) == (ANSWER, ANSWER_WORDS), found.outcome
    if found.outcome != ANSWER:
        error = failure(REQUEST, 3, data, found, 'ttyX', 0.1)
        one_sentence(error)
        assert isinstance(error, (NoReply, BadFrame, ExceptionReply))


def test_find_reply_outcomes():
    answer = frame_of(ANSWER_WORDS)
    assert find_reply(REQUEST, 3, answer).outcome == ANSWER
    assert find_reply(REQUEST, 3, answer[:7]).outcome == PENDING
    assert find_reply(REQUEST, 3, answer[:7]).value is True         # the head is in
    assert find_reply(REQUEST, 3, b'\x00\x00').value is False
    assert find_reply(REQUEST, 3, flipped(answer, 30)).outcome == SPOILT
    assert find_reply(REQUEST, 3, flipped(answer, 30) + answer).value == ANSWER_WORDS
    refused = find_reply(REQUEST, 3, with_crc(H('01 84 02')))
    assert (refused.outcome, refused.value) == (REFUSED, 2)
    stray = frame_of([5], address=2)
    assert find_reply(REQUEST, 3, stray + answer).strays == [(2, 4, 7)]
    echo = request_frame(1, 6, 1, 1000)
    assert find_reply(echo, None, echo).outcome == ANSWER
    assert find_reply(echo, None, request_frame(1, 6, 1, 1001)).value == 'echo'
    general = request_frame(0xF8, 3, 2, 1)
    assert find_reply(general, 1, frame_of([7], address=7, function=3)).value == [7]


@pytest.mark.parametrize('code, words', [
    (10, 'the gateway cannot use its RS-485 side (exception 10, path unavailable)'),
    (11, 'the gateway says the meter did not answer (exception 11)')])
def test_gateway_exceptions_mean_no_reply(code, words):
    data = with_crc(bytes((1, 0x84, code)))
    error = failure(REQUEST, 3, data, find_reply(REQUEST, 3, data), 'garage', 0.5)
    assert isinstance(error, NoReply) and words in one_sentence(error)


# the exchange itself, over the wire, with each request spoilt at random
EXCHANGE_FAULTS = ['late', 'stray', 'noise', 'stretched', 'previous', 'bad_crc', 'no_reply',
                   'garbage_before', 'wrong_address', 'truncated', 'silent']


@pytest.fixture(scope='module')
def faulty_wire(tmp_path_factory):
    from pzemsim import SimBus
    meter = AcMeter(1, voltage=100.0, current=0.0, power=0.0, energy_wh=0)
    sim = SimBus(str(tmp_path_factory.mktemp('wire') / 'ttyWIRE'))
    sim.add(meter)
    sim.start()
    bus = Bus(sim.link, timeout=0.4)      # a loaded machine must not make a fault of its own
    bus.open()
    yield meter, bus
    bus.close()
    sim.stop()


STATES = itertools.count(1)


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.none(), st.sampled_from(EXCHANGE_FAULTS)), min_size=4,
                max_size=8))
def test_the_exchange_over_random_faults_never_gives_a_wrong_value(faulty_wire, schedule):
    # Before each request the meter moves to its next state (its energy counter counts them).
    # An answer may be an older state (a late reply taken by a later request: a true reading,
    # only older), never one the meter was not in; and no fault costs more than one failed
    # exchange.
    meter, bus = faulty_wire
    options = {'late': {'delay': 0.45}, 'stretched': {'gap': 0.02}}
    meter.clear_faults()
    time.sleep(0.1)                                    # nothing left from the last example
    failed = 0
    for kind in schedule:
        state = next(STATES)
        meter.energy_wh = state
        if kind:
            meter.inject(kind, count=1, **options.get(kind, {}))
        try:
            regs = bus.read_input(1, 10)
        except ModbusError:
            failed += 1
        else:
            assert regs[:5] == [1000, 0, 0, 0, 0] and regs[7:] == [500, 0, 0]
            assert 0 < regs[5] + (regs[6] << 16) <= state
        finally:
            meter.clear_faults()
    assert failed <= sum(kind is not None for kind in schedule), schedule


def test_interface_constants():
    assert modbus.EXCEPTION_MEANINGS == {1: 'illegal function', 2: 'illegal data address',
                                         3: 'illegal data value', 4: 'slave device failure'}
    for cls in (NoReply, BadFrame, ExceptionReply, PortGone):
        assert issubclass(cls, ModbusError)
    assert str(ExceptionReply(2)) == \
        'The meter refused the request with exception 2 (illegal data address).'
