"""pzemsim: a simulated RS-485 bus of Peacefair PZEM meters on a pseudo-terminal, and behind
simulated network gateways on 127.0.0.1.

    with SimBus('/tmp/pzem/ttyPZEM0') as bus:
        grid = bus.add(AcMeter(1, voltage=231.0, power=420.0))
        bus.add(DcMeter(3, voltage=13.4))
        grid.inject('bad_crc', count=2)
        ...  # open /tmp/pzem/ttyPZEM0 as a serial port
        with Gateway(bus, 'mbtcp', delay=0.05) as gateway:
            ...  # connect to mbtcp://127.0.0.1:<gateway.port>
"""

from .bus import LinkTaken, SimBus
from .crc import crc16, with_crc
from .faults import KINDS as FAULTS
from .gateway import Gateway
from .meters import AcMeter, DcMeter

__all__ = ['SimBus', 'LinkTaken', 'AcMeter', 'DcMeter', 'FAULTS', 'Gateway', 'crc16', 'with_crc']
