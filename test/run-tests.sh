#!/usr/bin/env bash
#
# make test: install what is missing (as root, with apt), build with warnings
# as errors, install the extension, and run every suite (pg_regress,
# isolation, TAP), then the pg_regress and isolation suites again against an
# AddressSanitizer and UndefinedBehaviorSanitizer build (make sanitize).  PostgreSQL refuses to run as root, so as root the suites
# run as an unprivileged user in a scratch copy of the tree; every suite
# starts and stops its own throwaway cluster.
#
set -euo pipefail

cd "$(dirname "$0")/.."
PG_MAJOR=15
PG_BINDIR=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PG_BINDIR/pg_config
TEST_USER=${MICROBATCH_TEST_USER:-postgres}
PACKAGES="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-client-$PG_MAJOR libipc-run-perl make gcc"

. test/lib.sh
mb_install_packages $PACKAGES

echo "== build (warnings are errors)"
make -s PG_CONFIG="$PG_CONFIG" clean
make -s PG_CONFIG="$PG_CONFIG" COPT='-Werror'
echo "== install"
mb_as_root make -s PG_CONFIG="$PG_CONFIG" install

if [ "$(id -u)" = 0 ]; then
    workdir=$(mktemp -d /tmp/microbatch-test.XXXXXX)
    trap 'rm -rf "$workdir"' EXIT
    tar --exclude=./tmp_check --exclude=./tmp_check_regress --exclude=./tmp_check_iso \
        --exclude=./results --exclude=./output_iso \
        --exclude=./.git -cf - . | tar -xf - -C "$workdir"
    chown -R "$TEST_USER" "$workdir"
    run() { runuser -u "$TEST_USER" -- env PATH="$PG_BINDIR:$PATH" "$@"; }
else
    workdir=$PWD
    run() { env PATH="$PG_BINDIR:$PATH" "$@"; }
fi

echo "== regression, isolation and TAP suites (as $(run id -un))"
status=0
run make -C "$workdir" PG_CONFIG="$PG_CONFIG" installcheck || status=$?
if [ "$status" -ne 0 ]; then
    for diffs in "$workdir"/regression.diffs "$workdir"/output_iso/regression.diffs; do
        [ -f "$diffs" ] && { echo "== $diffs"; cat "$diffs"; }
    done
    for log in "$workdir"/tmp_check/log/* "$workdir"/tmp_check_regress/log/* "$workdir"/tmp_check_iso/log/*; do
        [ -f "$log" ] && { echo "== $log"; tail -n 60 "$log"; }
    done
    echo "microbatch tests FAILED"
    exit "$status"
fi

echo "== memory checker: regression and isolation suites under ASan and UBSan"
if ! bash test/sanitize.sh; then
    echo "microbatch tests FAILED (memory checker)"
    exit 1
fi
echo "microbatch tests passed"
