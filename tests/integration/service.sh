#!/usr/bin/env bash
# Running zd under a service manager: the systemd units `make install`
# puts in place (they load cleanly, name installed binaries, and `make
# uninstall` takes back everything install put there), readiness as
# Type=notify sees it (sd_notify on a real NOTIFY_SOCKET: zd-recv ready
# once it listens, zd-track once the backup holds a checkpoint), STATUS=
# lines while it runs, and the syslog level of each stderr line when
# stderr is the journal (JOURNAL_STREAM).
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/replica.sh"

# 1. make install / uninstall, into a directory of our own.
if make -s -C "$ZD_TOP" install PREFIX="$TMP/pfx" >"$TMP/install.out" 2>&1; then
	units=$(ls "$TMP/pfx/lib/systemd/system/" 2>/dev/null | tr '\n' ' ')
	case $units in
	*zd-protect@.service*zd-recv@.service*) ok "make install puts the units in place: $units" ;;
	*) not_ok "make install puts the units in place" "found: $units" ;;
	esac
	if grep -q '@BINDIR@' "$TMP/pfx/lib/systemd/system/"*; then
		not_ok "the units name the installed binaries" "$(grep -n '@BINDIR@' "$TMP/pfx/lib/systemd/system/"*)"
	else
		grep -q "^ExecStart=$TMP/pfx/bin/zd-recv " "$TMP/pfx/lib/systemd/system/zd-recv@.service" &&
			ok "the units name the installed binaries" ||
			not_ok "the units name the installed binaries" "$(grep ExecStart "$TMP/pfx/lib/systemd/system/zd-recv@.service")"
	fi
	if command -v systemd-analyze >/dev/null; then
		out=$(systemd-analyze verify --man=no "$TMP/pfx/lib/systemd/system/zd-recv@backup1.service" \
			"$TMP/pfx/lib/systemd/system/zd-protect@backup1.service" 2>&1)
		[ -z "$out" ] && ok "systemd-analyze verify: both units load without a complaint" ||
			not_ok "systemd-analyze verify: both units load without a complaint" "$out"
	else
		skip "systemd-analyze verify" "no systemd-analyze"
	fi
	mkdir -p "$TMP/destdir"
	make -s -C "$ZD_TOP" install DESTDIR="$TMP/destdir" >/dev/null 2>&1
	n=$(find "$TMP/destdir" -type f | wc -l)
	make -s -C "$ZD_TOP" uninstall DESTDIR="$TMP/destdir" >/dev/null 2>&1
	left=$(find "$TMP/destdir" -type f)
	[ "$n" -gt 20 ] && [ -z "$left" ] && ok "make uninstall removes all $n files make install put there" ||
		not_ok "make uninstall removes what make install put there" "$n installed; left: $left"
else
	not_ok "make install PREFIX=..." "$(tail -3 "$TMP/install.out")"
fi

# 2. sd_notify. A datagram socket as systemd's NOTIFY_SOCKET; each message
# is logged with whether the replica had committed an epoch (its epoch in
# meta.json, or "journal": committed, not yet applied; or zd-recv's port)
# when it came.
cat >"$TMP/notify.py" <<'PY'
import os, socket, sys, time, json
path, log, probe = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(60)
with open(log, "a", buffering=1) as f:
    while True:
        try:
            m = s.recv(4096).decode()
        except socket.timeout:
            break
        seen = "-"
        try:
            if probe.endswith(".json"):
                # zd-recv acknowledges at the commit point (DIR/journal
                # renamed into place) and applies after: a journal there
                # is an epoch held; without one, meta.json says (the
                # apply writes it before it renames the journal away).
                if os.path.exists(os.path.join(os.path.dirname(probe), "journal")):
                    seen = "journal"
                else:
                    seen = str(json.load(open(probe)).get("epoch", 0))
            else:
                seen = open(probe).read().strip() or "-"
        except Exception:
            pass
        for line in m.split("\n"):
            f.write(f"{seen} {line}\n")
