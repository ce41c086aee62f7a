# lib/wire: authentication uses libsodium (Debian libsodium-dev).
LDLIBS += $(shell pkg-config --libs libsodium 2>/dev/null || echo -lsodium)
