"""Looking for meters the map does not name, on one port: which address to ask next, and when.

The likely addresses come first (the factory default 1, small numbers, and 20; the original
tool's examples used 10 and 20): all of them within the start-up budget when there is time, then
each again every LIKELY_SECONDS, so a meter plugged in later shows up within about a minute. A
likely address that stayed silent is asked once more AGAIN_SECONDS later: on a noisy bus one lost
reply must not hide a meter for a minute. The
rest of 1..247 is asked slowly, one address every REST_SECONDS, in the gaps between polls.

A search someone asked for (the GUI page's "look for meters again": sweep()) asks every address
nobody named, in order, before anything else and as fast as the gaps allow, and says how far it
got. A Discovery made with background=False does only that (a port with `scan = no`).
"""
from .rtu import ADDRESSES

LIKELY = tuple(range(1, 17)) + (20,)
LIKELY_SECONDS = 60.0
AGAIN_SECONDS = 3.0     # a likely address that stayed silent is asked once more this soon
REST_SECONDS = 5.0
_UNKNOWN = object()     # next_due() not worked out since the schedule last changed


class Discovery(object):
    def __init__(self, clock, skip=(), background=True):
        self.clock = clock
        self._skip = set(skip)          # addresses the map names, or that are published
        self._likely_due = dict.fromkeys(LIKELY, 0.0) if background else {}
        self._again = set()             # likely addresses asked once more after a silence
        self._rest = [a for a in ADDRESSES if a not in LIKELY] if background else []
        self._sweep = []                # a requested search: the addresses still to ask, in order
        self._sweep_total = 0
        self._rest_next = 0             # index into _rest
        self._rest_due = 0.0
        self._next = _UNKNOWN           # next_due()'s answer until the schedule changes

    def skip(self, addresses):
        """Do not ask these any more (published, or named by the map)."""
        self._skip.update(addresses)
        self._next = _UNKNOWN

    def unskip(self, addresses):
        """Ask these again (a meter went away from the map or the bus)."""
        self._skip.difference_update(addresses)
        self._next = _UNKNOWN
        for address in addresses:
            if address in self._likely_due:
                self._likely_due[address] = self.clock()

    def sweep(self, named):
        """A requested search: every address but the `named` ones (the map's, the published),
        in order, before anything else. Addresses skipped so far (a meter taken out of the map)
        are looked for again."""
        self._sweep = [a for a in ADDRESSES if a not in named]
        self._sweep_total = len(self._sweep)
        self._skip.difference_update(self._sweep)
        self._next = _UNKNOWN

    def stop_sweep(self):
        self._sweep = []
        self._next = _UNKNOWN

    @property
    def sweeping(self):
        """True while a requested search has addresses left to ask."""
        return bool(self._sweep)

    def sweep_percent(self):
        """How far the requested search got, 0..100."""
        if not self._sweep_total:
            return 100.0
        return 100.0 * (self._sweep_total - len(self._sweep)) / self._sweep_total

    def wanted(self, address):
        """True while `address` is one to look for (not named, published or taken away)."""
        return address not in self._skip

    def start_up(self):
        """The likely addresses to ask at start, in order."""
        return [a for a in LIKELY if a not in self._skip]

    def asked(self, address):
        """`address` was asked now and stayed silent."""
        self._next = _UNKNOWN
        if address in self._likely_due:
            again = address not in self._again
            (self._again.add if again else self._again.discard)(address)
            self._likely_due[address] = self.clock() + (AGAIN_SECONDS if again else
                                                        LIKELY_SECONDS)

    def next_due(self):
        """(due time, address) of the next address to ask, or None when there is none."""
        if self._next is _UNKNOWN:      # asked before every probe the slot has room for
            self._next = self._find_next()
        return self._next

    def _find_next(self):
        while self._sweep and self._sweep[0] in self._skip:
            self._sweep.pop(0)          # found meanwhile, or named by the map now
        if self._sweep:
            return 0.0, self._sweep[0]
        best = None
        for address, due in self._likely_due.items():
            if address not in self._skip and (best is None or due < best[0]):
                best = (due, address)
        for _ in range(len(self._rest)):
            address = self._rest[self._rest_next % len(self._rest)]
            if address not in self._skip:
                if best is None or self._rest_due < best[0]:
                    best = (self._rest_due, address)
                break
            self._rest_next += 1
        return best

    def take(self, address):
        """Remove `address` from the schedule for this round (about to be asked)."""
        self._next = _UNKNOWN
        if self._sweep and self._sweep[0] == address:
            self._sweep.pop(0)
        if address in self._likely_due:
            self._likely_due[address] = self.clock() + LIKELY_SECONDS
        elif self._rest and self._rest[self._rest_next % len(self._rest)] == address:
            self._rest_next += 1
            self._rest_due = self.clock() + REST_SECONDS
