#!/usr/bin/env bash
# The wire between zd-send and zd-recv, real processes on
# loopback TCP: every compression replicates byte for byte (the replica's
# memory checksum against the primary's), keys are checked at connect and
# on every record, a byte changed between the two ends is refused with the
# replica left at the last good epoch, and the ssh transport works (a real
# sshd where it can run, always zd-recv --stdio over pipes).
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/replicate.sh"

SPEC=synth:pages=16384,dirty=1024,hot=0.8,seed=7
N=20
WANT=$(synth_memsum "$SPEC" $N $N)
[ -n "$WANT" ] || { not_ok "the primary's checksum" "zd-track --verify gave none"; done_testing; }

head -c 64 /dev/urandom >"$TMP/key" && chmod 600 "$TMP/key"
head -c 64 /dev/urandom >"$TMP/key2" && chmod 600 "$TMP/key2"

# Σ raw / Σ wire over zd-send's STAT "send" records
ratio() {
	jq -s '[.[] | select(.type == "stat" and .source == "send") | .values] |
		((map(.raw_bytes) | add) / (map(.wire_bytes) | add) * 100 | floor) / 100' "$1"
}

# 1. Each compression replicates the same memory.
for c in none zstd delta; do
	replicate "c_$c" "--compress $c" ""
	replica_ok "--compress $c" "$TMP/c_$c"
done
r=$(ratio "$TMP/c_none.log")
awk -v r="$r" 'BEGIN { exit !(r >= 0.95 && r <= 1.01) }' && ok "--compress none: raw/wire $r" ||
	not_ok "--compress none: raw/wire about 1" "ratio $r"
r=$(ratio "$TMP/c_delta.log")
# synth rewrites 8 words per written page: the XOR against the last copy is
# nearly all zeros, except for the pages never sent before
awk -v r="$r" 'BEGIN { exit !(r >= 3) }' && ok "--compress delta: raw/wire $r (>= 3)" ||
	not_ok "--compress delta: raw/wire >= 3" "ratio $r"
d=$(jq -s '[.[] | select(.type == "stat" and .source == "send") | .values.delta_pages] | add' "$TMP/c_delta.log")
[ "${d:-0}" -gt 0 ] && ok "--compress delta: $d pages went as XOR deltas" || not_ok "delta pages counted" "delta_pages $d"

# zddspt pre-copies pages and sends some again at the checkpoint: the second
# copy is a delta against the first, staged in the same epoch.
replicate c_zddspt "--compress delta" "" zddspt
replica_ok "--compress delta, zddspt (deltas against pre-copied pages)" "$TMP/c_zddspt"
# A cache of one page: nearly every page misses and goes as plain zstd.
replicate c_nocache "--compress delta --delta-cache 4096 --level 3" ""
replica_ok "--delta-cache 4096 (misses fall back to zstd)" "$TMP/c_nocache"

# 2. The backup takes at most what it says.
replicate c_refuse "--compress delta" "--compress zstd"
if [ "$SEND_EXIT" = 5 ] && grep -q "at most as zstd" "$TMP/c_refuse.send.err" &&
	[ "$(replica_field "$TMP/c_refuse" epoch)" = 0 ]; then
	ok "zd-recv --compress zstd, zd-send delta: zd-send exits 5 before any epoch, says why"
else
	not_ok "zd-recv --compress zstd refuses delta" "send exit $SEND_EXIT: $(cat "$TMP/c_refuse.send.err")"
fi

# 3. Keys. A replica at epoch N is the target of every refused run: it
# must come out unchanged.
replicate k_good "--key $TMP/key" "--key $TMP/key"
replica_ok "--key on both ends (every record encrypted and authenticated)" "$TMP/k_good"
status() { zd-recv --replica "$1" --status 2>&1 | grep -E '^(epoch|memsum) '; }
before=$(status "$TMP/k_good")

refused() {	# WHAT NAME SEND-EXIT SEND-REGEX RECV-REGEX
	local lines
	lines=$(grep -vc "listening on" "$RECV_ERR")
	if [ "$SEND_EXIT" = "$3" ] && [ "$RECV_EXIT" = running ] && [ "$lines" = 1 ] &&
		grep -qE "$4" "$TMP/$2.send.err" && grep -qE "$5" "$RECV_ERR" &&
		[ "$(status "$TMP/$2")" = "$before" ]; then
		ok "$1: zd-send exits 5, zd-recv serves on, one line each, replica unchanged"
	else
		not_ok "$1 refused" "send exit $SEND_EXIT: $(cat "$TMP/$2.send.err")
recv exit $RECV_EXIT: $(cat "$RECV_ERR")
replica: $(zd-recv --replica "$TMP/$2" --status 2>&1 | head -3)"
	fi
}
for n in k_wrong k_sendonly k_recvonly; do cp -a "$TMP/k_good" "$TMP/$n"; done
replicate k_wrong "--key $TMP/key" "--key $TMP/key2"
refused "wrong key" k_wrong 5 "peer does not know the key" "peer does not know the key"
replicate k_sendonly "--key $TMP/key" ""
refused "key on zd-send only" k_sendonly 5 "no --key there" "authenticates with a key .* has none"
replicate k_recvonly "" "--key $TMP/key"
refused "key on zd-recv only" k_recvonly 5 "wants a key .* has none" "no --key there"

