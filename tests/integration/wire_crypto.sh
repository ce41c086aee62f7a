#!/usr/bin/env bash
# --key encrypts: zd-track synth | zd-swap | zd-send through a
# relay on 127.0.0.1 that records every byte both ways, to zd-recv. With
# --key the replica equals the primary and no 64-byte piece of any page the
# replica holds is in the recording (nor a stream magic or the HEADER's
# target); the same check on a run without --key finds the pages, so the
# check itself can fail.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/replicate.sh"

command -v python3 >/dev/null || { skip "wire capture" "no python3 for the recording relay"; done_testing; }

SPEC=synth:pages=512,dirty=64,hot=0.8,seed=11
N=6
WANT=$(synth_memsum "$SPEC" $N $N)
[ -n "$WANT" ] || { not_ok "the primary's checksum" "zd-track --verify gave none"; done_testing; }
head -c 48 /dev/urandom >"$TMP/key" && chmod 600 "$TMP/key"

# A relay that records: client->server bytes to FILE.up, the way back to FILE.down.
cat >"$TMP/record.py" <<'PY'
import socket, sys, threading
target, out = int(sys.argv[1]), sys.argv[2]
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
print(ls.getsockname()[1], flush=True)
ls.settimeout(60)
a, _ = ls.accept()
b = socket.create_connection(("127.0.0.1", target))
def pump(src, dst, path):
    with open(path, "wb") as f:
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                f.write(d)
                dst.sendall(d)
        except OSError:
            pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
t = threading.Thread(target=pump, args=(b, a, out + ".down")); t.start()
pump(a, b, out + ".up")
t.join()
PY

# The replica's pages, in 64-byte pieces (at most 4 a page, of pages that
# are not all zeros), looked for in a recording: prints "FOUND of TRIED".
cat >"$TMP/find.py" <<'PY'
import sys
img, cap = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
tried = found = 0
for p in range(0, len(img), 4096):
    page = img[p:p + 4096]
    if page.count(0) == len(page):
        continue
    for off in (0, 1000, 2048, 4032):
        w = page[off:off + 64]
        tried += 1
        found += cap.find(w) >= 0
print(found, tried)
PY

# RELAY for replicate: the recording relay, to zd-recv's PORT, into $TMP/NAME.cap.
record() {	# PORT NAME
	python3 "$TMP/record.py" "$1" "$TMP/$2.cap" >"$TMP/$2.port" 2>"$TMP/$2.relay.err" &
	RELAY_PID=$!
	at_exit "kill $RELAY_PID"
	# shellcheck disable=SC2034 # read by replicate
	RELAY_PORT=$(read_port "$TMP/$2.port" "$RELAY_PID" 5)
}
run() {	# NAME SEND-ARGS RECV-ARGS: buffered, through zd-swap and the recording relay
	SWAP=1 RELAY=record replicate "$1" "$2" "$3" buffered
}

# --compress none: the pages go whole, the most there is to see.
run plain "--compress none" ""
replica_ok "no key" "$TMP/plain"
run keyed "--compress none --key $TMP/key" "--key $TMP/key"
replica_ok "--key" "$TMP/keyed"

read -r pf pt <<<"$(python3 "$TMP/find.py" "$TMP/plain/memory.img" "$TMP/plain.cap.up")"
if [ "${pt:-0}" -gt 100 ] && [ "$pf" = "$pt" ]; then
	ok "no key: all $pt sampled 64-byte pieces of the replica's pages are in the capture (the check can see)"
else
	not_ok "no key: the pages are in the capture" "found $pf of $pt"
fi
read -r kf kt <<<"$(python3 "$TMP/find.py" "$TMP/keyed/memory.img" "$TMP/keyed.cap.up")"
up=$(stat -c %s "$TMP/keyed.cap.up" 2>/dev/null || echo 0)
plain=$(stat -c %s "$TMP/plain.cap.up" 2>/dev/null || echo 0)
# as many bytes as without the key: the pages went, encrypted
if [ "${kt:-0}" -gt 100 ] && [ "$kf" = 0 ] && [ "$up" -ge "$plain" ] && [ "$plain" -gt 0 ]; then
	ok "--key: none of $kt sampled 64-byte pieces of the pages is in the $up bytes captured"
else
	not_ok "--key: no page content in the capture" "found $kf of $kt in $up bytes"
fi
# Nor the framing: the stream's magic and the HEADER's target, either way.
if grep -qaF "synth:pages=512" "$TMP/plain.cap.up" && ! grep -qaF "synth:pages=512" "$TMP/keyed.cap.up" &&
	! LC_ALL=C grep -qaP '\x89ZDS' "$TMP/keyed.cap.up" "$TMP/keyed.cap.down" &&
	LC_ALL=C grep -qaP '\x89ZDS' "$TMP/plain.cap.down"; then
	ok "--key: no stream magic nor target string on the wire either way (both there without)"
else
	not_ok "--key: framing hidden" "$(ls -l "$TMP"/*.cap.*)"
fi
# The capture starts with the version 2 handshake.
[ "$(head -c 8 "$TMP/keyed.cap.up")" = "ZDAUTH2" ] && ok "--key: the capture starts with hello ZDAUTH2" ||
	not_ok "hello ZDAUTH2" "$(head -c 8 "$TMP/keyed.cap.up" | od -c | head -2)"
done_testing
