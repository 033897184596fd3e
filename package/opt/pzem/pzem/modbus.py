"""The one door to the meters: Modbus-RTU requests to PZEM meters over a link (a serial port).

Every read (input and holding registers), reset energy (function 0x42, unknown to pymodbus) and
anything sent to the general address 0xF8 (whose reply carries the meter's own address, which
pymodbus would throw away) goes out as a raw frame on the link; the bytes that come back are
judged by rtu.find_reply. Only a register write goes through pymodbus (2.3.0 or 2.5.3 on Venus
OS, 3.x elsewhere), loaded on first use by pzem.pymodbus_link, so the driver, which never
writes, does not load pymodbus or pyserial at all (5.6 MB less peak memory, see
docs/benchmarks.md).

Staying in step on a real bus. A reply that comes after its exchange gave up (a busy meter, a
long cable, an adapter's latency) lands in a later exchange; so do a meter at a wrong address,
a reply stretched by an adapter, and noise. An exchange takes only the frame that answers its
own request and passes over everything else, waiting on until its deadline; before a request it
drops whatever came since the last exchange, and after a disturbed exchange it first waits until
the line has been quiet for 3.5 characters, so a reply still on its way cannot run into the next
answer. One late reply costs at most the exchange it belonged to.

A Bus serves one port from one thread. Nothing is retried here: the caller decides.
"""

import select
import termios
import time

from .rtu import (EXCEPTION_MEANINGS, BadFrame, ExceptionReply,  # noqa: F401 (re-exported)
                  ModbusError, NoReply, PortGone)
from .rtu import (ANSWER, GENERAL_ADDRESS, PENDING, READ_HOLDING, READ_INPUT, RESET_ENERGY,
                  WRITE_REGISTER, Found, crc16, failure, find_reply, registers,
                  request_frame)
from .serial_link import SerialLink, NoData, open_port  # noqa: F401 (open_port: tools/bench)

TIMEOUT = 0.5           # seconds a request waits for its answer, unless told otherwise
_READABLE = select.POLLIN | select.POLLPRI
_NOTHING = Found(PENDING)


# -- request arguments --------------------------------------------------------------------

def _check_count(count):
    if not 1 <= count <= 125:
        raise ValueError('a read asks for 1..125 registers, not %r' % (count,))


def _request(address, function, *words):
    if not (1 <= address <= 247 or address == GENERAL_ADDRESS):
        raise ValueError('meter address %r is outside 1..247 (or 0xF8)' % (address,))
    if not all(0 <= word <= 0xFFFF for word in words):
        raise ValueError('register numbers and values must be within 0..65535: %r' % (words,))
    return request_frame(address, function, *words)


# -- the bus ------------------------------------------------------------------------------

