"""The demo: a simulated PZEM bus, a private D-Bus with a localsettings stand-in, the real driver,
and a live view of what Venus sees. Everything it starts is stopped (by PID) when it ends.

Usage: demo.py [--seconds N]   (default: until Ctrl-C)
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests'))

from dbus_helpers import bus_env, private_bus, stop_process  # noqa: E402

DEMO_MAP = """\
# The demo's meter map: the same syntax as /data/conf/pzem.conf on a GX.
[1]
role = grid
name = MultiPlus AC in
[2]
role = acload
name = AC out loads
[3]
role = dcsource
monitor_mode = wind
name = Wind charger
[4]
group = house
phase = L1
role = acload
name = House 3-phase
[5]
group = house
phase = L2
[6]
group = house
phase = L3
"""


def wait_for(path, seconds):
    end = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise SystemExit('demo: %s did not appear' % path)
        time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=0, help='stop after N seconds')
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix='pzem-demo-')
    link = os.path.join(tmp, 'ttyPZEM0')
    map_path = os.path.join(tmp, 'pzem.conf')
    log_path = os.path.join(tmp, 'dbus-pzem.log')
    with open(map_path, 'w') as f:
        f.write(DEMO_MAP)
    python = sys.executable
    started = []
    with private_bus() as address:
        env = bus_env(address)
        env['PYTHONPATH'] = ROOT
        try:
            started.append(subprocess.Popen([python, os.path.join(ROOT, 'tests', 'fake_localsettings.py')], env=env))
            started.append(subprocess.Popen(
                [python, '-m', 'pzemsim', '--link', link, '--vary', '--meter', '1:ac',
                 '--meter', '2:ac', '--meter', '3:dc', '--meter', '4:ac', '--meter', '5:ac',
                 '--meter', '6:ac'], env=env, cwd=ROOT, stdout=subprocess.DEVNULL))
            wait_for(link, 5)
            with open(log_path, 'w') as log:
                started.append(subprocess.Popen(
                    [python, os.path.join(ROOT, 'package', 'opt', 'pzem', 'dbus-pzem'),
                     '--config', map_path, link], env=env, stdout=log, stderr=log))
            print('demo: driver log in %s, map in %s' % (log_path, map_path))
            time.sleep(1.5)
            view = [python, os.path.join(ROOT, 'tools', 'venus_view.py')]
            if args.seconds:
                view += ['--seconds', str(args.seconds)]
            try:
                subprocess.call(view, env=env)
            except KeyboardInterrupt:
                pass
        finally:
            for proc in reversed(started):
                stop_process(proc)
        with open(log_path) as log:
            print('demo: the driver said:\n' + log.read())
    return 0


if __name__ == '__main__':
    sys.exit(main())
