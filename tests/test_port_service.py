"""pzem.port_service on a private dbus-daemon: the port's own service, read and written by an
independent client as the GUI page, MQTT or Node-RED would. The driver's side is a stand-in
source whose meters are real Meter objects fed with a simulated meter's registers."""
import threading

import dbus
import pytest

from dbus_helpers import SignalRecorder, connect, pump, pump_until
from pzem import models, port_status
from pzem.energy import PhaseEnergy
from pzem.meter import Meter
from pzem.meter_map import MeterSpec
from pzem import port_service
from pzem.port_service import DONE, FAILED, IDLE, RUNNING, PortService, PortSource
from pzem.port_status import ANSWERING, SILENT, UNUSABLE, WAITING, MeterStatus
from pzemsim.meters import AcMeter, DcMeter

NAME = 'com.victronenergy.pzem.ttyUSB0'
INVALID = dbus.Array([], signature='i')


class StandInPublisher(object):
    """What port_status.from_publisher reads of a Publisher: its spec, meters and its service's
    /DeviceInstance (a dict here, the BusItemService in the driver)."""

    def __init__(self, spec, phases, family, role, service):
        self.spec, self.phases, self.family, self.role = spec, phases, family, role
        self.service = service
        self.ident = 'pzem_ttyUSB0_%d' % spec.address
        self.servicename = 'com.victronenergy.%s.%s' % (role, self.ident)


def real_meter(address, sim, model):
    meter = Meter('ttyUSB0', address, model, energy=PhaseEnergy(model.max_kw))
    meter.take(sim.input_registers())       # decoded and checked as a poll does
    return meter


def grid_publisher():
    meter = real_meter(1, AcMeter(1, voltage=230.0, current=1.5, power=300.0, energy_wh=1234,
                                  power_factor=0.87), models.AC)
    meter.errors['no_reply'] = 2
    meter.errors['bad_frame'] = 1
    spec = MeterSpec.single(1, role='grid', name='Grid', sections=('ttyUSB0:1',))
    return StandInPublisher(spec, [('L1', meter)], 'ac', 'grid', {'/DeviceInstance': 40})


def wind_publisher():
    meter = real_meter(3, DcMeter(3, voltage=13.2, current=5.0, power=66.0, energy_wh=500),
                       models.DC)
    meter.errors['implausible'] = 4
    spec = MeterSpec.single(3, role='dcsource', sections=('ttyUSB0:3',))
    return StandInPublisher(spec, [('L1', meter)], 'dc', 'dcsource', {'/DeviceInstance': 42})


class StandInSource(PortSource):
    """The driver's side: meters from real Meter objects, requests recorded, answered by hand."""

    def __init__(self):
        self.statuses = (port_status.from_publisher(grid_publisher())
                         + port_status.from_publisher(wind_publisher(), found={3})
                         + port_status.waiting(MeterSpec.single(2, role='acload', name='Pump')))
        self.requests = []
        self.refusal = None
        self.scan = (False, None)
        self.pin_state = False

    def meters(self):
        return self.statuses

    def searching(self):
        return self.scan

    def pinned(self):
        return self.pin_state

    def _request(self, *what):
        self.requests.append(what)
        return self.refusal

    def set_address(self, address, new, done):
        return self._request('set_address', address, new, done)

    def reset_energy(self, address, done):
        return self._request('reset_energy', address, done)

    def search(self, start, done):
        return self._request('search', start, done)

    def pin(self, on, done):
        return self._request('pin', on, done)


@pytest.fixture
def source():
    return StandInSource()


@pytest.fixture
def port(address, source):
    bus = connect(address)
    service = PortService('ttyUSB0', source, '1.2.0', bus=bus)
    yield service
    service.close()
    bus.close()


def action(client):
    return {key: client.get_value(NAME, '/Action/' + key)
            for key in ('Sequence', 'Name', 'Address', 'State', 'Message')}


# --- what it publishes ---------------------------------------------------------------------


def test_port_ident_is_a_valid_name_element():
    assert port_status.port_ident('ttyUSB0') == 'ttyUSB0'
    assert port_status.port_ident('usb-FTDI_FT232R-if00') == 'usb_FTDI_FT232R_if00'
    assert port_status.port_ident('10.0.0.5:502') == '_10_0_0_5_502'    # no leading digit


