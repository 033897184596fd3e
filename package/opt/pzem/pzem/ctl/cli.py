"""pzemctl PORT COMMAND: commission the PZEM-016/017 meters on one RS-485 port.

Exit codes: 0 done, 1 not done (one sentence on stderr says why), 2 the command line asks for
what cannot be done as given (console.py has the rule).
"""
import argparse
import os
import sys

from .. import map_syntax, meter_map, modbus, numbers
from ..readback import pymodbus_missing
from ..rtu import ADDRESSES, MAX_ADDRESS, MIN_ADDRESS
from . import address, commands, config_check, monitor, pins, status
from .console import FAILED, OK, Failure, UsageError, can_ask, note
from .port import Port

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

  PORT is the adapter's tty (ttyUSB0) or a path (/dev/ttyUSB0, ./ttyUSB0 for the simulator),
  or a network gateway: tcp://HOST:PORT (transparent), mbtcp://HOST:PORT (Modbus TCP) or the
  name of a [gateway:NAME] in the map (pzemctl garage scan).
  pzemctl PORT COMMAND --help explains one command.
"""

# Commands that talk to the meters: they borrow the port from a running driver first.
ON_THE_BUS = {'scan': commands.scan, 'info': commands.info, 'set-address': address.set_address,
              'reset-energy': commands.reset_energy, 'set-alarm': commands.set_alarm,
              'set-range': commands.set_range, 'monitor': monitor.monitor}
ON_THE_ADAPTER = {'pin': pins.pin, 'unpin': pins.unpin}
WITHOUT_PORT = ('check-config', 'status')
# Commands that write to a meter: what they ask before writing (without --yes and without a
# terminal they are refused before any work), and whether the write needs pymodbus.
WRITES = {
    'set-address': (lambda a, port: 'give %s on %s the address %d' % (
        'the meter at address %d' % a.source if a.source else 'the only meter', port, a.new),
        True),
    'reset-energy': (lambda a, port: 'reset the energy counter of the meter at address %d on %s'
                     % (a.address, port), False),
    'set-alarm': (lambda a, port: 'set the alarm thresholds of the meter at address %d on %s'
                  % (a.address, port), True),
    'set-range': (lambda a, port: 'set the shunt range of the meter at address %d on %s to %d A'
                  % (a.address, port, a.amps), True),
}


def meter_address(text):
    """An address as the map writes it (map_syntax.address): decimal, 1..247."""
    try:
        return map_syntax.address(text)
    except map_syntax.Bad as e:
        raise argparse.ArgumentTypeError(str(e))


def address_range(text):
    """'N' or 'FIRST-LAST' within the meters' addresses -> a range."""
    first, dash, last = text.partition('-')
    low = meter_address(first.strip())
    high = meter_address(last.strip()) if dash else low
    if high < low:
        raise argparse.ArgumentTypeError('address range %s runs backwards: give FIRST-LAST'
                                         % text)
    return range(low, high + 1)


def option_groups():
    """Parent parsers, one per kind of option; each command takes only those it uses."""
    def group(*options):
        p = argparse.ArgumentParser(add_help=False)
        for names, kwargs in options:
            p.add_argument(*names, **kwargs)
        return p

    config = group((('--config',), dict(metavar='FILE', help='meter map (default %s)'
                                        % meter_map.DEFAULT_PATH)))
    serial = group((('--stopbits',), dict(type=int, choices=(1, 2), help=(
                       'default: the map\'s setting for the port, else 2 (fits both models)'))),
                   (('--timeout',), dict(type=numbers.positive_seconds, metavar='S',
                                         help='seconds to wait for a reply (default 0.5)')))
    sweep = group((('--addresses',), dict(type=address_range, default=ADDRESSES, metavar='A-B',
                                          help='scan only these addresses (default %d-%d)'
                                          % (MIN_ADDRESS, MAX_ADDRESS))),
                  (('--scan-timeout',), dict(type=numbers.positive_seconds, metavar='S', help=(
                      'seconds to wait per address while scanning (default 0.15)'))))
    take = group((('--yes', '-y'), dict(action='store_true', help=(
        'take the port from another program (not dbus-pzem) without asking'))))
    write = group((('--yes', '-y'), dict(action='store_true', help=(
        'do not ask before writing to the meter (or taking the port from another program)'))))
    return config, serial, sweep, take, write


