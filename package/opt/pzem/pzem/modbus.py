"""The one door to the serial port: Modbus-RTU requests to PZEM meters.

Only this module imports pymodbus and pyserial. pymodbus (2.3.0 or 2.5.3 on Venus OS,
3.x up to 3.16 elsewhere) builds, sends and reads the holding-register reads and writes; the
bytes that came back are then judged by rtu.check_reply, the same whatever the pymodbus
version. Raw frames on the same port instead: the poll's input-register read (the hot path:
pymodbus costs more CPU per read than the rest of a poll, see docs/benchmarks.md), reset energy
(function 0x42, unknown to pymodbus) and anything sent to the general address 0xF8, whose reply
carries the meter's own address, which pymodbus would throw away.

A Bus serves one port from one thread. Nothing is retried here: the caller decides.
"""

import errno
import inspect
import logging
import os
import struct
import termios
import time

import serial
from pymodbus.exceptions import ModbusException, ModbusIOException

try:
    from pymodbus.client import ModbusSerialClient as _PymodbusClient       # 3.x
except ImportError:
    from pymodbus.client.sync import ModbusSerialClient as _PymodbusClient  # 2.x

from .rtu import (EXCEPTION_MEANINGS, BadFrame, ExceptionReply,  # noqa: F401 (re-exported)
                  ModbusError, NoReply, PortGone)
from .rtu import (GENERAL_ADDRESS, READ_HOLDING, READ_INPUT, RESET_ENERGY, WRITE_REGISTER,
                  check_reply, request_frame)


# -- pymodbus 2.x / 3.x differences, settled once -----------------------------------------

def _pymodbus_options():
    """Constructor keywords for an RTU client with no retries, and the name of the
    keyword that addresses a meter in request calls (unit, slave or device_id)."""
    requests = inspect.signature(_PymodbusClient.read_input_registers).parameters
    address_keyword = next((k for k in ('device_id', 'slave') if k in requests), 'unit')
    if 'framer' not in inspect.signature(_PymodbusClient.__init__).parameters:
        # 2.x: reset_socket=False (2.5.3) stops it closing the port after a timeout
        return {'method': 'rtu', 'retries': 0, 'retry_on_empty': False,
                'retry_on_invalid': False, 'reset_socket': False}, address_keyword
    try:
        from pymodbus.framer import FramerType as framer          # newer 3.x (3.16)
    except ImportError:
        try:
            from pymodbus.framer import Framer as framer          # older 3.x (3.6)
        except ImportError:
            return {'retries': 0}, address_keyword                  # first 3.x: RTU by default
    return {'framer': framer.RTU, 'retries': 0}, address_keyword


_CLIENT_OPTIONS, _ADDRESS_KEYWORD = _pymodbus_options()

# pymodbus logs each failed request itself (3.x at ERROR level). The Bus raises one clear
# exception instead, so those lines would only double every message in the driver's log.
logging.getLogger('pymodbus').setLevel(logging.CRITICAL)

# What pymodbus may raise for a failed request (3.x raises where 2.x returns an error object;
# 2.5.3 lets struct.error out of decoding some frames with a good CRC). Either way the bytes
# received decide what went wrong.
_PYMODBUS_FAILURES = (ModbusException, OSError, termios.error, struct.error, IndexError)

# 2.x and older 3.x: an exception out of a transaction leaves the client's state busy, and the
# next request then waits for the timeout first. Setting it back to idle prevents that.
_IDLE = getattr(_PymodbusClient, 'state', None)
_NOTHING = []


class _Client(_PymodbusClient):
    """pymodbus's serial client, working on the port the Bus opened. It keeps the bytes
    received for the Bus to judge, and any error the port raised."""

    received = b''
    expected = 0            # size of a good reply, for newer pymodbus 3.x (see recv)
    port_error = None
    echo_error = None
    local_echo = False

    def connect(self):
        return self.socket is not None      # the Bus opens the port; pymodbus must not reopen it

    def close(self):
        pass                                # pymodbus 2.3.0 closes the port after each timeout

    def send(self, request, *args, **kwargs):
        try:
            size = super().send(request, *args, **kwargs)
            echo = self.socket.read(len(request)) if self.local_echo else request
        except Exception as error:          # 3.x turns OSError into ConnectionException
            self.port_error = error
            raise
        if echo != request:
            self.echo_error = echo
            raise ModbusIOException('wrong local echo')
        return size

    def recv(self, size):
        # pymodbus 2.x and older 3.x (3.6) ask for a size. Newer 3.x (3.16) ask for "what
        # has come" (None) and poll for it in 4-character sleeps, until the full timeout
        # after a broken frame. Reading the expected reply at once, then reporting silence,
        # gives every version the same timing.
        try:
            if size is None:
                data = _read_reply(self.socket, self.expected) if self.expected else b''
                self.expected = 0
            else:
                data = self.socket.read(size)
        except Exception as error:
            self.port_error = error
            raise
        self.received += data
        return data


