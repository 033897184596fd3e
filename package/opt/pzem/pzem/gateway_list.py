"""python3 -m pzem.gateway_list [MAP]: the gateways the meter map declares, one `NAME URL` line each
(`garage tcp://ew11-garage.local:8899`), for the installer, which keeps one driver service per
gateway (install/gateway-services.sh). The problems of the map's gateway sections go to stderr.
Exit status 1, with nothing on stdout, when the map cannot be read as a whole: the installer then
leaves the services as they are rather than take them all away."""
import sys

from . import meter_map


def main(argv):
    path = argv[0] if argv else meter_map.DEFAULT_PATH
    the_map = meter_map.load(path)
    for problem in the_map.problems:
        if ' [gateway' in problem or not the_map.readable:
            print(problem, file=sys.stderr)
    if not the_map.readable:
        return 1
    for gateway in the_map.gateways():
        print('%s %s' % (gateway.name, gateway.url))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
