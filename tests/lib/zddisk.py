#!/usr/bin/env python3
# The disk of zd-vm's disk workload (vm/guest/abi.h, struct zdg_disk): write
# number s puts block s mod nblocks = ZDG_DISK_MAGIC, s, then words
# i = 2..511 equal to s * 0x9E3779B97F4A7C15 + i (mod 2^64), on a disk that
# started as zeros. So the disk after write n is known from n alone.
#
#   zddisk.py check DISK COUNTER   COUNTER: 8 bytes, the guest's zdg_disk.done
#                                  as memory held it (dd from memory.img).
# Prints "newest N memory M equal yes|no" and exits 0 only when the newest
# block on DISK is write M and DISK is, byte for byte, the disk after M.
import struct
import sys

MAGIC = 0x4B534944445A
M64 = (1 << 64) - 1


def block(s):
    return struct.pack('<512Q', MAGIC, s, *[(s * 0x9E3779B97F4A7C15 + i) & M64 for i in range(2, 512)])


def main():
    disk = open(sys.argv[2], 'rb').read()
    done = struct.unpack('<Q', open(sys.argv[3], 'rb').read(8))[0]
    nb = len(disk) // 4096
    newest = 0
    for b in range(nb):
        w = struct.unpack_from('<QQ', disk, b * 4096)
        if w[0] == MAGIC:
            newest = max(newest, w[1])
    want = bytearray(len(disk))
    for b in range(nb):
        # the last write s <= done with s = b (mod nb), s >= 1
        s = done - ((done - b) % nb) if done >= b else 0
        if s >= 1:
            want[b * 4096:(b + 1) * 4096] = block(s)
    equal = bytes(want) == disk
    print('newest %d memory %d equal %s' % (newest, done, 'yes' if equal else 'no'))
    return 0 if equal and newest == done else 1


if __name__ == '__main__':
    sys.exit(main())
