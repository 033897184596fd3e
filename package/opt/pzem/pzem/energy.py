"""The driver's own energy totals per phase, which never run backwards, and their saved form.

A PZEM's counter (1 Wh steps, 0..9999.99 kWh) goes back to 0 on `pzemctl reset-energy`, on its wrap
and when a meter is replaced; VRM books any counter that goes down as a huge spike
(reference/venus-dbus.md 9.3). So what is published is a running total fed by the counter's
increments, kept in localsettings (EnergyStore) across restarts.
"""
import logging
import math
import re
import time
from collections import namedtuple

from . import settings

SLACK_WH = 2                # two counts of the meter's 1 Wh resolution
SAVE_SECONDS = 300          # flash wears out: at most one write per published meter this often
FORMAT_VERSION = '1'
PHASES = ('L1', 'L2', 'L3')
NOT_SAVED = ('energy totals are not saved: after a restart they start again from the meters\' '
             'own counters')

# Totals (kWh), the meter counter (kWh) they account for, and the wall-clock time that counter
# was read (time.time()).
Saved = namedtuple('Saved', 'forward reverse counter wall')

log = logging.getLogger('pzem')


def _wh(kwh):
    return int(round(kwh * 1000))


class PhaseEnergy(object):
    """Forward (import) and Reverse (export) totals of one physical meter, in kWh.

    Kept internally in whole Wh (the meter's resolution), so a total only ever grows and its
    kWh value (Wh / 1000) never goes down through rounding.
    """

    def __init__(self, max_kw, clock=time.monotonic, wall=time.time):
        self.max_kw = max_kw
        self.clock = clock
        self.wall = wall
        self.dropped = 0
        self.last_drop = None
        self._forward = None        # Wh
        self._reverse = None        # Wh
        self._counter = None        # Wh: the meter counter the totals account for
        self._read_at = None        # clock() of that counter, None until read in this run
        self._read_wall = None      # wall() of that counter
        self._handed_out = None     # state given out by the last saved()

    @property
    def forward(self):
        return None if self._forward is None else self._forward / 1000.0

    @property
    def reverse(self):
        return None if self._reverse is None else self._reverse / 1000.0

    def restore(self, saved):
        """Take up totals saved by an earlier run (None: nothing saved). Call before book()."""
        if saved is None:
            return
        self._forward, self._reverse = _wh(saved.forward), _wh(saved.reverse)
        self._counter, self._read_wall = _wh(saved.counter), saved.wall
        self._read_at = None
        self._handed_out = self._state()

    def book(self, counter_kwh, sign):
        """Book the meter's increment since the last reading: to Forward for sign +1 (import),
        to Reverse for sign -1 (export). Returns None, or why the increment was dropped.

        The first reading after restore() books what the meter counted while the driver was
        stopped, checked against the wall-clock time since it was saved. It goes to Forward: the
        direction during the stop is unknown, and import is what a meter without a sign means.
        """
        counter = _wh(counter_kwh)
        now, wall = self.clock(), self.wall()
        if self._counter is None:
            # Nothing saved (first start, or an upgrade from 1.0.0, which published the raw
            # counter): start at the counter so nothing already in VRM goes down.
            self._forward, self._reverse = counter, 0
            self._move(counter, now, wall)
            return None
        if self._read_at is None:
            elapsed, sign = wall - self._read_wall, 1
        else:
            elapsed = now - self._read_at
        # Below the baseline: reset, wrap or a replaced meter; it counted `counter` since its zero.
        increment = counter - self._counter if counter >= self._counter else counter
        reason = self._implausible(increment, elapsed)
        self._move(counter, now, wall)
        if reason:
            self.dropped += 1
            self.last_drop = reason
            return reason
        if sign < 0:
            self._reverse += increment
        else:
            self._forward += increment
        return None

    def _implausible(self, increment, elapsed):
        if increment == 0:
            return None
        if elapsed < 0:
            return 'clock went back %.0f s; %d Wh not booked' % (-elapsed, increment)
        most = self.max_kw * elapsed / 3.6 + SLACK_WH     # kW * s / 3.6 = Wh
        if increment > most:
            return '%d Wh in %.0f s is more than %g kW can count; not booked' % (
                increment, elapsed, self.max_kw)
        return None

    def _move(self, counter, now, wall):
        self._counter, self._read_at, self._read_wall = counter, now, wall

    def _state(self):
        return (self._forward, self._reverse, self._counter)

    @property
    def changed(self):
        """True when totals or baseline moved since the last saved() (or restore())."""
        return self._counter is not None and self._state() != self._handed_out

    def saved(self):
        """What to store now (None before anything is known); clears `changed`."""
        if self._counter is None:
            return None
        self._handed_out = self._state()
        return Saved(self._forward / 1000.0, self._reverse / 1000.0, self._counter / 1000.0,
                     self._read_wall)

    def unsaved(self):
        """The last saved() did not reach the store: `changed` again."""
        self._handed_out = None


