"""The simulator, byte for byte through pyserial: frames, CRCs, faults, addresses, timing."""

import os
import signal
import subprocess
import sys
import time

import pytest

from pzemsim import AcMeter, DcMeter, crc16, with_crc
from pzemsim.crc import crc_ok
from pzemsim.framing import RequestFramer
from pzemsim.vary import LoadVariation
from sim_fixtures import exchange, raw_port, sim_bus  # noqa: F401 (pytest fixtures)

H = bytes.fromhex
READ_AC = H('01 04 00 00 00 0A 70 0D')             # reference 2.2
READ_DC = H('01 04 00 00 00 08 F1 CC')             # reference 2.4


# -- reference 2.6: captured frames come out byte for byte when the meter is scripted -------

CAPTURES = [
    ('ESPHome AC', lambda: AcMeter(1, voltage=225.7, current=0.108, power=24.4, energy_wh=38,
                                   frequency=50.0, power_factor=1.0), READ_AC,
     H('01 04 14 08 D1 00 6C 00 00 00 F4 00 00 00 26 00 00 01 F4 00 64 00 00 51 34')),
    ('ESPHome DC', lambda: DcMeter(1, voltage=13.44, current=0.10, power=1.3, energy_wh=2), READ_DC,
     H('01 04 10 05 40 00 0A 00 0D 00 00 00 02 00 00 00 00 00 00 D6 29')),
    ('Tasmota PZEM-016', lambda: AcMeter(1, voltage=232.3, current=1.408, power=245.0,
                                         energy_wh=65353, frequency=49.9, power_factor=0.75),
     READ_AC,
     H('01 04 14 09 13 05 80 00 00 09 92 00 00 FF 49 00 00 01 F3 00 4B 00 00 6C 13')),
    ('lechacal PZEM-016', lambda: AcMeter(1, voltage=249.5), H('01 04 00 00 00 01 31 CA'),
     H('01 04 02 09 BF FE D0')),
]


@pytest.mark.parametrize('name, make_meter, request_, reply', CAPTURES,
                         ids=[c[0] for c in CAPTURES])
def test_captured_frames_come_out_exactly(sim_bus, raw_port, name, make_meter, request_, reply):
    port = raw_port(sim_bus(make_meter()))
    assert exchange(port, request_, 64) == reply


def test_manual_example_values(sim_bus, raw_port):
    port = raw_port(sim_bus(AcMeter(1, voltage=220.0, current=1.0, power=220.0, energy_wh=0,
                                    frequency=50.0, power_factor=1.0)))
    reply = exchange(port, READ_AC, 25)
    assert reply[:23] == H('01 04 14 08 98 03 E8 00 00 08 98 00 00 00 00 00 00 01 F4 00 64 00 00')
    assert crc_ok(reply)


def test_dc_manual_example_values(sim_bus, raw_port):
    port = raw_port(sim_bus(DcMeter(1, voltage=100.0, current=1.0, power=100.0)))
    reply = exchange(port, READ_DC, 21)
    assert reply[3:19] == H('27 10 00 64 03 E8 00 00 00 00 00 00 00 00 00 00')


def test_32_bit_values_go_low_word_first(sim_bus, raw_port):
    port = raw_port(sim_bus(AcMeter(1, current=70.0, power=16000.0, energy_wh=0x12345)))
    words = exchange(port, READ_AC, 25)[3:23]
    assert words[2:6] == H('11 70 00 01')       # 70000 mA = 0x00011170
    assert words[6:10] == H('71 00 00 02')      # 160000 (0.1 W) = 0x00027100
    assert words[10:14] == H('23 45 00 01')     # 0x12345 Wh


# -- CRC ------------------------------------------------------------------------------------

@pytest.mark.parametrize('frame', [
    '01 04 00 00 00 0A 70 0D', '01 04 00 00 00 08 F1 CC', '01 06 00 02 00 05 E8 09',
    'F8 03 00 02 00 01 31 A3', '01 42 80 11', 'F8 42 C2 41', '01 06 00 03 00 02 F8 0B',
    'F8 41 37 21 B7 78', '01 84 02 C2 C1', '01 04 00 00 00 01 31 CA'])
