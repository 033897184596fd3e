"""The two PZEM meter families as data: input registers, divisor, kind, D-Bus path, text, limits.

Decode follows the manuals (reference/pzem-protocol.md 2.2 and 2.4): 16-bit registers, and 32-bit
values with the LOW word in the lower register. Energy comes in Wh and is published in kWh.
A field's path may hold `{phase}` (L1..L3) and `{energy}` (In or Out, from the role).

A field's kind says how it is published:
  value    as read
  signed   as read, negative while energy flows back (`sign = vebus` in the map)
  counter  the meter's energy counter: the driver publishes its own running total in its place
  alarm    0x0000 off / 0xFFFF on, published as 0 (ok) / 2 (alarm)

A PZEM-016 reply, annotated (a real capture, arendst/Tasmota #7674; reference/pzem-protocol.md 2.6):

    01 04 14                address 1, function 4, 20 data bytes
    09 13                   0x0000 voltage        0x0913 = 2323            -> 232.3 V
    05 80 00 00             0x0001 current        low 0x0580, high 0x0000  -> 1.408 A
    09 92 00 00             0x0003 power          low 0x0992, high 0x0000  -> 245.0 W
    FF 49 00 00             0x0005 energy         low 0xFF49, high 0x0000  -> 65.353 kWh
    01 F3                   0x0007 frequency      499                      -> 49.9 Hz
    00 4B                   0x0008 power factor   75                       -> 0.75
    00 00                   0x0009 alarm          off
    6C 13                   CRC-16/MODBUS, low byte first
"""
from collections import namedtuple

from . import modbus

Field = namedtuple('Field', 'name register words divisor kind path text low high')
ALARM_ON = 0xFFFF


class Model(object):
    def __init__(self, family, name, input_count, fields, max_watts_per_amp_volt):
        self.family = family
        self.name = name
        self.input_count = input_count
        self.fields = fields
        self.tolerance = max_watts_per_amp_volt
        self.max_kw = [f.high for f in fields if f.name == 'power'][0] / 1000.0

    def decode(self, regs):
        """Readings in SI units (energy in kWh) from the input registers, in table order."""
        values = {}
        for f in self.fields:
            raw = regs[f.register]
            if f.words == 2:
                raw |= regs[f.register + 1] << 16
            # Dividing (not multiplying by 0.1) keeps 2300 -> 230.0 exact for D-Bus and VRM.
            values[f.name] = raw / f.divisor if f.divisor else raw
        return values

    def check(self, values):
        """None when the reading is plausible, else the reason (a few words for the log)."""
        for f in self.fields:
            v = values[f.name]
            if f.kind == 'alarm':
                if v not in (0, ALARM_ON):
                    return '%s register is 0x%04X' % (f.name, v)
            elif not f.low <= v <= f.high:
                return '%s %g out of range %g..%g' % (f.name, v, f.low, f.high)
        # The meter derives power from voltage, current and power factor; junk does not.
        apparent = values['voltage'] * values['current']
        expected = apparent * values.get('power_factor', 1.0)
        if abs(values['power'] - expected) > self.tolerance * apparent + 5.0:
            return 'power %.1f W does not match %.1f V x %.3f A' % (
                values['power'], values['voltage'], values['current'])
        return None


AC = Model('ac', 'PZEM-016', 10, (
    Field('voltage', 0, 1, 10, 'value', '/Ac/{phase}/Voltage', '{:.1f} V', 0.0, 300.0),
    Field('current', 1, 2, 1000, 'signed', '/Ac/{phase}/Current', '{:.3f} A', 0.0, 110.0),
    Field('power', 3, 2, 10, 'signed', '/Ac/{phase}/Power', '{:.1f} W', 0.0, 26000.0),
    Field('energy', 5, 2, 1000, 'counter', '/Ac/{phase}/Energy/Forward', '{:.3f} kWh', 0.0,
          10000.0),
    Field('frequency', 7, 1, 10, 'value', '/Ac/{phase}/Frequency', '{:.1f} Hz', 0.0, 70.0),
    Field('power_factor', 8, 1, 100, 'value', '/Ac/{phase}/PowerFactor', '{:.2f}', 0.0, 1.0),
    Field('alarm', 9, 1, None, 'alarm', None, None, 0, ALARM_ON),
), max_watts_per_amp_volt=0.1)

DC = Model('dc', 'PZEM-017', 8, (
    Field('voltage', 0, 1, 100, 'value', '/Dc/0/Voltage', '{:.2f} V', 0.0, 350.0),
    Field('current', 1, 1, 100, 'value', '/Dc/0/Current', '{:.2f} A', 0.0, 330.0),
    Field('power', 2, 2, 10, 'value', '/Dc/0/Power', '{:.1f} W', 0.0, 100000.0),
    Field('energy', 4, 2, 1000, 'counter', '/History/Energy{energy}', '{:.3f} kWh', 0.0, 10000.0),
    Field('high_voltage_alarm', 6, 1, None, 'alarm', '/Alarms/HighVoltage', None, 0, ALARM_ON),
    Field('low_voltage_alarm', 7, 1, None, 'alarm', '/Alarms/LowVoltage', None, 0, ALARM_ON),
), max_watts_per_amp_volt=0.05)

MODELS = {'ac': AC, 'dc': DC}

# PZEM-017 holding register 0x0003: shunt range code -> amperes (0 means 100 A).
DC_CURRENT_RANGES = {0: 100, 1: 50, 2: 200, 3: 300}


def phase_totals(readings):
    """Total power and power factor of a complete set of phase readings (None if any is None):
    never a total of the phases that happen to answer."""
    if not readings or None in readings:
        return None
    if len(readings) == 1:
        return {'power': readings[0]['power'], 'power_factor': readings[0]['power_factor']}
    power = sum(r['power'] for r in readings)
    apparent = sum(r['voltage'] * r['current'] for r in readings)
    return {'power': power,
            'power_factor': round(min(power / apparent, 1.0), 2) if apparent else None}


def detect(bus, address):
    """The model at `address`, or raise modbus.NoReply when nothing answers there."""
    return identify(bus, address)[0]


def identify(bus, address):
    """(model, its input registers or None) at `address`; raises as detect() does.

    Only the PZEM-017 has holding register 0x0003 (its shunt range, 0..3); the PZEM-016 family
    answers that read with an exception. A PZEM-003 (DC, no range register) has no input
    register 8 and 9, so a 10-register input read fails there with an exception.
    """
    try:
        code = bus.read_holding(address, 3, 1)[0]
        if code in DC_CURRENT_RANGES:
            return DC, None
    except modbus.ExceptionReply:
        pass
    try:
        return AC, bus.read_input(address, AC.input_count)
    except modbus.ExceptionReply:
        return DC, bus.read_input(address, DC.input_count)
