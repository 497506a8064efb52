#!/usr/bin/env bash
#
# make demo: install what is missing (as root, with apt), build with
# warnings as errors, install the extension, start a throwaway cluster in
# ./demo, set up the clickstream pipeline of test/demo/clickstream.sql, load
# it with pgbench (test/demo/load.pgbench) while printing one line of
# pipeline metrics per second, then print the gold reports
# (test/demo/queries.sql) and how to connect.
#
# The cluster keeps running afterwards; make demo-stop stops and removes it.
# Running make demo again replaces it with a fresh one, so that the numbers
# shown are always those of one run.
#
set -euo pipefail

cd "$(dirname "$0")/../.."
PG_MAJOR=15
PG_BINDIR=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PG_BINDIR/pg_config
PACKAGES=("postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" "postgresql-client-$PG_MAJOR" make gcc)
DEMO_DIR=$PWD/demo
DATA=$DEMO_DIR/data
DB=clickstream
LOAD_SECONDS=30
# After the load, how long the pipeline may take to process what is left.
DRAIN_SECONDS=30

. test/lib.sh
mb_install_packages "${PACKAGES[@]}"
# The tools of PostgreSQL 15, whatever else is installed.
export PATH=$PG_BINDIR:$PATH

# Unlike make test, no make clean first: it would also delete the test
# suites' output in the tree, and the Makefile rebuilds every object when a
# header changes.
echo "== build (warnings are errors) and install"
make -s PG_CONFIG="$PG_CONFIG" COPT='-Werror'
mb_as_root make -s PG_CONFIG="$PG_CONFIG" install

bash test/demo/stop-demo.sh

# PostgreSQL refuses to run as root: as root, the server runs as postgres.
if [ "$(id -u)" = 0 ]; then
    SERVER_USER=postgres
    as_server() { runuser -u "$SERVER_USER" -- "$@"; }
else
    SERVER_USER=$(id -un)
    as_server() { "$@"; }
fi
mkdir "$DEMO_DIR"
chown "$SERVER_USER" "$DEMO_DIR"
if ! as_server test -w "$DEMO_DIR"; then
    echo "user $SERVER_USER cannot reach $DEMO_DIR: clone the repository where it can (not under /root)" >&2
    exit 1
fi

# The server listens on its own socket in ./demo only, so no port can clash.
# The port is still one no other local server uses, so that a client given
# the port but not the socket directory fails instead of reaching another
# server.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null \
        || [ -e "/var/run/postgresql/.s.PGSQL.$1" ] || [ -e "/tmp/.s.PGSQL.$1" ]
}
PORT=54329
while port_in_use "$PORT"; do
    PORT=$((PORT + 1))
done

echo "== starting a cluster in $DEMO_DIR (port $PORT, as $SERVER_USER)"
# Throwaway data: no fsync at initdb.  trust is safe with the socket below
# restricted to the server's OS user (and root).
as_server initdb -D "$DATA" -U postgres --auth=trust -E UTF8 --no-locale --no-sync \
    >"$DEMO_DIR/initdb.log" 2>&1 \
    || { cat "$DEMO_DIR/initdb.log"; exit 1; }
cat >>"$DATA/postgresql.conf" <<EOF

# make demo
port = $PORT
listen_addresses = ''
unix_socket_directories = '$DEMO_DIR'
unix_socket_permissions = 0700
shared_preload_libraries = 'microbatch'
# the launcher looks for new databases, here the demo's, at this pace
microbatch.naptime = '500ms'
# commit times of rows: microbatch.freshness shows how far behind a pipeline is
track_commit_timestamp = on
# launcher + one scheduler + microbatch.max_workers (4), and parallel query
max_worker_processes = 16
EOF
as_server pg_ctl -D "$DATA" -l "$DEMO_DIR/server.log" -w start >/dev/null \
    || { tail -n 30 "$DEMO_DIR/server.log"; exit 1; }

