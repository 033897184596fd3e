"""The driver's bus through a network gateway: a modbus.Bus that outlives the network's failures.

A serial port that goes away ends the driver (serial-starter starts it again when the adapter is
back). A gateway's driver is a service of its own that daemontools would restart every second, and
a network fails and comes back all the time, so here nothing ends the bus:

- open() connects once, at once; when that fails, the connector thread tries again after
  BACKOFF_SECONDS (2 s, 4 s, ... at most a minute between tries), without holding anything up:
  neither the poll thread nor the GLib main loop waits for a connect or a name lookup.
- While it is not connected, every request fails at once with GatewayAway (a NoReply): the
  meters miss their polls and go invalid by their own rule (meter.py), and the poller neither
  asks a second time nor probes (it looks at `connected`).
- A connection the connector made is taken up by the thread that makes the requests
  (adopt(): the poll thread, at the start of a tick), so that only one thread ever touches the
  link while it carries requests. The first poll after it answers as before.
- A connection that fails (closed, reset, bytes that are not Modbus TCP) is closed and made
  again at once, then with the backoff while the new ones carry nothing back.
- Nothing at all coming back for SILENT_SECONDS (and SILENT_ASKS requests): a Modbus TCP gateway
  answers every request (with exception 11 when the meter does not), so it hangs: its connection
  is made again. Behind a transparent gateway silence may just be meters without power: the
  connection stays, and requests wait only `quick_timeout` until something comes again, so that
  every meter misses its polls quickly enough to be invalid within 10 s.

The log says once per outage what is wrong, in the link's own sentence, and once that the
gateway is connected again; the outage ends with the first bytes that come back.
"""
import logging
import threading
import time

from . import modbus

