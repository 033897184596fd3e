"""Modbus-RTU frames for PZEM meters, as bytes: CRC, requests, and the judging of replies.

No I/O, no pymodbus, no pyserial: pzem.modbus sends the requests and hands the bytes that came
back to find_reply, so what counts as the answer is the same whatever the pymodbus version and
whatever else is on the line (a late reply to an earlier request, another meter, noise).
The exceptions are the ones a Bus raises; pzem.modbus re-exports them.
"""

import struct
from functools import lru_cache

READ_HOLDING, READ_INPUT, WRITE_REGISTER, RESET_ENERGY = 0x03, 0x04, 0x06, 0x42
GENERAL_ADDRESS = 0xF8
MIN_ADDRESS, MAX_ADDRESS = 1, 247       # a meter's own Modbus address
ADDRESSES = range(MIN_ADDRESS, MAX_ADDRESS + 1)

EXCEPTION_MEANINGS = {1: 'illegal function', 2: 'illegal data address',
                      3: 'illegal data value', 4: 'slave device failure'}
_EXCEPTION_ADVICE = {1: 'the meter does not support this request',
                     2: 'that register does not exist on this meter model',
                     3: 'the meter does not accept that value',
                     4: 'the meter reported an internal failure; power-cycle it if this persists'}


class ModbusError(Exception):
    """Base of every failure below; str() is one sentence a person on the GX can act on."""


class NoReply(ModbusError):
    """Nothing (valid) came back before the timeout."""


class BadFrame(ModbusError):
    """A reply came but cannot be used: CRC error, truncated, wrong address, function or length."""


class ExceptionReply(ModbusError):
    """The meter answered with a Modbus exception; .code and .meaning say which."""

    def __init__(self, code, message=None):
        self.code = code
        self.meaning = EXCEPTION_MEANINGS.get(code, 'unknown exception')
        ModbusError.__init__(self, message or 'The meter refused the request with exception '
                             '%d (%s).' % (code, self.meaning))


class PortGone(ModbusError):
    """The serial device vanished or cannot be opened."""


# -- frames -------------------------------------------------------------------------------

