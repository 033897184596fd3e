"""Instructions per meter read, counted by valgrind's callgrind: the same cases as the CPU per
read, as a count the machine's noise does not move.

CPU time per read varied several-fold from hour to hour on a shared machine; the instructions
a read executes do not. They leave out what a read costs in the kernel and in cache misses
after each sleep (the floor's CPU time is mostly that), so they do not replace the CPU figures:
they tell whether a difference in them is our code's. Also counted: the part spent in
dbus-python building and sending the ItemsChanged, C code that is the same in every driver
that publishes the same values.
"""
import contextlib
import glob
import os
import re
import shutil
import subprocess
import time

from harness import HERE, Changer, ac_meters, meter_map
from per_read import FLOOR
import report

WRAPPER = os.path.join(HERE, 'callgrind_driver.py')
CASES = ((1, False), (1, True), (8, False), (8, True))
READS = {1: 40, 8: 120}     # reads counted per case (1 s per read per meter)
# Reads of every meter before counting: Python 3.11 specializes a function's code after it ran
# 8 times, a one-time cost that would otherwise fall into the count
WARM_READS = 12
START_TIMEOUT = 180.0       # start-up under valgrind takes 10-30 s
# dbus-python's C functions that build and send a signal (inclusive of what they call)
SIGNAL_FUNCTIONS = re.compile(r':(dbus_py_Message_append|SignalMessage_tp_init|'
                              r'Connection_send_message) ')


def missing():
    """Why the section cannot run here, or None."""
    for tool in ('valgrind', 'callgrind_control', 'callgrind_annotate'):
        if shutil.which(tool) is None:
            return '%s is not installed (Debian: apt-get install valgrind)' % tool
    return None


def measure(bench, drivers, say):
    """drivers: [(label, dbus-pzem path)]; the floor is added. Returns {(label, count,
    changing): {'ir': instructions per read, 'signal': of them in dbus-python's signal, 'reads'}}
    (the floor: values steady only, as it reads no values)."""
    found = {}
    for count, changing in CASES:
        for label, path in list(drivers) + ([] if changing else [('floor', FLOOR)]):
            found[(label, count, changing)] = row = _count(bench, label, path, count, changing)
            say('instructions, %-6s %d meter%s %-8s: %7.0f per read (%d reads), %.0f in the '
                'signal' % (label, count, 's' if count > 1 else ' ',
                            'changing' if changing else 'steady', row['ir'], row['reads'],
                            row['signal']))
    return found


def _count(bench, label, path, count, changing):
    name = 'instructions-%s-%d-%s' % (label, count, 'changing' if changing else 'steady')
    out = os.path.join(bench.workdir, name + '.callgrind')
    for old in glob.glob(out + '*'):
        os.remove(old)
    meters = ac_meters(count)
    with bench.run(meters, ['--interval', '1'], meter_map(count), wrapper=[WRAPPER, out],
                   name=name, driver=path) as run, \
            (Changer(meters) if changing else contextlib.nullcontext()):
        deadline = time.monotonic() + START_TIMEOUT
        while min(run.requests().values()) < WARM_READS:
            if run.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError('%s did not poll under valgrind:\n%s' % (
                    label, run.log()[-2000:]))
            time.sleep(0.2)
        _control(run.pid, '--instr=on')
        first = sum(run.requests().values())
        while sum(run.requests().values()) - first < READS[count]:
            time.sleep(0.05)
        reads = sum(run.requests().values()) - first
        _control(run.pid, '--dump')
    dumps = sorted(glob.glob(out + '.*'))
    if not dumps:
        raise RuntimeError('callgrind wrote no counts for %s' % label)
    total, signal = _costs(dumps[0])
    return dict(ir=total / reads, signal=signal / reads, reads=reads)


def _control(pid, command):
    subprocess.run(['callgrind_control', command, str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _costs(path):
    """(all instructions, those in dbus-python's signal functions) of one callgrind dump."""
    text = subprocess.run(['callgrind_annotate', '--inclusive=yes', '--threshold=100', path],
                          check=True, capture_output=True, text=True).stdout
    total = signal = 0
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) < 2 or not re.match(r'^[\d,]+$', parts[0]):
            continue
        cost = int(parts[0].replace(',', ''))
        if 'PROGRAM TOTALS' in parts[1]:
            total = cost
        elif SIGNAL_FUNCTIONS.search(parts[1]):
            signal += cost
    if not total:
        raise RuntimeError('no PROGRAM TOTALS in callgrind_annotate\'s output for %s' % path)
    return total, signal


def render(found, labels, why_not=None):
    out = ['\n### Instructions per read (callgrind)\n\n']
    if why_not:
        out.append('Not measured: %s.\n' % why_not)
        return ''.join(out)
    out.append(
        'The same cases counted in instructions instead of CPU time: each driver ran under '
        'valgrind\'s callgrind (`tools/bench/callgrind_driver.py`), instrumentation turned on '
        'once every meter had been read %d times (the interpreter has specialized the code '
        'that runs per read by then), then off after %s reads; '
        'every instruction of the process in user space, in all its threads, divided by the '
        'reads the meters got (one run each: a count, the same run after run to within about 2 %%, '
        'where the CPU time varied several-fold). Not counted: the kernel\'s part of a read '
        '(its system calls, the wake-ups) and what cache misses after each sleep cost, which '
        'are most of the floor\'s CPU time. "Signal" is the part spent in dbus-python\'s C '
        'code building and sending the ItemsChanged, the same message in every driver that '
        'publishes the same values.\n\n' % (
            WARM_READS, ' / '.join('%d (%d meter%s)' % (n, c, 's' if c > 1 else '')
                               for c, n in sorted(READS.items()))))
    head = ['instructions per read'] + labels
    if len(labels) == 2:
        head.append('%s / %s' % (labels[1], labels[0]))
    head += ['floor', 'of which signal (%s)' % ' / '.join(labels)]
    if len(labels) == 2:
        head.append('without the signal: %s / %s' % (labels[1], labels[0]))
    rows = []
    for count, changing in CASES:
        runs = [found[(label, count, changing)] for label in labels]
        row = ['%d meter%s, values %s' % (count, 's' if count > 1 else '',
                                           'changing' if changing else 'steady')]
        row += ['{:,.0f}'.format(r['ir']) for r in runs]
        if len(runs) == 2:
            row.append('%.2f' % (runs[1]['ir'] / runs[0]['ir']))
        floor = found.get(('floor', count, False))
        row.append('{:,.0f}'.format(floor['ir']) if floor else '')
        row.append(' / '.join('{:,.0f}'.format(r['signal']) for r in runs))
        if len(runs) == 2:
            row.append('%.2f' % ((runs[1]['ir'] - runs[1]['signal']) /
                                 (runs[0]['ir'] - runs[0]['signal'])))
        rows.append(row)
    out.append(report.table(head, rows))
    return ''.join(out)
