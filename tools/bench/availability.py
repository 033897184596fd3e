"""Availability under the faults of a real RS-485 bus: each fault mix, each driver, the same bus.

Three PZEM-016 at one port (9600 baud, 80 ms turnaround, device defaults: a poll every second,
a 0.5 s timeout), every value changing ten times a second (harness.Changer), so that every good
reading a driver takes changes what it publishes. Per meter, from its ItemsChanged signals as a
client receives them:
- good polls: the share of polls that gave a reading: the readings published, against those
  and the polls missed (a gap between two readings of N intervals is N - 1 missed polls);
- invalid: the time from a signal that made the meter invalid (/Connected 0, or a measurement
  emptied) to the one that made it valid again, as seconds per hour;
- longest run: the longest gap between two readings published, in polls missed in a row.
The drivers take turns, mix by mix, on the same simulated meters.
"""
import time

from dbus_helpers import pump
from harness import ac_meters, meter_map, Changer

INTERVAL = 1.0
LATE = {'delay': 0.6}       # after the 0.5 s timeout: it lands in the next exchange
MIXES = (
    ('no faults', {}),
    ('8 % late replies', {'late': 0.08}),
    ('10 % bad CRC + 10 % silence', {'bad_crc': 0.1, 'no_reply': 0.1}),
    ('20 % silence (a meter answering 80 %)', {'no_reply': 0.2}),
    ('every fault, 5 % each', {'late': 0.05, 'bad_crc': 0.05, 'no_reply': 0.05, 'stray': 0.05,
                               'noise': 0.05, 'stretched': 0.05, 'previous': 0.05,
                               'garbage_before': 0.05, 'truncated': 0.05}),
)
METERS = 3


def measure(bench, drivers, seconds, say):
    """{(mix, driver label): {address: figures}} for every mix and driver."""
    results = {}
    for mix, shares in MIXES:
        for label, driver in drivers:
            results[mix, label] = run_one(bench, driver, shares, seconds,
                                          'availability-%s' % label)
            worst = min(r['good'] for r in results[mix, label].values())
            say('%s, %s: good polls >= %.4f, invalid %.1f s/h at most' % (
                mix, label, worst, max(r['invalid_per_hour']
                                       for r in results[mix, label].values())))
    return results


def run_one(bench, driver, shares, seconds, name):
    meters = ac_meters(METERS)
    with bench.recorder() as rec, \
            bench.run(meters, ['--interval', str(INTERVAL), '--timeout', '0.5'],
                      meter_map(METERS), name=name, driver=driver) as run, Changer(meters):
        owners = run.wait_connected(range(1, METERS + 1))
        pump(3.0)
        for meter in meters:
            for kind, share in shares.items():
                meter.inject(kind, share=share, **(LATE if kind == 'late' else {}))
        start = time.monotonic()
        pump(seconds)
        end = time.monotonic()
        for meter in meters:
            meter.clear_faults()
        records = [r for r in rec.records if start <= r[0] < end]
    return {address: figures([(at, payload) for at, who, payload in records if who == owner],
                             start, end)
            for address, owner in owners.items()}


def figures(signals, start, end):
    """Good polls (share), invalid seconds per hour and the longest run of missed polls of one
    meter, from its ItemsChanged signals between `start` and `end`."""
    readings = [start]
    valid, since, invalid = True, start, 0.0
    for at, payload in signals:
        measured = [item['Value'] for path, item in payload.items()
                    if path.startswith('/Ac/') and 'Energy' not in path]
        now_valid = valid
        if '/Connected' in payload:
            now_valid = payload['/Connected']['Value'] == 1
        if measured:
            empty = any(is_invalid(v) for v in measured)
            now_valid = now_valid and not empty
            if not empty:
                readings.append(at)
        if valid and not now_valid:
            since = at
        elif not valid and now_valid:
            invalid += at - since
        valid = now_valid
    if not valid:
        invalid += end - since
    readings.append(end)
    missed = [max(0, int(round((b - a) / INTERVAL)) - 1) for a, b in zip(readings, readings[1:])]
    good = len(readings) - 2
    return dict(good=good / float(good + sum(missed)) if good else 0.0, readings=good,
                missed=sum(missed), invalid_per_hour=invalid * 3600.0 / (end - start),
                longest_run=max(missed))


def is_invalid(value):
    return hasattr(value, 'signature') and len(value) == 0


def render(results, labels, seconds):
    """The page's section: one row per mix, the drivers side by side."""
    lines = ['## Availability under faults', '',
             'Three PZEM-016 on one port (9600 baud, 80 ms turnaround), a poll every second, a '
             '0.5 s timeout, every value changing ten times a second; %.0f s per fault mix and '
             'driver, the drivers taking turns on the same simulated meters. A fault strikes its '
             'share of the requests at random (a late reply comes 0.6 s late: after the '
             'timeout, into the next exchange). Per meter, from its ItemsChanged signals: '
             '**good polls** the share of polls that gave a reading (a gap of N intervals '
             'between two readings published is N - 1 polls missed); '
             '**invalid** the time it was published invalid (`/Connected` 0 or a measurement '
             'emptied), per hour; **longest run** the most polls missed in a row. The worst '
             'of the three meters.' % seconds, '']
    head = ['fault mix']
    for label in labels:
        head += ['%s good polls' % label, '%s invalid s/h' % label, '%s longest run' % label]
    lines.append('| %s |' % ' | '.join(head))
    lines.append('|' + ' --- |' * len(head))
    for mix, _ in MIXES:
        row = [mix]
        for label in labels:
            meters = results[mix, label].values()
            row += ['%.3f' % min(m['good'] for m in meters),
                    '%.0f' % max(m['invalid_per_hour'] for m in meters),
                    '%d' % max(m['longest_run'] for m in meters)]
        lines.append('| %s |' % ' | '.join(row))
    return '\n'.join(lines) + '\n'
