"""tools/bench.sh [--quick] [--per-read] [--baseline DIR] [--runs N] [--soak-minutes N]
                [--output FILE]

Benchmarks the real driver (`dbus-pzem` as a subprocess on a private dbus-daemon) against the
simulator in wire-time mode, and writes the numbers to docs/benchmarks.md. Numbers are measured
and reported, never asserted: the machine may be shared and noisy. With --baseline, the same
per-read cases also run on another tree's driver (a worktree at an older commit) for a "before"
column; --per-read measures only those, the floor, the search's cost, the instructions per read
(valgrind's callgrind, when installed) and the profile (about 40 minutes with 3 runs).
"""
import argparse
import contextlib
import os
import random
import shlex
import signal
import statistics
import sys
import time

from harness import (DRIVER, HERE, ROOT, TURNAROUND, Bench, Changer, ac_meters, connected,
                     connected_with_values, meter_map)
from capture import Capture
import availability
import discovery
import instructions
import per_read
from dbus_helpers import pump       # tests/dbus_helpers.py: harness put tests/ on sys.path
import report

PROFILER = os.path.join(HERE, 'profiled_driver.py')
AC_REQUEST, AC_REPLY = 8, 25        # bytes of a PZEM-016 read: 10 input registers
CHAR_BITS = 11                      # start + 8 data + 2 stop bits (the driver's default 8N2)
BAUD = 9600
WIRE = (AC_REQUEST + AC_REPLY) * CHAR_BITS / BAUD
LIMIT = 1.0 / (WIRE + TURNAROUND)   # reads/s the wire allows, back to back
T35 = 3.5 * CHAR_BITS / BAUD        # Modbus inter-frame silence the master keeps

PLANS = {   # seconds unless said otherwise
    'full': dict(efficiency=20, cpu=60, soak_minutes=30.0, soak_sample=60, starts=5, exits=3,
                 returns=5, profile=30, per_read=20, finds=5, jitter=60, search=60,
                 availability=180),
    'quick': dict(efficiency=8, cpu=20, soak_minutes=1.5, soak_sample=10, starts=2, exits=1,
                  returns=3, profile=15, per_read=8, finds=2, jitter=20, search=20,
                  availability=30),
}


def parse_args(argv):
    p = argparse.ArgumentParser(prog='tools/bench.sh', description='Benchmark the real driver '
                                'against the simulator; write docs/benchmarks.md.')
    p.add_argument('--quick', action='store_true',
                   help='short windows and a 1.5-minute soak: a few minutes in all')
    p.add_argument('--soak-minutes', type=float, help='soak duration (default 30, quick 1.5)')
    p.add_argument('--per-read', action='store_true',
                   help='only CPU per read (1, 8, 16 meters, steady and changing), peak memory '
                   'and the profile')
    p.add_argument('--baseline', metavar='DIR',
                   help='a tree (e.g. a git worktree at an older commit) whose driver gives the '
                   '"before" column of the per-read figures')
    p.add_argument('--availability', action='store_true',
                   help='only availability under faults (each fault mix, each driver), written '
                   'into the page in place of that section')
    p.add_argument('--availability-seconds', type=float,
                   help='seconds per fault mix and driver (default 180, quick 30)')
    p.add_argument('--also', action='append', default=[], metavar='LABEL=DIR',
                   help='another tree whose driver joins the availability runs (repeatable)')
    p.add_argument('--runs', type=int, default=3,
                   help='runs per per-read figure, each one\'s mean (default %(default)s)')
    p.add_argument('--window', type=float,
                   help='seconds measured per per-read run (default 20, quick 8)')
    p.add_argument('--output', default=os.path.join(ROOT, 'docs', 'benchmarks.md'))
    p.add_argument('--workdir', default=os.path.join(ROOT, 'build', 'bench'),
                   help='driver logs, captures and the profile (default %(default)s)')
    args = p.parse_args(argv)
    args.plan = dict(PLANS['quick' if args.quick else 'full'])
    if args.soak_minutes is not None:
        args.plan['soak_minutes'] = args.soak_minutes
    if args.window is not None:
        args.plan['per_read'] = args.window
    args.drivers = [('after', DRIVER)]
    if args.baseline:
        before = os.path.join(os.path.abspath(args.baseline), 'package', 'opt', 'pzem', 'dbus-pzem')
        if not os.path.isfile(before):
            p.error('--baseline %s: no package/opt/pzem/dbus-pzem in it' % args.baseline)
        args.drivers.insert(0, ('before', before))
    if args.availability_seconds is not None:
        args.plan['availability'] = args.availability_seconds
    for also in args.also:
        label, _, tree = also.partition('=')
        driver = os.path.join(os.path.abspath(tree), 'package', 'opt', 'pzem', 'dbus-pzem')
        if not label or not os.path.isfile(driver):
            p.error('--also %s: give LABEL=DIR, DIR a tree with package/opt/pzem/dbus-pzem' % also)
        args.drivers.insert(len(args.drivers) - 1, (label, driver))
    if args.runs < 1:
        p.error('--runs must be at least 1')
    return args