PY
python3 "$TMP/notify.py" "$TMP/recv.sock" "$TMP/recv.notify" "$TMP/r.port" &
at_exit "kill $!"
python3 "$TMP/notify.py" "$TMP/track.sock" "$TMP/track.notify" "$TMP/replica/meta.json" &
at_exit "kill $!"
wait_for 5 test -S "$TMP/recv.sock" && wait_for 5 test -S "$TMP/track.sock"
NOTIFY_SOCKET=$TMP/recv.sock zd-recv --listen 127.0.0.1:0 --port-file "$TMP/r.port" --replica "$TMP/replica" \
	--once --no-failover 2>"$TMP/recv.err" &
RPID=$!
at_exit "kill $RPID"
if ! P=$(read_port "$TMP/r.port" "$RPID" 10); then
	not_ok "zd-recv listens" "$(cat "$TMP/recv.err")"
else
	wait_line "$TMP/recv.notify" 'READY=1' 5
	ready=$(grep -m1 'READY=1' "$TMP/recv.notify")
	# READY only once the port is there to connect to.
	[ "${ready%% *}" = "$P" ] && ok "zd-recv: READY=1 once it listens (port $P written before)" ||
		not_ok "zd-recv: READY=1 once it listens" "$(cat "$TMP/recv.notify")"
	NOTIFY_SOCKET=$TMP/track.sock zd-track synth:pages=4096,dirty=64 --epochs 30 --interval 50 2>"$TMP/track.err" |
		zd-send "127.0.0.1:$P" >/dev/null 2>"$TMP/send.err"
	wait "$RPID"
	RC=$?
	[ $RC = 0 ] && ok "the run ends cleanly (zd-recv exit 0)" || not_ok "the run ends cleanly" "exit $RC: $(cat "$TMP/recv.err")"
	ready=$(grep -m1 'READY=1' "$TMP/track.notify")
	[ -n "$ready" ] && [ "${ready%% *}" != "-" ] && { [ "${ready%% *}" = journal ] || [ "${ready%% *}" -ge 1 ]; } &&
		ok "zd-track: READY=1 once the backup holds a checkpoint (the replica then: ${ready%% *}; journal: committed, being applied)" ||
		not_ok "zd-track: READY=1 once the backup holds a checkpoint" "$(head -5 "$TMP/track.notify")"
	grep -q 'STATUS=epoch [0-9]* committed, from ' "$TMP/recv.notify" &&
		ok "zd-recv: STATUS= says the epoch committed and from whom" ||
		not_ok "zd-recv: STATUS= lines" "$(cat "$TMP/recv.notify")"
	n=$(grep -c 'STATUS=epoch [0-9]* acknowledged' "$TMP/track.notify")
	# 30 epochs of 50 ms: ~1.5 s, so one or two, never one per epoch.
	[ "$n" -ge 1 ] && [ "$n" -le 5 ] && ok "zd-track: STATUS= at most once a second ($n in a 1.5 s run)" ||
		not_ok "zd-track: STATUS= at most once a second" "$n lines: $(cat "$TMP/track.notify")"
fi

# 3. Levels for the journal: only when stderr is the journal's stream.
zd-recv --replica /nonexistent/zd --stdio </dev/null >/dev/null 2>"$TMP/plain.err"
line=$(head -1 "$TMP/plain.err")
JS=$(stat -c '%d:%i' "$TMP/j.err" 2>/dev/null || { : >"$TMP/j.err"; stat -c '%d:%i' "$TMP/j.err"; })
JOURNAL_STREAM=$JS zd-recv --replica /nonexistent/zd --stdio </dev/null >/dev/null 2>>"$TMP/j.err"
jline=$(head -1 "$TMP/j.err")
case $line in
"zd-recv: "*) case $jline in
	"<"[34]">zd-recv: "*) ok "stderr into the journal: '${jline%%:*}' gives the level; elsewhere no prefix" ;;
	*) not_ok "stderr into the journal carries a level" "journal: $jline" ;;
	esac ;;
*) not_ok "stderr elsewhere has no level prefix" "$line" ;;
esac
JOURNAL_STREAM=1:1 zd-recv --replica /nonexistent/zd --stdio </dev/null >/dev/null 2>"$TMP/other.err"
case $(head -1 "$TMP/other.err") in
"zd-recv: "*) ok "a JOURNAL_STREAM that is not our stderr (inherited, redirected): no prefix" ;;
*) not_ok "a JOURNAL_STREAM that is not our stderr: no prefix" "$(head -1 "$TMP/other.err")" ;;
esac
done_testing