def test_identity_and_meters_as_the_page_reads_them(port, client):
    items = client.get_items(NAME)
    v = {path: item['Value'] for path, item in items.items()}
    assert v['/Mgmt/ProcessName'] == 'dbus-pzem' and v['/Mgmt/ProcessVersion'] == '1.2.0'
    assert v['/Mgmt/Connection'] == 'Modbus RTU ttyUSB0'
    assert v['/Identifier'] == 'ttyUSB0' and v['/Port'] == 'ttyUSB0'
    # not a device: gui-v2 lists a service as one only with a /DeviceInstance and a name
    assert '/DeviceInstance' not in v and '/ProductName' not in v and '/CustomName' not in v
    grid = {k[len('/Meters/1/'):]: val for k, val in v.items() if k.startswith('/Meters/1/')}
    assert grid['State'] == ANSWERING and isinstance(grid['State'], dbus.Int32)
    assert (grid['Model'], grid['Role'], grid['Name'], grid['Sign']) == \
        ('PZEM-016', 'grid', 'Grid', '')
    assert grid['Service'] == 'com.victronenergy.grid.pzem_ttyUSB0_1'
    assert grid['Serial'] == 'pzem_ttyUSB0_1' and grid['InMap'] == 1 and grid['Found'] == 0
    assert grid['DeviceInstance'] == 40 and isinstance(grid['DeviceInstance'], dbus.Int32)
    assert (grid['Errors/NoReply'], grid['Errors/BadFrame']) == (2, 1)
    assert grid['SetAddress'] == 1 and grid['ResetEnergy'] == 0
    # no readings: they are the meter's own service's, so a poll costs this service nothing
    assert not [key for key in grid if key in ('Voltage', 'Current', 'Power', 'Energy')]
    wind = client.get_value(NAME, '/Meters/3')
    assert wind['Model'] == 'PZEM-017' and wind['Role'] == 'dcsource' and wind['Found'] == 1
    assert wind['Errors/Implausible'] == 4 and wind['DeviceInstance'] == 42
    pump_meter = client.get_value(NAME, '/Meters/2')
    assert pump_meter['State'] == WAITING and pump_meter['Model'] == ''
    assert pump_meter['Reason'] == 'has not answered yet' and pump_meter['Name'] == 'Pump'
    assert pump_meter['DeviceInstance'] == INVALID and pump_meter['Service'] == ''
    # the port's tallies are the meters' sums
    assert (v['/Errors/NoReply'], v['/Errors/BadFrame'], v['/Errors/Implausible']) == (2, 1, 4)
    assert (v['/Counts/Listed'], v['/Counts/Answering']) == (3, 2)
    assert v['/Scan'] == 0 and v['/ScanProgress'] == INVALID and v['/Pinned'] == 0
    assert v['/Action/State'] == IDLE and v['/Action/Sequence'] == 0


def test_refresh_sends_one_items_changed_with_only_what_changed(port, source, client):
    recorder = SignalRecorder(client)
    try:
        client.sync(NAME)
        recorder.clear()
        grid = source.statuses[0]
        source.statuses[0] = grid._replace(name='Mains', errors=dict(grid.errors, no_reply=3))
        port.refresh()
        port.refresh()                      # nothing new: nothing sent
        client.sync(NAME)
        signals = recorder.signals(NAME)
        assert [s[2] for s in signals] == ['ItemsChanged']
        changed = signals[0][3]
        assert sorted(changed) == ['/Errors/NoReply', '/Meters/1/Errors/NoReply',
                                   '/Meters/1/Name']
        assert changed['/Meters/1/Name'] == {'Value': 'Mains', 'Text': 'Mains'}
    finally:
        recorder.stop()


def test_a_meter_gone_goes_invalid_and_comes_back(port, source, client):
    wind = source.statuses.pop(1)
    port.refresh()
    gone = client.get_value(NAME, '/Meters/3')
    assert all(value == INVALID for value in gone.values()), gone
    assert client.get_value(NAME, '/Errors/Implausible') == 0
    assert client.get_value(NAME, '/Counts/Listed') == 2
    source.statuses.append(wind._replace(state=SILENT, reason='no reply'))
    port.refresh()
    assert client.get_value(NAME, '/Meters/3/State') == SILENT
    assert client.get_value(NAME, '/Meters/3/Reason') == 'no reply'


def test_a_new_meter_is_announced_with_all_its_paths(port, source, client):
    source.statuses.append(MeterStatus(address=7, state=UNUSABLE, model='PZEM-017',
                                       reason='a DC meter, but the map gives it role grid'))
    port.refresh()
    assert client.get_value(NAME, '/Meters/7/State') == UNUSABLE
    assert client.get_value(NAME, '/Meters/7/SetAddress') == 7
    assert '/Meters/7/Errors/NoReply' in client.get_items(NAME)


