"""What the driver puts on D-Bus: `dbus-monitor --pcap` records every BusItem signal as the
bus delivers it (header with the sender the daemon adds, body), and `read_pcap` counts them.

Sizes are whole D-Bus messages as a receiver gets them, so bytes/s is what each listener
(GUI, systemcalc, VRM logger) has to read and parse per second.
"""
import struct
import subprocess
import time

MATCH = "type='signal',interface='com.victronenergy.BusItem'"
_FIELDS = {1: 'path', 3: 'member', 7: 'sender'}


class Capture:
    """dbus-monitor on the bus at `address`, writing BusItem signals to `path` as pcap."""

    def __init__(self, address, path):
        self.path = path
        self._out = open(path, 'wb')
        self._proc = subprocess.Popen(['dbus-monitor', '--address', address, '--pcap', MATCH],
                                      stdout=self._out, stderr=subprocess.DEVNULL)
        time.sleep(0.3)         # let it become a monitor before anything is counted

    def stop(self):
        """Stop dbus-monitor (by its PID) and return the messages it recorded."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._out.close()
        return read_pcap(self.path)


def read_pcap(path):
    """[(time, size, sender, path, member)] of the D-Bus messages in a pcap file."""
    with open(path, 'rb') as f:
        data = f.read()
    if len(data) < 24:
        return []
    order = '<' if data[:4] == b'\xd4\xc3\xb2\xa1' else '>'
    messages, at = [], 24
    while at + 16 <= len(data):
        sec, usec, size, _ = struct.unpack_from(order + 'IIII', data, at)
        at += 16
        frame = data[at:at + size]
        at += size
        if len(frame) < size:
            break               # cut short when dbus-monitor stopped mid-write
        fields = _header_fields(frame)
        messages.append((sec + usec / 1e6, size, fields.get('sender'), fields.get('path'),
                         fields.get('member')))
    return messages


def _header_fields(msg):
    """path, member and sender from a marshalled D-Bus message header."""
    e = '<' if msg[0:1] == b'l' else '>'
    (length,) = struct.unpack_from(e + 'I', msg, 12)
    at, end, fields = 16, 16 + length, {}
    while at < end:
        at = (at + 7) & ~7      # each field is a struct: 8-byte aligned
        code = msg[at]
        siglen = msg[at + 1]
        sig = msg[at + 2:at + 2 + siglen].decode()
        at += 3 + siglen
        if sig in ('s', 'o'):
            at = (at + 3) & ~3
            (n,) = struct.unpack_from(e + 'I', msg, at)
            value = msg[at + 4:at + 4 + n].decode()
            at += 5 + n
        elif sig == 'g':
            n = msg[at]
            value = msg[at + 1:at + 1 + n].decode()
            at += 2 + n
        elif sig == 'u':
            at = (at + 3) & ~3
            (value,) = struct.unpack_from(e + 'I', msg, at)
            at += 4
        else:
            break               # no other types occur in a header
        if code in _FIELDS:
            fields[_FIELDS[code]] = value
    return fields
