"""What the port's own service shows about one physical meter, as a plain record.

The port service (port_service.py) reads a list of MeterStatus from the driver; this module says
what a MeterStatus holds and builds one from the driver's own objects: a Publisher and its Meters,
a map section that has not answered yet, or one whose meter answers but cannot be published as
the map says. No D-Bus here, and no readings: those are the meter's own service's (a page reads
them there, through `service` and `instance`), so that a poll costs the port service nothing.
"""
import re
from collections import namedtuple

from . import models, roles

# /Meters/<address>/State
ANSWERING = 0   # published, answering
SILENT = 1      # published, not answering now (missed polls); its totals stay
WAITING = 2     # the map names it; it has not answered since the driver started
UNUSABLE = 3    # it answers, but cannot be published as the map says (reason says why)
STATES = (ANSWERING, SILENT, WAITING, UNUSABLE)

ERROR_NAMES = (('no_reply', 'NoReply'), ('bad_frame', 'BadFrame'), ('exception', 'Exception'),
               ('implausible', 'Implausible'))

_FIELDS = ('address state reason model role name group phase service instance serial in_map '
           'found sign errors dropped')


class MeterStatus(namedtuple('MeterStatus', _FIELDS, defaults=(
        '', '', '', '', '', '', '', None, '', 1, 0, '', None, 0))):
    """One physical meter (one address) on the port.

    address        1..247
    state          ANSWERING, SILENT, WAITING or UNUSABLE
    reason         why not answering or not published ('no reply', ...), '' when answering
    model          'PZEM-016' / 'PZEM-017', '' while unknown
    role, name     as published (the map's); group and phase for a member of a phase group
    service        the D-Bus name of the meter's service, '' when not published
    instance       that service's /DeviceInstance (None when not published): with the service
                   type it names the meter on MQTT (N/<portal>/<role>/<instance>/...)
    serial         that service's /Serial (pzem_<tty>_<address>): the device page matches on it
    in_map, found  1 when a map section names it; 1 when the driver's search found it
    sign           'vebus' or '': without a sign export is not measured
    errors         {kind: count} (kinds as in meter.ERROR_KINDS) or None, dropped: energy not booked
    """
    __slots__ = ()


def port_ident(port):
    """The port's part of the service name and its MQTT /Identifier: only [A-Za-z0-9_], and not
    starting with a digit (a D-Bus name element must not)."""
    ident = re.sub('[^A-Za-z0-9_]', '_', port)
    return '_' + ident if ident[:1].isdigit() else ident


def from_publisher(publisher, found=()):
    """[MeterStatus] for each phase of a published meter; `found`: the addresses the driver's
    search found."""
    spec = publisher.spec
    svc = publisher.service
    statuses = []
    for phase, meter in publisher.phases:
        energy = meter.energy
        statuses.append(MeterStatus(
            address=meter.address,
            state=ANSWERING if meter.connected else SILENT,
            reason='' if meter.connected else (meter.last_error or 'no reply yet'),
            model=meter.model.name, role=publisher.role, name=spec.name or '',
            group=spec.group or '', phase=phase if len(publisher.phases) > 1 else '',
            service=publisher.servicename if svc is not None else '',
            instance=svc['/DeviceInstance'] if svc is not None else None,
            serial=publisher.ident, in_map=1 if spec.sections else 0,
            found=1 if meter.address in found else 0, sign=spec.sign or '',
            errors=dict(meter.errors), dropped=energy.dropped if energy is not None else 0))
    return statuses


def waiting(spec):
    """[MeterStatus] for a map entry none of whose meters has answered yet."""
    return [MeterStatus(address=address, state=WAITING, reason='has not answered yet',
                        role=spec.role or '', name=spec.name or '', group=spec.group or '',
                        phase=phase if len(spec.phases) > 1 else '', sign=spec.sign or '')
            for phase, address in spec.phases]


def refused(spec):
    """[MeterStatus] for a map entry whose meter answers but is of the other family than its
    role (a PZEM-017 given an AC role): not published until the map gives it a role that fits."""
    family = 'ac' if roles.family_of(spec.role) == 'dc' else 'dc'
    model = models.MODELS[family].name
    return [MeterStatus(address=address, state=UNUSABLE, model=model, role=spec.role or '',
                        reason='a %s (%s) cannot take the role %s: give it a %s role in the map'
                        % (model, family.upper(), spec.role, family.upper()),
                        name=spec.name or '', group=spec.group or '',
                        phase=phase if len(spec.phases) > 1 else '', sign=spec.sign or '')
            for phase, address in spec.phases]
