#!/usr/bin/env bash
#
# make sanitize: build the extension with AddressSanitizer and
# UndefinedBehaviorSanitizer, install it, and run the pg_regress and isolation
# suites of installcheck on throwaway clusters whose server processes carry
# the sanitizer runtime.  Fails on a failing suite, on any sanitizer report
# and on any server process that died by a signal.  The normal build is
# always reinstalled at the end.
#
# Usage: test/sanitize.sh [SOURCE_DIR]   (or MICROBATCH_SANITIZE_SRC=DIR)
# SOURCE_DIR defaults to this checkout; it is only read (a snapshot is built).
#
set -euo pipefail

cd "$(dirname "$0")/.."
SRC_DIR=$(cd "${1:-${MICROBATCH_SANITIZE_SRC:-.}}" && pwd)
PG_MAJOR=15
PG_BINDIR=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PG_BINDIR/pg_config
TEST_USER=${MICROBATCH_TEST_USER:-postgres}
PACKAGES="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-client-$PG_MAJOR make gcc libasan8 libubsan1"
SAN_COPT='-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1'

. test/lib.sh
mb_install_packages $PACKAGES

start=$SECONDS
# A snapshot, so that edits made meanwhile in SRC_DIR cannot mix two versions
# into one build, and the instrumented objects never land in SRC_DIR.
work=$(mktemp -d /tmp/microbatch-sanitize.XXXXXX)
tree=$work/tree
mkdir "$tree"
tar -C "$SRC_DIR" --exclude=./tmp_check --exclude=./tmp_check_regress --exclude=./tmp_check_iso \
    --exclude=./results --exclude=./output_iso --exclude=./.git \
    --exclude='*.o' --exclude='*.bc' --exclude='*.so' -cf - . | tar -xf - -C "$tree"

mk() { make -s --no-print-directory -C "$tree" PG_CONFIG="$PG_CONFIG" "$@"; }

# Whatever happens, leave the uninstrumented library installed: an
# instrumented one cannot even be loaded by a server without libasan.
restore() {
    local status=$?
    trap - EXIT
    echo "== restore: rebuilding and reinstalling the normal build"
    if ! { mk clean && mk && mb_as_root make -s --no-print-directory -C "$tree" PG_CONFIG="$PG_CONFIG" install; }; then
        echo "sanitize: could not reinstall the normal build" >&2
        [ "$status" -ne 0 ] || status=1
    fi
    rm -rf "$work"
    exit "$status"
}
trap restore EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== sanitized build of $SRC_DIR"
mk clean
mk COPT="$SAN_COPT"
nm -D "$tree/microbatch.so" > "$work/symbols"
for sym in __asan_init __ubsan_handle; do
    grep -q "$sym" "$work/symbols" \
        || { echo "sanitize: microbatch.so has no $sym: not instrumented" >&2; exit 1; }
done
mb_as_root make -s --no-print-directory -C "$tree" PG_CONFIG="$PG_CONFIG" install

# The suites, as installcheck defines them, so new ones are picked up.
print_var() { mk --eval 'mb-print-%: ; @printf "%s\n" "$($*)"' "mb-print-$1"; }
REGRESS=$(print_var REGRESS)
ISOLATION=$(print_var ISOLATION)
# the throwaway clusters' options (--temp-config=test/microbatch.conf)
REGRESS_OPTS=$(MB_TEMP_INSTANCE=1 print_var REGRESS_OPTS)

logs=$work/logs
mkdir -p "$logs/sanitizer" "$logs/server"
libasan=$(gcc -print-file-name=libasan.so)
libubsan=$(gcc -print-file-name=libubsan.so)
[ -f "$libasan" ] && [ -f "$libubsan" ] || { echo "sanitize: no libasan/libubsan for gcc" >&2; exit 1; }

