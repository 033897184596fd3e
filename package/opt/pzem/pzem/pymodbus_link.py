"""pymodbus's serial client on a pzem.modbus.Bus's open port, for register writes.

Loaded by the Bus on its first write_register only (pzemctl's settings and address changes), so
the driver never loads pymodbus. Works with pymodbus 2.3.0 / 2.5.3 (Venus OS) and 3.x: pymodbus
builds the request and parses the reply, the Bus puts the bytes on the wire and takes them back
(same timeouts, local echo, t3.5 silence) and then judges them by rtu.check_reply.
"""

import inspect
import logging
import struct
import termios

from pymodbus.exceptions import ModbusException, ModbusIOException

try:
    from pymodbus.client import ModbusSerialClient as _PymodbusClient       # 3.x
except ImportError:
    from pymodbus.client.sync import ModbusSerialClient as _PymodbusClient  # 2.x


def _pymodbus_options():
    """Constructor keywords for an RTU client with no retries, and the name of the
    keyword that addresses a meter in request calls (unit, slave or device_id)."""
    requests = inspect.signature(_PymodbusClient.write_register).parameters
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


CLIENT_OPTIONS, ADDRESS_KEYWORD = _pymodbus_options()

# pymodbus logs each failed request itself (3.x at ERROR level). The Bus raises one clear
# exception instead, so those lines would only double every message in the log.
logging.getLogger('pymodbus').setLevel(logging.CRITICAL)

# What pymodbus may raise for a failed request (3.x raises where 2.x returns an error object;
# 2.5.3 lets struct.error out of decoding some frames with a good CRC). Either way the bytes
# received decide what went wrong.
_PYMODBUS_FAILURES = (ModbusException, OSError, termios.error, struct.error, IndexError)

# 2.x and older 3.x: an exception out of a transaction leaves the client's state busy, and the
# next request then waits for the timeout first. Setting it back to idle prevents that.
_IDLE = getattr(_PymodbusClient, 'state', None)
_NOTHING = []


class _Port:
    """What pymodbus may touch of a serial port, on the Bus's bytes."""

    is_open = True
    in_waiting = 0          # the Bus has flushed the input after any failed exchange

    def __init__(self, bus):
        self.bus = bus
        self.timeout = bus.timeout

    def read(self, size):
        return self.bus.take(size)

    def write(self, data):
        self.bus.send(data)
        return len(data)

    def close(self):
        pass                # the Bus owns the port


class _Client(_PymodbusClient):
    """pymodbus's serial client, sending and receiving through the Bus. It keeps the bytes
    received for the Bus to judge, and any error the port raised."""

    received = b''
    expected = 0            # size of a good reply, for newer pymodbus 3.x (see recv)
    failure = None

    def connect(self):
        return self.socket is not None      # the Bus opens the port; pymodbus must not reopen it

    def close(self):
        pass                                # pymodbus 2.3.0 closes the port after each timeout

    def send(self, request, *args, **kwargs):
        try:
            self.socket.bus.send(bytes(request))
        except Exception as error:          # a port error or a wrong local echo: the Bus's
            self.failure = error            # own exception, raised again once pymodbus is out
            raise ModbusIOException('send failed')
        return len(request)

    def recv(self, size):
        # pymodbus 2.x and older 3.x (3.6) ask for a size. Newer 3.x (3.16) ask for "what
        # has come" (None) and poll for it in 4-character sleeps, until the full timeout
        # after a broken frame. Reading the expected reply at once, then reporting silence,
        # gives every version the same timing.
        bus = self.socket.bus
        try:
            if size is None:
                data = b''
                if self.expected:
                    data = bus.take(2)
                    if len(data) == 2:
                        data += bus.take((5 if data[1] & 0x80 else self.expected) - 2)
                self.expected = 0
            else:
                data = bus.take(size)
        except Exception as error:
            self.failure = error
            raise ModbusIOException('receive failed')
        self.received += data
        return data


class Writer:
    """Register writes through pymodbus on one open Bus."""

    def __init__(self, bus):
        client = _Client(port=bus.path, baudrate=bus.baudrate, bytesize=8, parity=bus.parity,
                         stopbits=bus.stopbits, timeout=bus.timeout, **CLIENT_OPTIONS)
        client.socket = _Port(bus)
        # 2.x sleeps t3.5 before nearly every request; the Bus has waited it already
        client.silent_interval = 0
        self.client = client

    def write_register(self, address, register, value):
        """The bytes that came back to FC 0x06 `register` = `value`. Raises what the Bus's
        send and take raised (OSError, BadFrame for a wrong local echo)."""
        client = self.client
        client.received = b''
        client.expected = 8
        client.failure = None
        # 2.x reads the next reply of a meter that once timed out in one piece of the full
        # success length, so a 5-byte exception reply would then cost the whole timeout.
        getattr(client.transaction, '_no_response_devices', _NOTHING).clear()
        try:
            client.write_register(register, value, **{ADDRESS_KEYWORD: address})
        except _PYMODBUS_FAILURES:
            if _IDLE is not None:
                client.state = _IDLE
        if client.failure is not None:
            raise client.failure
        return client.received