# 4. A byte changed between the two ends (a relay that flips one bit deep
# in the stream): refused, the replica at the last good epoch, which is
# the primary's at that epoch.
cat >"$TMP/relay.py" <<'EOF'
import socket, sys, threading
target, flip = int(sys.argv[1]), int(sys.argv[2])
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
print(ls.getsockname()[1], flush=True)
a, _ = ls.accept()
b = socket.create_connection(("127.0.0.1", target))
def pump(src, dst, at):
    n = 0
    try:
        while True:
            d = src.recv(65536)
            if not d:
                break
            if 0 <= at - n < len(d):
                d = bytearray(d); d[at - n] ^= 0x10; d = bytes(d)
            n += len(d)
            dst.sendall(d)
    except OSError:
        pass
    for s in (dst, src):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
t = threading.Thread(target=pump, args=(b, a, -1)); t.start()
pump(a, b, flip)
t.join()
EOF
start_relay() {	# PORT NAME: sets RELAY_PORT and RELAY_PID (replicate's RELAY)
	rm -f "$TMP/relay.port"
	python3 "$TMP/relay.py" "$1" "$FLIP" >"$TMP/relay.port" 2>"$TMP/relay.err" &
	RELAY_PID=$!
	at_exit "kill $RELAY_PID"
	# shellcheck disable=SC2034 # read by replicate
	RELAY_PORT=$(read_port "$TMP/relay.port" $RELAY_PID 5)
}
FLIP=9000000	# about half way: the first epoch is ~4 MB, later ones ~0.7 MB
tampered() {	# WHAT NAME REGEX
	local ep sum want
	ep=$(replica_field "$TMP/$2" epoch)
	sum=$(replica_field "$TMP/$2" memsum)
	want=$(synth_memsum "$SPEC" $N "${ep:-0}")
	if [ "$RECV_EXIT" = 3 ] && grep -qE "$3" "$RECV_ERR" && [ "${ep:-0}" -ge 1 ] && [ "$ep" -lt $N ] &&
		[ "$sum" = "$want" ] && [ "$SEND_EXIT" != 0 ]; then
		ok "$1: zd-recv exits 3, replica at epoch $ep = primary's, zd-send exits $SEND_EXIT"
	else
		not_ok "$1 refused" "recv exit $RECV_EXIT: $(cat "$RECV_ERR")
send exit $SEND_EXIT: $(cat "$TMP/$2.send.err")
replica epoch $ep memsum $sum, primary's at that epoch $want"
	fi
}
if command -v python3 >/dev/null; then
	RELAY=start_relay replicate t_mac "--key $TMP/key" "--key $TMP/key"
	tampered "flipped bit, --key" t_mac "record [0-9]+: bad MAC"
	RELAY=start_relay replicate t_crc "" ""
	tampered "flipped bit, no key (CRC)" t_crc "crc mismatch|payload"
else
	skip "flipped bit refused" "no python3 for the relay"
fi

