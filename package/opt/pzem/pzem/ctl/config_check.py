"""check-config: what a meter map will do, as the driver reads it.

First every problem, one per line with its file and line number (they fail the check), then
notes: a [PORT:N] that replaces an [N] on its port (a problem when the [N] sets keys the port
section does not: they would silently not apply), a port no adapter here is called (a wrong
case applies nowhere), a '#' that ended a name early, and what the direction settings mean for
the numbers VRM gets.
"""
import glob
import os

from .. import meter_map
from .console import Failure, say
from .port_lease import DRIVER, service_dir
from .status import log_dir

AT_INPUT = ('directly at the inverter/charger\'s AC input with nothing between (no loads, no PV, '
            'no other source on that stretch of cable)')


def shadowing(the_map):
    """(problems, notes) for each [PORT:N] that replaces an [N] on its port."""
    problems, notes = [], []
    for (ported, line), (plain, plain_line), keys in the_map.shadowed():
        port = ported.partition(':')[0].strip()
        if keys:
            problems.append(
                '%s:%d: [%s] replaces [%s] (line %d) on %s as a whole: the %s of [%s] %s not '
                'apply there; add %s to [%s], or remove [%s] to use [%s]' % (
                    the_map.source, line, ported, plain, plain_line, port, ', '.join(keys),
                    plain, 'does' if len(keys) == 1 else 'do', 'it' if len(keys) == 1 else
                    'them', ported, ported, plain))
        else:
            notes.append('[%s] is not used on %s: [%s] (line %d) replaces it there; edit that '
                         'one, or remove it' % (plain, port, ported, line))
    return problems, notes


def seen_ports(port=None):
    """Ports this machine has, or has run dbus-pzem on: /dev's tty names, serial-starter's
    dbus-pzem services and their logs, and the port given on the command line."""
    seen = {name for name in os.listdir('/dev') if name.startswith('tty')} \
        if os.path.isdir('/dev') else set()
    for folder in (service_dir(), log_dir()):
        seen.update(os.path.basename(p)[len(DRIVER) + 1:]
                    for p in glob.glob(os.path.join(folder, DRIVER + '.*')))
    if port:
        seen.add(os.path.basename(port.rstrip('/')))
    return seen


def port_notes(the_map, seen):
    """A note for each port in the map that no port here is called."""
    known = {name.lower(): name for name in seen}
    for port, sections in the_map.ports().items():
        if port in seen:
            continue
        header, line = sections[0]
        like = known.get(port.lower())
        if like:
            yield ('[%s] (line %d): no port is called %s, so it applies nowhere; port names are '
                   'case-sensitive: did you mean [%s%s]?' % (
                       header, line, port, like, header[len(port):]))
        else:
            yield ('[%s] (line %d): no port %s is here now (not in /dev, and dbus-pzem has not '
                   'run on one): it applies once an adapter shows up as %s' % (
                       header, line, port, port))


def advice(the_map):
    """One line per meter whose direction the user should know about."""
    for spec in the_map.specs():
        where = '[%s]' % '], ['.join(spec.sections)
        if spec.sign == 'vebus':
            yield ('%s: sign = vebus is right only if the meter sits %s: its power is then '
                   'negative while the Multi feeds back, and that energy counts as export '
                   '(Energy/Reverse)' % (where, AT_INPUT))
        elif spec.role in ('grid', 'genset'):
            yield ('%s: role %s without sign: a PZEM cannot tell import from export, so '
                   'everything counts as import. If the meter sits %s, add "sign = vebus"; '
                   'otherwise do not let ESS regulate on it (Grid metering: Inverter/Charger)'
                   % (where, spec.role, AT_INPUT))


def check_config(path, port=None):
    """Problems and notes of the map at `path`; Failure when it has problems. `port`: the
    PORT given on the command line (a port that is seen)."""
    problems = meter_map.check(path)
    the_map = meter_map.load(path)
    shadowed, shadow_notes = shadowing(the_map)
    problems = problems + shadowed
    for problem in problems:
        say(problem)
    notes = shadow_notes + the_map.notes + list(port_notes(the_map, seen_ports(port))) + \
        list(advice(the_map))
    for line in notes:
        say('note: ' + line)
    if problems:
        raise Failure('%d problem(s) in %s' % (len(problems), path))
    say('%s: no problems' % path)
