"""check-config: every problem of a meter map, one per line with its file and line number."""
from .. import meter_map
from .console import Failure, say


def check_config(path):
    problems = meter_map.check(path)
    for problem in problems:
        say(problem)
    if problems:
        raise Failure('%d problem(s) in %s' % (len(problems), path))
    say('%s: no problems' % path)
