"""Simulated PZEM meters: their registers and how they answer a request frame.

AcMeter is the PZEM-016/014/004T register map, DcMeter the PZEM-017 (and 003) map
(reference/pzem-protocol.md sections 2.2 to 2.5). Values are set in SI units and
turned into registers at read time; 32-bit values go out low word first.
"""

import random
import struct
import threading
import time
from collections import Counter

from .crc import with_crc
from .faults import Faults

READ_HOLDING, READ_INPUT, WRITE_REGISTER, RESET_ENERGY = 0x03, 0x04, 0x06, 0x42
BROADCAST = 0x00
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 0x01, 0x02, 0x03


def u16(value):
    return min(max(int(round(value)), 0), 0xFFFF)


def u32(value):
    """(low word, high word) of a 32-bit register pair."""
    value = min(max(int(round(value)), 0), 0xFFFFFFFF)
    return value & 0xFFFF, value >> 16


def flag(on):
    return 0xFFFF if on else 0x0000


class Meter:
    """What both families share: address, faults, energy counting, the Modbus handling."""

    model = ''
    fields = ()                     # names `set()` accepts

    def __init__(self, address, energy_wh, seed):
        self.address = address
        self.stats = Counter()      # requests, replies, exceptions, faults, one count per fault
        self._lock = threading.RLock()
        self._rng = random.Random(address if seed is None else seed)
        self._faults = Faults(self._rng)
        self._dead_until = None     # monotonic time a `dead` fault ends
        self.dead_since = None      # monotonic time the last `dead` fault began
        self._previous = None       # the reply to the request before (the `previous` fault)
        self._energy = float(energy_wh)
        self._accumulate_since = None

    def __repr__(self):
        return '<%s address %d>' % (self.model, self.address)

    # -- values -------------------------------------------------------------------------

    def set(self, **values):
        """Change values while the bus runs: meter.set(voltage=231.2, power=1500)."""
        unknown = set(values) - set(self.fields)
        if unknown:
            raise AttributeError('%s has no value %s' % (self.model, ', '.join(sorted(unknown))))
        with self._lock:
            self._count_energy()
            for name, value in values.items():
                setattr(self, name, value)

    @property
    def energy_wh(self):
        with self._lock:
            self._count_energy()
            return self._energy

    @energy_wh.setter
    def energy_wh(self, value):
        with self._lock:
            self._count_energy()
            self._energy = float(value)

    @property
    def accumulate(self):
        """True: energy grows by the present power as time passes."""
        return self._accumulate_since is not None

    @accumulate.setter
    def accumulate(self, on):
        with self._lock:
            self._count_energy()
            self._accumulate_since = time.monotonic() if on else None

    def _count_energy(self):
        if self._accumulate_since is not None:
            now = time.monotonic()
            self._energy += max(self.power, 0.0) * (now - self._accumulate_since) / 3600.0
            self._accumulate_since = now

    # -- faults -------------------------------------------------------------------------

    def inject(self, kind, count=None, share=None, **options):
        """Misbehave for `count` requests (None: until cleared), or a `share` of them at
        random; see pzemsim.faults."""
        with self._lock:
            self._faults.inject(kind, count, share, **options)

    def clear_faults(self, kind=None):
        with self._lock:
            self._faults.clear(kind)
            if kind in (None, 'dead'):
                self._dead_until = None

    @property
    def faults(self):
        """{kind: remaining count or None} of the faults in force."""
        with self._lock:
            return self._faults.active()

    # -- the register maps, per family ---------------------------------------------------

    def input_registers(self):
        raise NotImplementedError

    def holding_register(self, register):
        """Its value, or None when the register does not exist."""
        raise NotImplementedError

    def write_holding(self, register, value):
        """Store a value; return an exception code when the register or value is refused."""
        raise NotImplementedError

    # -- Modbus -------------------------------------------------------------------------

    def handle(self, request):
        """The bytes this meter puts on the wire for `request` (addressed to it, to the
        general address 0xF8 or broadcast), None for silence, or a faults.Timed when a fault
        spreads them over time."""
        with self._lock:
            if self._faults.take('silent') is not None:
                self._count_faults(['silent'])
                return None
            now = time.monotonic()
            if self._dead_until is None:
                dead = self._faults.take('dead')
                if dead is not None:
                    self._dead_until = now + dead['seconds']
                    self.dead_since = now
            if self._dead_until is not None:
                if now < self._dead_until:
                    self._count_faults(['dead'])
                    return None
                self._dead_until = None
            self.stats['requests'] += 1
            self._count_energy()
            own = self.address                  # replies carry the address the request found
            if request[0] == BROADCAST:
                self._execute(request, own)
                return None
            refusal = self._faults.take('exception', request[1])
            if refusal is not None:
                self._count_faults(['exception'])
                reply = exception_reply(own, request[1], refusal['code'])
            else:
                reply = self._execute(request, own)
            if reply[1] & 0x80:
                self.stats['exceptions'] += 1
            previous, self._previous = self._previous, reply
            reply, applied = self._faults.spoil(reply, own, previous)
            self._count_faults(applied)
            if reply is not None:
                self.stats['replies'] += 1
            return reply

    def _count_faults(self, kinds):
        for kind in kinds:
            self.stats[kind] += 1
            self.stats['faults'] += 1

    def _execute(self, request, own):
        function = request[1]
        if function in (READ_INPUT, READ_HOLDING):
            start, count = struct.unpack('>HH', request[2:6])
            if not 1 <= count <= 125:
                return exception_reply(own, function, ILLEGAL_VALUE)
            if function == READ_INPUT:
                values = self.input_registers()[start:start + count]
            else:
                values = [self.holding_register(r) for r in range(start, start + count)]
            if len(values) != count or None in values:
                return exception_reply(own, function, ILLEGAL_ADDRESS)
            return with_crc(struct.pack('>BBB%dH' % count, own, function, 2 * count, *values))
        if function == WRITE_REGISTER:
            register, value = struct.unpack('>HH', request[2:6])
            code = self.write_holding(register, value)
            if code:
                return exception_reply(own, function, code)
            return with_crc(bytes((own,)) + request[1:6])
        if function == RESET_ENERGY:
            self.energy_wh = 0
            return with_crc(bytes((own, RESET_ENERGY)))
        return exception_reply(own, function, ILLEGAL_FUNCTION)

    def _set_address(self, value):
        if not 0x01 <= value <= 0xF7:
            return ILLEGAL_VALUE
        self.address = value                    # takes effect at once, for the next request
        return None


