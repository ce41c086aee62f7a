#!/usr/bin/env bash
# The build: tools hardened (stack protector, FORTIFY_SOURCE,
# full RELRO, PIE), the user's CPPFLAGS and LDFLAGS taken, and a second
# make after a full one does nothing.
. "$(dirname "$0")/../lib/tap.sh"
cd "$ZD_TOP" || exit 1

for t in zd-recv zd-send zd-vm zd-track; do
	f=$ZD_BIN/$t
	hdr=$(readelf -lhd "$f" 2>&1)
	syms=$(readelf --dyn-syms -W "$f" 2>&1)
	why=
	grep -q "GNU_RELRO" <<<"$hdr" || why="$why no GNU_RELRO;"
	grep -qE "BIND_NOW|Flags: NOW" <<<"$hdr" || why="$why no BIND_NOW;"
	grep -q "DYN (Position-Independent Executable" <<<"$hdr" || why="$why not PIE;"
	grep -q "__stack_chk_fail" <<<"$syms" || why="$why no stack protector;"
	grep -qE "__[a-z]+_chk@" <<<"$syms" || why="$why no FORTIFY_SOURCE checks;"
	[ -z "$why" ] && ok "$t: PIE, full RELRO, stack protector, FORTIFY_SOURCE" || not_ok "$t: hardened" "$why"
done

# CPPFLAGS and LDFLAGS reach the compile and the link (make -n: nothing built).
out=$(make -n -B CPPFLAGS=-DZD_PROBE_CPP LDFLAGS=-Wl,--zd-probe-ld bin/zd-recv 2>&1)
grep -q -- "-DZD_PROBE_CPP" <<<"$out" && grep -q -- "-Wl,--zd-probe-ld" <<<"$out" &&
	ok "make honours CPPFLAGS and LDFLAGS" || not_ok "make honours CPPFLAGS and LDFLAGS" "$(grep -E 'zd-recv' <<<"$out" | head -3)"

# make check has just built everything: nothing is left to do.
out=$(make all 2>&1)
if grep -qE '^(cc|gcc|clang|ar|objcopy) ' <<<"$out"; then
	not_ok "a second make does nothing" "$(grep -E '^(cc|gcc|clang|ar|objcopy) ' <<<"$out" | head -3)"
else
	ok "a second make does nothing"
fi

done_testing