def test_a_change_is_published_at_once_error_counts_at_most_every_few_seconds(
        port, source, client, monkeypatch):
    monkeypatch.setattr(port_service, 'TALLY_SECONDS', 0.4)
    port.refresh()
    grid = source.statuses[0]
    source.statuses[0] = grid._replace(errors=dict(grid.errors, no_reply=7))
    port.changed(urgent=False)              # from any thread: here, the test's
    pump(0.15)
    assert client.get_value(NAME, '/Meters/1/Errors/NoReply') == 2    # not yet
    pump_until(lambda: client.get_value(NAME, '/Meters/1/Errors/NoReply') == 7, 3.0, 'counts')

    source.scan = (True, 42.0)
    source.statuses[0] = source.statuses[0]._replace(state=SILENT, reason='no reply')
    threading.Thread(target=port.changed).start()
    pump_until(lambda: client.get_value(NAME, '/Meters/1/State') == SILENT, 1.0, 'at once')
    assert client.get_value(NAME, '/Scan') == 1
    assert client.get_text(NAME, '/ScanProgress') == '42 %'
    port.close()
    port.changed()                          # after close: nothing scheduled, nothing fails
    pump(0.05)


def test_a_meter_that_answers_as_the_other_family_says_why():
    [status] = port_status.refused(MeterSpec.single(4, role='grid', name='Mains'))
    assert (status.address, status.state, status.model, status.name) == \
        (4, UNUSABLE, 'PZEM-017', 'Mains')
    assert status.reason == ('a PZEM-017 (DC) cannot take the role grid: give it a DC role in '
                             'the map')


# --- requests: checked here, carried out by the source --------------------------------------


@pytest.mark.parametrize('path, value, says', [
    ('/Meters/1/SetAddress', 'five', "A Modbus address is a whole number from 1 to 247, not 'five'."),
    ('/Meters/1/SetAddress', 5.0, 'not 5.0'),
    ('/Meters/1/SetAddress', 0, 'not 0'),
    ('/Meters/1/SetAddress', 248, 'not 248'),
    ('/Meters/1/SetAddress', INVALID, 'not nothing (an invalid value)'),
    ('/Meters/1/SetAddress', 3, 'Address 3 is taken on ttyUSB0 by PZEM-017: pick a free one.'),
    ('/Meters/1/SetAddress', 2, 'The map has a section for a meter at address 2 on ttyUSB0 '
                                '(a meter "Pump"), which has not answered: pick another address'),
    ('/Meters/2/SetAddress', 9, 'The meter at address 2 does not answer now (has not answered'),
    ('/Meters/1/ResetEnergy', 2, 'Write 1 to reset the energy counter, not 2.'),
    ('/Meters/2/ResetEnergy', 1, 'The meter at address 2 does not answer now'),
    ('/Scan', 2, 'Write 1 to look for meters on every address, 0 to stop, not 2.'),
    ('/Pinned', 'yes', "Write 1 to pin the adapter to this driver, 0 to unpin it, not 'yes'."),
])
def test_a_bad_request_is_refused_with_a_sentence_and_changes_nothing(port, source, client, path,
                                                                       value, says):
    before = client.get_items(NAME)
    assert client.set_value(NAME, path, value) == 2
    report = action(client)
    assert report['State'] == FAILED and report['Sequence'] == 1
    assert says in report['Message']
    assert source.requests == []
    after = client.get_items(NAME)
    assert {p: i for p, i in after.items() if not p.startswith('/Action/')} == \
        {p: i for p, i in before.items() if not p.startswith('/Action/')}


def test_the_same_address_is_done_at_once(port, source, client):
    assert client.set_value(NAME, '/Meters/1/SetAddress', 1) == 0
    assert action(client)['State'] == DONE
    assert 'already answers at address 1' in action(client)['Message']
    assert source.requests == []


def test_set_address_runs_until_the_source_says_done_from_another_thread(port, source, client):
    assert client.set_value(NAME, '/Meters/1/SetAddress', 5) == 0
    report = action(client)
    assert (report['Name'], report['Address'], report['State'], report['Sequence']) == \
        ('set-address', 1, RUNNING, 1)
    assert report['Message'] == 'Giving the meter at address 1 the address 5.'
    [(kind, old, new, done)] = source.requests
    assert (kind, old, new) == ('set_address', 1, 5)

    # one request at a time: others are refused and the report stays the running one's
    assert client.set_value(NAME, '/Meters/3/ResetEnergy', 1) == 2
    assert client.set_value(NAME, '/Scan', 1) == 2
    assert action(client) == report and len(source.requests) == 1

    source.statuses[0] = source.statuses[0]._replace(address=5)       # what the driver did
    worker = threading.Thread(target=done, args=(True, 'The PZEM-016 now answers at 5.'))
    worker.start()
    worker.join()
    done(False, 'a second call is ignored')
    pump_until(lambda: client.get_value(NAME, '/Action/State') == DONE, 3.0, 'done')
    report = action(client)
    assert report['Message'] == 'The PZEM-016 now answers at 5.' and report['Sequence'] == 1
    assert client.get_value(NAME, '/Meters/5/State') == ANSWERING     # refreshed at once
    assert client.get_value(NAME, '/Meters/1/State') == INVALID


