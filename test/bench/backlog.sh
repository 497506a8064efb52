#!/usr/bin/env bash
#
# backlog.sh: what microbatch.freshness costs when a pipeline is behind.
#
# On a throwaway cluster with track_commit_timestamp on, a paused pipeline
# accumulates MB_BACKLOG_ROWS rows (default 1,000,000) in MB_BACKLOG_TXNS
# transactions (default 100,000: single rows and small batches, the case
# with the most distinct commit times to look up).  Then, in rounds that
# alternate their order, it times microbatch.rows_waiting() (a count
# through the tracking index) against microbatch.backlog() (the same pass,
# plus the oldest xid and the commit time of every row), and prints the
# median of each and of their ratio, measured in this run.  Uses the
# installed build (make install).  Run as root or as a user that can run
# PostgreSQL's binaries.
#
set -euo pipefail

cd "$(dirname "$0")/../.."
. test/lib.sh
PG_BINDIR=/usr/lib/postgresql/15/bin
ROWS=${MB_BACKLOG_ROWS:-1000000}
TXNS=${MB_BACKLOG_TXNS:-100000}
ROUNDS=${MB_BACKLOG_ROUNDS:-11}
RUN_USER=${MICROBATCH_BENCH_USER:-postgres}

dir=$(mktemp -d /tmp/microbatch-backlog.XXXXXX)
if [ "$(id -u)" = 0 ]; then
    chown "$RUN_USER" "$dir"
    run() { runuser -u "$RUN_USER" -- env PATH="$PG_BINDIR:$PATH" "$@"; }
else
    run() { env PATH="$PG_BINDIR:$PATH" "$@"; }
fi
trap 'mb_stop_server run "$dir" || true; rm -rf "$dir"' EXIT
port=$(mb_free_port)
printf "shared_preload_libraries = 'microbatch'\ntrack_commit_timestamp = on\nmicrobatch.enabled = off\n" \
    >"$dir/extra.conf"
mb_start_server run "$dir" "$port" "$dir/extra.conf"
sql() { run psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"; }

sql -c "CREATE EXTENSION microbatch" \
    -c "CREATE TABLE ev (id bigint, v text)" \
    -c "SELECT microbatch.create_pipeline('p', 'ev', batch_interval => '1 hour')" \
    -c "SELECT microbatch.add_transform('p', 't', 'bronze', 'SELECT 1')" \
    -c "SELECT microbatch.pause_pipeline('p')" >/dev/null
per_txn=$(( (ROWS + TXNS - 1) / TXNS ))
echo "INSERT INTO ev SELECT g, 'x' FROM generate_series(1, $per_txn) g;" >"$dir/insert.sql"
chmod a+r "$dir/insert.sql"
run pgbench -n -h "$dir" -p "$port" -U postgres -c 2 -j 2 -t $((TXNS / 2)) \
    -f "$dir/insert.sql" postgres >/dev/null
waiting=$(sql -At -c "SELECT microbatch.rows_waiting('p')")

# one timed call, in milliseconds, from the server's clock
timed() {
    sql -At -c "DO \$\$DECLARE t timestamptz := clock_timestamp(); r record;
        BEGIN PERFORM $1; RAISE NOTICE 'ms %',
        round(extract(epoch FROM clock_timestamp() - t) * 1000, 1); END\$\$" 2>&1 |
        sed -n 's/.*ms //p'
}
count_ms=() backlog_ms=() ratios=()
for i in $(seq 1 "$ROUNDS"); do
    if [ $((i % 2)) = 1 ]; then
        c=$(timed "microbatch.rows_waiting('p')"); b=$(timed "microbatch.backlog('p')")
    else
        b=$(timed "microbatch.backlog('p')"); c=$(timed "microbatch.rows_waiting('p')")
    fi
    count_ms+=("$c") backlog_ms+=("$b")
    ratios+=("$(awk -v b="$b" -v c="$c" 'BEGIN { printf "%.3f", b / c }')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
range() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }'; }

echo "| rows waiting | transactions | rows_waiting() ms | backlog() ms | backlog / rows_waiting |"
echo "|---:|---:|---:|---:|---:|"
echo "| $waiting | $TXNS | $(median "${count_ms[@]}") | $(median "${backlog_ms[@]}") | $(median "${ratios[@]}") ($(range "${ratios[@]}")) |"
echo
echo "medians of $ROUNDS rounds in alternating order; track_commit_timestamp = on"