def exception_reply(address, function, code):
    return with_crc(bytes((address, function | 0x80, code)))


class AcMeter(Meter):
    """PZEM-016 (and 014, 004T v3): 10 input registers; holding 0x0001 power alarm
    threshold in W, 0x0002 address."""

    model = 'PZEM-016'
    fields = ('address', 'voltage', 'current', 'power', 'energy_wh', 'frequency',
              'power_factor', 'alarm', 'power_alarm_w')
    POWER_ALARM_MAX_W = 25000

    def __init__(self, address=1, voltage=230.0, current=0.0, power=0.0, energy_wh=0,
                 frequency=50.0, power_factor=0.0, alarm=False, power_alarm_w=2300,
                 seed=None):
        Meter.__init__(self, address, energy_wh, seed)
        self.voltage = voltage
        self.current = current
        self.power = power
        self.frequency = frequency
        self.power_factor = power_factor
        self.alarm = alarm                      # forces the alarm status on
        self.power_alarm_w = power_alarm_w

    def input_registers(self):
        current, power = u32(self.current * 1000), u32(self.power * 10)
        energy = u32(int(self._energy))                 # the meter counts whole Wh
        alarm = self.alarm or self.power > self.power_alarm_w
        return [u16(self.voltage * 10), current[0], current[1], power[0], power[1],
                energy[0], energy[1], u16(self.frequency * 10), u16(self.power_factor * 100),
                flag(alarm)]

    def holding_register(self, register):
        if register == 0x0001:
            return u16(self.power_alarm_w)
        if register == 0x0002:
            return self.address
        return None

    def write_holding(self, register, value):
        if register == 0x0001:
            if value > self.POWER_ALARM_MAX_W:
                return ILLEGAL_VALUE
            self.power_alarm_w = value
            return None
        if register == 0x0002:
            return self._set_address(value)
        return ILLEGAL_ADDRESS


class DcMeter(Meter):
    """PZEM-017 (and 003): 8 input registers; holding 0x0000 high and 0x0001 low voltage
    alarm thresholds in 0.01 V, 0x0002 address, 0x0003 current range code."""

    model = 'PZEM-017'
    fields = ('address', 'voltage', 'current', 'power', 'energy_wh', 'high_alarm_v',
              'low_alarm_v', 'current_range')
    RANGE_CODES = {100: 0, 50: 1, 200: 2, 300: 3}   # 0 means 100 A: the manual's odd order
    HIGH_ALARM_LIMITS = (500, 35000)               # 5..350 V in 0.01 V
    LOW_ALARM_LIMITS = (100, 35000)                # 1..350 V

    def __init__(self, address=1, voltage=12.8, current=0.0, power=0.0, energy_wh=0,
                 high_alarm_v=300.0, low_alarm_v=7.0, current_range=100, seed=None):
        if current_range not in self.RANGE_CODES:
            raise ValueError('current_range must be one of 50, 100, 200, 300 (A)')
        Meter.__init__(self, address, energy_wh, seed)
        self.voltage = voltage
        self.current = current
        self.power = power
        self.high_alarm_v = high_alarm_v
        self.low_alarm_v = low_alarm_v
        self.current_range = current_range

    def input_registers(self):
        power, energy = u32(self.power * 10), u32(int(self._energy))  # whole Wh
        return [u16(self.voltage * 100), u16(self.current * 100), power[0], power[1],
                energy[0], energy[1], flag(self.voltage > self.high_alarm_v),
                flag(self.voltage < self.low_alarm_v)]

    def holding_register(self, register):
        if register == 0x0000:
            return u16(self.high_alarm_v * 100)
        if register == 0x0001:
            return u16(self.low_alarm_v * 100)
        if register == 0x0002:
            return self.address
        if register == 0x0003:
            return self.RANGE_CODES[self.current_range]
        return None

    def write_holding(self, register, value):
        if register in (0x0000, 0x0001):
            low, high = self.HIGH_ALARM_LIMITS if register == 0 else self.LOW_ALARM_LIMITS
            if not low <= value <= high:
                return ILLEGAL_VALUE
            setattr(self, 'high_alarm_v' if register == 0 else 'low_alarm_v', value / 100.0)
            return None
        if register == 0x0002:
            return self._set_address(value)
        if register == 0x0003:
            for amps, code in self.RANGE_CODES.items():
                if code == value:
                    self.current_range = amps
                    return None
            return ILLEGAL_VALUE
        return ILLEGAL_ADDRESS