class Bus:
    """Any number of meters on one link (by default the serial port `port`)."""

    def __init__(self, port=None, baudrate=9600, stopbits=2, parity='N', timeout=TIMEOUT,
                 local_echo=False, link=None):
        self.link = link if link is not None else SerialLink(port, baudrate, stopbits, parity)
        self.port_name = self.link.name
        self.path = getattr(self.link, 'path', self.link.where)
        self.baudrate = getattr(self.link, 'baudrate', baudrate)
        self.stopbits = getattr(self.link, 'stopbits', stopbits)
        self.parity = getattr(self.link, 'parity', parity)
        self.timeout = timeout
        self.local_echo = local_echo
        self.stats = {'requests': 0, 'no_reply': 0, 'bad_frame': 0, 'exception': 0,
                      'strays': 0, 'dropped_bytes': 0}
        self.strays = ()        # (address, function, length) of the frames the last exchange
                                # passed over: late replies, other meters
        self.heard = set()      # the senders of such frames, until the caller empties it
        self.reply_seconds = None   # how long the last answer took to come
        self._silence = 3.5 * self.link.char_time   # Modbus t3.5: the gap before a request
        self._quiet_at = 0.0    # when the line will have been quiet for t3.5
        self._unsettled = False     # the last exchange was disturbed: more may be on its way
        self._suspect = 2       # exchanges left that first look for bytes from before
        self._poll = None
        self._rest = b''        # bytes take() received beyond what was asked (pymodbus)
        self._last_good = {}    # request -> (reply bytes, registers) of its last good reply
        self._read_requests = {}    # (address, count) -> the bytes of that input read
        self._writer = None     # pymodbus, for register writes (pzem.pymodbus_link)
        self._send = self._receive = None   # the link's, while it is open

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def open(self):
        if self._poll is not None:
            return
        self.link.open()
        self._send, self._receive = self.link.send, self.link.receive
        self._gone_when_empty = getattr(self.link, 'gone_when_empty', False)
        self._rest, self._unsettled, self._suspect = b'', False, 2
        self._poll = select.poll()
        self._poll.register(self.link.fileno(), _READABLE)

    def close(self):
        self._poll, self._writer = None, None
        self.link.close()

    def read_input(self, address, count, timeout=None):
        """FC 0x04 from register 0: `count` register values. `timeout`: this request's own,
        instead of the bus's (a search for meters waits less than a poll)."""
        request = self._read_requests.get((address, count))
        if request is None:     # checked once: a poll asks the same again and again
            _check_count(count)
            request = self._read_requests[address, count] = _request(address, READ_INPUT, 0,
                                                                     count)
        return self._exchange(request, count, timeout=timeout)

    def read_holding(self, address, start, count, timeout=None):
        """FC 0x03: `count` register values from `start`."""
        _check_count(count)
        return self._exchange(_request(address, READ_HOLDING, start, count), count,
                              timeout=timeout)

    def write_register(self, address, register, value):
        """FC 0x06; returns once the meter has echoed the request exactly."""
        request = _request(address, WRITE_REGISTER, register, value)
        if address == GENERAL_ADDRESS:
            self._exchange(request, None)
        else:
            self._exchange(request, None, self._write_register, register, value)

    def reset_energy(self, address):
        """FC 0x42: zero the meter's energy counter; returns once the meter has echoed it."""
        self._exchange(_request(address, RESET_ENERGY), None)

    # -- one request --------------------------------------------------------------------

    def _write_register(self, address, register, value):
        if self._writer is None:
            from .pymodbus_link import Writer      # here only: the driver never writes
            self._writer = Writer(self)
        return self._writer.write_register(address, register, value)

    def _exchange(self, request, count, call=None, *args, timeout=None):
        """Send `request` (raw, or through pymodbus `call`) and wait for its answer."""
        if self._poll is None:
            raise PortGone('The port %s is not open: open the bus first.' % self.link.where)
        self.stats['requests'] += 1
        timeout = timeout or self.timeout
        try:
            # t3.5 of silence since the last byte on the line before a request; more care
            # after a failed or disturbed exchange (_settle). A steady bus, every second, goes
            # by in as few steps as it can.
            now = time.monotonic()
            wait = self._quiet_at - now
            if self._suspect:
                now = self._settle(now, wait)
            elif wait > 0.0:
                time.sleep(wait)
                now += wait
            if call is not None:
                data = call(request[0], *args) + self._rest     # all that pymodbus read
                self._rest = b''
                return self._answer(request, count, timeout, now, data)
            if self.local_echo:
                self.send(request)
                data, self._rest = self._rest, b''      # what came with the echo
                return self._answer(request, count, timeout, time.monotonic(), data)
            self._send(request)
            return self._answer(request, count, timeout, now)
        except (OSError, termios.error) as error:
            raise self._gone(error)

    def _settle(self, now, wait):
        """Before a request after a failed or disturbed exchange, and the one after it: the
        t3.5 silence `wait`, and nothing unread from before (a late reply must not pass for this
        request's answer); after bytes that may still be coming, a line quiet for t3.5 first.
        Returns the time the request goes out."""
        self._suspect -= 1
        if self._unsettled and wait < self._silence:
            wait = self._silence        # the rest of a broken reply may still be coming
        self._unsettled = False
        if self._rest:
            self.stats['dropped_bytes'] += len(self._rest)
            self._rest = b''
        if self._poll.poll(1000.0 * wait if wait > 0.0 else 0.0):
            self._drain()
            self._suspect = 2
            return time.monotonic()
        return now + wait if wait > 0.0 else now

    def _drain(self):
        """Drop what came since the last exchange until the line has been quiet for t3.5; a
        line that never goes quiet is given up on after the timeout."""
        poll, receive, quiet = self._poll.poll, self._more, 1000.0 * self._silence
        give_up = time.monotonic() + self.timeout
        while True:
            self.stats['dropped_bytes'] += len(receive())
            if not poll(quiet) or time.monotonic() >= give_up:
                break
        self._quiet_at = time.monotonic()

    def _answer(self, request, count, timeout, sent, data=b''):
        """The answer to `request`, sent at `sent`: the registers (None for an echo), from
        what comes until `timeout` after it (once the answer's head is in, `timeout` after
        that); frames that are not the answer are passed over. Raises what failure() says."""
        poll, receive = self._poll.poll, self._receive
        if not data:
            if not poll(1000.0 * timeout):
                return self._failed(request, count, data, _NOTHING, timeout, sent)
            data = receive()
            last = self._last_good.get(request)
            if last is not None and last[0] == data:
                result = last[1]        # the very bytes of a reply that passed: the same
            elif count and len(data) == 5 + 2 * count and data[0] == request[0] and \
                    data[1] == request[1] and data[2] == 2 * count and not crc16(data):
                result = registers(data, count)     # exactly the answer, in one piece
                self._last_good[request] = (data, result)
            else:
                result = None
            if result is not None:      # the usual case, in as few steps as it takes
                now = time.monotonic()
                self._quiet_at = now + self._silence
                self.reply_seconds = now - sent
                self.strays = ()
                return result
        found = find_reply(request, count, data)
        deadline = sent + timeout
        head_seen = False
        while found.outcome is PENDING:
            now = time.monotonic()
            if found.value and not head_seen:
                head_seen, deadline = True, now + timeout   # the head is in: its own timeout
            left = deadline - now
            if left <= 0 or not poll(1000.0 * left):
                break
            data += self._more()
            found = find_reply(request, count, data)
        self._quiet_at = time.monotonic() + self._silence
        self.strays = found.strays
        if found.strays:
            self.stats['strays'] += len(found.strays)
            self.heard.update(stray[0] for stray in found.strays)
        if found.outcome is not ANSWER:
            return self._failed(request, count, data, found, timeout, sent)
        size = 5 + 2 * count if count else len(request)
        if found.end != size or len(data) != size:
            self._unsettled = True      # something else was on the line, and may be again
            self._suspect = 2
        elif count:
            # handed out again (not copied) for the same bytes: callers never change a list
            self._last_good[request] = (data, found.value)
        self.reply_seconds = time.monotonic() - sent
        return found.value

    def _failed(self, request, count, data, found, timeout, sent):
        error = failure(request, count, data, found, self.port_name, timeout)
        if isinstance(error, NoReply):
            if self.link.vanished():
                raise self._gone(None)
            self.stats['no_reply'] += 1
            if not data:
                # Nothing came: the line has been quiet since the request's last byte, so
                # the silence counts from there (after a search's silent probe the next goes
                # at once instead of sleeping t3.5: one wake-up less per probe).
                self._quiet_at = sent + len(request) * self.link.char_time + self._silence
        elif isinstance(error, BadFrame):
            self.stats['bad_frame'] += 1
        else:
            self.stats['exception'] += 1
        if data:
            self._unsettled = True      # the rest of what came may still be on its way
        self._suspect = 2               # a late reply to this request may still come
        raise error

    # -- the port's bytes (pzem.pymodbus_link uses these too) -----------------------------

    def send(self, request):
        """Put `request` on the wire; with local_echo, read the adapter's echo of it."""
        self._send(request)
        if self.local_echo and self.take(len(request)) != request:
            self.stats['bad_frame'] += 1
            self._unsettled, self._suspect = True, 2
            raise BadFrame(self._echo_problem())

    def take(self, size):
        """The next `size` bytes received, or fewer when the timeout passes first."""
        data, self._rest = self._rest, b''
        if len(data) < size:
            poll, receive = self._poll.poll, self._more
            deadline = time.monotonic() + self.timeout
            while len(data) < size:
                left = deadline - time.monotonic()
                if left <= 0 or not poll(1000.0 * left):
                    break
                data += receive()
        if len(data) > size:
            self._rest = data[size:]
            return data[:size]
        return data

    def _more(self):
        """What has come since poll said something had; raises when that is the link gone."""
        chunk = self._receive()
        if not chunk and self._gone_when_empty:
            raise NoData()
        return chunk

    # -- messages -----------------------------------------------------------------------

    def _echo_problem(self):
        return ('The adapter on %s did not echo the request although local_echo is set: '
                'turn local_echo off for this port.' % self.port_name)

    def _gone(self, error):
        """The link became unusable: close it and say why (PortGone, for the caller to
        raise)."""
        self._poll, self._writer = None, None
        return self.link.lost(error)


