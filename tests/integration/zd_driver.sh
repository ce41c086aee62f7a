#!/usr/bin/env bash
# The zd driver script: syntax, --help/--version, argument errors (one line,
# exit 2), a missing VM socket (exit 4), zd status on a real replica; and
# bash -n over every shell script we ship (driver, bench, completions).
. "$(dirname "$0")/../lib/tap.sh"

for f in "$ZD_TOP/cmd/zd.sh" "$ZD_TOP/bench/table1.sh" "$ZD_TOP/completions/bash/zd" \
	"$ZD_TOP/completions/bash/zd-client"; do
	check "bash -n ${f#"$ZD_TOP"/}" bash -n "$f"
done
out=$(zd --help)
[ $? = 0 ] && [[ $out == "usage: zd run [--mode M]"* ]] && ok "--help: usage on stdout" || not_ok "--help" "$out"
[ "$(zd --version)" = "zd 0.1.0" ] && ok "--version" || not_ok "--version" "$(zd --version)"

expect_fail "no command" 2 "^zd: missing command" zd
expect_fail "unknown command" 2 "^zd: unknown command 'fly'" zd fly
expect_fail "run: no arguments" 2 "run: want VM_CONTROL_SOCKET BACKUP, got 0 arguments" zd run
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
expect_fail "run: BACKUP without a port" 2 "BACKUP 'host2': want HOST:PORT or local:DIR" zd run "$TMP/s.sock" host2
expect_fail "run: local: without DIR" 2 "local: wants a directory" zd run "$TMP/s.sock" local:
expect_fail "status: no DIR" 2 "status: want DIR" zd status
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
	mkdir -p "$TMP/inst/bin"
	cp "$ZD_TOP/bin/zd" "$TMP/inst/bin/zd"
	expect_fail "installed zd without /dev/kvm: demo exits 4" 4 "demo: needs /dev/kvm" "$TMP/inst/bin/zd" demo
fi
done_testing