sql() { psql -X -q -v ON_ERROR_STOP=1 -h "$DEMO_DIR" -p "$PORT" -U postgres "$@"; }

sql -d postgres -c "CREATE DATABASE $DB"
echo "== pipeline: test/demo/clickstream.sql"
sql -d "$DB" -f test/demo/clickstream.sql >/dev/null
sql -d "$DB" -c "SELECT layer, run_order, transform FROM microbatch.transforms ORDER BY run_order"

# One sample of the metrics, in one statement:
#   rows in      the highest ingest_id of staging (one per row loaded)
#   batches      committed batches
#   waiting      committed rows no batch has processed yet
#   lag_ms       age of the oldest of them, by its commit time
#                (microbatch.freshness)
#   last batch   duration and rows of the latest committed batch
#   failed       failed batch attempts (retried by the workers)
#   dropped      rows the expectations kept out of silver (quarantined)
#   now_ms       the server's clock, for the rates
MONITOR_SQL="
WITH fresh AS (
    SELECT rows_waiting, lag FROM microbatch.freshness WHERE pipeline = 'clickstream'),
latest AS (
    SELECT round(extract(epoch FROM duration) * 1000) AS ms, rows_in
      FROM microbatch.batches
     WHERE pipeline = 'clickstream' AND status = 'committed'
     ORDER BY batch_id DESC LIMIT 1)
SELECT (SELECT coalesce(max(ingest_id), 0) FROM staging.events),
       (SELECT count(*) FROM microbatch.batches
         WHERE pipeline = 'clickstream' AND status = 'committed'),
       coalesce((SELECT rows_waiting FROM fresh), 0),
       coalesce((SELECT round(extract(epoch FROM lag) * 1000) FROM fresh), 0),
       coalesce((SELECT ms FROM latest), 0),
       coalesce((SELECT rows_in FROM latest), 0),
       (SELECT count(*) FROM microbatch.batches
         WHERE pipeline = 'clickstream' AND status = 'failed'),
       (SELECT coalesce(sum(rows_dropped), 0) FROM microbatch.batches
         WHERE pipeline = 'clickstream' AND status = 'committed'),
       round(extract(epoch FROM clock_timestamp()) * 1000)"
sample() {
    local out
    out=$(sql -d "$DB" -At -F' ' -c "$MONITOR_SQL")
    read -r rows batches waiting lag_ms last_ms last_rows failed dropped now_ms <<<"$out"
}

echo "== load: pgbench -c 4 -j 2 -T $LOAD_SECONDS with test/demo/load.pgbench, one line per second"
pgbench_pid=
on_exit() {
    status=$?
    # Our own pgbench only, by its pid.
    if [ -n "$pgbench_pid" ] && kill -0 "$pgbench_pid" 2>/dev/null; then
        kill "$pgbench_pid"
    fi
    if [ "$status" -ne 0 ]; then
        echo "make demo FAILED; the cluster may still run: see $DEMO_DIR/server.log, then make demo-stop" >&2
    fi
}
trap on_exit EXIT
# Exit on these with a failure status, which on_exit reports (bash would run
# it with the status of the last command, or not at all on TERM).
trap 'exit 130' INT
trap 'exit 143' TERM
sample
pgbench -n -f test/demo/load.pgbench -c 4 -j 2 -T "$LOAD_SECONDS" \
    -h "$DEMO_DIR" -p "$PORT" -U postgres "$DB" >"$DEMO_DIR/pgbench.log" 2>&1 &
pgbench_pid=$!