def _crc_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data):
    """CRC-16/MODBUS. Over a frame that ends in its own CRC (low byte first) it is 0."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


@lru_cache(maxsize=256)
def request_frame(address, function, *words):
    """`address function words... crc`: the bytes of a request (cached: polls repeat)."""
    frame = struct.pack('>BB%dH' % len(words), address, function, *words)
    crc = crc16(frame)
    return frame + bytes((crc & 0xFF, crc >> 8))


@lru_cache(maxsize=None)
def _words(count):
    return struct.Struct('>%dH' % count)


def registers(frame, count):
    """The `count` register values of a read reply frame."""
    return list(_words(count).unpack_from(frame, 3))


ECHO_LENGTH = {WRITE_REGISTER: 8, RESET_ENERGY: 4}     # a write's and a reset's reply: the request
GATEWAY_CODES = (10, 11)    # Modbus TCP gateways: "path unavailable", "target did not respond"

# What find_reply() found
ANSWER, REFUSED, SPOILT, PENDING = 'answer', 'refused', 'spoilt', 'pending'


class Found(object):
    """What the bytes received since a request hold. `outcome` ANSWER (`value`: the registers,
    None for an echo; `end`: where that frame ends), REFUSED (`value`: the exception code),
    SPOILT (the answer came whole but broken; `value`: 'crc', or 'echo' for a changed echo) or
    PENDING (`value`: True while the head of the answer has come and the rest has not).
    `strays`: the complete frames with a good CRC that are not the answer, as (address,
    function, length)."""

    __slots__ = ('outcome', 'value', 'end', 'strays')

    def __init__(self, outcome, value=None, end=0, strays=()):
        self.outcome, self.value, self.end, self.strays = outcome, value, end, strays


def _frame_length(data, i):
    """The length of a reply frame that starts at data[i]: None when none can (an unknown
    function), 0 while the byte that says it has not come."""
    function = data[i + 1]
    if function & 0x80:
        return 5
    if function == READ_INPUT or function == READ_HOLDING:
        return 5 + data[i + 2] if len(data) > i + 2 else 0
    return ECHO_LENGTH.get(function)


def find_reply(request, count, data):
    """Look through `data`, everything received since `request` went out, for its answer.

    The answer is the first complete frame with a good CRC from the asked address (any meter's
    for the general address 0xF8) with the asked function and shape: `count` registers, or the
    exact echo of a write or reset. Frames that are not the answer (a late reply to an earlier
    request, another meter, another length) and noise are passed over, wherever they lie.
    A frame with the answer's head and length but a bad CRC spoils the exchange, unless a good
    answer follows it."""
    asked, function = request[0], request[1]
    anyone = asked == GENERAL_ADDRESS
    strays = []
    spoilt = head = False
    i, last = 0, len(data) - 1
    while i < last:
        address = data[i]
        length = _frame_length(data, i) if MIN_ADDRESS <= address <= MAX_ADDRESS else None
        if length is None:
            i += 1
            continue
        ours = (address == asked or anyone) and data[i + 1] & 0x7F == function
        if not length or i + length > len(data):        # not all here (yet)
            head = head or ours
            i += 1
            continue
        frame = data[i:i + length]
        good = not crc16(frame)
        if ours and good and data[i + 1] & 0x80:
            return Found(REFUSED, frame[2], i + length, strays)
        if ours and (frame[2] == 2 * count if count else length == len(request)):
            if good and (count or frame[1:-2] == request[1:-2]):
                return Found(ANSWER, registers(frame, count) if count else None, i + length,
                             strays)
            spoilt = spoilt or ('crc' if not good else 'echo')
        if good:
            strays.append((address, data[i + 1], length))
            i += length
        else:
            i += 1
    if data and data[-1] == asked:
        head = True                     # perhaps the first byte of the answer
    return Found(SPOILT if spoilt else PENDING, spoilt or head, 0, strays)


def failure(request, count, data, found, port, timeout=None, dropped=None):
    """The exception (not raised) for an exchange that ended without an answer: `data` is all
    that came, `found` what find_reply() made of it, `dropped` what the link said of replies it
    dropped itself (a Modbus TCP reply with another transaction id). One sentence a person can
    act on."""
    asked, function = request[0], request[1]
    where = 'meter %d on %s' % (asked, port) if asked != GENERAL_ADDRESS else \
        'the meter at the general address 0xF8 on %s' % port
    within = ' within %g s' % timeout if timeout else ''
    garbled = ('%s sent a garbled reply: check the RS-485 wiring and termination, and that no '
               'other meter has the same address.')
    if found.outcome == REFUSED:
        code = found.value
        if code == GATEWAY_CODES[0]:
            return NoReply('No reply from %s: the gateway cannot use its RS-485 side (exception '
                           '10, path unavailable); check the gateway\'s serial settings and that '
                           'it is not busy with another master.' % where)
        if code == GATEWAY_CODES[1]:
            return NoReply('No reply from %s%s: the gateway says the meter did not answer '
                           '(exception 11); check that it is powered, its address and the '
                           'RS-485 wiring behind the gateway.' % (where, within))
        return ExceptionReply(code, '%s refused the request with exception %d (%s): %s.' % (
            _capital(where), code, EXCEPTION_MEANINGS.get(code, 'unknown'),
            _EXCEPTION_ADVICE.get(code, 'see the meter manual')))
    if found.outcome == SPOILT:
        if found.value == 'echo':
            return BadFrame('%s did not echo the request exactly: read the value back to check '
                            'it.' % _capital(where))
        return BadFrame(garbled % _capital(where))
    if found.value:
        size = 5 + 2 * count if count else len(request)
        return BadFrame('%s sent an incomplete reply (%d of %d bytes): check the RS-485 wiring '
                        'and termination.' % (_capital(where), _head_bytes(data, request), size))
    own = [s for s in found.strays if s[0] == asked or asked == GENERAL_ADDRESS]
    if own:
        address, other_function, length = own[0]
        if other_function != function:
            return BadFrame('%s answered with function %d to a function %d request: a late '
                            'reply to an earlier request, or is it not a PZEM meter?' % (
                                _capital(where), other_function, function))
        return BadFrame('%s sent %d data bytes where %d were asked: a late reply to an earlier '
                        'request, or is it the other PZEM model?' % (
                            _capital(where), length - 5, 2 * count))
    if len(data) > sum(s[2] for s in found.strays):
        return BadFrame(garbled % _capital(where))      # bytes that are no frame: noise
    if dropped and not data:
        return NoReply('No reply from %s%s: %s.' % (where, within, dropped))
    if found.strays:
        return NoReply('No reply from %s%s, but address %s answered: probably late, to an '
                       'earlier request (a longer timeout may help).' % (
                           where, within, ', '.join(str(a) for a in
                                                    sorted({s[0] for s in found.strays}))))
    return NoReply('No reply from %s%s: check that it is powered, its address and the RS-485 '
                   'wiring.' % (where, within))


def _capital(text):
    return text[0].upper() + text[1:]


def _head_bytes(data, request):
    """How many bytes of the answer came, from its head (in `data`) on."""
    for i in range(len(data) - 1):
        if (data[i] == request[0] or request[0] == GENERAL_ADDRESS) and \
                data[i + 1] & 0x7F == request[1]:
            return len(data) - i
    return len(data)