def _read_reply(port, size):
    """A reply of `size` bytes, or 5 when the second byte marks an exception; fewer when
    the timeout ends it first."""
    head = port.read(2)
    if len(head) < 2:
        return head
    return head + port.read((5 if head[1] & 0x80 else size) - 2)


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
    """One serial port with any number of meters on it."""

    def __init__(self, port, baudrate=9600, stopbits=2, parity='N', timeout=0.5,
                 local_echo=False):
        self.port_name = os.path.basename(port.rstrip('/'))
        self.path = port if '/' in port else '/dev/' + port
        self.baudrate = baudrate
        self.stopbits = stopbits
        self.parity = parity
        self.timeout = timeout
        self.local_echo = local_echo
        self.stats = {'requests': 0, 'no_reply': 0, 'bad_frame': 0, 'exception': 0}
        bits = 1 + 8 + (parity != 'N') + stopbits
        self._silence = 3.5 * bits / baudrate   # Modbus t3.5: the gap before the next request
        self._quiet_at = 0.0
        self._serial = None
        self._client = None

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def open(self):
        if self._serial is not None:
            return
        try:
            port = serial.Serial(self.path, baudrate=self.baudrate, bytesize=8,
                                 parity=self.parity, stopbits=self.stopbits,
                                 timeout=self.timeout, exclusive=True)
        except (serial.SerialException, OSError) as error:
            raise PortGone(self._open_problem(error))
        client = _Client(port=self.path, baudrate=self.baudrate, bytesize=8,
                         parity=self.parity, stopbits=self.stopbits, timeout=self.timeout,
                         **_CLIENT_OPTIONS)
        client.socket = port
        client.local_echo = self.local_echo
        # 2.x sleeps t3.5 before nearly every request; the Bus waits only what is left of it
        client.silent_interval = 0
        self._serial, self._client = port, client

    def close(self):
        port, self._serial, self._client = self._serial, None, None
        if port is not None:
            try:
                port.close()
            except (OSError, termios.error):
                pass                    # the device is already gone

    def read_input(self, address, count, timeout=None):
        """FC 0x04 from register 0: `count` register values. `timeout`: this request's own (a
        search for meters waits less than a poll)."""
        _check_count(count)
        request = _request(address, READ_INPUT, 0, count)
        # The poll's hot path: a raw frame, judged by check_reply() as every reply is anyway.
        # Through pymodbus it costs ~115 us more CPU per read (docs/benchmarks.md).
        if timeout is None or timeout == self.timeout:
            return self._exchange(request, count, None)
        self._serial.timeout = timeout
        try:
            return self._exchange(request, count, None)
        finally:
            if self._serial is not None:
                self._serial.timeout = self.timeout

    def read_holding(self, address, start, count):
        """FC 0x03: `count` register values from `start`."""
        _check_count(count)
        request = _request(address, READ_HOLDING, start, count)
        return self._exchange(request, count, self._read_holding, start, count)

    def write_register(self, address, register, value):
        """FC 0x06; returns once the meter has echoed the request exactly."""
        request = _request(address, WRITE_REGISTER, register, value)
        self._exchange(request, None, self._write_register, register, value)

    def reset_energy(self, address):
        """FC 0x42: zero the meter's energy counter; returns once the meter has echoed it."""
        self._exchange(_request(address, RESET_ENERGY), None, None)

    # -- one request --------------------------------------------------------------------

    def _read_holding(self, address, start, count):
        return self._client.read_holding_registers(start, count=count,
                                                   **{_ADDRESS_KEYWORD: address})

    def _write_register(self, address, register, value):
        return self._client.write_register(register, value, **{_ADDRESS_KEYWORD: address})

    def _exchange(self, request, count, call, *args):
        """Send `request` (through pymodbus `call`, or raw when None) and judge the reply."""
        address = request[0]
        if self._serial is None:
            raise PortGone('Serial port %s is not open: open the bus first.' % self.path)
        self.stats['requests'] += 1
        wait = self._quiet_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            self._serial.reset_input_buffer()       # a late reply to an earlier request
            size = 5 + 2 * count if count else len(request)
            if call is None or address == GENERAL_ADDRESS:
                reply = self._raw(request, size)
            else:
                reply = self._through_pymodbus(call, address, size, *args)
        except (OSError, termios.error) as error:   # pyserial's SerialException is an OSError
            raise self._gone(error)
        finally:
            self._quiet_at = time.monotonic() + self._silence
        try:
            return check_reply(request, reply, count, self.port_name, self.timeout)
        except NoReply:
            if not os.path.exists(self.path):
                raise self._gone(None)
            self.stats['no_reply'] += 1
            raise
        except BadFrame:
            self.stats['bad_frame'] += 1
            raise
        except ExceptionReply:
            self.stats['exception'] += 1
            raise

    def _through_pymodbus(self, call, address, size, *args):
        client = self._client
        client.received = b''
        client.expected = size
        client.port_error = client.echo_error = None
        # 2.x reads the next reply of a meter that once timed out in one piece of the full
        # success length, so a 5-byte exception reply would then cost the whole timeout.
        getattr(client.transaction, '_no_response_devices', _NOTHING).clear()
        try:
            call(address, *args)
        except _PYMODBUS_FAILURES:
            if _IDLE is not None:
                client.state = _IDLE
        if client.port_error is not None:
            raise self._gone(client.port_error)
        if client.echo_error is not None:
            self.stats['bad_frame'] += 1
            raise BadFrame(self._echo_problem())
        return client.received

    def _raw(self, request, size):
        port = self._serial
        port.write(request)
        if self.local_echo and port.read(len(request)) != request:
            self.stats['bad_frame'] += 1
            raise BadFrame(self._echo_problem())
        return _read_reply(port, size)

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
        code = getattr(error, 'errno', None)
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


def _reason(error):
    """The OS's words for an error, without pyserial's or pymodbus's decoration."""
    while isinstance(error, ModbusException) and error.__context__ is not None:
        error = error.__context__                   # 3.x replaces OSError by ConnectionException
    if error is None:
        return 'no reason given'
    code = getattr(error, 'errno', None)
    if code is None and isinstance(getattr(error, 'args', None), tuple) and error.args \
            and isinstance(error.args[0], int):
        code = error.args[0]                        # termios.error is (errno, text)
    return os.strerror(code) if code else str(error) or type(error).__name__
