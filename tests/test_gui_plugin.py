"""The gui-v2 UI plugin as tools/mkplugin.sh builds it, checked without gui-v2: the JSON gui-v2
reads (name, integrations, translations), the Qt resource inside it (read here byte by byte: it
must hold the repository's QML and the English catalogue), the texts' ids, a reproducible build,
Qt's own syntax check of the QML, and that every D-Bus path the pages read is one the port's
service or the meter's own service publishes. What needs gui-v2's own types (Victron.VenusOS)
was checked by hand on the real gui-v2; Debian's Qt 6.4 qmllint knows neither those types nor,
here, QtQuick's."""
import base64
import glob
import json
import os
import re
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib

import pytest

from dbus_helpers import connect
from pzem import models
from pzem.port_service import PortService, PortSource
from pzem.port_status import ANSWERING, MeterStatus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(REPO, 'plugin', 'PzemMeters')
QML = sorted(glob.glob(os.path.join(PLUGIN, '*.qml')))
QT_BIN = '/usr/lib/qt6/bin'


def build(out, epoch='1700000000', version='9.9.9'):
    subprocess.run(['sh', os.path.join(REPO, 'tools', 'mkplugin.sh'), str(out), version, epoch],
                   check=True, stdout=subprocess.PIPE)
    with open(str(out)) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def plugin(tmp_path_factory):
    out = tmp_path_factory.mktemp('plugin') / 'PzemMeters.json'
    return out, build(out)


def rcc_entries(data):
    """{path: (bytes, modification time in ms)} of a binary Qt resource (rcc -binary, format 2
    or 3), zlib entries inflated."""
    magic, version, tree, payload, names = struct.unpack('>4sIIII', data[:20])
    assert magic == b'qres' and version in (2, 3), (magic, version)

    def name(offset):
        length, = struct.unpack('>H', data[names + offset:names + offset + 2])
        start = names + offset + 6
        return data[start:start + 2 * length].decode('utf-16-be')

    def walk(index, prefix, found):
        at = tree + index * 22      # name, flags, 8 bytes of child or data info, time
        name_offset, flags = struct.unpack('>IH', data[at:at + 6])
        here = prefix + '/' + name(name_offset) if index else ''
        if flags & 0x02:        # a directory: its children are entries first..first+count-1
            count, first = struct.unpack('>II', data[at + 6:at + 14])
            for child in range(first, first + count):
                walk(child, here, found)
            return
        assert not flags & 0x04, 'zstd: gui-v2 builds use zlib'
        offset, mtime = struct.unpack('>IQ', data[at + 10:at + 22])
        size, = struct.unpack('>I', data[payload + offset:payload + offset + 4])
        blob = data[payload + offset + 4:payload + offset + 4 + size]
        found[here] = (zlib.decompress(blob[4:]) if flags & 0x01 else blob, mtime)
    entries = {}
    walk(0, '', entries)
    return entries


def rcc_files(data):
    return {path: blob for path, (blob, _) in rcc_entries(data).items()}


def test_json_is_what_gui_v2_reads(plugin):
    path, doc = plugin
    assert sorted(doc) == ['integrations', 'maxRequiredVersion', 'minRequiredVersion', 'name',
                           'resource', 'translations', 'version']
    assert doc['name'] == os.path.splitext(path.name)[0] == 'PzemMeters'
    assert doc['version'] == '9.9.9'
    assert doc['minRequiredVersion'] == 'v1.2.14'       # the first gui-v2 with device-page entries
    page, entry = doc['integrations']
    assert page == {'type': 1, 'url': 'qrc:/PzemMeters/PzemMeters_Settings.qml'}
    assert entry == {'type': 2, 'productId': '0xFFFF', 'title': 'pzem_meters_device_title',
                     'url': 'qrc:/PzemMeters/PzemMeters_Device.qml'}
    assert doc['translations'] == ['qrc:/PzemMeters/PzemMeters_en.qm']


def test_the_resource_is_an_rcc_holding_the_qml_and_the_catalogue(plugin):
    _, doc = plugin
    files = rcc_files(base64.b64decode(doc['resource']))
    expected = ['/PzemMeters/' + os.path.basename(p) for p in QML] + \
        ['/PzemMeters/PzemMeters_en.qm']
    assert sorted(files) == sorted(expected)
    for source in QML:
        with open(source, 'rb') as f:
            assert files['/PzemMeters/' + os.path.basename(source)] == f.read(), source
    for url in [i['url'] for i in doc['integrations']] + doc['translations']:
        assert url.replace('qrc:', '') in files, url
    catalogue = files['/PzemMeters/PzemMeters_en.qm']
    assert catalogue.startswith(bytes.fromhex('3cb86418caef9c95cd211cbf60a1bddd'))    # .qm magic
    # id-based: the English text of the device-page entry's title id is in it
    assert 'PZEM bus details'.encode('utf-16-be') in catalogue


