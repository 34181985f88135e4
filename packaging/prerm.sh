#!/bin/sh
# Stop xipvsd before its files go (its XDP programs stay attached while
# pinned; "xipvsd --cleanup" detaches them).
set -e
# Installed into another root (dpkg --root): not this system's systemd.
[ -z "$DPKG_ROOT" ] || exit 0
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl stop xipvsd.service 2>/dev/null || true
fi
