#!/usr/bin/env python3
"""A stand-in for zd-vm's line service, for zd-client's tests.

fakesvc.py PORTFILE [--start N] [--skip-at K] [--back-at K] [--garbage-at K]
           [--close-after K] [--drop D] [--delay-ms D] [--sessions S]

Listens on 127.0.0.1 (a free port, written to PORTFILE), and answers each
line "req ..." with "seq N", N counting from --start across connections
(like the guest's counter). The faults act on the K-th answer of the run:
--skip-at answers N+1 instead of N, --back-at answers N-2, --garbage-at
answers "hello". --close-after K closes the connection after K answers
(the next connection carries on); with --drop D the D connections after
each such close are accepted and closed unanswered (a server that drops a
reconnection). --sessions S serves S connections, then
exits. Real sockets: what zd-client sees is what a TCP peer does.
"""
import argparse
import socket
import time

ap = argparse.ArgumentParser()
ap.add_argument("portfile")
ap.add_argument("--start", type=int, default=1)
for f in ("skip-at", "back-at", "garbage-at", "close-after"):
    ap.add_argument("--" + f, type=int, default=0)
ap.add_argument("--delay-ms", type=float, default=0)
ap.add_argument("--sessions", type=int, default=1)
# after each --close-after close, accept this many connections and close
# them unanswered (a server that drops a reconnection)
ap.add_argument("--drop", type=int, default=0)
a = ap.parse_args()

ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(4)
with open(a.portfile + ".tmp", "w") as f:
    f.write("%d\n" % ls.getsockname()[1])
import os
os.rename(a.portfile + ".tmp", a.portfile)

seq = a.start
n = 0          # answers of the run
for _ in range(a.sessions):
    c, _addr = ls.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    here = 0   # answers on this connection
    closed = False
    while not closed:
        d = c.recv(4096)
        if not d:
            break
        buf += d
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if a.delay_ms:
                time.sleep(a.delay_ms / 1000)
            n += 1
            if n == a.skip_at:
                seq += 1
            if n == a.back_at:
                seq -= 2
            ans = b"hello\n" if n == a.garbage_at else b"seq %d\n" % seq
            seq += 1
            c.sendall(ans)
            here += 1
            if a.close_after and here == a.close_after:
                closed = True
                break
    c.close()
    if closed:
        for _ in range(a.drop):
            d, _addr = ls.accept()
            d.close()