# 5. ssh:HOST:PATH. Through pipes always: a stand-in for ssh that runs the
# remote command here (what ssh does after logging in).
cat >"$TMP/fakessh" <<'EOF'
#!/bin/sh
# fakessh [OPTS] -- HOST COMMAND: run COMMAND here, as ssh would there
while [ "$1" != "--" ]; do shift; done
shift 2
exec sh -c "$*"
EOF
chmod +x "$TMP/fakessh"
ssh_run() {	# NAME ZD_SSH DEST SEND-ARGS...
	local name=$1 sshcmd=$2 dest=$3; shift 3
	timeout 120 zd-track "$SPEC" --epochs $N --interval 0 --verify --timeout 20000 2>"$TMP/$name.track.err" |
		ZD_SSH=$sshcmd ZD_REMOTE_RECV="$ZD_BIN/zd-recv --no-fsync" timeout 120 zd-send "$@" --json-log "$dest" \
		>"$TMP/$name.log" 2>"$TMP/$name.send.err"
	SEND_EXIT=${PIPESTATUS[1]}
	RECV_EXIT=0
	RECV_ERR=$TMP/$name.send.err
}
ssh_run s_pipe "$TMP/fakessh" "ssh:backup:$TMP/s_pipe"
replica_ok "ssh: transport (zd-recv --stdio over pipes)" "$TMP/s_pipe"
ssh_run s_pipekey "$TMP/fakessh" "ssh:root@backup:$TMP/s_pipekey" --key "$TMP/key" --compress zstd
replica_ok "ssh: with --key and zstd (the far zd-recv gets --key)" "$TMP/s_pipekey"
# ssh with --reconnect: the first ssh session dies (its zd-recv SIGKILLed
# once the replica committed epoch 3, ssh exits 255 as on a lost link);
# zd-send starts ssh again, the new zd-recv --stdio recovers the replica
# and the run resumes after its last committed epoch.
cat >"$TMP/flakyssh" <<FLAKY
#!/bin/bash
while [ "\$1" != "--" ]; do shift; done
shift 2
[ -e "$TMP/flaky.once" ] && exec sh -c "\$*"
touch "$TMP/flaky.once"
sh -c "\$*" <&0 & p=\$!
until [ "\$(jq -r '.epoch // 0' "$TMP/s_flaky/meta.json" 2>/dev/null)" -ge 3 ] 2>/dev/null; do sleep 0.01; done
kill -KILL \$p
exit 255
FLAKY
chmod +x "$TMP/flakyssh"
timeout 120 zd-track "$SPEC" --epochs 40 --interval 20 --verify --timeout 20000 2>"$TMP/s_flaky.track.err" |
	ZD_SSH=$TMP/flakyssh ZD_REMOTE_RECV="$ZD_BIN/zd-recv --no-fsync" timeout 120 zd-send --reconnect 20000 \
	--json-log "ssh:backup:$TMP/s_flaky" >"$TMP/s_flaky.log" 2>"$TMP/s_flaky.send.err"
rc="${PIPESTATUS[*]}"
ep=$(replica_field "$TMP/s_flaky" epoch)
sum=$(replica_field "$TMP/s_flaky" memsum)
want=$(synth_memsum "$SPEC" 40 40)
if [ "$rc" = "0 0" ] && [ "$ep" = 40 ] && [ "$sum" = "$want" ] && grep -q 'reconnected after' "$TMP/s_flaky.send.err"; then
	ok "ssh --reconnect: a dead ssh session is started again, replica = primary at epoch 40"
else
	not_ok "ssh --reconnect: a dead ssh session is started again, replica = primary" "exits $rc, epoch $ep memsum $sum want $want: $(cat "$TMP/s_flaky.send.err")"
fi
acks=$(jq -s '[.[] | select(.type == "ack")] | length' "$TMP/s_pipe.log")
[ "$acks" = $N ] && ok "ssh: $N ACKs came back through ssh's stdout" || not_ok "ssh: ACKs come back" "$acks of $N"

# A real sshd, without a port: ssh's ProxyCommand starts it in inetd mode
# (sshd -i) on the connection's pipes. It is Debian's openssh-server as
# tests/lib/debroot.sh unpacked it (make deps; never installed here), or
# one installed here. It runs in a mount namespace of its own where
# /etc/passwd has its privilege-separation user, which a machine without
# openssh-server installed lacks: nothing on this machine changes and no
# server is left running.
. "$(dirname "$0")/../lib/debroot.sh"
SSHD=$DEBROOT_ROOT/usr/sbin/sshd
[ -x "$SSHD" ] || SSHD=$(command -v sshd || echo /usr/sbin/sshd)
if [ "$(id -u)" != 0 ] || [ ! -x "$SSHD" ] || ! command -v ssh-keygen >/dev/null || ! command -v unshare >/dev/null; then
	skip "ssh: through a real sshd" "needs root, unshare and openssh-server (make deps unpacks it)"
else
	mkdir -p "$TMP/sshd-run"
	chmod 755 "$TMP/sshd-run"
	ssh-keygen -q -t ed25519 -N "" -f "$TMP/hostkey" && ssh-keygen -q -t ed25519 -N "" -f "$TMP/id" &&
		cp "$TMP/id.pub" "$TMP/authorized_keys" && chmod 600 "$TMP/authorized_keys"
	cp /etc/passwd "$TMP/passwd"
	grep -q '^sshd:' "$TMP/passwd" || echo 'sshd:x:65533:65534::/run/sshd:/usr/sbin/nologin' >>"$TMP/passwd"
	cat >"$TMP/sshd_config" <<EOF
HostKey $TMP/hostkey
AuthorizedKeysFile $TMP/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
EOF
	# /run/sshd, sshd's privilege-separation directory: an empty one of
	# ours mounted there, in sshd's namespace only.
	cat >"$TMP/sshd-i" <<EOF
