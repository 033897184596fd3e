"""dbus-pzem --config MAP tcp://HOST:PORT (or mbtcp://HOST:PORT): the driver on the meters behind
an RS-485 network gateway.

The same Driver, steps and all; only the port differs. Its name is the name the map gives the
gateway ([gateway:NAME] with this host and port), else one made of the host and port
(net_link.default_name), so the services (pzem_<name>_<address>), the map's [NAME:N] and
[bus:NAME] and the log name the same port across restarts. The bus is a GatewayBus, which stays
through the network's failures: the driver is a service of its own (daemontools would start it
again every second), so it never exits for the gateway's sake, and it listens on nothing.
"""
from . import net_link
from .driver import Driver
from .gateway_bus import GatewayBus

SERIAL_KEYS = ('baudrate', 'stopbits', 'parity')   # the wire behind the gateway


class GatewayDriver(Driver):
    def port_name(self, device):
        self.gateway = next((g for g in self.follower.current.gateways()
                             if net_link.same_gateway(g.url, device)), None)
        if self.gateway is not None:
            return self.gateway.name
        _, host, port = net_link.parse_url(device)
        return net_link.default_name(host, port)

    def make_bus(self, device, options):
        serial = dict((key, options.pop(key)) for key in SERIAL_KEYS if key in options)
        link = net_link.link_for(device, name=self.gateway and self.gateway.name, **serial)
        if link.kind == 'mbtcp':
            options.pop('local_echo', None)     # the gateway takes the frames apart: no echo
        return GatewayBus(link, quick_timeout=self.scan_timeout, **options)

    def describe_bus(self):
        link = self.bus.link
        if link.kind == 'mbtcp':
            return 'Modbus TCP gateway %s' % link.url
        return 'transparent gateway %s, %d baud 8%s%d behind it' % (
            link.url, self.bus.baudrate, self.bus.parity, self.bus.stopbits)

    def reason_to_stay(self):
        return 'a gateway\'s driver runs as a service of its own, which would only start it again'

    def tick(self):
        """A connection made since the last tick carries the polls from now on, and the map's
        meters that have not answered are asked at once."""
        if self.bus.adopt():
            self.poller.ask_again()
        return Driver.tick(self)
