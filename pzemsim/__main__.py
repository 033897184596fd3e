"""python -m pzemsim --link /tmp/pzem/ttyPZEM0 --meter 1:ac --meter 3:dc [--wire-time] [--vary]"""

import argparse
import signal
import sys
import threading

from .bus import SimBus
from .meters import AcMeter, DcMeter
from .vary import LoadVariation

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


def parse(argv):
    parser = argparse.ArgumentParser(prog='python -m pzemsim',
                                     description='Simulate PZEM meters on a pseudo-terminal.')
    parser.add_argument('--link', required=True, help='path to create as the serial port')
    parser.add_argument('--meter', action='append', type=meter_spec, default=[],
                        metavar='ADDRESS:ac|dc', help='a meter on the bus (repeat for more)')
    parser.add_argument('--wire-time', action='store_true',
                        help='deliver replies as late as a 9600 baud wire would')
    parser.add_argument('--turnaround', type=float, default=0.08,
                        help='meter response time in seconds with --wire-time (default 0.08)')
    parser.add_argument('--baudrate', type=int, default=9600)
    parser.add_argument('--stopbits', type=int, choices=(1, 2), default=2)
    parser.add_argument('--vary', action='store_true',
                        help='let loads change slowly and energy count up')
    args = parser.parse_args(argv)
    if not args.meter:
        parser.error('give at least one --meter')
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    bus = SimBus(args.link, wire_time=args.wire_time, turnaround=args.turnaround,
                 baudrate=args.baudrate, stopbits=args.stopbits)
    for meter in args.meter:
        bus.add(meter)
    variation = LoadVariation(bus.meters) if args.vary else None
    with bus:
        if variation:
            variation.start()
        print('pzemsim: %s -> %s: %s; Ctrl-C stops' % (
            args.link, bus.device,
            ', '.join('%s at %d' % (m.model, m.address) for m in bus.meters)), flush=True)
        while not stop.wait(1.0):
            pass
        if variation:
            variation.stop()
    print('pzemsim: stopped, %s removed' % args.link, flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
