"""One physical PZEM on the bus: its model, whether it answers, and its last plausible reading."""
import logging
import time

from . import modbus

MISSES_TO_DISCONNECT = 3       # polls in a row without a good reading, and ...
SECONDS_TO_DISCONNECT = 5.0     # ... this long since the last one: the meter is invalid
ENERGY_SLACK_KWH = 0.002    # two counts of the meter's 1 Wh resolution
TAKEN, CONNECTED = 1, 2     # what a good read did: taken, or taken and connected the meter
ERROR_KINDS = ('no_reply', 'bad_frame', 'exception', 'implausible')

log = logging.getLogger('pzem')


class MeterLog(logging.LoggerAdapter):
    """Every line about a meter starts with the same prefix: 'ttyUSB0:1: ...'."""

    def process(self, msg, kwargs):
        return '%s: %s' % (self.extra['prefix'], msg), kwargs


def meter_log(port, addresses):
    return MeterLog(log, {'prefix': '%s:%s' % (port, ','.join(str(a) for a in addresses))})


def phase_log(port, address, phase, addresses):
    """The lines of one phase of a group: 'ttyUSB0:5 (L2 of 4,5,6): ...'."""
    return MeterLog(log, {'prefix': '%s:%d (%s of %s)' % (
        port, address, phase, ','.join(str(a) for a in addresses))})


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

    A read that fails (no reply, bad frame, exception reply, implausible values) is counted in
    `errors` and may be asked again at once, while the poll's slot has room (poll's
    `retry_until`). A poll that ends without a good reading is a miss. The meter is disconnected
    and its reading dropped only when MISSES_TO_DISCONNECT polls in a row missed and its last
    good reading is SECONDS_TO_DISCONNECT old: a noisy bus that loses a reply now and then never
    blanks it, a dead meter is blank within a poll of those seconds. The first good reading
    brings it back. `fresh` tells whether the last poll brought a reading that differs from the
    one before, or new error counts (the publisher's pass is skipped otherwise).
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
        self._failure = None        # (error, reason) of the last failed read
        self._good_at = None        # when the last good reading came
        self._regs = None           # the registers of the last trusted reading
        self._energy = None         # (kWh, time) of the last trusted energy count
        self._energy_step = None    # (kWh, time) of an unconfirmed jump

    def poll(self, bus, sign=1, retry_until=None):
        """Read, decode and check; a failed read is asked again at once while the clock is
        not past `retry_until`. Raises modbus.PortGone; returns True when `connected`
        changed. `sign` (+1 import, -1 export) books the energy counted since the last
        reading."""
        again = False
        while True:
            taken = self.attempt(bus, sign, again)
            if taken:
                return taken is CONNECTED
            if retry_until is None or self.clock() > retry_until:
                return self.missed()
            again = True

    def attempt(self, bus, sign=1, again=False, at=None):
        """One read: TAKEN (or CONNECTED, when that reading connected the meter) when it
        brought a good reading, else None (the error counted, no miss yet: see missed()).
        `again`: a retry within the same poll (what made the poll fresh stays so). `at`: when
        the poll began (the clock is read otherwise). Raises modbus.PortGone."""
        if not again:
            self.fresh = False
        try:
            regs = bus.read_input(self.address, self.model.input_count)
        except modbus.PortGone:
            raise
        except (modbus.NoReply, modbus.BadFrame, modbus.ExceptionReply) as e:
            self._failed(e)
            return None
        return self._take(regs, sign, at)

    def take(self, regs, sign=1):
        """Decode and check registers read elsewhere (the probe's read) as a poll does;
        returns True when `connected` changed."""
        self.fresh = False
        taken = self._take(regs, sign)
        if taken:
            return taken is CONNECTED
        return self.missed()

    def _take(self, regs, sign, at=None):
        if regs == self._regs and self.connected:
            self.misses = 0         # the meter refreshes about once a second: nothing new
            self._good_at = self.clock() if at is None else at
            return TAKEN
        values = self.model.decode(regs)
        now = self.clock()
        reason = self.model.check(values) or self._check_energy(values['energy'], now)
        if reason:
            self.log.debug('dropped reading: %s', reason)
            self._failed(None, reason)
            return None
        self.reading = values
        self._regs = regs
        self._energy = (values['energy'], now)
        self._good_at = now
        self.fresh = True
        self.misses = 0
        if self.energy is not None:
            self.book(sign)
        if not self.connected:
            self.connected = True
            if self.last_error:
                self.log.info('answering again (was: %s)', self.last_error)
            return CONNECTED
        return TAKEN

    def book(self, sign=1):
        """Book the last reading's energy count into `energy` (the driver's totals), saying why
        when an increment is dropped."""
        dropped = self.energy.book(self.reading['energy'], sign)
        if dropped:
            self.log.warning('energy count not booked: %s', dropped)

    def _failed(self, error, reason=None):
        kind = 'implausible' if error is None else (
            'no_reply' if isinstance(error, modbus.NoReply) else
            'bad_frame' if isinstance(error, modbus.BadFrame) else 'exception')
        self.errors[kind] += 1
        self.fresh = True           # the error counts changed
        self._failure = (error, reason)

    @property
    def last_failure(self):
        """(error, reason) of the last failed read: a ModbusError, or None and the reason a
        reading was dropped."""
        return self._failure

    def missed(self):
        """The poll ended without a good reading; returns True when that disconnected the
        meter."""
        self.misses += 1
        if self.connected and self.misses >= MISSES_TO_DISCONNECT and \
                self.clock() - self._good_at >= SECONDS_TO_DISCONNECT:
            error, reason = self._failure
            self.connected = False
            self.reading = None
            self._regs = None
            self.last_error = short_reason(error)
            self.log.warning('not answering (%d polls missed in %.1f s; last: %s)', self.misses,
                             self.clock() - self._good_at, error or reason)
            return True
        return False

    def counter_reset(self, kwh):
        """The driver reset the meter's own counter (energy_reset) and read `kwh` back: the next
        count is checked against that, not taken for a drop that a second reading must confirm.
        The totals (energy.PhaseEnergy) read the drop as "counted from 0 since"."""
        self._energy = (kwh, self.clock())
        self._energy_step = None

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
