"""Cuts the bytes a master sends into request frames, as a PZEM's receiver does.

Requests have a fixed length per function code. Bytes that do not start a frame with
a good CRC are skipped (resynchronisation); an unfinished frame is dropped after
`quiet` seconds of silence. A complete frame with an unknown function code can only be
recognised by that silence: it is returned then, so the meter can answer "illegal function".
"""

from .crc import crc_ok

REQUEST_LENGTH = {0x03: 8, 0x04: 8, 0x06: 8, 0x42: 4}


class RequestFramer:
    def __init__(self, quiet=0.02):
        self.quiet = quiet
        self.buffer = bytearray()
        self.last_byte_at = 0.0
        self.dropped = 0            # bytes thrown away: noise, broken or partial frames

    def feed(self, data, now):
        """Add received bytes; return the complete good frames found, oldest first."""
        self.buffer += data
        self.last_byte_at = now
        frames = []
        buf = self.buffer
        start = 0                   # bytes before `start` are consumed
        i = 0
        while len(buf) - i >= 4:
            length = REQUEST_LENGTH.get(buf[i + 1])
            if length and i + length <= len(buf) and crc_ok(buf[i:i + length]):
                self.dropped += i - start
                frames.append(bytes(buf[i:i + length]))
                i += length
                start = i
            else:
                i += 1
        del buf[:start]
        return frames

    def deadline(self):
        """When the bytes waiting now count as abandoned, or None when nothing waits."""
        return self.last_byte_at + self.quiet if self.buffer else None

    def expire(self, now):
        """After the silence: a waiting frame with an unknown function code, or nothing."""
        if not self.buffer or now - self.last_byte_at < self.quiet:
            return []
        rest = bytes(self.buffer)
        self.buffer.clear()
        if rest[1:2] and rest[1] not in REQUEST_LENGTH and crc_ok(rest) and len(rest) >= 4:
            return [rest]
        self.dropped += len(rest)
        return []
