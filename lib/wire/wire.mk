# lib/wire: authentication uses libsodium (Debian libsodium-dev), one of
# the Makefile's PKGS: checked by deps-ok and linked like the others.
