"""CRC-16/MODBUS (poly 0xA001, init 0xFFFF), sent low byte first.

The simulator has its own CRC on purpose: it is the reference the driver is tested
against, so it must not share code with the driver.
"""


def _table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _table()


def crc16(data):
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(frame):
    """`frame` + its CRC, low byte first."""
    crc = crc16(frame)
    return bytes(frame) + bytes((crc & 0xFF, crc >> 8))


def crc_ok(frame):
    """True when the last two bytes of `frame` are its CRC (the CRC over all of it is 0)."""
    return len(frame) >= 3 and crc16(frame) == 0
