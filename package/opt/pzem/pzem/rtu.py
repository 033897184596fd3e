"""Modbus-RTU frames for PZEM meters, as bytes: CRC, requests, and the judging of replies.

No I/O, no pymodbus, no pyserial: pzem.modbus sends the requests and hands the bytes that came
back to check_reply, so what counts as a good reply is the same whatever the pymodbus version.
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


def check_reply(request, reply, count=None, port='the bus', timeout=None):
    """The registers in `reply` when `count` registers were asked, else None for a correct
    echo (write, reset). Raises NoReply, BadFrame or ExceptionReply otherwise.

    Only a frame at the very start of the reply passes, with a good CRC, the asked address
    (any meter's when the general address 0xF8 was asked), the asked function and the asked
    length. Bytes after it are ignored, as pymodbus 2.x never reads them."""
    if count and len(reply) == 5 + 2 * count and reply[0] == request[0] and \
            reply[1] == request[1] and reply[2] == 2 * count and not crc16(reply):
        return list(_words(count).unpack_from(reply, 3))     # a good reply: nothing to say
    asked, function = request[0], request[1]
    where = 'meter %d on %s' % (asked, port) if asked != GENERAL_ADDRESS else \
        'the meter at the general address 0xF8 on %s' % port
    if not reply:
        raise NoReply('No reply from %s%s: check that it is powered, its address and the '
                      'RS-485 wiring.' % (where, ' within %g s' % timeout if timeout else ''))
    where = where[0].upper() + where[1:]
    exception = len(reply) >= 2 and reply[1] == function | 0x80
    size = 5 if exception else (5 + 2 * count if count else len(request))
    frame = reply[:size]
    if len(frame) < size or crc16(frame):
        raise BadFrame(_spoilt(reply, size, asked, function, count, where))
    if frame[0] != asked and not (asked == GENERAL_ADDRESS and
                                  MIN_ADDRESS <= frame[0] <= MAX_ADDRESS):
        raise BadFrame('%s was asked but address %d answered: probably a late reply to an '
                       'earlier request; a longer timeout may help.' % (where, frame[0]))
    if exception:
        code = frame[2]
        raise ExceptionReply(code, '%s refused the request with exception %d (%s): %s.' % (
            where, code, EXCEPTION_MEANINGS.get(code, 'unknown'),
            _EXCEPTION_ADVICE.get(code, 'see the meter manual')))
    if frame[1] != function:
        raise BadFrame('%s answered with function %d to a function %d request: is it a PZEM '
                       'meter?' % (where, frame[1], function))
    if count:
        if frame[2] != 2 * count:
            raise BadFrame('%s sent %d data bytes where %d were asked: is it the other PZEM '
                           'model?' % (where, frame[2], 2 * count))
        return list(_words(count).unpack_from(frame, 3))
    if frame[1:-2] != request[1:-2]:
        raise BadFrame('%s did not echo the request exactly: read the value back to check '
                       'it.' % where)
    return None


def _spoilt(reply, size, asked, function, count, where):
    """Why a reply without a good frame of the expected size at its start is unusable."""
    if count and len(reply) >= 5 and reply[1] == function:
        other = reply[:5 + reply[2]]        # a good read reply of another length?
        if len(other) == 5 + reply[2] and not crc16(other):
            if other[0] != asked and asked != GENERAL_ADDRESS:
                return ('%s was asked but address %d answered: probably a late reply to an '
                        'earlier request; a longer timeout may help.' % (where, other[0]))
            return ('%s sent %d data bytes where %d were asked: is it the other PZEM model?'
                    % (where, reply[2], 2 * count))
    starts_right = (reply[0] == asked or asked == GENERAL_ADDRESS) and \
        reply[1:2] in (b'', bytes((function,)), bytes((function | 0x80,)))
    if len(reply) < size and starts_right:
        return ('%s sent an incomplete reply (%d of %d bytes): check the RS-485 wiring and '
                'termination.' % (where, len(reply), size))
    return ('%s sent a garbled reply: check the RS-485 wiring and termination, and that no '
            'other meter has the same address.' % where)
