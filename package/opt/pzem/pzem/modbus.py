"""The one door to the serial port: Modbus-RTU requests to PZEM meters.

The port is opened and set up with termios, and every read (input and holding registers), reset
energy (function 0x42, unknown to pymodbus) and anything sent to the general address 0xF8 (whose
reply carries the meter's own address, which pymodbus would throw away) goes out as a raw frame
on its file descriptor: write, poll, read. The bytes that come back are judged by
rtu.check_reply. Only a register write goes through pymodbus (2.3.0 or 2.5.3 on Venus OS, 3.x
elsewhere), loaded on first use by pzem.pymodbus_link, so the driver, which never writes, does
not load pymodbus or pyserial at all (5.6 MB less peak memory, see docs/benchmarks.md).

A Bus serves one port from one thread. Nothing is retried here: the caller decides.
"""

import errno
import fcntl
import os
import select
import struct
import termios
import time

from . import tty
from .rtu import (EXCEPTION_MEANINGS, BadFrame, ExceptionReply,  # noqa: F401 (re-exported)
                  ModbusError, NoReply, PortGone)
from .rtu import (GENERAL_ADDRESS, READ_HOLDING, READ_INPUT, RESET_ENERGY, WRITE_REGISTER,
                  check_reply, request_frame)

_CMSPAR = getattr(termios, 'CMSPAR', 0o10000000000)     # Linux's mark/space parity bit
_READABLE = select.POLLIN | select.POLLPRI


class _NoData(OSError):
    """The port said it had input but gave none: the device went away (pyserial's words)."""

    def __init__(self):
        OSError.__init__(self, 'device reports readiness to read but returned no data (device '
                         'disconnected or multiple access on port?)')


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


# -- the port -----------------------------------------------------------------------------

def open_port(path, baudrate, stopbits, parity):
    """A file descriptor on the serial device at `path`, locked against other programs and
    set to raw 8-bit characters as pyserial would (8N1/8N2/8E1/8O1...). Raises OSError or
    termios.error."""
    speed = getattr(termios, 'B%d' % baudrate, None)
    if speed is None:
        raise OSError(errno.EINVAL, 'baud rate %r is not supported' % (baudrate,))
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # what pyserial's exclusive=True did
        iflag, oflag, cflag, lflag, _, _, cc = termios.tcgetattr(fd)
        iflag &= ~(termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IGNBRK |
                   getattr(termios, 'IUCLC', 0) | termios.PARMRK | termios.INPCK |
                   termios.ISTRIP | termios.IXON | termios.IXOFF | termios.IXANY)
        oflag &= ~(termios.OPOST | termios.ONLCR | termios.OCRNL)
        lflag &= ~(termios.ICANON | termios.ECHO | termios.ECHOE | termios.ECHOK |
                   termios.ECHONL | termios.ISIG | termios.IEXTEN |
                   getattr(termios, 'ECHOCTL', 0) | getattr(termios, 'ECHOKE', 0))
        cflag &= ~(termios.CSIZE | termios.CSTOPB | termios.PARENB | termios.PARODD | _CMSPAR |
                   getattr(termios, 'CRTSCTS', 0))
        cflag |= termios.CLOCAL | termios.CREAD | termios.CS8
        if stopbits == 2:
            cflag |= termios.CSTOPB
        if parity in ('E', 'O'):
            cflag |= termios.PARENB | (termios.PARODD if parity == 'O' else 0)
        cc[termios.VMIN], cc[termios.VTIME] = 0, 0
        termios.tcsetattr(fd, termios.TCSANOW,
                          [iflag, oflag, cflag, lflag, speed, speed, cc])
        try:        # DTR and RTS on, as pyserial leaves them (some adapters power from them)
            fcntl.ioctl(fd, termios.TIOCMBIS,
                        struct.pack('I', termios.TIOCM_DTR | termios.TIOCM_RTS))
        except OSError:
            pass    # not a modem-control port (a pty): nothing to set
        termios.tcflush(fd, termios.TCIOFLUSH)
    except BaseException:
        os.close(fd)
        raise
    return fd


# -- the bus ------------------------------------------------------------------------------

