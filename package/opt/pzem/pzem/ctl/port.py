"""The port pzemctl works on: a serial port (its /dev path and bare tty name) or a network gateway
(its URL and the name the map gives it), the buses opened on it, and how it is borrowed from the
driver that holds it."""
import contextlib
import os
import stat

from .. import meter_map, modbus, net_link, tty
from .console import Failure, UsageError

SCAN_TIMEOUT = 0.15     # real PZEMs answer a 1-register read within ~100-120 ms
SERIAL_KEYS = ('baudrate', 'stopbits', 'parity')


def gateway_for(arg, the_map):
    """(port name, URL, whether the map names it) when `arg` is a network gateway: a URL (named
    as the map's gateway with its host and port, else net_link.default_name) or the name of a
    gateway the map declares; None for a serial port. UsageError for a URL that cannot be one."""
    if net_link.is_url(arg):
        try:
            _, host, port = net_link.parse_url(arg)
        except ValueError as e:
            raise UsageError(str(e))
        named = next((g.name for g in the_map.gateways() if net_link.same_gateway(g.url, arg)),
                     None)
        return named or net_link.default_name(host, port), arg, named is not None
    if '/' not in arg:
        named = next((g for g in the_map.gateways() if g.name == arg), None)
        if named is not None:
            return named.name, named.url, True
    return None


class Port(object):
    def __init__(self, arg, config=meter_map.DEFAULT_PATH, stopbits=None, timeout=None,
                 scan_timeout=None):
        """arg: a bare name under /dev ('ttyUSB0', as serial-starter names it) or a path (a
        trailing / is dropped: a serial port is no folder); or a network gateway: tcp://HOST:PORT,
        mbtcp://HOST:PORT or the name of a [gateway:NAME] in the map."""
        the_map = meter_map.load(config)
        self.gateway = gateway_for(arg, the_map)
        if self.gateway is None:
            arg = arg.rstrip('/') or arg
            self.path = tty.path(arg)
            self.name = tty.name(arg)
        else:
            self.name, self.path, _ = self.gateway      # the path is the gateway's URL
        self.arg = arg
        self.config = config
        options = self._map_options(the_map)      # modbus.Bus has the defaults for the rest
        if stopbits is not None:
            options['stopbits'] = stopbits
        if timeout is not None:
            options['timeout'] = timeout
        self.options = options
        self.scan_timeout = scan_timeout if scan_timeout is not None else SCAN_TIMEOUT

    def _map_options(self, the_map):
        """The map's serial settings for this port (stop bits, echo, ...); none without a map."""
        wanted = ('baudrate', 'stopbits', 'parity', 'local_echo', 'timeout')
        options = the_map.bus_options(self.name)
        return dict((k, v) for k, v in options.items() if k in wanted)

    def check(self):
        """Failure with one sentence unless the port is a terminal device pzemctl may open (a
        gateway is checked when pzemctl connects to it)."""
        if self.gateway is None:
            self.check_serial()

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
        if self.gateway is None:
            bus = modbus.Bus(self.path, **options)
        else:
            serial = dict((key, options.pop(key)) for key in SERIAL_KEYS if key in options)
            link = net_link.link_for(self.path, name=self.name if self.gateway[2] else None,
                                     **serial)
            if link.kind == 'mbtcp':
                options.pop('local_echo', None)     # the gateway takes the frames apart
            bus = modbus.Bus(link=link, **options)
        bus.open()
        try:
            yield bus
        finally:
            bus.close()

    def lease(self, yes=False):
        """The port, taken from the driver that holds it for as long as the with-block runs."""
        if self.gateway is None:
            from .port_lease import PortLease
            return PortLease(self.path, self.name, yes)
        from .gateway_lease import GatewayLease
        return GatewayLease(self.path, self.name)