# One line a second, on the second (the samples take time too), until the
# load has ended and the pipeline has caught up.  Rates use the server's
# clock, as the samples do.
start_us=${EPOCHREALTIME/./}
tick=0
while :; do
    prev_rows=$rows prev_batches=$batches prev_dropped=$dropped prev_ms=$now_ms
    tick=$((tick + 1))
    wait_us=$((start_us + tick * 1000000 - ${EPOCHREALTIME/./}))
    [ "$wait_us" -gt 0 ] && sleep "$((wait_us / 1000000)).$(printf '%06d' $((wait_us % 1000000)))"
    sample
    dt=$((now_ms - prev_ms))
    batches_x10=$(((batches - prev_batches) * 10000 / dt))
    printf '%4ds  in %6d rows/s | dropped %4d rows/s | %3d.%d batches/s | lag %6d rows %6d ms | last batch %5d rows %5d ms | failed %d\n' \
        "$tick" $(((rows - prev_rows) * 1000 / dt)) $(((dropped - prev_dropped) * 1000 / dt)) \
        $((batches_x10 / 10)) $((batches_x10 % 10)) "$waiting" "$lag_ms" \
        "$last_rows" "$last_ms" "$failed"
    if ! kill -0 "$pgbench_pid" 2>/dev/null; then
        [ "$waiting" -eq 0 ] && break
        if [ "$tick" -gt $((LOAD_SECONDS + DRAIN_SECONDS)) ]; then
            echo "the pipeline did not catch up within ${DRAIN_SECONDS}s of the end of the load" >&2
            sql -d "$DB" -c "SELECT * FROM microbatch.pipelines" >&2
            exit 1
        fi
    fi
done
wait "$pgbench_pid" || { cat "$DEMO_DIR/pgbench.log"; exit 1; }
grep -E '^(number of transactions actually processed|latency average|tps)' "$DEMO_DIR/pgbench.log"

echo "== batches"
sql -d "$DB" -c "
SELECT count(*) FILTER (WHERE status = 'committed') AS committed,
       count(*) FILTER (WHERE status = 'failed')    AS failed_attempts,
       sum(rows_in) FILTER (WHERE status = 'committed') AS rows,
       round(avg(rows_in) FILTER (WHERE status = 'committed')) AS avg_rows,
       round(avg(extract(epoch FROM duration) * 1000)) AS avg_ms,
       round(max(extract(epoch FROM duration) * 1000)) AS max_ms
  FROM microbatch.batches"

echo "== gold reports: test/demo/queries.sql"
sql -d "$DB" -f test/demo/queries.sql

# Replay: what replay_batch does after a fix to a transform.  The same rows
# go through the same transforms again, and gold must not change.
GOLD_DIGEST_SQL="
SELECT md5((SELECT string_agg(f::text, ';' ORDER BY f::text) FROM gold.page_events_daily f)
        || (SELECT string_agg(u::text, ';' ORDER BY u.user_id) FROM gold.dim_user u))"
QUARANTINE_SQL="SELECT count(*) FROM microbatch.quarantine WHERE pipeline = 'clickstream'"
before=$(sql -d "$DB" -At -c "$GOLD_DIGEST_SQL")
quarantined_before=$(sql -d "$DB" -At -c "$QUARANTINE_SQL")
replayed=$(sql -d "$DB" -At -c "SELECT sum(microbatch.replay_batch('clickstream', b)) FROM generate_series(1, 5) b")
after=$(sql -d "$DB" -At -c "$GOLD_DIGEST_SQL")
if [ "$before" != "$after" ]; then
    echo "== replay of batches 1-5 changed gold" >&2
    exit 1
fi
# A replay checks the expectations again and replaces its quarantine rows.
if [ "$quarantined_before" != "$(sql -d "$DB" -At -c "$QUARANTINE_SQL")" ]; then
    echo "== replay of batches 1-5 changed the quarantine" >&2
    exit 1
fi
echo "== replay: batches 1-5 ($replayed rows) replayed, gold and quarantine unchanged"

cat <<EOF

The demo cluster is still running, and so is the pipeline. Connect with:

    psql -h $DEMO_DIR -p $PORT -U postgres -d $DB

and try \\i test/demo/queries.sql, or load more with:

    pgbench -n -f test/demo/load.pgbench -c 4 -T 10 -h $DEMO_DIR -p $PORT -U postgres $DB

make demo-stop stops it and removes $DEMO_DIR.
EOF