def say(text):
    print('bench: %s' % text, flush=True)


def total(counts):
    return sum(counts.values())


# -- the measurements ---------------------------------------------------------------------

def bus_efficiency(bench, plan):
    """Reads per second at --interval 0 for 1, 4, 8, 16 PZEM-016, from when requests reached
    the simulated meters; also CPU per read and memory at the end of each run."""
    rows = []
    for count in (1, 4, 8, 16):
        meters = ac_meters(count)
        name = 'efficiency-%d' % count
        with bench.run(meters, ['--interval', '0'], meter_map(count), name=name) as run:
            run.wait_connected(range(1, count + 1))
            time.sleep(1.0)
            cpu, polls = run.runtime(), total(run.requests())
            for meter in meters:
                meter.timing = True
            time.sleep(plan['efficiency'])
            for meter in meters:
                meter.timing = False
            cpu, polls = run.runtime() - cpu, total(run.requests()) - polls
            memory = run.memory()
        times = sorted(t for meter in meters for t in meter.times)
        rate = (len(times) - 1) / (times[-1] - times[0])
        per_meter = [len(meter.times) for meter in meters]
        rows.append(dict(meters=count, reads=len(times), rate=rate, ratio=rate / LIMIT,
                         ratio_t35=rate * (WIRE + TURNAROUND + T35), fewest=min(per_meter),
                         most=max(per_meter), cpu_ms=1000.0 * cpu / polls, **memory))
        say('%2d meters: %.2f reads/s, %.3f of the limit' % (count, rate, rate / LIMIT))
    return rows