def test_crc_of_reference_frames(frame):
    frame = H(frame)
    assert with_crc(frame[:-2]) == frame
    assert crc16(frame) == 0 and crc_ok(frame)


def test_crc_rejects_a_flipped_bit():
    assert not crc_ok(H('01 04 00 00 00 0A 70 0C'))
    assert not crc_ok(H('01 05 00 00 00 0A 70 0D'))


# -- reads, holding registers, exceptions ----------------------------------------------------

def test_partial_input_read_from_an_offset(sim_bus, raw_port):
    port = raw_port(sim_bus(AcMeter(1, frequency=49.9, power_factor=0.93)))
    reply = exchange(port, with_crc(H('01 04 00 07 00 02')), 9)
    assert reply == with_crc(H('01 04 04 01 F3 00 5D'))


def test_ac_holding_registers(sim_bus, raw_port):
    port = raw_port(sim_bus(AcMeter(7, power_alarm_w=2300)))
    reply = exchange(port, with_crc(H('07 03 00 01 00 02')), 9)
    assert reply == with_crc(H('07 03 04 08 FC 00 07'))


def test_dc_holding_registers(sim_bus, raw_port):
    port = raw_port(sim_bus(DcMeter(2, high_alarm_v=300.0, low_alarm_v=7.0, current_range=200)))
    reply = exchange(port, with_crc(H('02 03 00 00 00 04')), 13)
    assert reply == with_crc(H('02 03 08 75 30 02 BC 00 02 00 02'))


@pytest.mark.parametrize('family, request_, code', [
    (AcMeter, '01 04 00 00 00 0B', 0x02),       # 11 input registers: one too many
    (DcMeter, '01 04 00 00 00 0A', 0x02),       # the AC count asked of a DC meter
    (DcMeter, '01 04 00 08 00 01', 0x02),
    (AcMeter, '01 03 00 00 00 01', 0x02),       # no holding 0x0000 on the AC family
    (AcMeter, '01 03 00 01 00 03', 0x02),
    (DcMeter, '01 03 00 00 00 05', 0x02),
    (AcMeter, '01 04 00 00 00 00', 0x03),       # zero registers
    (AcMeter, '01 06 00 02 00 00', 0x03),       # address 0
    (AcMeter, '01 06 00 02 00 F8', 0x03),       # address 248
    (AcMeter, '01 06 00 01 61 A9', 0x03),       # power alarm 25001 W
    (AcMeter, '01 06 00 05 00 01', 0x02),       # no such holding register
    (DcMeter, '01 06 00 03 00 04', 0x03),       # current range code 4
    (DcMeter, '01 06 00 00 01 F3', 0x03),       # high alarm 4.99 V
    (DcMeter, '01 06 00 01 00 63', 0x03),       # low alarm 0.99 V
])
def test_exceptions(sim_bus, raw_port, family, request_, code):
    meter = family(1)
    port = raw_port(sim_bus(meter))
    request_ = with_crc(H(request_))
    assert exchange(port, request_, 5) == with_crc(bytes((1, request_[1] | 0x80, code)))
    assert meter.stats['exceptions'] == 1


def test_unknown_function_gets_illegal_function(sim_bus, raw_port):
    port = raw_port(sim_bus(AcMeter(1)))
    assert exchange(port, with_crc(H('01 11')), 5) == with_crc(H('01 91 01'))


def test_first_exception_example_of_the_reference(sim_bus, raw_port):
    meter = AcMeter(1)
    port = raw_port(sim_bus(meter))
    meter.inject('exception', code=2)
    assert exchange(port, READ_AC, 5) == H('01 84 02 C2 C1')


# -- writes, address change, reset ------------------------------------------------------------

def test_write_echoes_and_applies(sim_bus, raw_port):
    meter = DcMeter(1)
    port = raw_port(sim_bus(meter))
    request_ = H('01 06 00 03 00 02 F8 0B')           # range 200 A
    assert exchange(port, request_, 8) == request_
    assert meter.current_range == 200
    request_ = with_crc(H('01 06 00 00 27 10'))        # high alarm 100.00 V
    assert exchange(port, request_, 8) == request_
    assert meter.high_alarm_v == 100.0


