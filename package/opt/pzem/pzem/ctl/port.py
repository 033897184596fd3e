"""The serial port pzemctl works on: its /dev path, its bare tty name, and buses opened on it."""
import contextlib
import os

from .. import meter_map, modbus
from .console import Failure

DEFAULT_MAP = '/data/conf/pzem.conf'
SCAN_TIMEOUT = 0.15     # real PZEMs answer a 1-register read within ~100-120 ms
TIMEOUT = 0.5


class Port(object):
    def __init__(self, arg, config=DEFAULT_MAP, stopbits=None, timeout=None, scan_timeout=None):
        """arg: a bare name under /dev ('ttyUSB0', as serial-starter names it) or a path."""
        self.path = arg if '/' in arg else '/dev/' + arg
        self.name = os.path.basename(arg)
        self.config = config
        options = {'baudrate': 9600, 'stopbits': 2, 'parity': 'N', 'local_echo': False,
                   'timeout': TIMEOUT}
        options.update(self._map_options())
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

    def check_exists(self):
        if not os.path.exists(self.path):
            raise Failure('serial port %s does not exist: is the USB RS-485 adapter plugged in '
                          '(ls /dev/ttyUSB*)?' % self.path)

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
