#!/usr/bin/env bash
#
# make test: install what is missing (as root, with apt), build with warnings
# as errors, install the extension, and run every suite (pg_regress,
# isolation, TAP), each on throwaway clusters of its own; then the pg_regress
# and isolation suites twice against one running server (plain make
# installcheck, as PGXS users run it; twice, so that a rerun is proven to
# work), then against an AddressSanitizer and UndefinedBehaviorSanitizer
# build (make sanitize), and last the Debian package (test/package.sh: build,
# dpkg -i, CREATE EXTENSION; root only).  PostgreSQL refuses to run as root,
# so as root the suites run as an unprivileged user in a scratch copy of the
# tree.
#
set -euo pipefail

cd "$(dirname "$0")/.."
PG_MAJOR=15
PG_BINDIR=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PG_BINDIR/pg_config
TEST_USER=${MICROBATCH_TEST_USER:-postgres}
# prometheus and its PostgreSQL exporter: test/t/023_prometheus.pl scrapes them.
PACKAGES="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-client-$PG_MAJOR libipc-run-perl make gcc
    prometheus prometheus-postgres-exporter"

. test/lib.sh
mb_install_packages $PACKAGES
# They are installed now: test/t/023_prometheus.pl fails rather than skips
# without them.
export MICROBATCH_REQUIRE_EXPORTER=1 MICROBATCH_REQUIRE_PROMETHEUS=1

# Citus, for test/t/027_citus.pl: built from the source in ../shared/vendor
# when it is there (CI); without either, that test skips and says why.
citus_build=../shared/vendor/build-citus.sh
if [ -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ]; then
    export MICROBATCH_REQUIRE_CITUS=1
elif [ -f "$citus_build" ]; then
    echo "== building Citus from $citus_build"
    mb_as_root env PG_CONFIG="$PG_CONFIG" bash "$citus_build"
    export MICROBATCH_REQUIRE_CITUS=1
else
    echo "== Citus is not installed and ../shared/vendor has no source: test/t/027_citus.pl skips"
fi

echo "== build (warnings are errors)"
make -s PG_CONFIG="$PG_CONFIG" clean
make -s PG_CONFIG="$PG_CONFIG" COPT='-Werror'
echo "== install"
mb_as_root make -s PG_CONFIG="$PG_CONFIG" install

# The running server of the installcheck step, stopped here whatever happens
# (only that one, by its data directory).
server=
cleanup() {
    local status=$?
    trap - EXIT
    [ -z "$server" ] || mb_stop_server run "$server" || true
    [ -z "$server" ] || rm -rf "$server"
    [ "$workdir" = "$PWD" ] || rm -rf "$workdir"
    exit "$status"
}
if [ "$(id -u)" = 0 ]; then
    workdir=$(mktemp -d /tmp/microbatch-test.XXXXXX)
    trap cleanup EXIT
    tar --exclude=./tmp_check --exclude=./tmp_check_regress --exclude=./tmp_check_iso \
        --exclude=./results --exclude=./output_iso \
        --exclude=./.git -cf - . | tar -xf - -C "$workdir"
    chown -R "$TEST_USER" "$workdir"
    run() { runuser -u "$TEST_USER" -- env PATH="$PG_BINDIR:$PATH" "$@"; }
else
    workdir=$PWD
    trap cleanup EXIT
    run() { env PATH="$PG_BINDIR:$PATH" "$@"; }
fi

show_failure() {
    for diffs in "$workdir"/regression.diffs "$workdir"/output_iso/regression.diffs; do
        [ -f "$diffs" ] && { echo "== $diffs"; cat "$diffs"; }
    done
    for log in "$workdir"/tmp_check/log/* "$workdir"/tmp_check_regress/log/* "$workdir"/tmp_check_iso/log/* \
        ${server:+"$server"/server.log}; do
        [ -f "$log" ] && { echo "== $log"; tail -n 60 "$log"; }
    done
    return 0
}

echo "== regression, isolation and TAP suites (as $(run id -un))"
status=0
# MB_TEMP_INSTANCE=1: the regress and isolation suites on throwaway clusters
# with test/microbatch.conf.
run make -C "$workdir" PG_CONFIG="$PG_CONFIG" MB_TEMP_INSTANCE=1 installcheck || status=$?
if [ "$status" -ne 0 ]; then
    show_failure
    echo "microbatch tests FAILED"
    exit "$status"
fi

# Plain make installcheck against a server started here with
# test/microbatch.conf: the TAP tests start clusters of their own and ran
# above (TAP_TESTS= turns them off).  The second run shows that a rerun on the
# same server passes (roles are cluster-wide, and stay behind otherwise).
server=$(mktemp -d /tmp/microbatch-server.XXXXXX)
[ "$(id -u)" != 0 ] || chown "$TEST_USER" "$server"
port=$(mb_free_port)
echo "== regression and isolation suites against a running server (port $port), twice"
mb_start_server run "$server" "$port" test/microbatch.conf
for round in 1 2; do
    echo "== make installcheck against the running server, run $round of 2"
    run env PGHOST="$server" PGPORT="$port" PGUSER=postgres \
        make -C "$workdir" PG_CONFIG="$PG_CONFIG" TAP_TESTS= installcheck || status=$?
    if [ "$status" -ne 0 ]; then
        show_failure
        echo "microbatch tests FAILED (make installcheck against a running server, run $round)"
        exit "$status"
    fi
done
mb_stop_server run "$server"
rm -rf "$server"
server=

echo "== memory checker: regression and isolation suites under ASan and UBSan"
if ! bash test/sanitize.sh; then
    echo "microbatch tests FAILED (memory checker)"
    exit 1
fi

# Last: it leaves the package installed, whose files are those make install
# put there (same tree, same paths).
if [ "$(id -u)" = 0 ]; then
    echo "== Debian package: build, dpkg -i, CREATE EXTENSION on a throwaway cluster"
    if ! bash test/package.sh; then
        echo "microbatch tests FAILED (package)"
        exit 1
    fi
else
    echo "== Debian package: skipped, dpkg -i needs root (make deb builds it); version check only"
    bash test/package.sh --versions || { echo "microbatch tests FAILED (versions)"; exit 1; }
fi
echo "microbatch tests passed"