# A small library preloaded with the runtimes, for two problems of theirs in
# a server that is not instrumented:
# - gcc 12's libasan, preloaded, initializes lazily inside the first malloc,
#   here one made under glibc's gettext lock (libgpg-error's constructor);
#   its dlsym("swift_demangle") then fails and the dlerror() that follows
#   corrupts that lock, so every process hangs in exit().  A swift_demangle
#   that is found avoids dlerror(); it returns NULL, so demangling falls back
#   to the usual one.
# - libubsan initializes at its first report and reads UBSAN_OPTIONS from
#   /proc/self/environ, which PostgreSQL has overwritten with the process
#   title by then; getenv() still sees the variable, so the options are
#   handed over as the runtime's default options.  (Its log_path has no
#   effect: its call to set it reaches libasan's copy of that function, so
#   UBSan reports go to the server log, which is scanned too.)
cat > "$work/preload.c" <<'EOF'
#include <stddef.h>
#include <stdlib.h>
char *swift_demangle(const char *name, size_t len, char *buf, size_t *buflen, unsigned flags)
{ return NULL; }
const char *__ubsan_default_options(void)
{ const char *o = getenv("UBSAN_OPTIONS"); return o ? o : ""; }
EOF
gcc -shared -fPIC -O2 -o "$work/preload.so" "$work/preload.c"

