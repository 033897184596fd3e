"""python -m pzemsim --link /tmp/pzem/ttyPZEM0 --meter 1:ac --meter 3:dc [--wire-time] [--vary]
                    [--tcp PORT] [--mbtcp PORT] [--delay SECONDS]"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading

from .bus import LinkTaken, SimBus
from .gateway import Gateway
from .meters import AcMeter, DcMeter
from .vary import LoadVariation

GATEWAYS = (('tcp', 'transparent gateway'), ('mbtcp', 'Modbus TCP gateway'))

FAMILIES = {'ac': AcMeter, 'dc': DcMeter}


def meter_spec(text):
    try:
        address, family = text.split(':')
        address = int(address, 0)
        if not 1 <= address <= 247 or family not in FAMILIES:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            '%r: expected ADDRESS:ac or ADDRESS:dc, address 1..247' % text)
    return FAMILIES[family](address)


def seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= 10:     # also refuses nan and inf
        raise argparse.ArgumentTypeError('%r: expected seconds from 0 to 10' % text)
    return value


def baudrate(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 300 <= value <= 115200:
        raise argparse.ArgumentTypeError('%r: expected a baud rate from 300 to 115200' % text)
    return value


def tcp_port(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError('%r: expected a TCP port from 0 (any free one) to 65535'
                                         % text)
    return value


def parse(argv):
    parser = argparse.ArgumentParser(
        prog='python -m pzemsim',
        description='Simulate PZEM meters on a pseudo-terminal, and behind RS-485 network '
        'gateways on 127.0.0.1.')
    parser.add_argument('--link',
                        help='path to create as the serial port (a symlink to the pty); an '
                        'existing file, folder or live link there is refused, not replaced. '
                        'Optional with --tcp or --mbtcp (a private one is made then)')
    parser.add_argument('--meter', action='append', type=meter_spec, default=[],
                        metavar='ADDRESS:ac|dc', help='a meter on the bus (repeat for more)')
    parser.add_argument('--wire-time', action='store_true',
                        help='deliver replies as late as a 9600 baud wire would')
    parser.add_argument('--turnaround', type=seconds, default=0.08,
                        help='meter response time in seconds with --wire-time (default 0.08)')
    parser.add_argument('--baudrate', type=baudrate, default=9600)
    parser.add_argument('--stopbits', type=int, choices=(1, 2), default=2)
    parser.add_argument('--vary', action='store_true',
                        help='let loads change slowly and energy count up')
    parser.add_argument('--tcp', type=tcp_port, metavar='PORT',
                        help='a transparent gateway to the meters on 127.0.0.1:PORT (0: any free '
                        'port, printed)')
    parser.add_argument('--mbtcp', type=tcp_port, metavar='PORT',
                        help='a Modbus TCP gateway to the meters on 127.0.0.1:PORT')
    parser.add_argument('--delay', type=seconds, default=0.0, metavar='SECONDS',
                        help='seconds the gateways add to each round trip (e.g. 0.005, 0.05)')
    args = parser.parse_args(argv)
    if not args.meter:
        parser.error('give at least one --meter')
    if args.link is None and args.tcp is None and args.mbtcp is None:
        parser.error('give --link, or a gateway with --tcp or --mbtcp')
    return args


class Unusable(Exception):
    """A port or gateway the simulator cannot set up; the message is one sentence."""


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    wanted = [(kind, getattr(args, kind)) for kind, _ in GATEWAYS
              if getattr(args, kind) is not None]
    wires = tempfile.mkdtemp(prefix='pzemsim-') if wanted else None
    buses, gateways = [], []
    try:
        if args.link:
            buses.append(start_bus(args, args.link))
        for kind, port in wanted:
            # each gateway has a wire of its own to the same meters: one master per wire
            buses.append(start_bus(args, os.path.join(wires, kind)))
            gateways.append(start_gateway(buses[-1], kind, port, args.delay))
        variation = LoadVariation(args.meter).start() if args.vary else None
        meters = ', '.join('%s at %d' % (m.model, m.address) for m in args.meter)
        if args.link:
            print('pzemsim: %s -> %s: %s; Ctrl-C stops' % (args.link, buses[0].device, meters),
                  flush=True)
        for gateway in gateways:
            print('pzemsim: %s (%s%s): %s; Ctrl-C stops' % (
                gateway.url, dict(GATEWAYS)[gateway.kind],
                ', %g s added to each round trip' % args.delay if args.delay else '', meters),
                flush=True)
        while not stop.wait(1.0):
            pass
        if variation:
            variation.stop()
    except Unusable as error:
        print('pzemsim: %s' % error, file=sys.stderr)
        return 1
    finally:
        for gateway in gateways:
            gateway.stop()
        for bus in buses:
            bus.stop()
        if wires:
            shutil.rmtree(wires, ignore_errors=True)
    print('pzemsim: stopped%s' % (', %s removed' % args.link if args.link else ''), flush=True)
    return 0


def start_bus(args, link):
    bus = SimBus(link, wire_time=args.wire_time, turnaround=args.turnaround,
                 baudrate=args.baudrate, stopbits=args.stopbits)
    for meter in args.meter:
        bus.add(meter)
    try:
        return bus.start()
    except LinkTaken as error:
        raise Unusable(str(error))
    except OSError as error:
        raise Unusable('cannot make the port %s: %s' % (link, error.strerror or error))


def start_gateway(bus, kind, port, delay):
    try:
        return Gateway(bus, kind, port=port, delay=delay).start()
    except OSError as error:
        raise Unusable('cannot listen on 127.0.0.1:%d: %s' % (port, error.strerror or error))


if __name__ == '__main__':
    sys.exit(main())
