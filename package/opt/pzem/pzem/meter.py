"""One physical PZEM on the bus: its model, whether it answers, and its last plausible reading."""
import logging
import time

from . import modbus

MISSES_TO_DISCONNECT = 3
ENERGY_SLACK_KWH = 0.002    # two counts of the meter's 1 Wh resolution
ERROR_KINDS = ('no_reply', 'bad_frame', 'exception', 'implausible')

log = logging.getLogger('pzem')


class MeterLog(logging.LoggerAdapter):
    """Every line about a meter starts with the same prefix: 'ttyUSB0:1: ...'."""

    def process(self, msg, kwargs):
        return '%s: %s' % (self.extra['prefix'], msg), kwargs


def meter_log(port, addresses):
    return MeterLog(log, {'prefix': '%s:%s' % (port, ','.join(str(a) for a in addresses))})


def short_reason(error):
    """A failure in a few words, for a recovery line that need not repeat the advice."""
    if isinstance(error, modbus.NoReply):
        return 'no reply'
    if isinstance(error, modbus.BadFrame):
        return 'garbled replies'
    if isinstance(error, modbus.ExceptionReply):
        return 'exception %d (%s)' % (error.code, error.meaning)
    return 'implausible readings'


class Meter(object):
    """Polls one address; keeps `reading` (dict, or None while it is not trusted).

    A poll that fails (no reply, bad frame, exception reply, implausible values) is a miss;
    after MISSES_TO_DISCONNECT misses in a row the meter is disconnected and its reading dropped.
    The first good reply brings it back. `fresh` tells whether the last poll brought a reading
    that differs from the one before (the publisher's pass is skipped otherwise).
    """

    def __init__(self, port, address, model, log=None, clock=time.monotonic, energy=None):
        self.port = port
        self.address = address
        self.model = model
        self.clock = clock
        self.log = log or meter_log(port, [address])
        self.energy = energy        # the driver's own totals (energy.PhaseEnergy), or None
        self.reading = None
        self.connected = False
        self.fresh = False
        self.misses = 0
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.last_error = None
        self._regs = None           # the registers of the last trusted reading
        self._energy = None         # (kWh, time) of the last trusted energy count
        self._energy_step = None    # (kWh, time) of an unconfirmed jump

    def poll(self, bus, sign=1):
        """Read, decode and check once. Raises modbus.PortGone; returns True when `connected`
        changed. `sign` (+1 import, -1 export) books the energy counted since the last reading."""
        try:
            regs = bus.read_input(self.address, self.model.input_count)
        except modbus.PortGone:
            raise
        except (modbus.NoReply, modbus.BadFrame, modbus.ExceptionReply) as e:
            return self._miss(e)
        return self.take(regs, sign)

    def take(self, regs, sign=1):
        """Decode and check registers read elsewhere (the probe's read) as a poll does."""
        if regs == self._regs and self.connected:
            self.fresh = False      # the meter refreshes about once a second: nothing new
            self.misses = 0
            return False
        values = self.model.decode(regs)
        now = self.clock()
        reason = self.model.check(values) or self._check_energy(values['energy'], now)
        if reason:
            self.log.debug('dropped reading: %s', reason)
            return self._miss(None, reason)
        self.reading = values
        self._regs = regs
        self._energy = (values['energy'], now)
        self.fresh = True
        self.misses = 0
        if self.energy is not None:
            self.book(sign)
        if not self.connected:
            self.connected = True
            if self.last_error:
                self.log.info('answering again (was: %s)', self.last_error)
            return True
        return False

    def book(self, sign=1):
        """Book the last reading's energy count into `energy` (the driver's totals), saying why
        when an increment is dropped."""
        dropped = self.energy.book(self.reading['energy'], sign)
        if dropped:
            self.log.warning('energy count not booked: %s', dropped)

    def _miss(self, error, reason=None):
        kind = 'implausible' if error is None else (
            'no_reply' if isinstance(error, modbus.NoReply) else
            'bad_frame' if isinstance(error, modbus.BadFrame) else 'exception')
        self.errors[kind] += 1
        self.fresh = True           # the error counts changed
        self.misses += 1
        if self.connected and self.misses >= MISSES_TO_DISCONNECT:
            self.connected = False
            self.reading = None
            self._regs = None
            self.last_error = short_reason(error)
            self.log.warning('not answering (%d polls missed; last: %s)', self.misses,
                             error or reason)
            return True
        return False

    def _check_energy(self, energy, now):
        """The counter only grows, no faster than the meter's maximum power allows.

        A drop (reset with 0x42) or a leap (a long absence) is believed once the next reading
        confirms it; a single junk value never gets through.
        """
        if self._energy is None:
            return None
        max_kw = self.model.max_kw
        last, since = self._energy
        if last <= energy <= last + max_kw * (now - since) / 3600.0 + ENERGY_SLACK_KWH:
            self._energy_step = None
            return None
        step = self._energy_step
        if step is not None and step[0] <= energy <= (
                step[0] + max_kw * (now - step[1]) / 3600.0 + ENERGY_SLACK_KWH):
            self._energy_step = None
            return None
        self._energy_step = (energy, now)
        return 'energy count went from %.3f to %.3f kWh' % (last, energy)
