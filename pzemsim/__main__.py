"""python -m pzemsim --link /tmp/pzem/ttyPZEM0 --meter 1:ac --meter 3:dc [--wire-time] [--vary]"""

import argparse
import signal
import sys
import threading

from .bus import LinkTaken, SimBus
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


def parse(argv):
    parser = argparse.ArgumentParser(prog='python -m pzemsim',
                                     description='Simulate PZEM meters on a pseudo-terminal.')
    parser.add_argument('--link', required=True,
                        help='path to create as the serial port (a symlink to the pty); an '
                        'existing file, folder or live link there is refused, not replaced')
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
    try:
        bus.start()
    except LinkTaken as error:
        print('pzemsim: %s' % error, file=sys.stderr)
        return 1
    except OSError as error:
        print('pzemsim: cannot make the port %s: %s' % (args.link, error.strerror or error),
              file=sys.stderr)
        return 1
    try:
        if variation:
            variation.start()
        print('pzemsim: %s -> %s: %s; Ctrl-C stops' % (
            args.link, bus.device,
            ', '.join('%s at %d' % (m.model, m.address) for m in bus.meters)), flush=True)
        while not stop.wait(1.0):
            pass
        if variation:
            variation.stop()
    finally:
        bus.stop()
    print('pzemsim: stopped, %s removed' % args.link, flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
