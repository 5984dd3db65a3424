#!/bin/sh
# EDGECERT_RELOAD_COMMAND when nginx or HAProxy terminates TLS with edgecert's certificates.
#
# edgecert itself rewrites $EDGECERT_STATE_DIR/exports/ (nginx-servers.conf, nginx-map.conf, haproxy.crt-list) on
# every certificate change, then runs this hook with EDGECERT_STATE_DIR and EDGECERT_HOSTNAMES set. The hook runs
# as the unprivileged edgecert user, so it does not reload the proxy itself: it
#   1. writes $EDGECERT_STATE_DIR/proxy/haproxy-default.pem: edgecert's default certificate and key in one file,
#      as HAProxy wants it (0600);
#   2. touches $EDGECERT_STATE_DIR/proxy/reload.stamp, which deploy/systemd/edgecert-proxy-reload.path watches:
#      systemd (root) then checks the proxy's configuration and reloads it.
# Run it once by hand before the proxy first starts:
#   sudo -u edgecert env EDGECERT_STATE_DIR=/var/lib/edgecert/state /opt/edgecert/deploy/edgecert-proxy-hook.sh
set -eu
umask 077

state="${EDGECERT_STATE_DIR:?EDGECERT_STATE_DIR is not set: run this as EDGECERT_RELOAD_COMMAND}"
out="$state/proxy"
mkdir -p "$out"
if [ -f "$state/default/cert.pem" ] && [ -f "$state/default/key.pem" ]; then
    cat "$state/default/cert.pem" "$state/default/key.pem" > "$out/.haproxy-default.pem.$$"
    mv -f "$out/.haproxy-default.pem.$$" "$out/haproxy-default.pem"
fi
date +%s > "$out/reload.stamp"
echo "proxy reload requested for ${EDGECERT_HOSTNAMES:-all}"