def test_two_builds_of_one_commit_are_byte_identical(plugin, tmp_path):
    path, doc = plugin
    again = tmp_path / 'PzemMeters.json'
    build(again)
    with open(str(path), 'rb') as a, open(str(again), 'rb') as b:
        assert a.read() == b.read()
    # rcc stores each file's time: the build gives them all the commit's, not the checkout's
    times = {t for _, t in rcc_entries(base64.b64decode(doc['resource'])).values()}
    assert times == {1700000000 * 1000}


def test_every_text_has_an_id_of_ours_and_an_english_text(tmp_path):
    ts = tmp_path / 'PzemMeters_en.ts'
    subprocess.run([os.path.join(QT_BIN, 'lupdate'), '-silent'] + QML + ['-ts', str(ts)],
                   check=True)
    messages = ET.parse(str(ts)).getroot().iter('message')
    found = {m.get('id'): (m.findtext('source') or '') for m in messages}
    used = set()
    for path in QML:
        with open(path) as f:
            used |= set(re.findall(r'qsTrId\("([^"]+)"\)', f.read()))
    assert used and set(found) == used
    for text_id, english in found.items():
        assert text_id.startswith('pzem_meters_'), text_id      # no clash with gui-v2's own ids
        assert english.strip(), '%s has no //%% text' % text_id


def test_the_qml_passes_qts_syntax_check():
    checks = ('alias compiler controls-sanity deferred-property-id deprecated import '
              'inheritance-cycle multiline-strings multiple-attached-objects plugin property '
              'required signal type unqualified unused-imports with').split()
    # every check that needs the types off: Victron.VenusOS is not in Debian
    options = [arg for check in checks for arg in ('--' + check, 'disable')]
    done = subprocess.run([os.path.join(QT_BIN, 'qmllint')] + options + QML,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    assert done.returncode == 0, done.stdout


def test_the_syntax_check_does_catch_a_broken_file(tmp_path):
    broken = tmp_path / 'Broken.qml'
    broken.write_text('import QtQuick\nItem { property int x: 1 + }\n')
    done = subprocess.run([os.path.join(QT_BIN, 'qmllint'), str(broken)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    assert done.returncode != 0 and 'Expected token' in done.stdout


class OneMeter(PortSource):
    def meters(self):
        return [MeterStatus(address=1, state=ANSWERING, model='PZEM-016', errors={})]


def test_every_path_the_pages_read_is_published(address, client):
    bus = connect(address)
    service = PortService('ttyUSB0', OneMeter(), '1.2.0', bus=bus)
    try:
        port_paths = set(client.get_items(service.name))
    finally:
        service.close()
        bus.close()
    meter_paths = {p[len('/Meters/1'):] for p in port_paths if p.startswith('/Meters/1/')}
    # what the device page reads of the meter's own service (see test_driver for their values)
    meter_service = {'/Mgmt/ProcessName', '/Mgmt/Connection', '/Serial', '/Pzem/Port'}
    read = set()
    for path in QML:
        with open(path) as f:
            text = f.read()
        for owner, rel in re.findall(r'(\w+)\s*\+\s*"(/?[A-Za-z0-9/]+)"', text):
            read.add((os.path.basename(path), owner, rel))
    assert read
    readings = set()
    for name, owner, rel in read:
        if owner == 'portUid':
            assert rel in port_paths or rel in ('/Meters', '/Meters/'), (name, rel)
        elif owner == 'meterUid':
            assert rel in meter_paths, (name, rel)
        elif name == 'PzemMeters_Readings.qml':
            readings.add((owner, rel))
        else:
            assert owner == 'serviceUid' and rel in meter_service, (name, owner, rel)
    # the readings, from the meter's own service: a meter's phase (L1 for a single meter), or
    # a PZEM-017's one circuit and its energy out (dcsource) or in
    ac = {f.path.format(phase='L1') for f in models.AC.fields if f.path} | \
        {'/Ac/L1/Energy/Reverse'}
    dc = {f.path.format(energy=way) for f in models.DC.fields if f.path for way in ('In', 'Out')}
    bases = {rel for owner, rel in readings if owner == 'uid' and rel.endswith('/')}
    assert bases == {'/Ac/', '/Dc/0/'}
    keys = {rel for owner, rel in readings if owner == 'base'}
    assert {'/Ac/L1/' + key for key in keys} <= ac
    assert {'/Dc/0/' + key for key in keys if not key.startswith('Energy/')} <= dc
    assert {rel for owner, rel in readings if owner == 'uid' and not rel.endswith('/')} == \
        {'/History/EnergyIn', '/History/EnergyOut'}
