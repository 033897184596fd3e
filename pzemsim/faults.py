"""Faults a meter can be told to have: for a number of requests, a share of them, or until cleared.

`silent`, `dead` and `exception` change what the meter does (nothing at all; nothing for a while;
refuse the request). The others spoil the reply on its way to the master, after the meter has
acted on the request: a write with `no_reply` still takes effect, as when a reply is lost on the
wire. Several faults can be active at once; they are applied in the order of REPLY_FAULTS.

Some faults are about time, as a real RS-485 bus has them: a `late` reply comes after the
master's timeout and lands in its next exchange, a `stretched` one has gaps inside, `noise`
follows a reply a little later, a `stray` frame from another address comes first. Such a reply
is a Timed: its pieces, each with the delay after which it goes on the wire.
"""

from .crc import with_crc

METER_FAULTS = ('silent', 'dead', 'exception')
REPLY_FAULTS = ('no_reply', 'previous', 'junk_values', 'wrong_address', 'bad_crc', 'truncated',
                'garbage_before', 'stray', 'stretched', 'late', 'noise')
KINDS = METER_FAULTS + REPLY_FAULTS

# what each fault accepts besides `count` and `share`, with the defaults
OPTIONS = {
    'silent': {},
    'dead': {'seconds': 5.0},               # silent for this long from the request it hit
    'exception': {'code': 0x04, 'function': None},  # function: only requests with that code
    'no_reply': {},
    'previous': {},                         # the reply to the meter's previous request instead
    'junk_values': {},
    'wrong_address': {'address': None},     # None: the meter's address + 1
    'bad_crc': {},
    'truncated': {'keep': None},            # bytes kept; None: half the reply
    'garbage_before': {'junk': b'\x00\xff'},
    'stray': {'address': None, 'gap': 0.005},   # another address's frame first, then the reply
    'stretched': {'pieces': 3, 'gap': 0.03},    # the reply in pieces with gaps between them
    'late': {'delay': 0.5},                 # the whole reply this much later
    'noise': {'size': 6, 'after': 0.01},    # random bytes this long after the reply
}


class Timed(tuple):
    """A reply as it goes on the wire: ((delay in seconds, bytes), ...), each piece's delay
    counted from when the reply would have started."""

    @classmethod
    def of(cls, reply):
        return reply if isinstance(reply, Timed) else cls(((0.0, reply),))

    def joined(self):
        return b''.join(piece for _, piece in self)


class Faults:
    """The faults in force. `rng` draws which requests a fault with a share strikes;
    `options`: {kind: {option: default}} of the faults it knows (the meters' by default; the
    network front has its own)."""

    def __init__(self, rng=None, options=None):
        self._rng = rng
        self._options = OPTIONS if options is None else options
        self._active = {}       # kind -> [remaining (None = no limit), options, share or None]

    def inject(self, kind, count=None, share=None, **options):
        if kind not in self._options:
            raise ValueError('unknown fault %r; known: %s' % (kind, ', '.join(self._options)))
        unknown = set(options) - set(self._options[kind])
        if unknown:
            raise ValueError('fault %r takes no option %s' % (kind, ', '.join(sorted(unknown))))
        if count is not None and count < 1:
            raise ValueError('count must be at least 1 (or None: until cleared)')
        if share is not None and (self._rng is None or not 0.0 < share <= 1.0):
            raise ValueError('share must be more than 0 and at most 1 (of the requests)')
        settings = dict(self._options[kind])
        settings.update(options)
        self._active[kind] = [count, settings, share]

    def clear(self, kind=None):
        if kind is None:
            self._active.clear()
        else:
            self._active.pop(kind, None)

    def active(self):
        """{kind: remaining count or None} of the faults still in force."""
        return {kind: entry[0] for kind, entry in self._active.items()}

    def take(self, kind, function=None):
        """The options of `kind` when it strikes this request (of Modbus `function`), using up
        one of its count; else None. A fault with a share strikes that share of the requests,
        at random; one with a `function` option only requests of that function."""
        entry = self._active.get(kind)
        if entry is None or entry[1].get('function') not in (None, function) or (
                entry[2] is not None and self._rng.random() >= entry[2]):
            return None
        if entry[0] is not None:
            entry[0] -= 1
            if entry[0] == 0:
                del self._active[kind]
        return entry[1]

    def spoil(self, reply, own, previous):
        """The reply as it reaches the wire (None: nothing does; a Timed: in pieces) and the
        faults applied. `own`: the meter's address; `previous`: its reply to the request
        before (None at first)."""
        applied = []
        rng = self._rng
        for kind in REPLY_FAULTS:
            if reply is None or kind not in self._active:
                continue
            if kind == 'junk_values' and reply[1] not in (0x03, 0x04):
                continue                    # only register reads carry values
            if kind == 'previous' and previous is None:
                continue                    # nothing asked before: nothing to repeat
            options = self.take(kind)
            if options is None:
                continue
            pieces = Timed.of(reply)
            if kind == 'no_reply':
                reply = None
            elif kind == 'previous':
                reply = previous
            elif kind == 'junk_values':
                junk = bytes(rng.getrandbits(8) for _ in range(reply[2]))
                reply = with_crc(reply[:3] + junk)
            elif kind == 'wrong_address':
                other = options['address'] or own % 247 + 1
                reply = with_crc(bytes((other,)) + reply[1:-2])
            elif kind == 'bad_crc':
                reply = reply[:-1] + bytes((reply[-1] ^ 0x5A,))
            elif kind == 'truncated':
                keep = options['keep']
                reply = reply[:len(reply) // 2 if keep is None else keep]
            elif kind == 'garbage_before':
                reply = bytes(options['junk']) + reply
            elif kind == 'stray':
                data = pieces.joined()
                other = options['address'] or own % 247 + 1
                frame = with_crc(bytes((other,)) + data[1:-2])
                reply = Timed(((0.0, frame),) + tuple((delay + options['gap'], piece)
                                                      for delay, piece in pieces))
            elif kind == 'stretched':
                data = pieces.joined()
                count = max(1, min(options['pieces'], len(data)))
                cuts = [len(data) * i // count for i in range(count + 1)]
                reply = Timed((pieces[0][0] + i * options['gap'], data[cuts[i]:cuts[i + 1]])
                              for i in range(count))
            elif kind == 'late':
                reply = Timed((delay + options['delay'], piece) for delay, piece in pieces)
            elif kind == 'noise':
                noise = bytes(rng.getrandbits(8) for _ in range(options['size']))
                reply = Timed(tuple(pieces) + ((pieces[-1][0] + options['after'], noise),))
            applied.append(kind)
        return reply, applied