def test_address_change_takes_effect_at_once(sim_bus, raw_port):
    meter = AcMeter(1, voltage=230.0)
    port = raw_port(sim_bus(meter))
    request_ = H('01 06 00 02 00 05 E8 09')
    assert exchange(port, request_, 8) == request_      # the echo carries the old address
    assert meter.address == 5
    assert exchange(port, READ_AC, 25) == b''           # nobody at 1 any more
    reply = exchange(port, with_crc(H('05 04 00 00 00 0A')), 25)
    assert reply[:5] == H('05 04 14 08 FC') and crc_ok(reply)


def test_reset_energy(sim_bus, raw_port):
    ac, dc = AcMeter(1, energy_wh=12345), DcMeter(2, energy_wh=999)
    port = raw_port(sim_bus(ac, dc))
    assert exchange(port, H('01 42 80 11'), 4) == H('01 42 80 11')
    assert ac.energy_wh == 0 and dc.energy_wh == 999
    assert exchange(port, READ_AC, 25)[13:17] == H('00 00 00 00')
    reset_dc = with_crc(H('02 42'))
    assert exchange(port, reset_dc, 4) == reset_dc and dc.energy_wh == 0


def test_reset_refused(sim_bus, raw_port):
    meter = AcMeter(1, energy_wh=50)
    port = raw_port(sim_bus(meter))
    meter.inject('exception', count=1, code=4)
    assert exchange(port, H('01 42 80 11'), 5) == with_crc(H('01 C2 04'))
    assert meter.energy_wh == 50


# -- addresses: general, broadcast, unknown ------------------------------------------------------

def test_general_address_with_one_meter_answers_with_its_own_address(sim_bus, raw_port):
    port = raw_port(sim_bus(AcMeter(7)))
    assert exchange(port, H('F8 03 00 02 00 01 31 A3'), 7) == with_crc(H('07 03 02 00 07'))


def test_general_address_write_changes_the_one_meter(sim_bus, raw_port):
    meter = DcMeter(3)
    port = raw_port(sim_bus(meter))
    assert exchange(port, with_crc(H('F8 06 00 02 00 09')), 8) == with_crc(H('03 06 00 02 00 09'))
    assert meter.address == 9


def test_general_address_with_two_meters_collides(sim_bus, raw_port):
    sim = sim_bus(AcMeter(1), DcMeter(2))
    port = raw_port(sim)
    reply = exchange(port, H('F8 03 00 02 00 01 31 A3'), 7)
    assert len(reply) == 7
    assert reply not in (with_crc(H('01 03 02 00 01')), with_crc(H('02 03 02 00 02')))
    assert not crc_ok(reply)
    assert sim.stats['collisions'] == 1


def test_duplicate_addresses_collide(sim_bus, raw_port):
    sim = sim_bus(AcMeter(1, voltage=230.0), AcMeter(1, voltage=120.0))
    reply = exchange(raw_port(sim), READ_AC, 25)
    assert len(reply) == 25 and not crc_ok(reply)


def test_broadcast_acts_without_reply(sim_bus, raw_port):
    a, b = AcMeter(1), AcMeter(2)
    port = raw_port(sim_bus(a, b))
    assert exchange(port, with_crc(H('00 06 00 01 03 E8')), 8) == b''
    assert a.power_alarm_w == 1000 and b.power_alarm_w == 1000


def test_unknown_address_is_silent(sim_bus, raw_port):
    sim = sim_bus(AcMeter(1))
    assert exchange(raw_port(sim), with_crc(H('02 04 00 00 00 0A')), 25) == b''
    assert sim.stats['unanswered'] == 1


# -- faults -----------------------------------------------------------------------------------

@pytest.fixture
def one_meter(sim_bus, raw_port):
    meter = AcMeter(1, voltage=230.0, current=2.0, power=450.0, energy_wh=1000,
                    power_factor=0.98)
    sim = sim_bus(meter)
    port = raw_port(sim, timeout=0.5)      # a loaded machine may take a while to answer
    good = exchange(port, READ_AC, 25)
    assert len(good) == 25 and crc_ok(good)
    return meter, port, good, sim