# -- the stored text: '1 t=1764590000 L1=12.345/0.000@1234.567 L2=...' ------------------------
# version, the wall-clock time (s) the counters were read (the oldest of the phases), then per
# phase Forward/Reverse totals @ the meter counter they account for, all in kWh.

_ENTRY = re.compile(r'^(L[123])=(\d+\.\d{3})/(\d+\.\d{3})@(\d+\.\d{3})$')


def encode(phases):
    """The setting's text for {phase: Saved}."""
    wall = min(s.wall for s in phases.values())
    parts = [FORMAT_VERSION, 't=%d' % math.floor(wall)]
    for name in sorted(phases):
        s = phases[name]
        parts.append('%s=%.3f/%.3f@%.3f' % (name, s.forward, s.reverse, s.counter))
    return ' '.join(parts)


def decode(text):
    """{phase: Saved} from the setting's text ({} for ''); ValueError saying why for anything
    this version did not write."""
    words = str(text).split()
    if not words:
        return {}
    if words[0] != FORMAT_VERSION:
        raise ValueError('unknown format %r' % words[0][:20])
    if len(words) < 3 or not re.match(r'^t=\d{1,12}$', words[1]):
        raise ValueError('no time and totals')
    wall = int(words[1][2:])
    phases = {}
    for word in words[2:]:
        match = _ENTRY.match(word)
        if not match or match.group(1) in phases:
            raise ValueError('cannot read %r' % word[:40])
        forward, reverse, counter = (float(g) for g in match.groups()[1:])
        phases[match.group(1)] = Saved(forward, reverse, counter, wall)
    return phases


class EnergyStore(object):
    """The totals of one published meter (up to three phases) in ONE localsettings string,
    /Settings/Devices/<ident>/Energy, so a save is atomic.

    `connection` may be replaced (a re-registered service has a new one); while it is None,
    nothing is written and the totals stay `changed`.
    """

    def __init__(self, connection, ident, clock=time.monotonic, timeout=3.0, logger=None):
        """logger: the meter's (its lines carry the meter's prefix); else lines name ident."""
        self.connection = connection
        self.ident = ident
        self.log = logger if logger is not None else settings.prefixed_log(ident)
        self.clock = clock
        self.timeout = timeout
        self.online = None          # unknown until load()
        self._saved_at = None

    def load(self):
        """{phase: Saved} ({} when nothing usable is stored), or None without localsettings."""
        text = settings.load_energy(self.connection, self.ident, self.timeout)
        self._saved_at = self.clock()
        if text is None:
            self.online = False
            self.log.warning('localsettings did not answer: %s', NOT_SAVED)
            return None
        self.online = True
        try:
            return decode(text)
        except ValueError as e:
            self.log.warning('stored energy totals ignored (%s): starting from the meters\' '
                             'counters', e)
            return {}

    def due(self):
        """True when maybe_save() may write (cheap: asked after every poll)."""
        return bool(self.online) and self.connection is not None and \
            self.clock() - self._saved_at >= SAVE_SECONDS

    def maybe_save(self, phases):
        """After a poll: write when something changed, at most every SAVE_SECONDS.
        phases: {phase name: PhaseEnergy}. Never blocks, never raises."""
        if not self.due():
            return False
        text = self._text(phases)
        if text is None:
            return False
        self._saved_at = self.clock()
        settings.save_energy(self.connection, self.ident, text,
                             on_failure=lambda: self._failed(phases), logger=self.log)
        return True

    def save_now(self, phases):
        """At a clean stop: write what changed at once (blocking, short timeout)."""
        if not self.online or self.connection is None:
            return False
        text = self._text(phases)
        if text is None:
            return False
        self._saved_at = self.clock()
        if settings.save_energy_now(self.connection, self.ident, text, timeout=1.0,
                                    logger=self.log):
            return True
        self._failed(phases)
        return False

    def _text(self, phases):
        if not any(p.changed for p in phases.values()):
            return None
        saved = {name: p.saved() for name, p in phases.items()}
        return encode({name: s for name, s in saved.items() if s is not None})

    def _failed(self, phases):
        for p in phases.values():
            p.unsaved()