def cpu_per_update(bench, plan):
    """8 meters at --interval 1 with every value changing at each poll, then with none
    changing: driver CPU per published update, and the signals it put on the bus."""
    rows = []
    for changing in (True, False):
        meters = ac_meters(8)
        name = 'cpu-%s' % ('changing' if changing else 'static')
        with bench.run(meters, ['--interval', '1'], meter_map(8), name=name) as run, \
                (Changer(meters) if changing else contextlib.nullcontext()):
            owners = run.wait_connected(range(1, 9))
            time.sleep(3.0)
            capture = Capture(bench.address, os.path.join(run.folder, 'signals.pcap'))
            try:
                start, cpu, runtime, polls = time.time(), run.cpu(), run.runtime(), run.requests()
                time.sleep(plan['cpu'])
                end = time.time()
                cpu = [b - a for a, b in zip(cpu, run.cpu())]
                runtime = run.runtime() - runtime
                polls = {a: n - polls[a] for a, n in run.requests().items()}
            finally:
                messages = capture.stop()
        # a poll's signal leaves about one exchange after its request reached the meter
        lag = WIRE + TURNAROUND + 0.03
        senders = {owner: address for address, owner in owners.items()}
        ours = [m for m in messages if m[2] in senders and start + lag <= m[0] < end + lag]
        per_meter = [sum(1 for m in ours if senders[m[2]] == a) / polls[a] for a in polls]
        seconds = end - start
        rows.append(dict(
            changing=changing, seconds=seconds, polls=total(polls), cpu=sum(cpu), user=cpu[0],
            system=cpu[1], cpu_ms=1000.0 * sum(cpu) / total(polls), load=100.0 * sum(cpu) / seconds,
            runtime_ms=1000.0 * runtime / total(polls),
            messages=len(ours), items_changed=sum(1 for m in ours if m[4] == 'ItemsChanged'),
            per_poll=len(ours) / total(polls), per_poll_max=max(per_meter),
            bytes_per_s=sum(m[1] for m in ours) / seconds,
            mean_size=statistics.mean(m[1] for m in ours) if ours else 0))
        say('%s: %.3f ms CPU per update, %.2f messages per meter per poll' % (
            'changing' if changing else 'static', rows[-1]['cpu_ms'], rows[-1]['per_poll']))
    return rows