class Bus:
    """One serial port with any number of meters on it."""

    def __init__(self, port, baudrate=9600, stopbits=2, parity='N', timeout=0.5,
                 local_echo=False):
        self.port_name = tty.name(port)
        self.path = tty.path(port)
        self.baudrate = baudrate
        self.stopbits = stopbits
        self.parity = parity
        self.timeout = timeout
        self.local_echo = local_echo
        self.stats = {'requests': 0, 'no_reply': 0, 'bad_frame': 0, 'exception': 0}
        self._char = (1 + 8 + (parity != 'N') + stopbits) / baudrate   # seconds on the wire
        self._silence = 3.5 * self._char    # Modbus t3.5: the gap before the next request
        self._quiet_at = 0.0
        self._fd = None
        self._poll = None
        self._rest = b''        # bytes received after the frame being read
        self._last_good = {}    # request -> (reply bytes, registers) of its last good reply
        self._read_requests = {}    # (address, count) -> the bytes of that input read
        self._writer = None     # pymodbus, for register writes (pzem.pymodbus_link)

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def open(self):
        if self._fd is not None:
            return
        try:
            fd = open_port(self.path, self.baudrate, self.stopbits, self.parity)
        except (OSError, termios.error) as error:
            raise PortGone(self._open_problem(error))
        self._fd, self._rest = fd, b''
        self._poll = select.poll()
        self._poll.register(fd, _READABLE)

    def close(self):
        fd, self._fd, self._poll, self._writer = self._fd, None, None, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass                    # the device is already gone

    def read_input(self, address, count, timeout=None):
        """FC 0x04 from register 0: `count` register values. `timeout`: this request's own,
        instead of the bus's (a search for meters waits less than a poll)."""
        request = self._read_requests.get((address, count))
        if request is None:     # checked once: a poll asks the same again and again
            _check_count(count)
            request = self._read_requests[address, count] = _request(address, READ_INPUT, 0,
                                                                     count)
        return self._exchange(request, count, timeout=timeout)

    def read_holding(self, address, start, count):
        """FC 0x03: `count` register values from `start`."""
        _check_count(count)
        return self._exchange(_request(address, READ_HOLDING, start, count), count)

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
        """Send `request` (raw, or through pymodbus `call`) and judge the reply."""
        if self._fd is None:
            raise PortGone('Serial port %s is not open: open the bus first.' % self.path)
        self.stats['requests'] += 1
        now = time.monotonic()
        if self._quiet_at > now:
            time.sleep(self._quiet_at - now)
            now = time.monotonic()
        size = 5 + 2 * count if count else len(request)
        try:
            if call is None:
                reply = self._raw(request, size, timeout or self.timeout, now)
            else:
                reply = call(request[0], *args)
        except (OSError, termios.error) as error:
            raise self._gone(error)
        except BadFrame:
            self._flush()                           # a wrong local echo
            raise
        finally:
            self._quiet_at = time.monotonic() + self._silence
        if not reply:
            # Nothing came: the line has been quiet since the request's last byte, so the
            # silence is counted from there (after a search's silent probe, the next goes at
            # once instead of sleeping t3.5: one wake-up less per probe).
            self._quiet_at = now + len(request) * self._char + self._silence
        last = self._last_good.get(request)
        if last is not None and last[0] == reply and not self._rest:
            return last[1]          # the very bytes of a reply that passed: the same registers
        try:
            registers = check_reply(request, reply, count, self.port_name,
                                    timeout or self.timeout)
        except NoReply:
            if not os.path.exists(self.path):
                raise self._gone(None)
            self.stats['no_reply'] += 1
            self._flush()                           # a late reply must not pass for the next
            raise
        except BadFrame:
            self.stats['bad_frame'] += 1
            self._flush()
            raise
        except ExceptionReply:
            self.stats['exception'] += 1
            if self._rest:
                self._flush()
            raise
        if self._rest:
            self._flush()                           # bytes after a good frame: not in step
        elif count:
            # handed out again (not copied) for the same bytes: callers never change a list
            self._last_good[request] = (reply, registers)
        return registers

    def _raw(self, request, size, timeout, now):
        """The reply to `request`: `size` bytes, or 5 when the second byte marks an exception;
        fewer when the timeout ends it first (the timeout starts again once 2 bytes came).
        `now`: the monotonic time the request goes out (the timeout counts from there)."""
        if self.local_echo:
            self.send(request)
            now = time.monotonic()
        elif os.write(self._fd, request) < len(request):
            raise OSError(errno.EIO, 'the request was cut short')
        data, self._rest = self._rest, b''
        deadline = now + timeout
        if not data:
            if not self._poll.poll(1000.0 * timeout):
                return data                         # silence for the whole timeout
            data = os.read(self._fd, 256)
            if len(data) == size and not data[1] & 0x80:
                # The usual case, in as few steps as it takes (each one costs more right
                # after a wake-up than in a loop): the whole reply in one read.
                return data
            if not data:
                raise _NoData()
            now = time.monotonic()
            if len(data) >= 2:
                deadline = now + timeout            # the head is in: its own timeout
        whole = 5 if data[1:2] and data[1] & 0x80 else size
        if len(data) < whole:
            fd, poll, monotonic = self._fd, self._poll.poll, time.monotonic
            left = deadline - now
            while len(data) < whole:
                if left <= 0 or not poll(1000.0 * left):
                    break
                chunk = os.read(fd, 256)
                if not chunk:
                    raise _NoData()
                now = monotonic()
                if len(data) < 2 <= len(data) + len(chunk):
                    deadline = now + timeout        # the head is in: its own timeout
                data += chunk
                if data[1:2] and data[1] & 0x80:
                    whole = 5
                left = deadline - now
        if len(data) >= 2 and data[1] & 0x80:
            size = 5
        if len(data) > size:
            self._rest = data[size:]
            return data[:size]
        return data

    # -- the port's bytes (pzem.pymodbus_link uses these too) -----------------------------

    def send(self, request):
        """Put `request` on the wire; with local_echo, read the adapter's echo of it."""
        if os.write(self._fd, request) < len(request):      # 8 bytes into an empty queue
            raise OSError(errno.EIO, 'the request was cut short')
        if self.local_echo and self.take(len(request)) != request:
            self.stats['bad_frame'] += 1
            raise BadFrame(self._echo_problem())

    def take(self, size):
        """The next `size` bytes received, or fewer when the timeout passes first."""
        data, self._rest = self._rest, b''
        if len(data) < size:
            fd, poll = self._fd, self._poll.poll
            deadline = time.monotonic() + self.timeout
            while len(data) < size:
                left = deadline - time.monotonic()
                if left <= 0 or not poll(1000.0 * left):
                    break
                chunk = os.read(fd, 256)
                if not chunk:
                    raise _NoData()
                data += chunk
        if len(data) > size:
            self._rest = data[size:]
            return data[:size]
        return data

    def _flush(self):
        """Drop whatever was received and not used: after a failed exchange only."""
        self._rest = b''
        try:
            termios.tcflush(self._fd, termios.TCIFLUSH)
        except (OSError, termios.error, TypeError):
            pass                        # the port is gone: the next request says so

    # -- messages -----------------------------------------------------------------------

    def _echo_problem(self):
        return ('The adapter on %s did not echo the request although local_echo is set: '
                'turn local_echo off for this port.' % self.port_name)

    def _gone(self, error):
        """Close the port and say why it is unusable (PortGone, for the caller to raise)."""
        self.close()
        if not os.path.exists(self.path):
            return PortGone('Serial port %s went away: check the USB RS-485 adapter and its '
                            'cable.' % self.path)
        return PortGone('Serial port %s failed (%s): unplug and replug the USB RS-485 adapter.'
                        % (self.path, _reason(error)))

    def _open_problem(self, error):
        code = _errno(error)
        if code == errno.ENOENT or not os.path.exists(self.path):
            return ('Serial port %s does not exist: plug in the USB RS-485 adapter or fix the '
                    'port name.' % self.path)
        if code in (errno.EACCES, errno.EPERM):
            return 'No permission to open serial port %s: run the driver as root.' % self.path
        if code in (errno.EBUSY, errno.EAGAIN):
            return ('Serial port %s is in use by another program: stop it, or tell '
                    'serial-starter to leave this port alone.' % self.path)
        return 'Cannot open serial port %s (%s): check that it is a serial device.' % (
            self.path, _reason(error))


def _errno(error):
    code = getattr(error, 'errno', None)
    if code is None and isinstance(getattr(error, 'args', None), tuple) and error.args \
            and isinstance(error.args[0], int):
        code = error.args[0]                        # termios.error is (errno, text)
    return code


def _reason(error):
    """The OS's words for an error, without pymodbus's decoration."""
    while error is not None and error.__context__ is not None and \
            type(error).__module__.startswith('pymodbus'):
        error = error.__context__                   # 3.x replaces OSError by ConnectionException
    if error is None:
        return 'no reason given'
    code = _errno(error)
    return os.strerror(code) if code else str(error) or type(error).__name__
