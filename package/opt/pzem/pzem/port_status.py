"""What the port's own service shows about one physical meter, as a plain record.

The port service (port_service.py) reads a list of MeterStatus from the driver; this module says
what a MeterStatus holds and builds one from the driver's own objects: a Publisher and its Meters
(readings as the meter's service publishes them), or a map section that has not answered yet.
No D-Bus here.
"""
import re
from collections import namedtuple

# /Meters/<address>/State
ANSWERING = 0   # published, answering
SILENT = 1      # published, not answering now (missed polls); its totals stay
WAITING = 2     # the map names it; it has not answered since the driver started
UNUSABLE = 3    # it answers, but cannot be published as the map says (reason says why)
STATES = (ANSWERING, SILENT, WAITING, UNUSABLE)

ERROR_NAMES = (('no_reply', 'NoReply'), ('bad_frame', 'BadFrame'), ('exception', 'Exception'),
               ('implausible', 'Implausible'))

_FIELDS = ('address state reason model role name group phase service serial in_map found sign '
           'voltage current power energy energy_reverse errors dropped')


class MeterStatus(namedtuple('MeterStatus', _FIELDS, defaults=(
        '', '', '', '', '', '', '', '', 1, 0, '', None, None, None, None, None, None, 0))):
    """One physical meter (one address) on the port.

    address        1..247
    state          ANSWERING, SILENT, WAITING or UNUSABLE
    reason         why not answering or not published ('no reply', ...), '' when answering
    model          'PZEM-016' / 'PZEM-017', '' while unknown
    role, name     as published (the map's); group and phase for a member of a phase group
    service        the D-Bus name of the meter's service, '' when not published
    serial         that service's /Serial (pzem_<tty>_<address>): the device page matches on it
    in_map, found  1 when a map section names it; 1 when the driver's search found it
    sign           'vebus' or '': without a sign export is not measured
    voltage, current, power, energy, energy_reverse: the last reading as published (None: none)
    errors         {kind: count} (kinds as in meter.ERROR_KINDS) or None, dropped: energy not booked
    """
    __slots__ = ()


def port_ident(port):
    """The port's part of the service name and its MQTT /Identifier: only [A-Za-z0-9_], and not
    starting with a digit (a D-Bus name element must not)."""
    ident = re.sub('[^A-Za-z0-9_]', '_', port)
    return '_' + ident if ident[:1].isdigit() else ident


def from_publisher(publisher):
    """[MeterStatus] for each phase of a published meter, its readings as its service has them."""
    spec = publisher.spec
    svc = publisher.service
    role = publisher.role
    statuses = []
    for phase, meter in publisher.phases:
        values = _published(svc, publisher.family, phase)
        energy = meter.energy
        statuses.append(MeterStatus(
            address=meter.address,
            state=ANSWERING if meter.connected else SILENT,
            reason='' if meter.connected else (meter.last_error or 'no reply yet'),
            model=meter.model.name, role=role, name=spec.name or '', group=spec.group or '',
            phase=phase if len(publisher.phases) > 1 else '',
            service=publisher.servicename if svc is not None else '',
            serial=publisher.ident, in_map=1 if spec.sections else 0,
            sign=spec.sign or '', errors=dict(meter.errors),
            dropped=energy.dropped if energy is not None else 0, **values))
    return statuses


def _published(svc, family, phase):
    if svc is None:
        return {}
    if family == 'ac':
        base = '/Ac/%s/' % phase
        return {'voltage': svc[base + 'Voltage'], 'current': svc[base + 'Current'],
                'power': svc[base + 'Power'], 'energy': svc[base + 'Energy/Forward'],
                'energy_reverse': svc[base + 'Energy/Reverse']}
    energy = '/History/EnergyOut' if '/History/EnergyOut' in svc else '/History/EnergyIn'
    return {'voltage': svc['/Dc/0/Voltage'], 'current': svc['/Dc/0/Current'],
            'power': svc['/Dc/0/Power'], 'energy': svc[energy]}


def waiting(spec):
    """[MeterStatus] for a map entry none of whose meters has answered yet."""
    return [MeterStatus(address=address, state=WAITING, reason='has not answered yet',
                        role=spec.role or '', name=spec.name or '', group=spec.group or '',
                        phase=phase if len(spec.phases) > 1 else '', sign=spec.sign or '')
            for phase, address in spec.phases]