# Only the server gets the runtime: the clients are not what is tested (and
# psql and initdb hung in exit() under a bare preload).  pg_regress runs
# "<bindir>/postgres", so a bindir whose postgres is this wrapper does it;
# initdb and psql stay the stock ones.  Background workers and backends are
# forked from the postmaster and so carry the runtime too.  The copy of the
# server's output outlives the temp instance, which pg_regress removes when
# a suite passes.
bin=$work/bin
mkdir "$bin"
for f in "$PG_BINDIR"/*; do ln -s "$f" "$bin/"; done
rm "$bin/postgres"
cat > "$bin/postgres" <<EOF
#!/bin/bash
exec > >(exec tee -a "$logs/server/postmaster.\$\$.log") 2>&1
# libasan must come first; preload.so before libubsan, whose own weak
# __ubsan_default_options it overrides.
export LD_PRELOAD="$libasan $work/preload.so $libubsan"
# detect_leaks=0: PostgreSQL leaves memory to process exit.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1:log_path=$logs/sanitizer/report"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1:log_path=$logs/sanitizer/report"
exec "$PG_BINDIR/postgres" "\$@"
EOF
chmod 755 "$bin/postgres"

# Proof that the runtime reached the backend and every long-lived process
# forked from the postmaster, the extension's workers among them (a suite of
# its own, so the real suites run unchanged).  /proc/PID/environ cannot show
# the options: PostgreSQL writes its process titles over that memory.
chk=$work/check
mkdir -p "$chk/sql" "$chk/expected"
cat > "$chk/sql/sanitizer_runtime.sql" <<'EOF'
CREATE FUNCTION pg_temp.maps(p int) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN pg_read_file('/proc/' || p || '/maps');
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;  -- the process has exited meanwhile
END $$;
DO $$
BEGIN
    FOR i IN 1..300 LOOP
        EXIT WHEN EXISTS (SELECT FROM pg_stat_activity WHERE backend_type LIKE 'microbatch%');
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
WITH p AS (
    SELECT backend_type LIKE 'microbatch%' AS microbatch,
           pg_temp.maps(pid) ~ '/libasan\.so' AS asan,
           pg_temp.maps(pid) ~ '/libubsan\.so' AS ubsan
    FROM pg_stat_activity
    WHERE pid = pg_backend_pid() OR backend_type NOT IN ('client backend', 'autovacuum worker')
)
SELECT count(*) FILTER (WHERE microbatch) > 0 AS microbatch_workers_seen,
       bool_and(asan) AS all_have_libasan,
       bool_and(ubsan) AS all_have_libubsan,
       count(*) > 3 AS several_processes
FROM p WHERE asan IS NOT NULL;
EOF
# pg_regress echoes the queries and runs psql quietly: the expected output is
# the script followed by the one result.
{ cat "$chk/sql/sanitizer_runtime.sql"; cat <<'EOF'; } > "$chk/expected/sanitizer_runtime.out"
 microbatch_workers_seen | all_have_libasan | all_have_libubsan | several_processes 
-------------------------+------------------+-------------------+-------------------
 t                       | t                | t                 | t
(1 row)

EOF

if [ "$(id -u)" = 0 ]; then
    chown -R "$TEST_USER" "$work"
    run() { runuser -u "$TEST_USER" -- env PATH="$PG_BINDIR:$PATH" "$@"; }
else
    run() { env PATH="$PG_BINDIR:$PATH" "$@"; }
fi
# The suites run with make's own pg_regress command lines, on throwaway
# clusters (MB_TEMP_INSTANCE); only the bindir differs (EXTRA_REGRESS_OPTS
# comes after pgxs's --bindir).
suite() { run make -s --no-print-directory -C "$tree" PG_CONFIG="$PG_CONFIG" TAP_TESTS= \
    MB_TEMP_INSTANCE=1 EXTRA_REGRESS_OPTS="--bindir=$bin" installcheck "$@"; }

failed=()
runs=0
echo "== sanitizer runtime check (as $(run id -un))"
runs=$((runs + 1))
suite ISOLATION= REGRESS=sanitizer_runtime \
    REGRESS_OPTS="$REGRESS_OPTS --inputdir=$chk --outputdir=$chk --temp-instance=$chk/tmp_check" \
    || failed+=("sanitizer runtime check")
if [ -n "$REGRESS" ]; then
    echo "== regression suites: $REGRESS"
    runs=$((runs + 1))
    suite ISOLATION= || failed+=(regression)
fi
if [ -n "$ISOLATION" ]; then
    echo "== isolation suites: $ISOLATION"
    runs=$((runs + 1))
    suite REGRESS= || failed+=(isolation)
fi

# Each run starts one postmaster through the wrapper; fewer logs means a
# server was started some other way, without the runtime.
server_logs=("$logs"/server/postmaster.*.log)
[ -e "${server_logs[0]}" ] || server_logs=()
if [ "${#server_logs[@]}" -lt "$runs" ]; then
    failed+=("only ${#server_logs[@]} of $runs servers started through the sanitizer wrapper")
fi
reports=$(find "$logs/sanitizer" -type f | sort)
if [ -n "$reports" ]; then
    failed+=("sanitizer reports")
fi
crashes=$(grep -h -E 'terminated by signal|was terminated|AddressSanitizer|UndefinedBehaviorSanitizer|: runtime error: ' \
    "${server_logs[@]}" /dev/null || true)
if [ -n "$crashes" ]; then
    failed+=("server processes killed by a signal or sanitizer messages in the server log")
fi

elapsed=$((SECONDS - start))
if [ "${#failed[@]}" -eq 0 ]; then
    echo "microbatch sanitize passed: no sanitizer report, no crashed process (${elapsed}s)"
    exit 0
fi

for f in $reports; do
    echo "== sanitizer report $f"
    cat "$f"
done
if [ -n "$crashes" ]; then
    echo "== server log lines"
    printf '%s\n' "$crashes"
    # UBSan reports with their stack traces (see preload.c for why they are here).
    grep -h -A 20 ': runtime error: ' "${server_logs[@]}" /dev/null || true
fi
for diffs in "$tree"/regression.diffs "$tree"/output_iso/regression.diffs "$chk"/regression.diffs; do
    [ -f "$diffs" ] && { echo "== $diffs"; head -n 300 "$diffs"; }
done
for log in "${server_logs[@]}"; do
    grep -q -E 'terminated by signal|was terminated|PANIC|Sanitizer|: runtime error: ' "$log" || continue
    echo "== $log (last 60 lines)"
    tail -n 60 "$log"
done
printf 'microbatch sanitize FAILED (%ss): %s\n' "$elapsed" "$(IFS=';'; echo "${failed[*]}")"
exit 1
