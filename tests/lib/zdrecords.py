#!/usr/bin/env python3
"""List the records of a binary zd-stream(5) file, for tests that cut or
corrupt a stream at a chosen record.

    zdrecords.py FILE      one line per record: index offset type length epoch
                           (index from 1, offset of the record header, epoch
                           for records that carry one first in the body, else -)
"""
import struct
import sys

NAMES = {1: "HEADER", 2: "CHECKPOINT", 3: "DIRTY", 4: "STANDBY", 5: "PAGES",
         6: "STATE", 7: "COMMIT", 8: "ACK", 9: "STAT", 10: "END"}
WITH_EPOCH = {2, 3, 4, 5, 6, 7, 8, 9}


def main():
    data = open(sys.argv[1], "rb").read()
    if data[:4] != b"\x89ZDS":
        sys.exit("zdrecords.py: not a binary zd-stream")
    off, n = 8, 0
    while off + 12 <= len(data):
        rtype, _flags, length, _crc = struct.unpack_from("<HHII", data, off)
        n += 1
        epoch = "-"
        if rtype in WITH_EPOCH and length >= 8:
            epoch = struct.unpack_from("<Q", data, off + 12)[0]
        print(n, off, NAMES.get(rtype, "UNKNOWN"), length, epoch)
        off += 12 + length


if __name__ == "__main__":
    main()