def test_a_failed_request_reports_its_sentence(port, source, client):
    assert client.set_value(NAME, '/Meters/3/ResetEnergy', 1) == 0
    [(kind, address, done)] = source.requests
    assert (kind, address) == ('reset_energy', 3)
    done(False, 'The meter did not confirm the reset: its counter reads 0.500 kWh.')
    pump_until(lambda: client.get_value(NAME, '/Action/State') == FAILED, 3.0, 'failed')
    assert action(client)['Message'].startswith('The meter did not confirm')
    assert client.set_value(NAME, '/Scan', 1) == 0       # no longer busy
    assert source.requests[-1][:2] == ('search', True)


def test_a_request_the_source_refuses_or_fails_is_not_left_running(port, source, client):
    source.refusal = 'Address 5 has a section in the map for another meter ([ttyUSB0:5]).'
    assert client.set_value(NAME, '/Meters/1/SetAddress', 5) == 2
    assert action(client)['State'] == FAILED
    assert action(client)['Message'] == source.refusal

    def broken(on, done):
        raise OSError('read-only file system')
    source.refusal = None
    source.pin = broken
    assert client.set_value(NAME, '/Pinned', 1) == 2
    report = action(client)
    assert report['State'] == FAILED and report['Name'] == 'pin' and report['Sequence'] == 2
    assert 'read-only file system' in report['Message']


def test_pin_follows_the_source_and_stopping_no_search_is_done_at_once(port, source, client):
    assert client.set_value(NAME, '/Pinned', 1) == 0
    assert source.requests[-1][:2] == ('pin', True)
    source.requests[-1][2](True, 'Pinned ttyUSB0 (ID_SERIAL_SHORT=A10K).')
    source.pin_state = True
    pump_until(lambda: client.get_value(NAME, '/Pinned') == 1, 3.0, 'pinned')
    source.pin_state = None                 # a pseudo-terminal: cannot be pinned
    port.refresh()
    assert client.get_value(NAME, '/Pinned') == INVALID
    assert client.set_value(NAME, '/Scan', 0) == 0       # none runs: nothing to stop
    assert action(client)['State'] == DONE
    assert action(client)['Message'] == 'No search runs: nothing to stop.'
    assert len(source.requests) == 1                    # the pin only


def test_a_search_runs_until_the_source_says_it_is_over_and_can_be_stopped(port, source,
                                                                          client):
    assert client.set_value(NAME, '/Scan', 1) == 0
    [(kind, start, done)] = source.requests
    assert (kind, start) == ('search', True)
    assert action(client)['State'] == RUNNING
    assert client.set_value(NAME, '/Meters/1/ResetEnergy', 1) == 2   # one request at a time
    assert client.set_value(NAME, '/Scan', 0) == 0       # but the search can be stopped
    assert source.requests[-1] == ('search', False, None)
    assert action(client)['State'] == RUNNING           # until the source says it is over
    done(True, 'The search was stopped: found no new meter.')
    pump_until(lambda: client.get_value(NAME, '/Action/State') == DONE, 3.0, 'done')
    assert action(client)['Message'] == 'The search was stopped: found no new meter.'


def test_phase_one_source_refuses_every_request_politely(address, client):
    bus = connect(address)
    service = PortService('ttyUSB0', PortSource(), '1.2.0', bus=bus)
    try:
        assert client.set_value(NAME, '/Scan', 1) == 2
        assert 'not available in this version' in action(client)['Message']
        assert client.get_value(NAME, '/Pinned') == INVALID
        assert client.get_items(NAME)['/Errors/NoReply']['Value'] == 0
    finally:
        service.close()
        bus.close()


def test_from_publisher_takes_a_silent_meter_and_waiting_a_groups_phases():
    grid = grid_publisher()
    grid.phases[0][1].connected = False
    grid.phases[0][1].last_error = 'garbled replies'
    grid.service = None                      # re-registering: nothing published now
    [status] = port_status.from_publisher(grid)
    assert (status.state, status.reason, status.service, status.instance) == \
        (SILENT, 'garbled replies', '', None)
    assert status.errors == {'no_reply': 2, 'bad_frame': 1, 'exception': 0, 'implausible': 0}
    waiting = port_status.waiting(MeterSpec((('L1', 11), ('L2', 12)), role='grid',
                                            group='mains', sign='vebus'))
    assert [(s.address, s.phase, s.group, s.sign, s.state) for s in waiting] == \
        [(11, 'L1', 'mains', 'vebus', WAITING), (12, 'L2', 'mains', 'vebus', WAITING)]