def parser():
    config, serial, sweep, take, write = option_groups()
    p = argparse.ArgumentParser(prog='pzemctl', description=__doc__.split('\n')[0],
                                epilog=EXAMPLES, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('port', metavar='PORT', help='serial port (ttyUSB0 or a path) or network '
                   'gateway (tcp://HOST:PORT, mbtcp://HOST:PORT or its name in the map)')
    sub = p.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True

    def command(name, help, *parents):
        return sub.add_parser(name, parents=list(parents), help=help, description=help)

    def meter_at(c, help='the meter\'s Modbus address (1..247)'):
        c.add_argument('address', type=meter_address, metavar='ADDR', help=help)

    command('scan', 'find every meter on the port (addresses %d..%d) and read it'
            % (MIN_ADDRESS, MAX_ADDRESS), config, serial, sweep, take)
    c = command('info', 'model, address, alarm thresholds, shunt range and readings of a meter',
                config, serial, sweep, take)
    c.add_argument('address', nargs='?', type=meter_address, metavar='ADDR',
                   help='its Modbus address (default: the only meter on the port, asked at the '
                        'general address 0xF8)')
    c = command('set-address', 'give a meter a new Modbus address; its map section follows it',
                config, serial, sweep, write)
    c.add_argument('new', type=meter_address, metavar='NEW',
                   help='the new Modbus address (1..247), free on the bus and in the map')
    c.add_argument('--from', dest='source', type=meter_address, metavar='OLD',
                   help='its address now (default: the only meter on the port)')
    c.add_argument('--keep-map', action='store_true',
                   help='leave the map as it is (when it was written ahead for the new address)')
    c = command('reset-energy', 'set a meter\'s energy counter to 0', config, serial, write)
    meter_at(c)
    c = command('set-alarm', 'set the alarm thresholds (AC: --power; DC: --high/--low)',
                config, serial, write)
    meter_at(c)
    c.add_argument('--power', type=numbers.finite, metavar='W',
                   help='PZEM-016: power alarm in whole W')
    c.add_argument('--high', type=numbers.finite, metavar='V',
                   help='PZEM-017: high-voltage alarm in V (steps of 0.01 V)')
    c.add_argument('--low', type=numbers.finite, metavar='V',
                   help='PZEM-017: low-voltage alarm in V (steps of 0.01 V)')
    c = command('set-range', 'set a PZEM-017\'s shunt range', config, serial, write)
    meter_at(c)
    c.add_argument('amps', type=int, choices=(50, 100, 200, 300), metavar='AMPS',
                   help='the shunt: 50, 100, 200 or 300 (A)')
    c = command('monitor', 'live table of the map\'s meters for this port (or --scan)',
                config, serial, sweep, take)
    c.add_argument('--scan', action='store_true', help='watch what a quick scan finds instead')
    c.add_argument('--count', type=numbers.count, metavar='N',
                   help='stop after N refreshes (plain output)')
    c.add_argument('--interval', type=numbers.seconds, default=1.0, metavar='S',
                   help='seconds between refreshes (default %(default)s)')
    command('pin', 'give this USB adapter to the pzem driver for good (udev rule)')
    command('unpin', 'remove this adapter\'s udev rule')
    c = command('check-config', 'check a meter map (PORT may be left out)', config)
    c.add_argument('file', nargs='?', metavar='FILE', help='the map (default %s)'
                   % meter_map.DEFAULT_PATH)
    command('status', 'ports running dbus-pzem, their meters and log (PORT may be left out)')
    return p


COMMANDS = ('scan', 'info', 'set-address', 'reset-energy', 'set-alarm', 'set-range', 'monitor',
            'pin', 'unpin', 'check-config', 'status')


def order_hint(argv):
    """One sentence for a command line whose port and command are swapped or whose command is
    misspelt (argparse would take a misspelt command for the PORT), or None."""
    words = [w for w in argv[:2] if not w.startswith('-')]
    if not words:
        return None
    first, second = words[0], (words[1] if len(words) > 1 else None)
    if first in COMMANDS:
        if first in WITHOUT_PORT:
            return None
        if second is not None and second not in COMMANDS and not second.isdigit():
            return 'the port comes before the command: pzemctl %s %s' % (
                second, ' '.join([first] + argv[2:]))
        return 'give the port before the command: pzemctl PORT %s (e.g. pzemctl ttyUSB0 %s)' % (
            ' '.join(argv), first)
    if second in COMMANDS:
        return None
    for word in (second, first):
        hint = map_syntax.did_you_mean(word, COMMANDS) if word else ''
        if hint:
            return 'unknown command %s%s; pzemctl --help lists them' % (
                map_syntax.show(word), hint)
    return None


def explain(error):
    """One sentence for a Modbus failure; an exception reply always says what its code means."""
    text = str(error)
    if isinstance(error, modbus.ExceptionReply) and error.meaning not in text:
        text = '%s (exception code %d: %s)' % (text, error.code, error.meaning)
    return text


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in WITHOUT_PORT:
        argv.insert(0, '-')     # no port needed
    try:
        hint = order_hint(argv)
        if hint:
            raise UsageError(hint)
        args = parser().parse_args(argv)
        return run(args)
    except Failure as e:
        note('pzemctl: %s' % e)
        return e.code
    except modbus.ModbusError as e:
        note('pzemctl: %s' % explain(e))
        return FAILED
    except KeyboardInterrupt:
        note('pzemctl: interrupted')
        return FAILED
    except BrokenPipeError:     # `pzemctl ... | head`: the reader has gone, nobody to tell
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return FAILED


def run(args):
    if args.command == 'check-config':
        if args.file and args.config and args.file != args.config:
            raise UsageError('check-config takes one map: give FILE or --config, not both (%s, '
                             '%s)' % (args.file, args.config))
        config_check.check_config(args.file or args.config or meter_map.DEFAULT_PATH,
                                  None if args.port == '-' else args.port)
        return OK
    if args.command == 'status':
        status.status(None if args.port == '-' else args.port)
        return OK
    config = getattr(args, 'config', None) or meter_map.DEFAULT_PATH
    port = Port(args.port, config, getattr(args, 'stopbits', None),
                getattr(args, 'timeout', None), getattr(args, 'scan_timeout', None))
    if args.command in WRITES:
        question, needs_pymodbus = WRITES[args.command]
        can_ask(question(args, port.name), args.yes)
        missing = needs_pymodbus and pymodbus_missing()
        if missing:
            raise Failure(missing)
    port.check()
    if args.command in ON_THE_ADAPTER:
        if port.gateway is not None:
            raise UsageError('%s is a network gateway: there is no USB adapter to %s (its driver '
                             'runs as the service dbus-pzem.%s, made from the map)' % (
                                 port.name, args.command, port.name))
        ON_THE_ADAPTER[args.command](port, args)
        return OK
    with port.lease(args.yes):
        ON_THE_BUS[args.command](port, args)
    return OK
