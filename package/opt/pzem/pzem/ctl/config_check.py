"""check-config: every problem of a meter map, one per line with its file and line number, then
what the map's direction settings mean for the numbers VRM gets."""
from .. import map_syntax, meter_map
from .console import Failure, say

AT_INPUT = ('directly at the inverter/charger\'s AC input with nothing between (no loads, no PV, '
            'no other source on that stretch of cable)')


def advice(the_map):
    """One line per meter whose direction the user should know about, and per plain section
    that a port's own section replaces (the driver adds [PORT:N] for a meter it finds)."""
    specs = the_map.specs()
    for spec in specs:
        for header in spec.sections:
            if ':' in header:
                continue
            plain = map_syntax.section_ident(header)[2]
            for other in specs:
                for ported in other.sections:
                    port, _, address = ported.partition(':')
                    if address and int(address) == plain:
                        yield ('[%s] is not used on %s: [%s] (line %d) replaces it there; edit '
                               'that one, or remove it' % (header, port, ported, other.line))
    for spec in specs:
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


def check_config(path):
    problems = meter_map.check(path)
    for problem in problems:
        say(problem)
    for line in advice(meter_map.load(path)):
        say('note: ' + line)
    if problems:
        raise Failure('%d problem(s) in %s' % (len(problems), path))
    say('%s: no problems' % path)