def test_no_reply_for_a_count(one_meter):
    meter, port, good, sim = one_meter
    meter.inject('no_reply', count=2)
    assert exchange(port, READ_AC, 25) == b''
    assert exchange(port, READ_AC, 25) == b''
    assert exchange(port, READ_AC, 25) == good
    assert meter.stats['no_reply'] == 2 and meter.stats['faults'] == 2
    assert meter.faults == {}


def test_no_reply_still_acts_but_silent_does_not(one_meter):
    meter, port, good, sim = one_meter
    meter.inject('no_reply', count=1)
    assert exchange(port, with_crc(H('01 06 00 01 03 E8')), 8) == b''
    assert meter.power_alarm_w == 1000                  # the write happened, the reply was lost
    meter.inject('silent')
    assert exchange(port, with_crc(H('01 06 00 01 07 D0')), 8) == b''
    assert exchange(port, READ_AC, 25) == b''
    assert meter.power_alarm_w == 1000                  # powered off: nothing happened
    assert meter.faults == {'silent': None}
    meter.clear_faults()
    assert exchange(port, READ_AC, 25) == good
    assert meter.stats['silent'] == 2


def test_bad_crc(one_meter):
    meter, port, good, sim = one_meter
    meter.inject('bad_crc', count=1)
    reply = exchange(port, READ_AC, 25)
    assert reply[:23] == good[:23] and reply != good and not crc_ok(reply)
    assert exchange(port, READ_AC, 25) == good


def test_truncated(one_meter):
    meter, port, good, sim = one_meter
    meter.inject('truncated', count=1)
    assert exchange(port, READ_AC, 25) == good[:12]
    meter.inject('truncated', count=1, keep=3)
    assert exchange(port, READ_AC, 25) == good[:3]


def test_garbage_before(one_meter):
    meter, port, good, sim = one_meter
    meter.inject('garbage_before', count=1)
    assert exchange(port, READ_AC, 27) == H('00 FF') + good
    meter.inject('garbage_before', count=1, junk=H('55 AA 01'))
    assert exchange(port, READ_AC, 28) == H('55 AA 01') + good


def test_wrong_address(one_meter):
    meter, port, good, sim = one_meter
    meter.inject('wrong_address', count=1)
    reply = exchange(port, READ_AC, 25)
    assert reply[0] == 2 and reply[1:23] == good[1:23] and crc_ok(reply)
    meter.inject('wrong_address', count=1, address=9)
    assert exchange(port, READ_AC, 25) == with_crc(H('09') + good[1:23])


def test_exception_fault(one_meter):
    meter, port, good, sim = one_meter
    meter.inject('exception', count=1, code=3)
    assert exchange(port, READ_AC, 25) == with_crc(H('01 84 03'))
    meter.inject('exception', count=1)
    assert exchange(port, with_crc(H('01 06 00 01 03 E8')), 8) == with_crc(H('01 86 04'))
    assert meter.power_alarm_w == 2300                  # refused: not written


def test_junk_values_have_a_valid_crc(one_meter):
    meter, port, good, sim = one_meter
    meter.inject('junk_values', count=2)
    first, second = exchange(port, READ_AC, 25), exchange(port, READ_AC, 25)
    for junk in (first, second):
        assert junk[:3] == good[:3] and crc_ok(junk) and junk != good
    assert first != second
    assert exchange(port, READ_AC, 25) == good


def test_junk_values_leave_other_replies_alone(one_meter):
    meter, port, good, sim = one_meter
    meter.inject('junk_values', count=1)
    assert exchange(port, H('01 42 80 11'), 4) == H('01 42 80 11')
    assert meter.faults == {'junk_values': 1}           # still waiting for a read


def test_mixed_faults_apply_together(one_meter):
    meter, port, good, sim = one_meter
    meter.inject('bad_crc', count=1)
    meter.inject('garbage_before', count=1, junk=H('00'))
    reply = exchange(port, READ_AC, 26)
    assert reply[:24] == H('00') + good[:23] and not crc_ok(reply[1:])
    assert exchange(port, READ_AC, 25) == good
    assert sim.stats['faults'] == 2 and sim.stats['bad_crc'] == 1


