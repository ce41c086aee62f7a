#!/usr/bin/env python3
# A stand-in for a downstream stage on zd-track's feedback socket (zd/fb.h),
# for tests: reads zd-track's JSON stream on stdin, copies it to OUT, and
# speaks on the control socket named in the HEADER.
#
#   fbpeer.py OUT ack DELAY_MS     role SEND: ACK each COMMIT after DELAY_MS
#   fbpeer.py OUT drained DELAY_MS role SWAP: DRAINED each COMMIT after DELAY_MS
#   fbpeer.py OUT silent           role SEND: never ACK
#   fbpeer.py OUT leave            role SEND: hang up at the first COMMIT
#   fbpeer.py OUT memory           role SWAP: ask for MEMORY, print the reply op and
#                                  errno; DRAINED each COMMIT
import json, socket, struct, sys, time

MSG = struct.Struct('<IIQQQ')  # op, len, epoch, a, b
HELLO, STANDBY, DRAINED, ACK, MEMORY, ERROR, BYE = 1, 2, 3, 4, 5, 6, 7
SWAP, SEND = 2, 3

out_path, action = sys.argv[1], sys.argv[2]
delay = int(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0
sock = None
with open(out_path, 'w') as out:
    for line in sys.stdin:
        out.write(line)
        out.flush()
        rec = json.loads(line)
        if rec['type'] == 'header':
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            sock.connect(rec['control'])
            role = SWAP if action in ('drained', 'memory') else SEND
            sock.send(MSG.pack(HELLO, 0, 0, role, 0))
            op = MSG.unpack(sock.recv(4096)[:MSG.size])[0]
            assert op == HELLO, op
            if action == 'memory':
                sock.send(MSG.pack(MEMORY, 0, 0, 0, 0))
                m = MSG.unpack(sock.recv(4096)[:MSG.size])
                print('reply op %d a %d' % (m[0], m[3]))
        elif rec['type'] == 'commit':
            e = rec['epoch']
            if action == 'ack':
                time.sleep(delay)
                sock.send(MSG.pack(ACK, 0, e, time.time_ns(), 0))
            elif action in ('drained', 'memory'):
                time.sleep(delay)
                sock.send(MSG.pack(DRAINED, 0, e, 0, 0))
            elif action == 'leave':
                sock.close()
                sock = None
