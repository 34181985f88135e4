#!/bin/sh
# Make systemd see the unit; the service is not enabled or started: the
# interfaces in /etc/xipvs/xipvs.yaml are the admin's to set first.
set -e
# Installed into another root (dpkg --root): not this system's systemd.
[ -z "$DPKG_ROOT" ] || exit 0
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
fi
