"""A serial port as the byte pipe under a pzem.modbus.Bus: open, send, receive, close.

The port is opened and set up with termios as pyserial would, and read and written on its file
descriptor; the Bus waits on fileno() itself. A link of another kind (a network gateway) offers
the same few members: name, where, char_time, open, close, fileno, send, receive,
discard_input, vanished and lost, and says with gone_when_empty whether receive() giving
nothing, after poll said there was something, means the device is gone.

send and receive are os.write and os.read on the open descriptor themselves, not methods that
call them: a read every second costs a Python call less each way (see docs/performance.md).
"""
import functools
import errno
import fcntl
import os
import struct
import termios

from . import tty
from .rtu import PortGone

_CMSPAR = getattr(termios, 'CMSPAR', 0o10000000000)     # Linux's mark/space parity bit


class NoData(OSError):
    """The port said it had input but gave none: the device went away (pyserial's words)."""

    def __init__(self):
        OSError.__init__(self, 'device reports readiness to read but returned no data (device '
                         'disconnected or multiple access on port?)')


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


class SerialLink(object):
    gone_when_empty = True      # pyserial's rule: readable, but no data: disconnected

    def __init__(self, port, baudrate=9600, stopbits=2, parity='N'):
        self.name = tty.name(port)
        self.path = self.where = tty.path(port)
        self.baudrate = baudrate
        self.stopbits = stopbits
        self.parity = parity
        self.char_time = (1 + 8 + (parity != 'N') + stopbits) / baudrate   # s on the wire
        self._fd = None

    def open(self):
        try:
            self._fd = open_port(self.path, self.baudrate, self.stopbits, self.parity)
        except (OSError, termios.error) as error:
            raise PortGone(self._open_problem(error))
        # send(frame): 8 bytes into an empty queue go at once; receive(): what has come (a
        # reply is at most 255 bytes; more comes with the next call)
        self.send = functools.partial(os.write, self._fd)
        self.receive = functools.partial(os.read, self._fd, 256)

    def close(self):
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass                    # the device is already gone

    def fileno(self):
        return self._fd

    def discard_input(self):
        try:
            termios.tcflush(self._fd, termios.TCIFLUSH)
        except (OSError, termios.error, TypeError):
            pass                        # the port is gone: the next request says so

    def vanished(self):
        """True when the device node is gone (a USB adapter pulled out)."""
        return not os.path.exists(self.path)

    def lost(self, error):
        """Why the open port became unusable, as the PortGone to raise (it is closed)."""
        self.close()
        if self.vanished():
            return PortGone('Serial port %s went away: check the USB RS-485 adapter and its '
                            'cable.' % self.path)
        return PortGone('Serial port %s failed (%s): unplug and replug the USB RS-485 adapter.'
                        % (self.path, reason(error)))

    def _open_problem(self, error):
        code = _errno(error)
        if code == errno.ENOENT or self.vanished():
            return ('Serial port %s does not exist: plug in the USB RS-485 adapter or fix the '
                    'port name.' % self.path)
        if code in (errno.EACCES, errno.EPERM):
            return 'No permission to open serial port %s: run the driver as root.' % self.path
        if code in (errno.EBUSY, errno.EAGAIN):
            return ('Serial port %s is in use by another program: stop it, or tell '
                    'serial-starter to leave this port alone.' % self.path)
        return 'Cannot open serial port %s (%s): check that it is a serial device.' % (
            self.path, reason(error))


def _errno(error):
    code = getattr(error, 'errno', None)
    if code is None and isinstance(getattr(error, 'args', None), tuple) and error.args \
            and isinstance(error.args[0], int):
        code = error.args[0]                        # termios.error is (errno, text)
    return code


def reason(error):
    """The OS's words for an error, without pymodbus's decoration."""
    while error is not None and error.__context__ is not None and \
            type(error).__module__.startswith('pymodbus'):
        error = error.__context__                   # 3.x replaces OSError by ConnectionException
    if error is None:
        return 'no reason given'
    code = _errno(error)
    return os.strerror(code) if code else str(error) or type(error).__name__