def soak(bench, plan):
    """8 meters at --interval 0, values changing, 10 % of requests spoilt (no reply, bad CRC,
    junk values, at random): VmRSS sampled over the whole run."""
    meters = ac_meters(8, fault_rate=0.10)
    length = plan['soak_minutes'] * 60.0
    marks = [i * plan['soak_sample'] for i in range(int(length // plan['soak_sample']) + 1)]
    if marks[-1] < length:
        marks.append(length)
    samples = []
    with bench.run(meters, ['--interval', '0'], meter_map(8), name='soak') as run, Changer(meters):
        run.wait_connected(range(1, 9))
        start, cpu = time.monotonic(), sum(run.cpu())
        for mark in marks:
            time.sleep(max(0.0, start + mark - time.monotonic()))
            if run.proc.poll() is not None:
                raise RuntimeError('the driver exited during the soak:\n' + run.log()[-2000:])
            memory = run.memory()
            samples.append(dict(minute=mark / 60.0, rss=memory['VmRSS'], hwm=memory['VmHWM'],
                                polls=total(run.requests()),
                                faults=sum(m.stats['faults'] for m in meters),
                                cpu=sum(run.cpu()) - cpu))
            if len(samples) % 5 == 1:
                say('soak %.1f min: VmRSS %d KiB' % (mark / 60.0, memory['VmRSS']))
        log = run.log()
    kinds = {k: sum(m.stats[k] for m in meters) for k in meters[0].FAULTS}
    return dict(samples=samples, kinds=kinds, disconnects=log.count(': not answering'),
                returns=log.count(': answering again'))


def startup(bench, plan):
    """From starting the driver until a client knows that the first service, and all of them,
    have /Connected 1 (with a map that does not name the model: the driver detects it)."""
    rows = []
    for count in (1, 8):
        firsts, alls = [], []
        for i in range(plan['starts']):
            with bench.recorder() as rec, \
                    bench.run(ac_meters(count), [], meter_map(count, model=False, scan=True),
                              name='start-%d-%d' % (count, i)) as run:
                up = sorted(rec.wait_meters_up(run.started, count, 20.0).values())
                firsts.append(up[0] - run.started)
                alls.append(up[-1] - run.started)
        rows.append(dict(meters=count, first=firsts, all=alls))
        say('start-up with %d meters: first %.2f s, all %.2f s' % (count, min(firsts), min(alls)))
    return rows


def exit_without_meter(bench, plan):
    """From starting the driver on a port where nothing answers to its exit (device defaults)."""
    rows = []
    cases = (('no map (asks the likely addresses)', None),
             ('map with 3 meters', meter_map(3, model=False, scan=True)),
             ('map with 12 meters (more than the probe time allows)',
              meter_map(12, model=False, scan=True)))
    for label, text in cases:
        times, codes = [], set()
        for i in range(plan['exits']):
            with bench.run([], [], text, name='exit-%d' % len(rows)) as run:
                code = run.wait_exit(20.0)
                times.append(time.monotonic() - run.started)
                codes.add(code)
        rows.append(dict(case=label, seconds=times, codes=sorted(codes, key=str)))
        say('exit, %s: %.2f s, code %s' % (label, max(times), rows[-1]['codes']))
    return rows


def meter_return(bench, plan):
    """Meter 1 goes silent until its service shows /Connected 0; after a random pause it
    answers again: time from then to an ItemsChanged with /Connected 1 and valid values.
    Device defaults: --interval 1, --timeout 0.5."""
    rows = []
    rng = random.Random(5)
    for count in (1, 8):
        meters = ac_meters(count)
        downs, ups = [], []
        name = 'return-%d' % count
        with bench.recorder() as rec, \
                bench.run(meters, [], meter_map(count, model=False, scan=True), name=name) as run:
            sender = run.wait_connected(range(1, count + 1))[1]
            for _ in range(plan['returns']):
                silent_at = time.monotonic()
                meters[0].inject('silent')
                down = rec.wait(silent_at, connected(0), 20.0, sender, 'a disconnect')
                pump(rng.uniform(0.0, 1.0))
                back_at = time.monotonic()
                meters[0].clear_faults()
                up = rec.wait(back_at, connected_with_values, 20.0, sender, 'the return')
                downs.append(down - silent_at)
                ups.append(up - back_at)
                pump(0.5)
        rows.append(dict(meters=count, down=downs, up=ups))
        say('return with %d meters: %.2f s (max %.2f s)' % (
            count, statistics.median(ups), max(ups)))
    return rows


def profile(bench, plan):
    """cProfile (CPU-time clock) of the driver with 8 meters at --interval 0, values changing,
    over a window after start-up (SIGUSR1 starts it, SIGUSR2 stops it)."""
    path = os.path.join(bench.workdir, 'driver.prof')
    meters = ac_meters(8)
    with bench.run(meters, ['--interval', '0'], meter_map(8), wrapper=[PROFILER, path],
                   name='profile') as run, Changer(meters):
        run.wait_connected(range(1, 9))
        time.sleep(2.0)
        polls = total(run.requests())
        run.proc.send_signal(signal.SIGUSR1)
        time.sleep(plan['profile'])
        run.proc.send_signal(signal.SIGUSR2)
        polls = total(run.requests()) - polls
        code = run.stop_driver()
    say('profile: %d polls, driver exit code %s, stats in %s' % (polls, code, path))
    return dict(path=path, polls=polls, code=code, seconds=plan['profile'])


SECTIONS = (('efficiency', bus_efficiency), ('cpu', cpu_per_update), ('startup', startup),
            ('exit', exit_without_meter), ('return', meter_return),
            ('discovery', lambda bench, plan: discovery.measure(bench, plan, say)),
            ('profile', profile), ('soak', soak))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Ctrl-C or SIGTERM (also when started in the background, where SIGINT is ignored) unwind
    # the with-blocks, which stop every process started here by its PID.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit('bench: stopped by SIGTERM'))
    command = shlex.join(['tools/bench.sh'] + (sys.argv[1:] if argv is None else list(argv)))
    began = time.monotonic()
    info = report.machine(command)
    results = {}
    if args.availability:
        return availability_only(args, command, began)
    sections = [s for s in SECTIONS if s[0] == 'profile'] if args.per_read else list(SECTIONS)
    with Bench(args.workdir) as bench:
        if args.per_read or len(args.drivers) > 1:
            say('== instructions per read: %s' % ', '.join(label for label, _ in args.drivers))
            why_not = instructions.missing()
            if why_not:
                say('not counted: %s' % why_not)
            counted = None if why_not else instructions.measure(bench, args.drivers, say)
            say('== per read: %s' % ', '.join(label for label, _ in args.drivers))
            found = per_read.measure(bench, args.drivers, args.runs, args.plan['per_read'], say)
            floor = per_read.measure_floor(bench, args.runs, args.plan['per_read'], say)
            search = per_read.measure_search(bench, DRIVER, args.runs, args.plan['search'], say)
        for key, measure in sections:
            say('== %s' % key)
            results[key] = measure(bench, args.plan)
        if not args.per_read:
            say('== availability under faults: %s' % ', '.join(l for l, _ in args.drivers))
            results['availability'] = availability.render(
                availability.measure(bench, args.drivers, args.plan['availability'], say),
                [label for label, _ in args.drivers], args.plan['availability'])
    if args.per_read or len(args.drivers) > 1:
        results['per_read'] = per_read.render(found, args.drivers, args.runs,
                                              args.plan['per_read']) + per_read.render_floor(
            floor, found, [label for label, _ in args.drivers], args.runs, args.plan['per_read'])
        results['per_read'] += per_read.render_search(
            search, found, [label for label, _ in args.drivers], args.runs, args.plan['search'])
        results['per_read'] += instructions.render(
            counted, [label for label, _ in args.drivers], why_not)
        for row in per_read.summary(found, [label for label, _ in args.drivers]):
            say(' | '.join(row))
    info['duration'] = time.monotonic() - began
    if report.driver_state() != info['driver']:
        info['driver'] += ('; **the driver changed during the run** (now: %s): the sections may '
                           'have measured different code' % report.driver_state())
        say('the driver changed during the run')
    info['load_after'] = os.getloadavg()
    info['stall_after'] = report.memory_stall()
    if info['stall_after'] is not None and info['stall_before'] is not None and \
            info['stall_after'] - info['stall_before'] > 1.0:
        say('the machine was short of memory for %.0f s of the run: the CPU figures include '
            'page faults' % (info['stall_after'] - info['stall_before']))
    constants = dict(wire=WIRE, turnaround=TURNAROUND, limit=LIMIT, t35=T35, plan=args.plan)
    if args.per_read:
        after = found[('after', 8, True)]
        page = report.render_per_read(info, results['per_read'], results['profile'],
                                      'against %.0f µs per read without it (8 meters at 1 s, '
                                      'values changing, above)' % statistics.mean(
                                          r['us'] for r in after))
    else:
        page = report.render(info, constants, results)
        page = report.replace_section(page, results['availability'])
    with open(args.output, 'w') as f:
        f.write(page)
    say('wrote %s in %.1f minutes' % (os.path.relpath(args.output, ROOT), info['duration'] / 60))
    return 0


def availability_only(args, command, began):
    """The availability section alone, put into the page in place of the one there (or added
    at its end), with the command and date of this run."""
    with Bench(args.workdir) as bench:
        say('== availability under faults: %s' % ', '.join(l for l, _ in args.drivers))
        found = availability.measure(bench, args.drivers, args.plan['availability'], say)
    section = availability.render(found, [label for label, _ in args.drivers],
                                  args.plan['availability'])
    section += '\nMeasured by `%s` on %s (%.0f minutes); the drivers: %s.\n' % (
        command, time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        (time.monotonic() - began) / 60.0, ', '.join(
            '%s = %s' % (label, report.driver_state(os.path.dirname(os.path.dirname(
                os.path.dirname(os.path.dirname(driver)))))) for label, driver in args.drivers))
    page = open(args.output).read() if os.path.exists(args.output) else ''
    with open(args.output, 'w') as f:
        f.write(report.replace_section(page, section))
    say('wrote the availability section into %s' % os.path.relpath(args.output, ROOT))
    return 0


if __name__ == '__main__':
    sys.exit(main())