BACKOFF_SECONDS = (2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
SILENT_SECONDS = 5.0    # nothing came back for this long ...
SILENT_ASKS = 3         # ... over at least this many requests: the gateway is silent
JOIN_SECONDS = 1.0      # close() waits this long for a connect in progress

log = logging.getLogger('pzem')


class GatewayAway(modbus.NoReply):
    """The gateway is not connected: the request did not go out."""


class GatewayBus(modbus.Bus):
    """`link`: a net_link link (TcpLink or ModbusTcpLink), not open. `quick_timeout`: how long a
    request waits while nothing comes through a transparent gateway. `backoff`: the seconds
    between connection attempts (after a connection that carried replies, the first attempt
    is made at once). `silent_seconds`: how long nothing may come back before the gateway
    counts as silent."""

    def __init__(self, link, timeout=modbus.TIMEOUT, local_echo=False, quick_timeout=0.15,
                 backoff=BACKOFF_SECONDS, silent_seconds=SILENT_SECONDS, logger=log):
        modbus.Bus.__init__(self, link=link, timeout=timeout, local_echo=local_echo)
        self.kind = link.kind
        self.quick_timeout = quick_timeout
        self.silent_seconds = silent_seconds
        self.log = logger
        self.silent = False         # nothing comes through a transparent gateway
        self._delays = (0.0,) + tuple(backoff)
        self._lock = threading.Condition()
        # shared with the connector thread (under _lock):
        self._step = 1              # index into _delays of the next wait (0: at once)
        self._due = None            # when the connector tries next (time.monotonic()), or None
        self._made = False          # it made a connection that is not taken up yet
        self._closing = False
        self._away_since = None     # when the outage began (None: none, or not told yet)
        self._said = None           # what the log said is wrong in this outage
        self._said_back = False     # ... and whether it said the gateway is connected again
        # the requesting thread's own:
        self._heard = False         # bytes came back over this connection
        self._unheard = 0           # requests in a row that brought nothing back
        self._thread = None

    @property
    def connected(self):
        """True while a connection carries the requests (the poller asks before it probes)."""
        return self._poll is not None

    def open(self):
        """Connect now; when that fails, say why and leave it to the connector thread. Never
        raises PortGone: the bus is simply not connected until it can be."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._connector, name='connect', daemon=True)
            self._thread.start()
        if self._poll is not None:
            return
        try:
            self.link.open()
        except modbus.PortGone as error:
            with self._lock:
                self._connect_failed(str(error))
            return
        with self._lock:
            self._made = True
        self.adopt()

    def close(self):
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(JOIN_SECONDS)     # a connect in progress closes its own socket
            self._thread = None
        modbus.Bus.close(self)

    def adopt(self):
        """Take up the connection the connector made, if there is one: True when one was taken
        up now. Called by the thread that makes the requests."""
        with self._lock:
            if self._poll is not None or not self._made:
                return False
            self._made = False
            away, said_back = self._away_since, self._said_back
            self._said_back = True
        modbus.Bus.open(self)       # the link is open already: this only watches it
        self._heard, self._unheard, self.silent = False, 0, False
        if away is None:
            self.log.info('connected to %s', self.link.where)
        elif not said_back:
            self.log.info('connected to %s again, after %.0f s', self.link.where,
                          time.monotonic() - away)
        return True

    # -- requests ----------------------------------------------------------------------------

    def _exchange(self, request, count, call=None, *args, timeout=None):
        if self._poll is None and not self.adopt():
            raise GatewayAway('No reply from meter %d on %s: the gateway is not connected.'
                              % (request[0], self.port_name))
        if self.silent:
            timeout = min(timeout or self.timeout, self.quick_timeout)
        heard = self.link.last_heard
        try:
            return modbus.Bus._exchange(self, request, count, call, *args, timeout=timeout)
        except modbus.PortGone as error:      # the connection failed: closed already
            self._lost(str(error))
            raise GatewayAway('No reply from meter %d on %s: the connection to the gateway '
                              'failed.' % (request[0], self.port_name))
        finally:
            if self._poll is not None:
                self._after(heard)

    def _after(self, heard_before):
        """After an exchange on an open connection: did anything come back?"""
        if self.link.last_heard != heard_before:
            self._unheard = 0
            if not self._heard:
                self._heard = True
                with self._lock:        # the connection works: the outage is over
                    self._step = 0
                    self._away_since, self._said, self._said_back = None, None, False
            if self.silent:
                self.silent = False
                self.log.info('replies come through %s again', self.link.where)
            return
        self._unheard += 1
        quiet = time.monotonic() - self.link.last_heard
        if self.silent or self._unheard < SILENT_ASKS or quiet < self.silent_seconds:
            return
        if self.kind == 'mbtcp':
            self._gone(None)            # closes the link
            self._lost('%s stopped answering: nothing came back to %d requests in %.1f s on '
                       'an open connection.' % (_capital(self.link.where), self._unheard, quiet))
            return
        self.silent = True
        self.log.warning(
            'nothing has come through %s for %.1f s: neither the gateway nor a meter behind it '
            'answers. Check the meters\' power and the RS-485 wiring behind the gateway, and its '
            'serial settings (9600 baud; 8N1 for PZEM-016 only, else 8N2). Asking with a %g s '
            'timeout until something comes.', self.link.where, quiet, self.quick_timeout)

    def _lost(self, sentence):
        """The connection failed (closed by now): say why, and connect again."""
        with self._lock:
            self._connect_failed(sentence)

    # -- connecting (the connector thread) -----------------------------------------------

    def _connect_failed(self, sentence):
        """A connection failed or could not be made (lock held): tell, once per outage and
        problem, and have the connector try again after the next delay."""
        now = time.monotonic()
        if self._away_since is None:
            self._away_since, self._said_back = now, False
        if sentence != self._said:
            self._said = sentence
            self.log.error('%s Connecting again every few seconds (at least once a minute); '
                           'its meters are invalid meanwhile.', sentence)
        delay = self._delays[min(self._step, len(self._delays) - 1)]
        self._step += 1
        self._due = now + delay
        self._lock.notify_all()

    def _connector(self):
        while True:
            with self._lock:
                while not self._closing and (self._due is None or
                                             self._due > time.monotonic()):
                    self._lock.wait(None if self._due is None else
                                    self._due - time.monotonic())
                if self._closing:
                    return
                self._due = None
            try:
                self.link.open()
                error = None
            except modbus.PortGone as failed:
                error = failed
            with self._lock:
                if self._closing:
                    self.link.close()
                    return
                if error is None:
                    self._made = True
                else:
                    self._connect_failed(str(error))


def _capital(text):
    return text[:1].upper() + text[1:]
