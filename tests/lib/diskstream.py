#!/usr/bin/env python3
# Disk writes for tests without a KVM guest: adds DISK records
# (zd-stream(5)) to a JSON stream (zd-track synth:... --json) and knows the
# disk they leave.
#
#   diskstream.py add [--size BYTES] [--writes N] [--block B] [--zstd 1]
#                     [--bad EPOCH:KIND]
#       stdin -> stdout: before each epoch's COMMIT, N DISK records of that
#       epoch (1..4 blocks of B bytes, default 4096, overlapping; with
#       --zstd 1 packed by zstd(1) when that is smaller). --bad puts one bad record in
#       EPOCH instead: KIND past (offset + len past the disk), overflow
#       (offset + len past 2^64), size (another disk size), frame (zstd
#       data that is not a frame).
#   diskstream.py expect EPOCH FILE [--size BYTES] [--writes N]
#       FILE: the disk after EPOCH's writes, on a disk that started zeroed.
import base64
import subprocess
import sys

BLOCK = 4096


def writes(epoch, size, n, block=BLOCK):
    nb = size // block
    for j in range(n):
        blocks = 1 + (epoch + j) % 4
        off = ((epoch * 131 + j * 17) % (nb - 4)) * block
        # byte i is (epoch * 7 + j + i // 512) mod 256
        data = b''.join(bytes([(epoch * 7 + j + k) & 0xFF]) * 512 for k in range(blocks * block // 512))
        yield off, data


def packed(data):
    # one frame with content size and checksum (zstd(1) writes both for
    # an input of known size)
    z = subprocess.run(['zstd', '-q', '-c', '--content-size', '--stream-size=%d' % len(data), '-'], input=data,
                       stdout=subprocess.PIPE, check=True).stdout
    return z if len(z) < len(data) else None


def rec(epoch, size, off, length, data, enc='raw'):
    # integers above 2^63-1 are strings (zd-stream(5) JSON ENCODING)
    num = ('"%d"' if off >= 1 << 63 else '%d') % off
    return ('{"type":"disk","epoch":%d,"disk_size":%d,"offset":%s,"len":%d,"enc":"%s","flags":0,"data":"%s"}\n'
            % (epoch, size, num, length, enc, base64.b64encode(data).decode()))


def opts(argv):
    o = {'size': 4 << 20, 'writes': 8, 'bad': None, 'block': BLOCK, 'zstd': 0}
    i = 0
    while i < len(argv):
        k = argv[i].lstrip('-')
        o[k] = argv[i + 1] if k == 'bad' else int(argv[i + 1])
        i += 2
    return o


def add(o):
    bad_epoch, bad_kind = (int(o['bad'].split(':')[0]), o['bad'].split(':')[1]) if o['bad'] else (0, None)
    size = o['size']
    out = sys.stdout
    for line in sys.stdin:
        if line.startswith('{"type":"commit"'):
            e = int(line.split('"epoch":')[1].split(',')[0])
            for off, data in writes(e, size, o['writes'], o['block']):
                z = packed(data) if o['zstd'] else None
                if z:
                    out.write(rec(e, size, off, len(data), z, 'zstd'))
                else:
                    out.write(rec(e, size, off, len(data), data))
            if e == bad_epoch:
                d = b'\1' * BLOCK
                if bad_kind == 'past':
                    out.write(rec(e, size, size - BLOCK // 2, BLOCK, d))
                elif bad_kind == 'overflow':
                    out.write(rec(e, size, (1 << 64) - 100, BLOCK, d))
                elif bad_kind == 'size':
                    out.write(rec(e, size * 2, 0, BLOCK, d))
                elif bad_kind == 'frame':
                    out.write(rec(e, size, 0, BLOCK, b'\x28\xb5\x2f\xfd' + b'junk' * 8, 'zstd'))
        out.write(line)
        out.flush()


def expect(epoch, path, o):
    disk = bytearray(o['size'])
    for e in range(1, epoch + 1):
        for off, data in writes(e, o['size'], o['writes'], o['block']):
            disk[off:off + len(data)] = data
    open(path, 'wb').write(disk)


if __name__ == '__main__':
    if sys.argv[1] == 'add':
        add(opts(sys.argv[2:]))
    else:
        expect(int(sys.argv[2]), sys.argv[3], opts(sys.argv[4:]))