def test_faults_until_cleared(one_meter):
    meter, port, good, sim = one_meter
    meter.inject('truncated', keep=4)
    for _ in range(3):
        assert exchange(port, READ_AC, 25) == good[:4]
    meter.clear_faults('truncated')
    assert exchange(port, READ_AC, 25) == good


def test_bad_fault_requests_are_refused():
    meter = AcMeter(1)
    with pytest.raises(ValueError):
        meter.inject('smoke')
    with pytest.raises(ValueError):
        meter.inject('bad_crc', code=3)
    with pytest.raises(ValueError):
        meter.inject('no_reply', count=0)


# -- values --------------------------------------------------------------------------------

def test_values_change_live(one_meter):
    meter, port, good, sim = one_meter
    meter.set(voltage=231.2, power=1500.0)
    reply = exchange(port, READ_AC, 25)
    assert reply[3:5] == H('09 08') and reply[9:13] == H('3A 98 00 00')
    with pytest.raises(AttributeError):
        meter.set(volts=12)


def test_alarms_follow_thresholds(sim_bus, raw_port):
    ac, dc = AcMeter(1, power=2400.0, power_alarm_w=2300), DcMeter(2, voltage=6.5)
    port = raw_port(sim_bus(ac, dc))
    assert exchange(port, READ_AC, 25)[21:23] == H('FF FF')
    assert exchange(port, with_crc(H('02 04 00 06 00 02')), 9)[3:7] == H('00 00 FF FF')
    dc.set(voltage=310.0)
    assert exchange(port, with_crc(H('02 04 00 06 00 02')), 9)[3:7] == H('FF FF 00 00')


def test_energy_accumulates_from_power():
    meter = AcMeter(1, power=36000.0, energy_wh=100)    # 10 Wh per second
    assert meter.energy_wh == 100
    meter.accumulate = True
    time.sleep(0.2)
    assert 101.5 < meter.energy_wh < 104
    meter.accumulate = False
    frozen = meter.energy_wh
    time.sleep(0.05)
    assert meter.energy_wh == frozen


def test_load_variation_moves_values():
    ac, dc = AcMeter(1), DcMeter(2)
    variation = LoadVariation([ac, dc], period=60.0)
    variation.step(0.0)
    before = (ac.power, dc.power)
    variation.step(15.0)
    assert (ac.power, dc.power) != before
    assert 200.0 <= ac.power <= 1600.0 and 0.0 <= dc.power <= 230.0
    assert abs(ac.current * ac.voltage * ac.power_factor - ac.power) < 1.0


# -- framing of requests ---------------------------------------------------------------------

def test_framer_resynchronises_after_noise():
    framer = RequestFramer()
    frames = framer.feed(H('FF 00 13') + READ_AC + H('07') + READ_DC, 0.0)
    assert frames == [READ_AC, READ_DC]
    assert framer.dropped == 4


def test_framer_waits_for_the_rest_then_drops_after_silence():
    framer = RequestFramer(quiet=0.02)
    assert framer.feed(READ_AC[:5], 0.0) == []
    assert framer.feed(READ_AC[5:], 0.005) == [READ_AC]
    assert framer.feed(READ_AC[:5], 1.0) == []
    assert framer.expire(1.01) == []                    # not silent long enough yet
    assert framer.expire(1.03) == [] and framer.dropped == 5
    assert framer.feed(READ_AC, 1.04) == [READ_AC]


def test_noise_before_a_request_is_skipped(one_meter):
    meter, port, good, sim = one_meter
    assert exchange(port, H('00 FF 42') + READ_AC, 25) == good


def test_request_in_pieces(one_meter):
    meter, port, good, sim = one_meter
    port.reset_input_buffer()
    port.write(READ_AC[:3])
    time.sleep(0.005)
    port.write(READ_AC[3:])
    assert port.read(25) == good


