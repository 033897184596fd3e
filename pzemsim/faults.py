"""Faults a meter can be told to have, each for a number of requests or until cleared.

`silent` and `exception` change what the meter does (nothing at all; refuse the request).
The others spoil the reply on its way to the master, after the meter has acted on the
request: a write with `no_reply` still takes effect, as when a reply is lost on the wire.
Several faults can be active at once; they are applied in the order of REPLY_FAULTS.
"""

from .crc import with_crc

METER_FAULTS = ('silent', 'exception')
REPLY_FAULTS = ('no_reply', 'junk_values', 'wrong_address', 'bad_crc', 'truncated',
                'garbage_before')
KINDS = METER_FAULTS + REPLY_FAULTS

# what each fault accepts besides `count`, with the defaults
OPTIONS = {
    'silent': {},
    'exception': {'code': 0x04},
    'no_reply': {},
    'junk_values': {},
    'wrong_address': {'address': None},     # None: the meter's address + 1
    'bad_crc': {},
    'truncated': {'keep': None},            # bytes kept; None: half the reply
    'garbage_before': {'junk': b'\x00\xff'},
}


class Faults:
    """The faults in force. `options`: {kind: {option: default}} of the faults it knows (the
    meters' by default; the network front has its own)."""

    def __init__(self, options=None):
        self._options = OPTIONS if options is None else options
        self._active = {}                   # kind -> [remaining (None = until cleared), options]

    def inject(self, kind, count=None, **options):
        if kind not in self._options:
            raise ValueError('unknown fault %r; known: %s' % (kind, ', '.join(self._options)))
        unknown = set(options) - set(self._options[kind])
        if unknown:
            raise ValueError('fault %r takes no option %s' % (kind, ', '.join(sorted(unknown))))
        if count is not None and count < 1:
            raise ValueError('count must be at least 1 (or None: until cleared)')
        settings = dict(self._options[kind])
        settings.update(options)
        self._active[kind] = [count, settings]

    def clear(self, kind=None):
        if kind is None:
            self._active.clear()
        else:
            self._active.pop(kind, None)

    def active(self):
        """{kind: remaining count or None} of the faults still in force."""
        return {kind: entry[0] for kind, entry in self._active.items()}

    def take(self, kind):
        """The options of `kind` when it is active, using up one of its count; else None."""
        entry = self._active.get(kind)
        if entry is None:
            return None
        if entry[0] is not None:
            entry[0] -= 1
            if entry[0] == 0:
                del self._active[kind]
        return entry[1]

    def spoil(self, reply, rng):
        """The reply as it reaches the wire (None: nothing does) and the faults applied."""
        applied = []
        for kind in REPLY_FAULTS:
            if reply is None or kind not in self._active:
                continue
            if kind == 'junk_values' and reply[1] not in (0x03, 0x04):
                continue                    # only register reads carry values
            options = self.take(kind)
            if kind == 'no_reply':
                reply = None
            elif kind == 'junk_values':
                junk = bytes(rng.getrandbits(8) for _ in range(reply[2]))
                reply = with_crc(reply[:3] + junk)
            elif kind == 'wrong_address':
                other = options['address'] or reply[0] % 247 + 1
                reply = with_crc(bytes((other,)) + reply[1:-2])
            elif kind == 'bad_crc':
                reply = reply[:-1] + bytes((reply[-1] ^ 0x5A,))
            elif kind == 'truncated':
                keep = options['keep']
                reply = reply[:len(reply) // 2 if keep is None else keep]
            elif kind == 'garbage_before':
                reply = bytes(options['junk']) + reply
            applied.append(kind)
        return reply, applied
