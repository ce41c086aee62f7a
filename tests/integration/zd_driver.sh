#!/usr/bin/env bash
# The zd driver script: syntax, --help/--version, argument errors (one line,
# exit 2), a missing VM socket (exit 4), zd status on a real replica; bash -n
# (sh -n for the OCF agent) and shellcheck over every shell script we ship
# (driver, zd-measure, zd-demo, bench, completions, OCF agent); and that
# SIGINT to zd measure or zd demo leaves none of the processes they started
# behind.
. "$(dirname "$0")/../lib/tap.sh"

scripts=("$ZD_TOP"/cmd/*.sh "$ZD_TOP"/lib/sh/*.bash "$ZD_TOP/bench/table1.sh" "$ZD_TOP"/completions/bash/*)
for f in "${scripts[@]}"; do
	check "bash -n ${f#"$ZD_TOP"/}" bash -n "$f"
done
check "sh -n ocf/zd" sh -n "$ZD_TOP/ocf/zd"
# The warnings and errors of shellcheck (not its style notes) over what make
# install ships, and the bench: zd-demo sources zd-measure (-x follows it).
# The completions follow bash-completion's idiom: _init_completion sets
# cur prev words cword, whether used or not (SC2034), and COMPREPLY=($(compgen
# ...)) splits words that hold no blanks (SC2207).
if command -v shellcheck >/dev/null; then
	for f in "$ZD_TOP"/cmd/*.sh "$ZD_TOP/bench/table1.sh" "$ZD_TOP/ocf/zd"; do
		check "shellcheck ${f#"$ZD_TOP"/}" shellcheck -x -S warning "$f"
	done
	for f in "$ZD_TOP"/completions/bash/*; do
		check "shellcheck ${f#"$ZD_TOP"/}" shellcheck -s bash -S warning -e SC2034,SC2207 "$f"
	done
else
	skip "shellcheck" "no shellcheck (Debian package shellcheck)"
fi
# Bash completion of words with a colon (kvm:PATH, local:DIR, ADDR:PORT):
# readline splits them at the colon (COMP_WORDBREAKS), so what a
# completion offers must be what follows the last colon.
# complete_line FUNC LINE: COMPREPLY for the last word of LINE, split as
# readline splits it.
complete_line() (
	. /usr/share/bash-completion/bash_completion
	for c in "$ZD_TOP"/completions/bash/*; do . "$c"; done
	local w x
	read -ra w <<<"$2"
	COMP_LINE=$2 COMP_POINT=${#2} COMP_WORDS=()
	for x in "${w[@]}"; do
		while [[ $x == *:* ]]; do COMP_WORDS+=("${x%%:*}" ":"); x=${x#*:}; done
		COMP_WORDS+=("$x")
	done
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	"$1" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}" 2>/dev/null
	echo "${COMPREPLY[*]}"
)
if [ -f /usr/share/bash-completion/bash_completion ]; then
	mkdir -p "$TMP/comp/replica" && : >"$TMP/comp/vm.sock"
	out=$(complete_line _zd_track "zd-track kvm:$TMP/comp/vm")
	[ "$out" = "$TMP/comp/vm.sock" ] && ok "completion: zd-track kvm:PATH" || not_ok "completion: zd-track kvm:PATH" "got '$out'"
	out=$(complete_line _zd_track "zd-track kv")
	[ "$out" = "kvm:" ] && ok "completion: zd-track's schemes" || not_ok "completion: zd-track's schemes" "got '$out'"
	out=$(complete_line _zd "zd run local:$TMP/comp/rep")
	[ "$out" = "$TMP/comp/replica" ] && ok "completion: zd run local:DIR" || not_ok "completion: zd run local:DIR" "got '$out'"
	out=$(complete_line _zd_recv "zd-recv --listen 127.0")
	[ "$out" = "127.0.0.1:" ] && ok "completion: zd-recv --listen ADDR:" || not_ok "completion: zd-recv --listen ADDR:" "got '$out'"
else
	skip "bash completion of kvm:PATH and local:DIR" "no bash-completion (Debian package bash-completion)"
fi

out=$(zd --help)
[ $? = 0 ] && [[ $out == "usage: zd run [--mode M]"* ]] && ok "--help: usage on stdout" || not_ok "--help" "$out"
[ "$(zd --version)" = "zd 0.1.0" ] && ok "--version" || not_ok "--version" "$(zd --version)"

expect_fail "no command" 2 "^zd: missing command" zd
expect_fail "unknown command" 2 "^zd: unknown command 'fly'" zd fly
expect_fail "run: no arguments" 2 "run: want TARGET BACKUP, got 0 arguments" zd run
expect_fail "run: three arguments" 2 "got 3 arguments" zd run a b c
expect_fail "run: unknown option" 2 "run: unknown option '--bogus'" zd run --bogus a b
expect_fail "run: bad mode" 2 "--mode 'fast': want remus, buffered or zddspt" zd run --mode fast a b
expect_fail "run: option without value" 2 "option '--mode' needs a value" zd run --mode
expect_fail "run: --epochs 0" 2 "--epochs '0': want a whole number above 0" zd run --epochs 0 a b
expect_fail "failover: no directory" 2 "^zd: failover: want DIR" zd failover
# zd failover is zd-vm --restore: the replica is refused before any KVM is needed.
expect_fail "failover: a missing replica (zd-vm --restore's refusal)" 4 \
	"^zd-vm: --restore $TMP/none: No such file or directory$" zd failover "$TMP/none"
# A real socket that is no zd-vm is zd-track's to refuse; a missing one is ours.
expect_fail "run: no socket there" 4 "run: $TMP/none.sock: not a socket" zd run "$TMP/none.sock" local:"$TMP/r"
python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$TMP/s.sock"
expect_fail "run: BACKUP without a port" 2 "BACKUP 'host2': want HOST:PORT, local:DIR or ssh:\\[USER@\\]HOST:DIR" zd run "$TMP/s.sock" host2
expect_fail "run: --reprotect with a HOST:PORT backup" 2 "--reprotect goes with a local: or ssh: backup" \
	zd run --reprotect 127.0.0.1:9 synth:pages=64 127.0.0.1:9
expect_fail "run: --reprotect without a port" 2 "--reprotect 'backup2': want HOST:PORT" zd run --reprotect backup2 synth:pages=64 local:$TMP/r
zd-track synth:pages=64,dirty=4 --epochs 2 --interval 0 2>/dev/null | zd-recv --stdio --replica "$TMP/synthrep" >/dev/null 2>&1
expect_fail "failover --reprotect of a replica that is not zd-vm's" 4 "not the replica of a zd-vm \\(kvm:\\) VM" \
	zd failover "$TMP/synthrep" --reprotect 127.0.0.1:9
expect_fail "run: local: without DIR" 2 "local: wants a directory" zd run "$TMP/s.sock" local:
expect_fail "status: two arguments" 2 "status: want DIR, --json or nothing" zd status a b
out=$(zd status --json)
[ "$(echo "$out" | jq length)" = 0 ] && ok "status --json with nothing running: []" || not_ok "status --json with nothing running: []" "$out"
expect_fail "status: not a replica" 4 "." zd status "$TMP"
expect_fail "measure: no DIR" 2 "measure: want DIR" zd measure --mode remus
expect_fail "measure: --dirty x" 2 "--dirty 'x'" zd measure --dirty x "$TMP/m"
expect_fail "measure: --epochs 1" 2 "--epochs '1': want 2 or more" zd measure --epochs 1 "$TMP/m"
expect_fail "demo: unknown argument" 2 "demo: unknown argument '--fast'" zd demo --fast
expect_fail "demo: --seconds 0" 2 "--seconds '0'" zd demo --seconds 0
expect_fail "bench: unknown argument" 2 "bench: unknown argument 'x'" zd bench x

# zd status on a replica made by a real synth run.
. "$(dirname "$0")/../lib/replica.sh"
start_recv recv --replica "$TMP/rep" --once --no-fsync
zd-track synth:pages=1024,dirty=16,seed=1 --epochs 5 --interval 0 --grace 0 2>/dev/null | zd-send "127.0.0.1:$RECV_PORT" >/dev/null 2>&1
wait
out=$(zd status "$TMP/rep")
[[ $out == *"epoch 5"* ]] && ok "zd status DIR: the replica's epoch" || not_ok "zd status DIR" "$out"

# An installed zd (no source tree beside it) and no /dev/kvm: one line, exit 4.
if [ -c /dev/kvm ]; then
	skip "installed zd without /dev/kvm: demo exits 4" "this host has /dev/kvm"
else
	make -C "$ZD_TOP" --no-print-directory -s install PREFIX=/ DESTDIR="$TMP/inst" >/dev/null
	expect_fail "installed zd without /dev/kvm: demo exits 4" 4 "demo: needs /dev/kvm" "$TMP/inst/bin/zd" demo
fi
# SIGINT to zd measure / zd demo, as Ctrl-C on a terminal sends it (to the
# command's process group) and as kill -INT or timeout -s INT do (to the
# script alone). The script's own background jobs ignore SIGINT and its zd
# run is in a session of its own, so it is the script's trap that must stop
# them: nothing it started may outlive it. Every process it starts inherits
# ZD_TEST_TAG, which is how they are found.
# tagged TAG: PIDs of the live processes whose environment has TAG.
tagged() {
	local e p
	for e in /proc/[0-9]*/environ; do
		p=${e#/proc/}; p=${p%/environ}
		{ tr '\0' '\n' <"$e"; } 2>/dev/null | grep -qx "ZD_TEST_TAG=$1" && echo "$p"
	done
	return 0
}
none_tagged() { [ -z "$(tagged "$1")" ]; }
# ready_or_gone FILE PATTERN PID: FILE matches PATTERN, or PID ended.
ready_or_gone() { grep -qE "$2" "$1" 2>/dev/null || gone "$3"; }
# interrupt WHAT TAG TO READY_FILE READY_PATTERN CMD...: start CMD, wait
# until READY_FILE matches READY_PATTERN (its background jobs run), SIGINT
# it: TO group, its process group; TO script, the script alone.
interrupt() {
	local what=$1 tag=$2 to=$3 file=$4 pat=$5 pid left rc
	shift 5
	# Job control: the command gets a process group of its own, and SIGINT
	# is not ignored in it (as in any background job of a script). One
	# ignored already when this test started (make check run as a
	# background job, nohup) would be ignored by the command too, and a
	# shell cannot trap it: env puts it back to its default.
	set -m
	ZD_TEST_TAG=$tag env --default-signal=INT "$@" >"$TMP/$tag.out" 2>"$TMP/$tag.err" &
	pid=$!
	set +m
	at_exit "for p in \$(tagged $tag); do kill -KILL \$p; done"
	wait_for 60 ready_or_gone "$file" "$pat" $pid
	if ! grep -qE "$pat" "$file" 2>/dev/null; then
		not_ok "$what" "never ready: $(tail -n 3 "$TMP/$tag.err")"
		kill -KILL $pid 2>/dev/null
		return
	fi
	if [ "$to" = group ]; then kill -INT -- -$pid; else kill -INT $pid; fi
	if ! wait_for 30 gone $pid; then
		not_ok "$what" "still running 30 s after SIGINT: $(tail -n 3 "$TMP/$tag.err"); its processes: $(for p in $(tagged "$tag"); do ps -o pid=,stat=,wchan:20=,args= -p "$p"; done)"
		kill -KILL -- -$pid 2>/dev/null
		return
	fi
	wait $pid
	rc=$?
	wait_for 10 none_tagged "$tag"
	left=$(tagged "$tag")
	if [ -n "$left" ]; then
		not_ok "$what" "still running: $(for p in $left; do tr '\0' ' ' <"/proc/$p/cmdline"; echo; done)"
	elif [ $rc != 130 ]; then
		not_ok "$what" "exit $rc, want 130; stderr: $(tail -n 3 "$TMP/$tag.err")"
	else
		ok "$what"
	fi
}
if have_kvm; then
	interrupt "Ctrl-C to zd measure mid-run: none of its processes left" zdm$$ group \
		"$TMP/m2/send.log" . zd measure --epochs 100000 "$TMP/m2"
	interrupt "SIGINT to zd measure's script mid-run: none of its processes left" zdm2$$ script \
		"$TMP/m3/send.log" . zd measure --epochs 100000 "$TMP/m3"
	interrupt "Ctrl-C to zd demo at the failover: none of its processes left" zdd$$ group \
		"$TMP/d/failover/recv.err" "epoch [0-9]* committed" zd demo --seconds 1 --keep "$TMP/d"
	interrupt "SIGINT to zd demo's script at the failover: none of its processes left" zdd2$$ script \
		"$TMP/d2/failover/recv.err" "epoch [0-9]* committed" zd demo --seconds 1 --keep "$TMP/d2"
else
	skip "SIGINT to zd measure / zd demo" "no /dev/kvm here (under QEMU they would take minutes)"
fi
done_testing
