#!/usr/bin/env bash
#
# make demo-stop: stop the cluster that make demo started in ./demo, and
# remove ./demo.  Only that cluster is touched: pg_ctl signals the
# postmaster named in ./demo/data/postmaster.pid.
#
set -euo pipefail

cd "$(dirname "$0")/../.."
DEMO_DIR=$PWD/demo
DATA=$DEMO_DIR/data
PG_CTL=/usr/lib/postgresql/15/bin/pg_ctl

if [ ! -e "$DEMO_DIR" ]; then
    echo "no demo in $DEMO_DIR"
    exit 0
fi

if [ -f "$DATA/postmaster.pid" ]; then
    # pg_ctl refuses to run as root: run it as the data directory's owner
    # (postgres when make demo ran as root).
    as_owner=()
    if [ "$(id -u)" = 0 ]; then
        as_owner=(runuser -u "$(stat -c %U "$DATA")" --)
    fi
    # A pid file can outlive its server (a reboot): status says whether the
    # server is running.
    if "${as_owner[@]}" "$PG_CTL" status -D "$DATA" >/dev/null; then
        "${as_owner[@]}" "$PG_CTL" stop -D "$DATA"
    fi
fi

rm -rf "$DEMO_DIR"
echo "demo stopped, $DEMO_DIR removed"
