"""The serial port pzemctl works on: its /dev path, its bare tty name, and buses opened on it."""
import contextlib
import os
import stat

from .. import meter_map, modbus, tty
from .console import Failure, UsageError

SCAN_TIMEOUT = 0.15     # real PZEMs answer a 1-register read within ~100-120 ms


class Port(object):
    def __init__(self, arg, config=meter_map.DEFAULT_PATH, stopbits=None, timeout=None,
                 scan_timeout=None):
        """arg: a bare name under /dev ('ttyUSB0', as serial-starter names it) or a path; a
        trailing / is dropped (a serial port is no folder)."""
        arg = arg.rstrip('/') or arg
        self.arg = arg
        self.path = tty.path(arg)
        self.name = tty.name(arg)
        self.config = config
        options = self._map_options()      # modbus.Bus has the defaults for the rest
        if stopbits is not None:
            options['stopbits'] = stopbits
        if timeout is not None:
            options['timeout'] = timeout
        self.options = options
        self.scan_timeout = scan_timeout if scan_timeout is not None else SCAN_TIMEOUT

    def _map_options(self):
        """The map's serial settings for this port (stop bits, echo, ...); none without a map."""
        wanted = ('baudrate', 'stopbits', 'parity', 'local_echo', 'timeout')
        options = meter_map.load(self.config).bus_options(self.name)
        return dict((k, v) for k, v in options.items() if k in wanted)

    def check_serial(self):
        """Failure with one sentence unless the port is a terminal device pzemctl may open."""
        if not self.arg.strip():
            raise UsageError('give a serial port: ttyUSB0 or a path like /dev/ttyUSB0')
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            raise Failure('serial port %s does not exist: is the USB RS-485 adapter plugged in '
                          '(ls /dev/ttyUSB*)?' % self.path)
        except OSError as e:
            raise Failure('cannot look at %s: %s' % (self.path, e.strerror))
        if stat.S_ISDIR(mode):
            raise Failure('%s is a folder, not a serial port: give the adapter, like ttyUSB0'
                          % self.path)
        if not stat.S_ISCHR(mode):
            raise Failure('%s is a file, not a serial port: give the adapter, like ttyUSB0'
                          % self.path)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as e:
            raise Failure('cannot open %s: %s' % (self.path, e.strerror))
        try:
            if not os.isatty(fd):
                raise Failure('%s is a device but not a serial port: give the adapter, like '
                              'ttyUSB0' % self.path)
        finally:
            os.close(fd)

    @property
    def timeout(self):
        """The timeout of a normal request (not a scan's)."""
        return self.options.get('timeout', modbus.TIMEOUT)

    @contextlib.contextmanager
    def bus(self, scanning=False):
        """An open modbus.Bus; `scanning` uses the short per-address timeout of a scan."""
        options = dict(self.options)
        if scanning:
            options['timeout'] = self.scan_timeout
        bus = modbus.Bus(self.path, **options)
        bus.open()
        try:
            yield bus
        finally:
            bus.close()