def test_a_broken_request_is_dropped_after_silence(one_meter):
    meter, port, good, sim = one_meter
    port.write(READ_AC[:6])
    time.sleep(0.05)
    assert exchange(port, READ_AC, 25) == good
    assert exchange(port, READ_AC[:-1] + H('00'), 25) == b''    # bad CRC: no answer
    assert sim.stats['dropped_bytes'] >= 6


# -- timing, stats, life cycle ----------------------------------------------------------------

def test_wire_time(sim_bus, raw_port):
    sim = sim_bus(AcMeter(1), wire_time=True, turnaround=0.05)
    port = raw_port(sim, timeout=0.5)
    expected = (8 + 25) * 11 / 9600.0 + 0.05               # 87.8 ms
    port.write(READ_AC)
    started = time.monotonic()
    assert len(port.read(25)) == 25
    took = time.monotonic() - started
    # never early; the upper bound leaves room for a loaded machine's scheduling
    assert expected - 0.002 <= took < expected + 0.3


def test_no_wire_time_replies_at_once(one_meter):
    meter, port, good, sim = one_meter
    started = time.monotonic()
    assert exchange(port, READ_AC, 25) == good
    assert time.monotonic() - started < 0.08        # well before the wire time (87.8 ms)


def test_stats(sim_bus, raw_port):
    a, b = AcMeter(1), DcMeter(2)
    sim = sim_bus(a, b)
    port = raw_port(sim, timeout=0.5)
    b.inject('bad_crc', count=1)
    exchange(port, READ_AC, 25)
    exchange(port, with_crc(H('02 04 00 00 00 08')), 21)
    exchange(port, with_crc(H('02 04 00 00 00 08')), 21)
    exchange(port, with_crc(H('09 04 00 00 00 08')), 21)
    assert dict(a.stats) == {'requests': 1, 'replies': 1}
    assert b.stats['requests'] == 2 and b.stats['bad_crc'] == 1 and b.stats['faults'] == 1
    stats = sim.stats
    assert (stats['frames'], stats['replies'], stats['unanswered']) == (4, 3, 1)
    assert stats['faults'] == 1 and stats['bad_crc'] == 1


def test_echoing_adapter(sim_bus, raw_port):
    port = raw_port(sim_bus(AcMeter(1), echo=True))
    reply = exchange(port, READ_AC, 33)
    assert reply[:8] == READ_AC and len(reply) == 33 and crc_ok(reply[8:])


def test_stop_removes_the_port(sim_bus, raw_port):
    sim = sim_bus(AcMeter(1))
    port = raw_port(sim)
    assert os.path.islink(sim.link) and os.path.realpath(sim.link).startswith('/dev/pts/')
    sim.stop()
    assert not os.path.lexists(sim.link)
    with pytest.raises(Exception):
        exchange(port, READ_AC, 25)


def test_context_manager(tmp_path, raw_port):
    from pzemsim import SimBus
    link = str(tmp_path / 'sub' / 'ttyX')
    with SimBus(link) as sim:
        sim.add(AcMeter(3))
        assert exchange(raw_port(sim), with_crc(H('03 03 00 02 00 01')), 7) == \
            with_crc(H('03 03 02 00 03'))
    assert not os.path.lexists(link)


def test_command_line(tmp_path, raw_port):
    link = str(tmp_path / 'pzem' / 'ttyPZEM0')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen([sys.executable, '-m', 'pzemsim', '--link', link,
                                '--meter', '1:ac', '--meter', '3:dc', '--vary'],
                               cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = process.stdout.readline().decode()
        assert link in first and 'PZEM-016 at 1' in first and 'PZEM-017 at 3' in first

        port = raw_port(link)
        assert crc_ok(exchange(port, READ_AC, 25))
        assert crc_ok(exchange(port, with_crc(H('03 04 00 00 00 08')), 21))
        port.close()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert b'stopped' in out
    assert not os.path.lexists(link)


def test_command_line_refuses_bad_meters(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'pzemsim', '--link', str(tmp_path / 't'),
                             '--meter', '300:ac'], cwd=os.path.dirname(os.path.dirname(
                                 os.path.abspath(__file__))), capture_output=True)
    assert result.returncode == 2 and b'ADDRESS:ac' in result.stderr


# -- the link: only what the simulator made is replaced or removed --------------------------

