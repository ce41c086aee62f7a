#!/usr/bin/env bash
# What the make targets install: never a kernel, a hypervisor, a boot
# loader or a server. On Debian, installing xen-hypervisor adds Xen to GRUB
# (by default as the entry the machine boots), linux-image changes the boot
# entries, and openssh-server starts an sshd. The tests' QEMU hosts get
# their kernel, Xen and sshd unpacked into $BUILD/debroot instead
# (tests/lib/debroot.sh).
#
# For each package list the Makefile installs (make: build; make demo:
# build + demo; make deps / make check / CI: build + test), apt computes
# what it would install on a machine with nothing installed (an empty dpkg
# status: more than a fresh Debian would get, never less); none of it may
# be one of those. Then `make deps-demo` runs here, and dpkg's list before
# and after must not differ by one of those either.
. "$(dirname "$0")/../lib/tap.sh"

BAD='^(linux-image-|xen-hypervisor|xen-system-|grub-|grub2|openssh-server$|systemd$|.*-server$)'

if ! command -v apt-get >/dev/null || ! apt-cache policy build-essential 2>/dev/null | grep -q 'Candidate: [0-9]'; then
	skip "package lists" "needs apt with package lists (a Debian machine after apt-get update)"
	done_testing
fi

: >"$TMP/empty-status"
for list in build demo test; do
	pkgs=$(make -s -C "$ZD_TOP" print-deps LIST=$list)
	if ! apt-get -s -q -o Dir::State::status="$TMP/empty-status" install --no-install-recommends $pkgs \
		>"$TMP/$list.sim" 2>&1; then
		not_ok "apt resolves the $list list" "$(tail -3 "$TMP/$list.sim")"
		continue
	fi
	n=$(grep -c '^Inst ' "$TMP/$list.sim")
	bad=$(awk '/^Inst / { print $2 }' "$TMP/$list.sim" | grep -E "$BAD")
	if [ "$n" -gt 0 ] && [ -z "$bad" ]; then
		ok "the $list list ($(echo $pkgs | wc -w) packages, $n with their dependencies) holds no kernel, hypervisor, boot loader or server"
	else
		not_ok "the $list list holds no kernel, hypervisor, boot loader or server" "$n to install; among them: $bad"
	fi
done

# The same check must catch them: the list the tests used to install.
pkgs="$(make -s -C "$ZD_TOP" print-deps LIST=build) linux-image-amd64 xen-hypervisor-4.17-amd64 openssh-server"
bad=$(apt-get -s -q -o Dir::State::status="$TMP/empty-status" install --no-install-recommends $pkgs 2>/dev/null |
	awk '/^Inst / { print $2 }' | grep -E "$BAD" | sort | tr '\n' ' ')
case $bad in
*linux-image-*) case $bad in *xen-hypervisor-*) case $bad in *openssh-server*)
	ok "the check finds them when a list has them: $bad" ;; *) false ;; esac ;; *) false ;; esac ;;
*) false ;;
esac || not_ok "the check finds a kernel, Xen and sshd in a list that has them" "found: $bad"

if grep -Eq 'linux-image|xen-hypervisor|openssh-server' "$ZD_TOP/.ci/run"; then
	not_ok "CI installs from the Makefile's list only" "$(grep -En 'linux-image|xen-hypervisor|openssh-server' "$ZD_TOP/.ci/run")"
else
	ok "CI installs from the Makefile's list only"
fi

if [ "$(id -u)" != 0 ]; then
	skip "make deps-demo installs nothing it must not" "needs root"
else
	dpkg-query -W -f='${Package} ${Status}\n' | awk '/install ok installed/ { print $1 }' | sort >"$TMP/before"
	if make -s -C "$ZD_TOP" deps-demo >"$TMP/deps-demo.out" 2>&1; then
		dpkg-query -W -f='${Package} ${Status}\n' | awk '/install ok installed/ { print $1 }' | sort >"$TMP/after"
		new=$(comm -13 "$TMP/before" "$TMP/after")
		bad=$(echo "$new" | grep -E "$BAD")
		[ -z "$bad" ] && ok "make deps-demo installs nothing it must not ($(echo $new | wc -w) new packages)" ||
			not_ok "make deps-demo installs nothing it must not" "new: $bad"
	else
		not_ok "make deps-demo runs" "$(tail -3 "$TMP/deps-demo.out")"
	fi
fi
done_testing
