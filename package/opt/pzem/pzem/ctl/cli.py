"""pzemctl PORT COMMAND: commission the PZEM-016/017 meters on one RS-485 port.

Exit codes: 0 done, 1 failed (one sentence on stderr says why), 2 bad command line.
"""
import argparse
import sys

from .. import meter_map, modbus, numbers
from ..rtu import ADDRESSES, MAX_ADDRESS, MIN_ADDRESS
from . import address, commands, config_check, monitor, pins, status
from .console import FAILED, OK, Failure, note
from .port import Port
from .port_lease import PortLease

EXAMPLES = """examples (one meter connected at a time while setting addresses):
  pzemctl ttyUSB0 scan
  pzemctl ttyUSB0 scan --addresses 1-20   # quicker when the meters sit at low addresses
  pzemctl ttyUSB0 info                    # the only meter, via the general address 0xF8
  pzemctl ttyUSB0 set-address 2           # the only meter gets address 2
  pzemctl ttyUSB0 set-address 3 --from 1 --yes
  pzemctl ttyUSB0 set-alarm 2 --power 3000
  pzemctl ttyUSB0 set-range 3 200 --yes
  pzemctl ttyUSB0 monitor
  pzemctl ttyUSB0 pin
  pzemctl check-config /data/conf/pzem.conf
  pzemctl status                          # which ports run dbus-pzem, their meters, the log
"""

# Commands that talk to the meters: they borrow the port from a running driver first.
ON_THE_BUS = {'scan': commands.scan, 'info': commands.info, 'set-address': address.set_address,
              'reset-energy': commands.reset_energy, 'set-alarm': commands.set_alarm,
              'set-range': commands.set_range, 'monitor': monitor.monitor}
ON_THE_ADAPTER = {'pin': pins.pin, 'unpin': pins.unpin}


def meter_address(text):
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a number' % text)
    if not MIN_ADDRESS <= value <= MAX_ADDRESS:
        raise argparse.ArgumentTypeError('address %d is out of range: meters take %d..%d'
                                         % (value, MIN_ADDRESS, MAX_ADDRESS))
    return value


def address_range(text):
    """'N' or 'FIRST-LAST' within the meters' addresses -> a range."""
    first, dash, last = text.partition('-')
    low = meter_address(first.strip())
    high = meter_address(last.strip()) if dash else low
    if high < low:
        raise argparse.ArgumentTypeError('address range %s runs backwards: give FIRST-LAST'
                                         % text)
    return range(low, high + 1)


def parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--config', default=meter_map.DEFAULT_PATH, metavar='FILE',
                        help='meter map (default %(default)s)')
    common.add_argument('--stopbits', type=int, choices=(1, 2),
                        help='default: the map\'s setting for the port, else 2 (fits both models)')
    common.add_argument('--timeout', type=numbers.positive_seconds, metavar='S',
                        help='seconds to wait for a reply (default 0.5)')
    common.add_argument('--scan-timeout', type=numbers.positive_seconds, metavar='S',
                        help='seconds to wait per address while scanning (default 0.15)')
    common.add_argument('--yes', '-y', action='store_true',
                        help='do not ask: write to the meter, or take the port from another '
                             'program')
    sweep = argparse.ArgumentParser(add_help=False)
    sweep.add_argument('--addresses', type=address_range, default=ADDRESSES, metavar='A-B',
                       help='scan only these addresses (default %d-%d)'
                       % (MIN_ADDRESS, MAX_ADDRESS))

    p = argparse.ArgumentParser(prog='pzemctl', description=__doc__.split('\n')[0],
                                epilog=EXAMPLES, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('port', metavar='PORT', help='serial port: ttyUSB0 or a path')
    sub = p.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True

    def command(name, help, parents=(common,)):
        return sub.add_parser(name, parents=list(parents), help=help, description=help)

    command('scan', 'find every meter on the port (addresses %d..%d) and read it'
            % (MIN_ADDRESS, MAX_ADDRESS), (common, sweep))
    c = command('info', 'model, address, alarm thresholds, shunt range and readings of a meter',
                (common, sweep))
    c.add_argument('address', nargs='?', type=meter_address, metavar='ADDR',
                   help='default: the only meter on the port, via the general address 0xF8')
    c = command('set-address', 'give a meter a new Modbus address', (common, sweep))
    c.add_argument('new', type=meter_address, metavar='NEW')
    c.add_argument('--from', dest='source', type=meter_address, metavar='OLD',
                   help='its address now (default: the only meter on the port, via 0xF8)')
    c = command('reset-energy', 'set a meter\'s energy counter to 0')
    c.add_argument('address', type=meter_address, metavar='ADDR')
    c = command('set-alarm', 'set the alarm thresholds (AC: --power; DC: --high/--low)')
    c.add_argument('address', type=meter_address, metavar='ADDR')
    c.add_argument('--power', type=numbers.finite, metavar='W',
                   help='PZEM-016: power alarm in W')
    c.add_argument('--high', type=numbers.finite, metavar='V',
                   help='PZEM-017: high-voltage alarm in V')
    c.add_argument('--low', type=numbers.finite, metavar='V',
                   help='PZEM-017: low-voltage alarm in V')
    c = command('set-range', 'set a PZEM-017\'s shunt range')
    c.add_argument('address', type=meter_address, metavar='ADDR')
    c.add_argument('amps', type=int, choices=(50, 100, 200, 300), metavar='AMPS',
                   help='the shunt: 50, 100, 200 or 300 (A)')
    c = command('monitor', 'live table of the map\'s meters for this port (or --scan)',
                (common, sweep))
    c.add_argument('--scan', action='store_true', help='watch what a quick scan finds instead')
    c.add_argument('--count', type=numbers.count, metavar='N',
                   help='stop after N refreshes (plain output)')
    c.add_argument('--interval', type=numbers.seconds, default=1.0, metavar='S',
                   help='seconds between refreshes (default %(default)s)')
    command('pin', 'give this USB adapter to the pzem driver for good (udev rule)')
    command('unpin', 'remove this adapter\'s udev rule')
    c = command('check-config', 'check a meter map (PORT may be left out)')
    c.add_argument('file', nargs='?', metavar='FILE', help='default %s' % meter_map.DEFAULT_PATH)
    command('status', 'ports running dbus-pzem, their meters and log (PORT may be left out)',
            ())
    return p


def explain(error):
    """One sentence for a Modbus failure; an exception reply always says what its code means."""
    text = str(error)
    if isinstance(error, modbus.ExceptionReply) and error.meaning not in text:
        text = '%s (exception code %d: %s)' % (text, error.code, error.meaning)
    return text


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (['check-config'], ['status']):
        argv.insert(0, '-')     # no port needed
    args = parser().parse_args(argv)
    try:
        if args.command == 'check-config':
            config_check.check_config(args.file or args.config)
            return OK
        if args.command == 'status':
            status.status(None if args.port == '-' else args.port)
            return OK
        port = Port(args.port, args.config, args.stopbits, args.timeout, args.scan_timeout)
        port.check_serial()
        if args.command in ON_THE_ADAPTER:
            ON_THE_ADAPTER[args.command](port, args)
            return OK
        with PortLease(port.path, port.name, args.yes):
            ON_THE_BUS[args.command](port, args)
        return OK
    except Failure as e:
        note('pzemctl: %s' % e)
        return e.code
    except modbus.ModbusError as e:
        note('pzemctl: %s' % explain(e))
        return FAILED
    except KeyboardInterrupt:
        note('pzemctl: interrupted')
        return FAILED