def run_pzemsim(link, *extra):
    return subprocess.run([sys.executable, '-m', 'pzemsim', '--link', link, '--meter', '1:ac']
                          + list(extra), cwd=os.path.dirname(os.path.dirname(
                              os.path.abspath(__file__))), capture_output=True, timeout=30,
                          universal_newlines=True)


def one_sentence(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('pzemsim: ') and 'Traceback' not in stderr, \
        stderr
    return lines[0]


def test_a_users_file_is_refused_and_kept(tmp_path):
    from pzemsim import LinkTaken, SimBus
    path = tmp_path / 'notes.txt'
    path.write_text('my notes\n')
    with pytest.raises(LinkTaken, match='notes.txt is a file the simulator did not make'):
        SimBus(str(path)).start()
    result = run_pzemsim(str(path))
    assert result.returncode == 1
    assert 'is a file the simulator did not make' in one_sentence(result.stderr)
    assert path.read_text() == 'my notes\n'


def test_a_folder_and_a_foreign_link_are_refused(tmp_path):
    from pzemsim import LinkTaken, SimBus
    folder = tmp_path / 'ttyUSB0'
    folder.mkdir()
    (folder / 'keep').write_text('x')
    with pytest.raises(LinkTaken, match='is a folder'):
        SimBus(str(folder)).start()
    assert (folder / 'keep').read_text() == 'x'
    link = tmp_path / 'ttyOther'
    os.symlink('/dev/null', str(link))
    result = run_pzemsim(str(link))
    assert result.returncode == 1
    assert 'is a link to /dev/null' in one_sentence(result.stderr)
    assert os.readlink(str(link)) == '/dev/null'


def test_a_running_simulators_link_is_not_taken_over(sim_bus, raw_port):
    from pzemsim import LinkTaken, SimBus
    sim = sim_bus(AcMeter(1))
    target = os.readlink(sim.link)
    with pytest.raises(LinkTaken, match='the port of a running simulator'):
        SimBus(sim.link).start()
    result = run_pzemsim(sim.link)
    assert result.returncode == 1 and 'running simulator' in one_sentence(result.stderr)
    assert os.readlink(sim.link) == target
    assert crc_ok(exchange(raw_port(sim), READ_AC, 25))


def test_a_stale_link_of_a_dead_simulator_is_replaced(tmp_path, raw_port):
    from pzemsim import SimBus
    link = str(tmp_path / 'ttyPZEM0')
    os.symlink('/dev/pts/999999', link)     # what a killed simulator leaves: its pty is gone
    with SimBus(link) as sim:
        sim.add(AcMeter(1))
        assert os.readlink(link) == sim.device
        assert crc_ok(exchange(raw_port(sim), READ_AC, 25))
    assert not os.path.lexists(link)


def test_stop_removes_only_the_folders_it_made_and_left_empty(tmp_path):
    from pzemsim import SimBus
    (tmp_path / 'a').mkdir()
    with SimBus(str(tmp_path / 'a' / 'b' / 'c' / 'ttyX')):
        pass
    assert os.listdir(str(tmp_path / 'a')) == []            # b and c went, a was there before
    with SimBus(str(tmp_path / 'a' / 'b' / 'c' / 'ttyX')):
        (tmp_path / 'a' / 'b' / 'mine').write_text('x')
    assert os.listdir(str(tmp_path / 'a' / 'b')) == ['mine']


def test_stop_leaves_what_replaced_its_link(tmp_path):
    from pzemsim import SimBus
    link = tmp_path / 'ttyX'
    with SimBus(str(link)):
        os.unlink(str(link))
        link.write_text('the user put this here')
    assert link.read_text() == 'the user put this here'


def test_bad_numbers_get_one_sentence(tmp_path):
    for option in (['--turnaround', 'nan'], ['--turnaround', '-1'], ['--baudrate', '0']):
        result = run_pzemsim(str(tmp_path / 't'), *option)
        assert result.returncode == 2 and 'Traceback' not in result.stderr, option
        assert 'expected' in result.stderr.strip().splitlines()[-1], option
    assert not os.path.lexists(str(tmp_path / 't'))
