# shellcheck shell=bash
# What the KVM failover test (tests/e2e/kvm_failover.sh) and bench
# (bench/failover.sh) read off zd-recv -v's log and zd-client --log while a
# primary is killed and the backup takes over. Sources wait.sh (wait_for,
# read_port, gone).
#
#   commits LOG               epochs committed so far ("epoch N committed")
#   at_least LOG N PID        N epochs committed, or the pipeline PID ended
#   answered LOG PID          the restored VM answered a client, or PID
#                             (zd-recv, then the restored zd-vm) ended
#   more_answers LOG N        zd-client --log has N answers or more
#   failovers LOG             zd-client's losses so far: the first answer
#                             after a loss carries a fifth number, that
#                             loss's failover time in ns
#   client_back LOG N PID     N losses got over, or PID ended

# shellcheck source=wait.sh
. "$(dirname "${BASH_SOURCE[0]}")/wait.sh"

commits() { grep -c 'epoch [0-9]* committed' "$1" 2>/dev/null || true; }
at_least() { [ "$(commits "$1")" -ge "$2" ] || gone "$3"; }
answered() { grep -q 'restored VM answered' "$1" || gone "$2"; }
more_answers() { [ "$(wc -l <"$1")" -ge "$2" ]; }
failovers() { awk 'NF == 5' "$1" 2>/dev/null | wc -l; }
client_back() { [ "$(failovers "$1")" -ge "$2" ] || gone "$3"; }