#!/bin/sh
exec unshare -m sh -c 'mount --bind "$TMP/passwd" /etc/passwd &&
	{ [ -d /run/sshd ] || { mount -t tmpfs -o mode=755 none /run && mkdir /run/sshd; }; } &&
	mount --bind "$TMP/sshd-run" /run/sshd &&
	exec "$SSHD" -i -e -f "$TMP/sshd_config" 2>>"$TMP/sshd.log"'
EOF
	chmod 755 "$TMP/sshd-i"
	SSHC="ssh -i $TMP/id -o ProxyCommand=$TMP/sshd-i -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
	if ! out=$($SSHC root@zd-sshd echo up 2>&1) || [ "$out" != up ]; then
		not_ok "a real sshd (sshd -i) answers" "$out; $(tail -5 "$TMP/sshd.log" 2>/dev/null)"
	else
		ssh_run s_sshd "$SSHC" "ssh:root@zd-sshd:$TMP/s_sshd"
		replica_ok "ssh: transport through a real sshd ($SSHD -i)" "$TMP/s_sshd"
	fi
fi
ssh_run s_nohost "$TMP/fakessh" "ssh:backup:$TMP/s_nohost/x/y" 2>/dev/null
[ "$SEND_EXIT" = 5 ] && ok "ssh: a far zd-recv that cannot start: zd-send exits 5" ||
	not_ok "ssh: far side failure is exit 5" "exit $SEND_EXIT: $(cat "$TMP/s_nohost.send.err")"

# 6. Flags.
expect_fail "--compress lz4: exit 2" 2 "not none, zstd or delta" zd-send --compress lz4 127.0.0.1:1
expect_fail "--level with none: exit 2" 2 "--level goes with" zd-send --compress none --level 3 127.0.0.1:1
expect_fail "--level 99: exit 2" 2 "not a zstd level" zd-send --level 99 127.0.0.1:1
expect_fail "--delta-cache with zstd: exit 2" 2 "--delta-cache goes with" zd-send --compress zstd --delta-cache 1G 127.0.0.1:1
expect_fail "--resend-buffer without --reconnect: exit 2" 2 "--resend-buffer goes with --reconnect" zd-send --resend-buffer 1G 127.0.0.1:1
expect_fail "--reconnect to stdout: exit 2" 2 "--reconnect needs a connection both ways" zd-send --reconnect 1000 -
expect_fail "--reconnect with a bad number: exit 2" 2 "'soon' is not a number of ms" zd-send --reconnect soon 127.0.0.1:1
expect_fail "--resend-buffer with a bad size: exit 2" 2 "--resend-buffer: 'lots' is not a size" zd-send --reconnect 100 --resend-buffer lots 127.0.0.1:1
# Nobody there to reconnect to: one line naming the last try, exit 5, within --reconnect.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
expect_fail "--reconnect: a backup not there at the start is still exit 5 at once" 5 "connect: Connection refused" \
	zd-send --reconnect 300 127.0.0.1:$port
expect_fail "--delta-cache 12Q: exit 2" 2 "not a size" zd-send --delta-cache 12Q 127.0.0.1:1
expect_fail "--key with DEST -: exit 2" 2 "not with DEST -" zd-send --key "$TMP/key" -
chmod 644 "$TMP/key2"
expect_fail "world-readable key: exit 2" 2 "readable by others" zd-send --key "$TMP/key2" 127.0.0.1:1
expect_fail "zd-recv world-readable key: exit 2" 2 "readable by others" zd-recv --stdio --replica "$TMP/u" --key "$TMP/key2"
head -c 8 /dev/urandom >"$TMP/short" && chmod 600 "$TMP/short"
expect_fail "short key: exit 2" 2 "a key needs at least 16" zd-send --key "$TMP/short" 127.0.0.1:1
expect_fail "zd-recv --compress bogus: exit 2" 2 "not none, zstd or delta" zd-recv --stdio --replica "$TMP/u" --compress bogus
expect_fail "ssh: without a host: exit 2" 2 "no host" zd-send ssh::/tmp/x
expect_fail "ssh: with an empty PATH: exit 2" 2 "empty PATH" zd-send ssh:h:
for t in zd-send zd-recv; do
	help=$($t --help | sed -n '/^usage:/,/^$/p' | sed 's/^usage: //' | tr -s ' \n' '  ' | sed 's/ $//')
	man=$(sed -n '/^\.SH SYNOPSIS/,/^\.SH/p' "$ZD_TOP/man/$t.1" | grep -v '^\.' |
		sed 's/\\-/-/g; s/\\f[BIR]//g' | tr -s ' \n' '  ' | sed 's/ $//')
	[ -n "$help" ] && [ "$help" = "$man" ] && ok "$t: --help usage = man SYNOPSIS" || not_ok "$t synopsis" "help: $help / man: $man"
	check "bash -n completions/bash/$t" bash -n "$ZD_TOP/completions/bash/$t"
done
done_testing
