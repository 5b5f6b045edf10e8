# A self-contained TensorBoard event-file reader: checks the record framing and both masked
# CRC32C checksums of every record, decodes the Event/Summary protobuf subset, prints JSON.
import json
import struct
import sys

TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    TABLE.append(c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i


def fields(buf):
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = varint(buf, i)
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield num, wire, v


data = open(json.load(sys.stdin)["path"], "rb").read()
events, pos = [], 0
while pos < len(data):
    header = data[pos:pos + 8]
    (length,) = struct.unpack("<Q", header)
    (hcrc,) = struct.unpack("<I", data[pos + 8:pos + 12])
    assert hcrc == masked(header), f"length crc at {pos}"
    body = data[pos + 12:pos + 12 + length]
    (bcrc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
    assert bcrc == masked(body), f"data crc at {pos}"
    pos += 16 + length
    ev = {"values": []}
    for num, wire, v in fields(body):
        if num == 1 and wire == 1:
            ev["wall_time"] = struct.unpack("<d", v)[0]
        elif num == 2 and wire == 0:
            ev["step"] = v
        elif num == 3 and wire == 2:
            ev["file_version"] = v.decode()
        elif num == 5 and wire == 2:
            for snum, _, value in fields(v):
                assert snum == 1
                tag, simple = None, None
                for vnum, vwire, x in fields(value):
                    if vnum == 1:
                        tag = x.decode()
                    elif vnum == 2 and vwire == 5:
                        simple = struct.unpack("<f", x)[0]
                ev["values"].append([tag, simple])
        else:
            raise ValueError(f"unexpected field {num}/{wire}")
    events.append(ev)
print(json.dumps(events))
