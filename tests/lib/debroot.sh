#!/usr/bin/env bash
# debroot.sh — the Debian packages our QEMU test hosts boot, unpacked into
# the build tree instead of installed on this machine.
#
#   tests/lib/debroot.sh unpack [kernel|xen|sshd|ocf]...
#                                  fetch (apt-get download) and unpack them
#                                  (default: all four)
#   tests/lib/debroot.sh root       print the unpacked tree's path, or fail
#
# tests/lib/vmhost.sh boots a Debian kernel in QEMU, tests/lib/xenhost.sh
# boots Xen with that kernel as dom0, and tests/integration/wire.sh runs an
# sshd. Installing linux-image, xen-hypervisor or openssh-server for that
# would change how this machine boots (Debian adds Xen to GRUB, by default
# as the entry it boots) or start a server on it. So `make deps` (as root,
# as CI runs it) unpacks them with dpkg-deb -x into $BUILD/debroot/root,
# runs no maintainer script, and the harnesses look there first (then in
# the host's /boot, /lib/modules and /usr/lib/xen-4.17, for a machine that
# has them installed anyway).
#
# The libraries xl and sshd link against are ordinary Debian libraries
# (the Makefile's DEB_TEST installs them); only these packages are
# unpacked:
#   linux-image-amd64's kernel package (its depmod runs here, on the tree),
#   xen-hypervisor-4.17-amd64, xen-utils-4.17, xen-utils-common, xenstore-utils,
#   openssh-server, resource-agents (ocf-tester and ocf-shellfuncs for
#   tests/e2e/ocf_agent.sh: its cluster-glue dependency would start a
#   daemon).
# A package is fetched again only when apt's candidate version changes
# (a stamp in $BUILD/debroot/stamps names the version unpacked).
#
# Exit status: 0; 1 a package could not be fetched or unpacked (one line
# says which); 2 usage.
set -u

DEBROOT_SELF=$(readlink -f "${BASH_SOURCE[0]}")
ZD_TOP=${ZD_TOP:-$(cd "$(dirname "$DEBROOT_SELF")/../.." && pwd)}
BUILD=${BUILD:-build}
case $BUILD in /*) DEBROOT=$BUILD/debroot ;; *) DEBROOT=$ZD_TOP/$BUILD/debroot ;; esac
DEBROOT_ROOT=$DEBROOT/root

debroot_err() { echo "debroot: $*" >&2; }

# The kernel package linux-image-amd64 stands for (linux-image-6.1.0-N-amd64).
debroot_kernel_pkg() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1
}

# debroot_pkgs [kernel|xen|sshd]...: the packages of those parts.
debroot_pkgs() {
	local k part
	[ $# -gt 0 ] || set -- kernel xen sshd ocf
	for part in "$@"; do
		case $part in
		kernel)
			k=$(debroot_kernel_pkg)
			[ -n "$k" ] || { debroot_err "apt knows no kernel behind linux-image-amd64 (apt-get update?)"; return 1; }
			echo "$k" ;;
		xen) echo xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common xenstore-utils ;;
		sshd) echo openssh-server ;;
		ocf) echo resource-agents ;;
		*) debroot_err "unknown part '$part': want kernel, xen, sshd or ocf"; return 2 ;;
		esac
	done
}

# debroot_unpack_one PKG: fetch the candidate version and unpack it, unless
# that version is unpacked already.
debroot_unpack_one() {
	local pkg=$1 ver stamp deb
	ver=$(apt-cache policy "$pkg" 2>/dev/null | sed -n 's/^ *Candidate: //p')
	if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
		debroot_err "apt has no candidate for $pkg (apt-get update?)"
		return 1
	fi
	stamp=$DEBROOT/stamps/$pkg=$ver
	[ -e "$stamp" ] && return 0
	mkdir -p "$DEBROOT/debs" "$DEBROOT/stamps" "$DEBROOT_ROOT"
	rm -f "$DEBROOT/debs/${pkg}_"*.deb
	(cd "$DEBROOT/debs" && apt-get download -q "$pkg=$ver" >/dev/null 2>"$DEBROOT/debs/$pkg.err") || {
		debroot_err "cannot download $pkg $ver: $(tail -1 "$DEBROOT/debs/$pkg.err")"
		return 1
	}
	deb=$(ls "$DEBROOT/debs/${pkg}_"*.deb)
	dpkg-deb -x "$deb" "$DEBROOT_ROOT" || { debroot_err "cannot unpack $deb"; return 1; }
	rm -f "$deb"
	rm -f "$DEBROOT/stamps/$pkg="*
	touch "$stamp"
	echo "debroot: unpacked $pkg $ver"
}

debroot_unpack() {
	local pkgs p v
	command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null ||
		{ debroot_err "needs apt-get and dpkg-deb (a Debian machine)"; return 1; }
	pkgs=$(debroot_pkgs "$@") || return
	for p in $pkgs; do
		debroot_unpack_one "$p" || return 1
	done
	# The kernel package's postinst would run depmod; the harnesses read
	# modules.dep.
	for v in "$DEBROOT_ROOT"/lib/modules/*/; do
		[ -d "$v" ] || continue
		v=$(basename "$v")
		[ -e "$DEBROOT_ROOT/lib/modules/$v/modules.dep" ] && [ "$DEBROOT_ROOT/lib/modules/$v/modules.dep" -nt "$DEBROOT_ROOT/boot/vmlinuz-$v" ] && continue
		/sbin/depmod -b "$DEBROOT_ROOT" "$v" || { debroot_err "depmod $v failed"; return 1; }
	done
}

# debroot_root: the unpacked tree, if there is one.
debroot_root() {
	[ -d "$DEBROOT_ROOT" ] && echo "$DEBROOT_ROOT"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	case ${1:-} in
	unpack) shift; debroot_unpack "$@"; exit $? ;;
	root) debroot_root; exit $? ;;
	*) debroot_err "usage: debroot.sh unpack [kernel|xen|sshd|ocf]... | root"; exit 2 ;;
	esac
fi
