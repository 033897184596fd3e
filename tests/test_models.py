"""The model tables: decode against captured frames, and the plausibility check under fuzzing."""
import struct

from hypothesis import given, settings, strategies as st

from pzem import models


def registers(frame_hex):
    """Data registers of a captured FC 0x04 reply (address, function, byte count, data, CRC)."""
    frame = bytes.fromhex(frame_hex)
    data = frame[3:3 + frame[2]]
    return list(struct.unpack('>%dH' % (len(data) // 2), data))


def test_esphome_ac_capture():
    values = models.AC.decode(registers(
        '01 04 14 08 D1 00 6C 00 00 00 F4 00 00 00 26 00 00 01 F4 00 64 00 00 51 34'))
    assert values == {'voltage': 225.7, 'current': 0.108, 'power': 24.4, 'energy': 0.038,
                      'frequency': 50.0, 'power_factor': 1.0, 'alarm': 0}
    assert models.AC.check(values) is None


def test_tasmota_capture_low_word_first_just_below_65536_wh():
    values = models.AC.decode(registers(
        '01 04 14 09 13 05 80 00 00 09 92 00 00 FF 49 00 00 01 F3 00 4B 00 00 6C 13'))
    assert values['voltage'] == 232.3
    assert values['current'] == 1.408
    assert values['power'] == 245.0
    assert values['energy'] == 65.353
    assert values['frequency'] == 49.9
    assert values['power_factor'] == 0.75
    assert models.AC.check(values) is None


def test_high_word_counts_65536():
    regs = [2300, 0, 0, 0, 0, 0x0001, 0x0001, 500, 0, 0]     # energy = 1 + 65536 Wh
    assert models.AC.decode(regs)['energy'] == 65.537


def test_esphome_dc_capture():
    values = models.DC.decode(registers(
        '01 04 10 05 40 00 0A 00 0D 00 00 00 02 00 00 00 00 00 00 D6 29'))
    assert values == {'voltage': 13.44, 'current': 0.1, 'power': 1.3, 'energy': 0.002,
                      'high_voltage_alarm': 0, 'low_voltage_alarm': 0}
    assert models.DC.check(values) is None


def test_power_up_junk_is_refused():
    # 42949.672 kWh, the classic junk a PZEM-016 sends just after power-up (valid CRC)
    regs = [0xFFFF] * 10
    assert 'out of range' in models.AC.check(models.AC.decode(regs))
    inconsistent = models.AC.decode([2300, 1000, 0, 9000, 0, 5, 0, 500, 100, 0])
    assert 'does not match' in models.AC.check(inconsistent)


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from([models.AC, models.DC]), st.data())
def test_any_reading_that_passes_is_within_the_tables_limits(model, data):
    regs = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=model.input_count,
                              max_size=model.input_count))
    values = model.decode(regs)
    if model.check(values) is not None:
        return
    for f in model.fields:
        if f.divisor is None:
            assert values[f.name] in (0, models.ALARM_ON)
        else:
            assert f.low <= values[f.name] <= f.high
    apparent = values['voltage'] * values['current']
    assert abs(values['power'] - apparent * values.get('power_factor', 1.0)) <= \
        model.tolerance * apparent + 5.0


@settings(max_examples=2000, deadline=None)
@given(st.floats(80, 260), st.floats(0, 100), st.floats(0, 1), st.integers(0, 9999990))
def test_every_real_ac_reading_passes(voltage, current, pf, energy_wh):
    """What a meter reports (rounded to its resolution) is never refused as junk."""
    v, i, p = round(voltage * 10), round(current * 1000), round(pf * 100)
    power = round(v / 10 * i / 1000 * p / 100 * 10)
    regs = [v, i & 0xFFFF, i >> 16, power & 0xFFFF, power >> 16, energy_wh & 0xFFFF,
            energy_wh >> 16, 500, p, 0]
    assert models.AC.check(models.AC.decode(regs)) is None


@settings(max_examples=2000, deadline=None)
@given(st.floats(0.05, 300), st.floats(0, 300), st.integers(0, 9999000))
def test_every_real_dc_reading_passes(voltage, current, energy_wh):
    v, i = round(voltage * 100), round(current * 100)
    power = round(v / 100 * i / 100 * 10)
    regs = [v, i, power & 0xFFFF, power >> 16, energy_wh & 0xFFFF, energy_wh >> 16, 0, 0]
    assert models.DC.check(models.DC.decode(regs)) is None
