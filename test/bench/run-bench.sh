#!/usr/bin/env bash
#
# make bench: measure microbatch on one throwaway cluster and write
# docs/benchmarks.md from that one run.
#
# Like make test, it installs what is missing (as root, with apt), builds
# with warnings as errors and installs the extension.  Then it starts a
# cluster of its own (a fresh data directory in a temporary directory, a free
# port, a socket in that directory, run as the unprivileged postgres user
# since PostgreSQL refuses root), runs the twelve measurements below, and
# stops it, also on error.  Every ratio in the report compares two
# measurements taken in this run, on this machine.
#
#   1 throughput   run_batch vs the same statements run by hand
#   2 latency      commit -> visible in gold, at 3 intervals x 2 ingest rates;
#                  then pipelines of one transform (a count; a copy of the
#                  batch, loaded by 8 clients one row per transaction)
#   3 sweep        a 10k-row batch over an empty vs a large staging table
#   4 tpcb         pgbench TPC-B with and without a pipeline on its history
#   5 idle         CPU and WAL of 100 idle pipelines
#   6 ingest       COPY and INSERT into a staging table with and without one,
#                  with and without a volatile default
#   7 cron         the pg_cron + watermark alternative: latency, lost rows
#   8 quality      the demo's expectations and audit: 10k-row batches with and without
#   9 soak         10 minutes at 5k rows/s with retention: sizes over time (a
#                  plot, docs/benchmarks-soak.svg), rows lost, loader cost
#  10 catchup      a backlog drained in capped batches vs the same rows as
#                  live batches and by hand in one transaction (runs before
#                  the soak)
#  11 overhead     a 1-row batch with an empty transform: run_batch's time
#                  and where it goes (ledger, pg_stat_statements; before the
#                  soak too)
#  12 first        the demo's first batch over a million rows: its steps, and
#                  what parallel query could take of them (before the soak)
#
# Environment: MB_BENCH_SECTIONS (names above, default all),
# MB_BENCH_QUICK=1 (shorter runs, for trying the script: the report says so),
# MB_BENCH_KEEP=1 (keep the cluster's directory),
# MB_BENCH_NO_INSTALL=1 (neither build nor install: measure the extension
# already installed, e.g. while someone else installs builds of their own),
# MICROBATCH_BENCH_USER.
#
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
BENCH=$ROOT/test/bench
DEMO_SQL=$ROOT/test/demo/clickstream.sql
REPORT=$ROOT/docs/benchmarks.md
PG_MAJOR=15
PG_BINDIR=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PG_BINDIR/pg_config
RUN_USER=${MICROBATCH_BENCH_USER:-postgres}
PACKAGES="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-client-$PG_MAJOR postgresql-$PG_MAJOR-cron make gcc gnuplot-nox"
# soak last: its cluster-wide history retention would trim the ledgers the
# sections before it read
SECTIONS=${MB_BENCH_SECTIONS:-throughput latency ingest tpcb cron idle sweep quality catchup overhead first soak}
QUICK=${MB_BENCH_QUICK:-}
NO_INSTALL=${MB_BENCH_NO_INSTALL:-}

# Durations and sizes.  The whole run must stay under ~20 minutes on a
# 2-core machine, plus ~14 for the soak; the comments say what each one buys.
if [ -z "$QUICK" ]; then
    TP_SPECS="1000:60 10000:20 100000:4"   # batch rows:batches; ~1 s of work at least each
    LAT_SECONDS=12                         # per latency run: ~1,200 loader transactions
    LAT_MAX_RATES="20000 30000"            # rows/s tried beyond the two targets
    INGEST_COPY_ROWS=500000 INGEST_COPY_ROUNDS=7   # rows per COPY; COPYs per table (4 tables: ~1.7 min)
    INGEST_SECONDS=6 INGEST_INSERT_ROUNDS=3        # per INSERT run; runs per table (~1.2 min)
    TPCB_SCALE=10 TPCB_CLIENTS=4 TPCB_SECONDS=12 TPCB_ROUNDS=6
    CRON_MIN_SECONDS=30                    # load spans at least one pg_cron run
    IDLE_SECONDS=60 IDLE0_SECONDS=30
    SWEEP_ROWS=10000000 SWEEP_LOAD_BUDGET=110 SWEEP_BATCHES=4
    QUALITY_ROUNDS=6 QUALITY_BATCHES=5     # 10k-row batches per side and round
    SOAK_SECONDS=600 SOAK_SAMPLE_SECONDS=10     # the issue's 10 minutes, sampled every 10 s
    SOAK_TP_SECONDS=15 SOAK_TP_ROUNDS=4         # unthrottled loader runs, per side
    CATCHUP_LOADS=20 CATCHUP_ROUNDS=3      # the issue's 200,000-row backlog; ~30 s a round, the median of 3 rounds
    OVERHEAD_SECONDS=5 OVERHEAD_ROUNDS=5   # per pgbench run (~5,000 1-row batches); rounds of the two scripts
    FIRST_ROWS=1000000                     # the issue's first batch over 1M rows (~20 s)
else
    TP_SPECS="1000:10 10000:4 100000:1"
    LAT_SECONDS=4 LAT_MAX_RATES="20000"
    INGEST_COPY_ROWS=50000 INGEST_COPY_ROUNDS=2 INGEST_SECONDS=3 INGEST_INSERT_ROUNDS=1
    TPCB_SCALE=1 TPCB_CLIENTS=4 TPCB_SECONDS=4 TPCB_ROUNDS=1
    CRON_MIN_SECONDS=8
    IDLE_SECONDS=10 IDLE0_SECONDS=5
    SWEEP_ROWS=1000000 SWEEP_LOAD_BUDGET=20 SWEEP_BATCHES=2
    QUALITY_ROUNDS=2 QUALITY_BATCHES=2
    SOAK_SECONDS=120 SOAK_SAMPLE_SECONDS=10
    SOAK_TP_SECONDS=5 SOAK_TP_ROUNDS=1
    CATCHUP_LOADS=4 CATCHUP_ROUNDS=1
    OVERHEAD_SECONDS=2 OVERHEAD_ROUNDS=3
    FIRST_ROWS=100000
fi
SOAK_RATE=5000 SOAK_RETAIN='1 minute'           # rows/s of the soak's loader; staging retention
CATCHUP_LOAD_ROWS=10000 CATCHUP_CAP=10000       # rows per loader transaction; max_batch_rows

say() { printf '[%s %4ds] %s\n' "$(date +%H:%M:%S)" "$SECONDS" "$*"; }
fail() { echo "run-bench: $*" >&2; exit 1; }
# Floating-point arithmetic and formatting: calc FORMAT EXPRESSION
calc() { awk "BEGIN { printf \"$1\", $2 }"; }

[ -f "$DEMO_SQL" ] || fail "$DEMO_SQL is missing: the benchmarks run the demo's pipeline"

. test/lib.sh
mb_install_packages $PACKAGES

# The main developer may be rebuilding at the same time: a build that fails
# on a half-written file is tried again a little later.
if [ -n "$NO_INSTALL" ]; then
    [ -f "$("$PG_CONFIG" --pkglibdir)/microbatch.so" ] || fail "MB_BENCH_NO_INSTALL: microbatch is not installed"
    say "MB_BENCH_NO_INSTALL: no build, no install; the extension as installed: $("$PG_CONFIG" --pkglibdir)/microbatch.so"
else
    say "build (warnings are errors) and install"
    BUILD_LOG=$(mktemp)
    for attempt in 1 2 3 4; do
        if make -s PG_CONFIG="$PG_CONFIG" COPT='-Werror' >"$BUILD_LOG" 2>&1; then
            rm -f "$BUILD_LOG"
            break
        fi
        [ "$attempt" = 4 ] && { cat "$BUILD_LOG"; rm -f "$BUILD_LOG"; fail "build failed"; }
        say "build failed (attempt $attempt), trying again in 30 s"
        sleep 30
    done
    mb_as_root make -s PG_CONFIG="$PG_CONFIG" install
fi

#--------------------------------------------------------------------------
# The cluster
#--------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/microbatch-bench.XXXXXX)
PGDATA_DIR=$WORK/data
BG_PIDS=()
if [ "$(id -u)" = 0 ]; then
    chown "$RUN_USER" "$WORK"
    pg() { runuser -u "$RUN_USER" -- env PATH="$PG_BINDIR:$PATH" PGHOST="$WORK" PGPORT="$PORT" "$@"; }
else
    pg() { env PATH="$PG_BINDIR:$PATH" PGHOST="$WORK" PGPORT="$PORT" "$@"; }
fi
chmod 700 "$WORK"

cleanup() {
    local status=$?
    set +e
    trap - ERR
    rm -f "$REPORT.tmp"
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    if [ -f "$PGDATA_DIR/postmaster.pid" ]; then
        say "stopping the cluster"
        pg pg_ctl stop -D "$PGDATA_DIR" -m fast -w >/dev/null
    fi
    if [ "$status" -ne 0 ] && [ -f "$WORK/postgres.log" ]; then
        echo "== last lines of the server log"
        tail -n 40 "$WORK/postgres.log"
    fi
    if [ -n "${MB_BENCH_KEEP:-}" ]; then
        echo "cluster directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
# say which command stopped the run (set -e exits without a word)
set -o errtrace
trap 'echo "run-bench.sh: line $LINENO: command failed: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT TERM

# A port nobody listens on, whose socket name is free too.
PORT=
for p in $(seq 55432 55631); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null \
        && [ ! -e "/var/run/postgresql/.s.PGSQL.$p" ] && [ ! -e "/tmp/.s.PGSQL.$p" ]; then
        PORT=$p
        break
    fi
done
[ -n "$PORT" ] || fail "no free port"

# The settings, also printed in the report.  shared_buffers holds every
# table of the run (the 10M-row staging table included), so that the
# numbers are about CPU, not about this VM's disk; checkpoints are pushed out
# of the measurements; JIT is off as microbatch turns it off for batches, so
# that the hand-written baseline is compared on equal terms.
# pg_stat_statements is loaded for section 11's breakdown only: it tracks
# nothing (track = none, and no query ids are computed) but in that
# section's profiling session, which turns both on for itself.
SETTINGS="shared_preload_libraries = 'microbatch,pg_cron,pg_stat_statements'
pg_stat_statements.track = none
compute_query_id = off
cron.database_name = 'bench'
cron.use_background_workers = on
max_worker_processes = 24
shared_buffers = 4GB
max_wal_size = 16GB
checkpoint_timeout = 30min
jit = off
microbatch.enabled = off"

say "initdb and start (port $PORT, in $WORK)"
pg initdb -D "$PGDATA_DIR" -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
cat >>"$PGDATA_DIR/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$WORK'
cluster_name = 'mbbench'
log_line_prefix = '%m [%p] %q%a '
$SETTINGS
EOF
pg pg_ctl start -D "$PGDATA_DIR" -l "$WORK/postgres.log" -w >/dev/null
POSTMASTER_PID=$(head -n 1 "$PGDATA_DIR/postmaster.pid")

# sql DB ARGS...: psql, quiet, unaligned, stop on the first error
sql() { local db=$1; shift; pg psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }
# val DB QUERY: one value (or one |-separated row)
val() { sql "$1" -c "$2"; }
# demo_db DB [FILE...]: a new database with the demo's pipeline, the row
# generator (gen.sql) and FILEs
demo_db() {
    local db=$1 file
    local files=()
    shift
    for file in "$DEMO_SQL" "$BENCH/gen.sql" "$@"; do files+=(-f "$file"); done
    val postgres "CREATE DATABASE $db" >/dev/null
    sql "$db" "${files[@]}" >/dev/null
}
# pgbench's per-statement average latencies (-r), one per line, in ms
statement_ms() { awk '/statement latencies/ { on = 1; next } on && $1 ~ /^[0-9.]+$/ { print $1 }' "$1"; }
tps_of() { sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$1"; }

# restart_cluster: for a setting that takes a restart, set with ALTER SYSTEM
restart_cluster() {
    pg pg_ctl restart -D "$PGDATA_DIR" -l "$WORK/postgres.log" -m fast -w >/dev/null
    POSTMASTER_PID=$(head -n 1 "$PGDATA_DIR/postmaster.pid")
}

set_enabled() {
    val postgres "ALTER SYSTEM SET microbatch.enabled = $1" >/dev/null
    val postgres "SELECT pg_reload_conf()" >/dev/null
    sleep 1
}

# Wait until background workers have processed every committed row.
drain() {
    local db=$1 pipeline=$2 deadline=$((SECONDS + ${3:-180}))
    until [ "$(val "$db" "SELECT microbatch.rows_waiting('$pipeline')")" = 0 ]; do
        [ "$SECONDS" -lt "$deadline" ] || fail "pipeline $pipeline did not drain"
        sleep 0.2
    done
}

last_batch() {
    val "$1" "SELECT coalesce(max(batch_id), 0) FROM microbatch.batch b
                JOIN microbatch.pipeline p USING (pipeline_id)
               WHERE p.pipeline_name = '$2' AND b.status = 'committed'"
}

# median: of the numbers on stdin, one a line; median3: the same, to 3 decimals
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.1f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
median3() { sort -n | awk '{ v[NR] = $1 } END { printf "%.3f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# paired_ratio "B1 B2 ..." "A1 A2 ...": the ratios Bi/Ai of runs made side
# by side, as "median min max".  This VM's speed drifts by tens of percent
# within minutes; a ratio of two runs made one after the other does not.
paired_ratio() {
    awk -v b="$1" -v a="$2" 'BEGIN {
        gsub(/,/, " ", a); gsub(/,/, " ", b)
        n = split(a, x, " "); split(b, y, " ")
        for (i = 1; i <= n; i++) r[i] = y[i] / x[i]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
        m = n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
        printf "%.2f %.2f %.2f\n", m, r[1], r[n] }'
}

# The pid of the microbatch scheduler of a database, from process titles.
scheduler_pid() {
    local oid pid
    oid=$(val postgres "SELECT oid FROM pg_database WHERE datname = '$1'")
    for pid in $(pgrep -P "$POSTMASTER_PID"); do
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "microbatch scheduler for database $oid "; then
            echo "$pid"
            return
        fi
    done
}

# "CPU-ticks voluntary-context-switches" of a process: how much it ran and
# how often it was woken.
proc_usage() {
    echo "$(awk '{ print $14 + $15 }' "/proc/$1/stat") $(awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$1/status")"
}

# The tables a pipeline writes, with their row counts: equal in two
# databases when the same statements ran over the same rows.
target_counts() {
    val "$1" "SELECT string_agg(format('%s=%s', t, n), ' ' ORDER BY t)
                FROM (SELECT c.oid::regclass::text AS t,
                             (xpath('/row/n/text()', query_to_xml(
                                 format('SELECT count(*) AS n FROM %s', c.oid::regclass),
                                 false, true, '')))[1]::text AS n
                        FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
                       WHERE s.nspname IN ('bronze', 'silver', 'gold') AND c.relkind = 'r') x"
}

# A loader transaction of :rows rows (pgbench -D rows=N), the next seed of
# the database's bench.load_seq: the same rows in any database that loads
# as many times.
LOAD_EVENTS="SELECT nextval('bench.load_seq') AS seed \\gset
INSERT INTO staging.events (event_id, user_id, email, url, event_type, amount, payload)
SELECT * FROM bench.gen_events(:rows, :seed);"

# hand_transaction DB: the hand-written baseline (hand.sql) as a pgbench
# script: the clickstream pipeline's statements of DB, in run order, in one
# transaction, over the staging rows above the last id processed (all rows
# loaded since), plus the update of the watermark row.
hand_transaction() {
    echo "BEGIN;"
    echo "SELECT set_config('bench.lo', last_id::text, true),
       set_config('bench.hi', (SELECT max(ingest_id) FROM staging.events)::text, true),
       set_config('bench.batch_id', (batch_id + 1)::text, true)
  FROM bench.hand_state;"
    # each transform with the search_path it runs with, set when it changes
    val "$1" "SELECT string_agg(
                   CASE WHEN path IS DISTINCT FROM prev_path
                        THEN format(E'SET LOCAL search_path = %s;\n', path) ELSE '' END
                   || btrim(command, E' \n\t') || ';', E'\n' ORDER BY run_order)
                 FROM (SELECT run_order, command, search_path AS path,
                              lag(search_path) OVER (ORDER BY run_order) AS prev_path
                         FROM microbatch.transforms WHERE pipeline = 'clickstream') t"
    echo "UPDATE bench.hand_state
   SET last_id = current_setting('bench.hi')::bigint, batch_id = batch_id + 1;
COMMIT;"
}

CLK_TCK=$(getconf CLK_TCK)
PG_VERSION=$(val postgres "SELECT version()")
# The microbatch settings the run starts with (the report lists them)
MB_GUCS=$(val postgres "SELECT string_agg(format('%s = %s', name, current_setting(name)), ', ' ORDER BY name)
                          FROM pg_settings WHERE name IN ('microbatch.max_workers', 'microbatch.naptime', 'microbatch.coalesce_delay',
                                         'microbatch.synchronous_commit')")
CRON_EXT=$(pg psql -X -At -d postgres -c "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_cron'")
CRON_PKG=$(dpkg-query -W -f='${Version}' "postgresql-$PG_MAJOR-cron" 2>/dev/null || echo unknown)

say "databases: bench (the demo's clickstream pipeline), hand_s and hand_p (the same tables, no extension)"
demo_db bench "$BENCH/latency.sql"
val bench "CREATE EXTENSION pg_cron" >/dev/null
for db in hand_s hand_p; do
    val postgres "CREATE DATABASE $db" >/dev/null
    sql "$db" -f "$BENCH/hand.sql" >/dev/null
    # The demo's file as it is, less its CREATE EXTENSION: hand.sql stands in.
    sed '/^CREATE EXTENSION/Id' "$DEMO_SQL" | sql "$db" >/dev/null
    sql "$db" -f "$BENCH/gen.sql" >/dev/null
done

#--------------------------------------------------------------------------
# 1. Throughput: run_batch vs the same statements run by hand
#--------------------------------------------------------------------------
section_throughput() {
    say "[1 throughput] run_batch by hand vs the pipeline's statements by hand"
    set_enabled off
    # Batches are measured alone: autovacuum would start on whichever
    # database just crossed its threshold, in the middle of its batches.  A
    # VACUUM ANALYZE of all three databases before each batch size instead.
    val postgres "ALTER SYSTEM SET autovacuum = off" >/dev/null
    val postgres "SELECT pg_reload_conf()" >/dev/null

    # Each iteration loads B rows (one transaction), then processes them:
    # with run_batch, or with the pipeline's own statements, in its run
    # order, in one transaction, over the same rows read by id range.
    local load=$LOAD_EVENTS
    printf '%s\nSELECT microbatch.run_batch('"'clickstream'"');\n' "$load" >"$WORK/tp-mb.pgbench"
    {
        printf '%s\n' "$load"
        hand_transaction bench
    } >"$WORK/tp-hand.pgbench"
    cp "$WORK/tp-hand.pgbench" "$WORK/tp-hand.sql.txt"

    # tp_run DB SCRIPT MODE ROWS BATCHES: ms per batch (pgbench's average
    # statement latencies, the load's two statements left out)
    tp_run() {
        pg pgbench -n -r -M "$3" -c 1 -t "$5" -D rows="$4" -f "$WORK/$2" "$1" \
            >>"$WORK/tp-$1-$4.log" 2>&1 || { tail "$WORK/tp-$1-$4.log"; fail "pgbench failed"; }
        sed -n '/statement latencies/,$p' "$WORK/tp-$1-$4.log" >"$WORK/tp-last.log"
        statement_ms "$WORK/tp-last.log" | tail -n +3 | awk '{ s += $1 } END { print s }'
        : >"$WORK/tp-$1-$4.log"
    }

    TP_ROWS=()
    local spec rows batches per_round before ok round mb=0 hs=0 hp=0 db
    for spec in $TP_SPECS; do
        rows=${spec%:*} batches=${spec#*:}
        # 2 rounds (1 when there is a single batch), alternating the sides
        local rounds=2
        [ "$batches" -lt 2 ] && rounds=1
        per_round=$((batches / rounds))
        for db in bench hand_s hand_p; do val "$db" "VACUUM ANALYZE" >/dev/null; done
        before=$(last_batch bench clickstream)
        mb=0 hs=0 hp=0
        for round in $(seq 1 "$rounds"); do
            mb=$(calc %.3f "$mb + $(tp_run bench tp-mb.pgbench prepared "$rows" "$per_round") / $rounds")
            hs=$(calc %.3f "$hs + $(tp_run hand_s tp-hand.pgbench simple "$rows" "$per_round") / $rounds")
            hp=$(calc %.3f "$hp + $(tp_run hand_p tp-hand.pgbench prepared "$rows" "$per_round") / $rounds")
        done
        # Each run_batch must have taken exactly the rows just loaded.
        ok=$(val bench "SELECT count(*) FILTER (WHERE rows_in = $rows) = $((per_round * rounds)) AND count(*) = $((per_round * rounds))
                          FROM microbatch.batches WHERE pipeline = 'clickstream' AND batch_id > $before")
        [ "$ok" = t ] || fail "throughput: batches of $rows rows are not what was loaded"
        TP_ROWS+=("$rows|$((per_round * rounds))|$mb|$hs|$hp")
        say "  $rows-row batches: run_batch $mb ms; by hand $hs ms (planned each time), $hp ms (prepared)"
    done

    # Same statements, same rows: the three databases hold the same results.
    TP_BENCH_COUNTS=$(target_counts bench)
    if [ "$TP_BENCH_COUNTS" = "$(target_counts hand_s)" ] && [ "$TP_BENCH_COUNTS" = "$(target_counts hand_p)" ]; then
        TP_SAME=yes
    else
        TP_SAME=no
    fi
    say "  results identical in the three databases: $TP_SAME"
    # Leave nothing for autovacuum to do once it is back on: vacuuming the
    # rows loaded here would take the CPU from the next sections.
    for db in bench hand_s hand_p; do val "$db" "VACUUM ANALYZE" >/dev/null; done
    val postgres "ALTER SYSTEM RESET autovacuum" >/dev/null
    val postgres "SELECT pg_reload_conf()" >/dev/null
}

#--------------------------------------------------------------------------
# 2. Latency: loader commit -> batch visible in gold
#--------------------------------------------------------------------------
LAT_RUN=0
# latency_run INTERVAL RATE [PIPELINE [LABEL [CLIENTS [ROWS_PER_TX]]]]: one
# run of LAT_SECONDS against PIPELINE (clickstream), reported under LABEL
# (the interval), loaded by CLIENTS pgbench clients (2) in transactions of
# ROWS_PER_TX rows (by default 100 loader transactions a second: 10 rows
# each at 1k rows/s, 100 at 10k rows/s and more); appends to LAT_ROWS.
# Transactions of several rows come from insert-events.pgbench (simple
# protocol); transactions of one row from insert-one-event.pgbench
# (prepared), which takes its rows from bench.event_pool (section_latency
# makes it, of LAT_POOL_ROWS rows).
latency_run() {
    local interval=$1 rate=$2 pipeline=${3:-clickstream} label=${4:-$1} clients=${5:-2}
    local rows_per_tx=${6:-} tx_rate after wpid result lag loader exact
    LAT_RUN=$((LAT_RUN + 1))
    if [ -z "$rows_per_tx" ]; then
        rows_per_tx=100
        [ "$rate" -lt 10000 ] && rows_per_tx=$((rate / 100))
    fi
    tx_rate=$((rate / rows_per_tx))
    if [ "$rows_per_tx" = 1 ]; then
        loader=(-M prepared -D pool="$LAT_POOL_ROWS" -D stride=$((LAT_POOL_ROWS / clients)) -D n=0
                -f "$BENCH/insert-one-event.pgbench")
    else
        loader=(-D rows="$rows_per_tx" -f "$BENCH/insert-events.pgbench")
    fi
    val bench "SELECT microbatch.alter_pipeline('$pipeline', batch_interval => '$interval')" >/dev/null
    drain bench "$pipeline"
    after=$(last_batch bench "$pipeline")
    sql bench -c "CALL bench.watch($LAT_RUN, '$pipeline', $((LAT_SECONDS + 5)))" &
    wpid=$!
    BG_PIDS+=("$wpid")
    sleep 0.5
    pg pgbench -n -c "$clients" -j $((clients < 2 ? clients : 2)) -R "$tx_rate" -T "$LAT_SECONDS" \
        -D run="$LAT_RUN" "${loader[@]}" bench >"$WORK/lat-$LAT_RUN.log" 2>&1
    wait "$wpid"
    result=$(val bench "SELECT concat_ws('|', txns, rows, unseen_rows, round((rows / seconds)::numeric),
                                         batches, round(p50::numeric, 1), round(p95::numeric, 1),
                                         round(p99::numeric, 1), round(pmax::numeric, 1),
                                         round(lb50::numeric, 1), round(lb99::numeric, 1))
                          FROM bench.latency($LAT_RUN, '$pipeline', $after)")
    # The batches of the run: their sizes and durations
    result+="|"$(val bench "SELECT concat_ws('|', round(avg(rows_in)), max(rows_in),
                    round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM duration) * 1000))::numeric, 1),
                    round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM duration) * 1000))::numeric, 1))
               FROM microbatch.batches WHERE pipeline = '$pipeline' AND status = 'committed' AND batch_id > $after")
    # pgbench's rate-limit schedule lag (avg/max ms): how far the loader fell
    # behind the arrivals it was asked for
    lag=$(sed -n 's/^rate limit schedule lag: avg \([0-9.]*\) .*max \([0-9.]*\).*/\1\/\2/p' "$WORK/lat-$LAT_RUN.log")
    # From the commit timestamps: the exact figures
    exact=$(val bench "SELECT concat_ws('|', round(ex50::numeric, 1), round(ex95::numeric, 1),
                                        round(ex99::numeric, 1), round(exmax::numeric, 1))
                         FROM bench.latency($LAT_RUN, '$pipeline', $after)")
    LAT_ROWS+=("$label|$rate|$rows_per_tx|$result|$clients|${lag:-?}|$exact")
    say "  interval $label, $rate rows/s, $clients clients x $rows_per_tx rows/tx: txns|rows|unseen|rows/s|batches|p50|p95|p99|max|lb50|lb99|batch avg rows|max rows|p50 ms|p99 ms = $result; schedule lag avg/max ${lag:-?} ms; exact p50|p95|p99|max = $exact"
}

# the label of section 2's run through the copy pipeline
LAT_COPY_LABEL="0, one copy transform, 8 clients"
section_latency() {
    say "[2 latency] commit to gold at 3 intervals x 2 ingest rates, ${LAT_SECONDS}s each; then one transform, and one copy transform from 8 clients"
    # Commit timestamps give the exact latency; for this section only, as
    # they cost every commit a little, and batches a query more.
    val postgres "ALTER SYSTEM SET track_commit_timestamp = on" >/dev/null
    restart_cluster
    set_enabled on
    LAT_ROWS=()
    local interval rate
    for interval in '0' '100 ms' '1 s'; do
        for rate in 1000 10000; do
            latency_run "$interval" "$rate"
        done
    done
    # Beyond the targets: what interval 0 holds on this machine.
    for rate in $LAT_MAX_RATES; do
        latency_run 0 "$rate"
    done
    # The engine's own latency: the same load through a pipeline of one cheap
    # transform (a count per event type) instead of the demo's six, with the
    # demo's pipeline paused meanwhile.
    sql bench >/dev/null <<'SQL'
CREATE TABLE bench.floor_counts (
    batch_id bigint NOT NULL, event_type text NOT NULL, events bigint NOT NULL,
    PRIMARY KEY (batch_id, event_type));
SELECT microbatch.create_pipeline('floor', 'staging.events', batch_interval => '0');
SELECT microbatch.add_transform('floor', 'counts', 'gold', $$
    INSERT INTO bench.floor_counts
    SELECT microbatch.current_batch_id(), event_type, count(*)
      FROM microbatch.floor_batch GROUP BY event_type
        ON CONFLICT (batch_id, event_type) DO UPDATE SET events = excluded.events
$$);
SELECT microbatch.pause_pipeline('clickstream');
SQL
    latency_run 0 10000 floor "0, one transform"
    val bench "SELECT microbatch.drop_pipeline('floor')" >/dev/null
    # The target's pipeline: one transform that copies the batch into a
    # table with the batch view's columns (a bronze copy), loaded by 8
    # clients in transactions of one row, 10k of them a second.  It starts
    # from now: the rows already in staging.events are none of its business.
    # Its loader's rows: gen.sql's events, enough for every transaction of
    # the run to take its own (insert-one-event.pgbench).
    LAT_POOL_ROWS=$((10000 * (LAT_SECONDS + 3)))
    val bench "CREATE TABLE bench.event_pool AS SELECT row_number() OVER () AS id, g.* FROM bench.gen_events($LAT_POOL_ROWS, 4250) g" >/dev/null
    val bench "ALTER TABLE bench.event_pool ADD PRIMARY KEY (id)" >/dev/null
    val bench "ANALYZE bench.event_pool" >/dev/null
    sql bench >/dev/null <<'SQL'
SELECT microbatch.create_pipeline('lat_copy', 'staging.events', batch_interval => '0', start_from => 'now');
CREATE TABLE bench.lat_copy AS SELECT * FROM microbatch.lat_copy_batch WITH NO DATA;
SELECT microbatch.add_transform('lat_copy', 'copy', 'bronze',
    'INSERT INTO bench.lat_copy SELECT * FROM microbatch.lat_copy_batch');
SQL
    latency_run 0 10000 lat_copy "$LAT_COPY_LABEL" 8 1
    # Every row its loader committed is in the copy, once.
    drain bench lat_copy
    LAT_COPY_CHECK=$(val bench "SELECT CASE WHEN (SELECT sum(rows) FROM bench.commits WHERE run = $LAT_RUN)
                                                = (SELECT count(*) FROM bench.lat_copy)
                                             AND (SELECT count(*) FROM bench.lat_copy)
                                                = (SELECT count(DISTINCT ingest_id) FROM bench.lat_copy)
                                           THEN 'yes' ELSE 'NO' END")
    LAT_COPY_COLUMNS=$(val bench "SELECT string_agg(attname, ', ' ORDER BY attnum) FROM pg_attribute
                                   WHERE attrelid = 'bench.lat_copy'::regclass AND attnum > 0 AND NOT attisdropped")
    LAT_COALESCE_DELAY=$(val bench "SELECT coalesce(current_setting('microbatch.coalesce_delay', true), 'not defined')")
    say "  copy pipeline: every loaded row copied once: $LAT_COPY_CHECK; microbatch.coalesce_delay = $LAT_COALESCE_DELAY"
    val bench "SELECT microbatch.drop_pipeline('lat_copy')" >/dev/null
    val bench "DROP TABLE bench.lat_copy, bench.event_pool" >/dev/null
    val bench "SELECT microbatch.resume_pipeline('clickstream')" >/dev/null
    val bench "SELECT microbatch.alter_pipeline('clickstream', batch_interval => '200 ms')" >/dev/null
    drain bench clickstream
    LAT_COMMIT_TS=$(val bench "SHOW track_commit_timestamp")
    val postgres "ALTER SYSTEM RESET track_commit_timestamp" >/dev/null
    restart_cluster
}

#--------------------------------------------------------------------------
# 6. Raw ingest: COPY and INSERT with and without a pipeline
#--------------------------------------------------------------------------
# The four tables of the section, by suffix: bench.ingest_<t>
INGEST_TABLES="plain piped brin plain_nv piped_nv brin_nv"
# ingest_order ROUND: the tables in the order of a round, reversed every
# other round (so that each pair alternates which side goes first)
ingest_order() {
    if [ $(($1 % 2)) = 1 ]; then echo "$INGEST_TABLES"; else echo "$INGEST_TABLES" | tr ' ' '\n' | tac | tr '\n' ' '; fi
}

# ingest_wal_records LSN0 LSN1: "heap row inserts|multi-insert records|rows
# in them" in the WAL between the two (pg_waldump --stats=record): how COPY
# inserted, row by row or in batches.  pg_waldump reads the WAL files, and
# fails at a record not written yet: asynchronous commits (the batches of
# the sections before) leave some to the WAL writer, so wait for it.
ingest_wal_records() {
    until [ "$(val bench "SELECT pg_current_wal_flush_lsn() >= '$2'")" = t ]; do sleep 0.1; done
    pg pg_waldump -p "$PGDATA_DIR/pg_wal" -s "$1" -e "$2" --stats=record \
        | awk '$1 ~ /^Heap\/INSERT/ { ins += $2 } $1 ~ /^Heap2\/MULTI_INSERT/ { multi += $2 }
               END { printf "%d|%d\n", ins, multi }'
}

section_ingest() {
    say "[6 ingest] COPY and multi-row INSERT into staging tables with and without a pipeline, with and without a volatile default"
    set_enabled on
    # Two triples of copies of the demo's staging table, made the same way;
    # a pipeline then adds its tracking column, index and trigger to two
    # tables of each triple, and one of them trades the B-tree for a BRIN
    # tracking index (set_tracking_index).  The first pair keeps received_at's DEFAULT
    # clock_timestamp(), a volatile default: COPY then inserts row by row.
    # The second pair's default is a constant: COPY inserts in batches
    # (multi-insert) where nothing else stops it.  The pipelines are
    # paused: what is measured is the cost on the loader's side (batches
    # cost CPU too, measured by the TPC-B section).
    sql bench >/dev/null <<EOF
CREATE TABLE bench.ingest_plain (LIKE staging.events INCLUDING ALL);
ALTER TABLE bench.ingest_plain DROP COLUMN microbatch_xid;
CREATE TABLE bench.ingest_piped (LIKE staging.events INCLUDING ALL);
ALTER TABLE bench.ingest_piped DROP COLUMN microbatch_xid;
CREATE TABLE bench.ingest_plain_nv (LIKE staging.events INCLUDING ALL);
ALTER TABLE bench.ingest_plain_nv DROP COLUMN microbatch_xid;
ALTER TABLE bench.ingest_plain_nv ALTER received_at SET DEFAULT '2026-01-01 00:00:00+00';
CREATE TABLE bench.ingest_piped_nv (LIKE staging.events INCLUDING ALL);
ALTER TABLE bench.ingest_piped_nv DROP COLUMN microbatch_xid;
ALTER TABLE bench.ingest_piped_nv ALTER received_at SET DEFAULT '2026-01-01 00:00:00+00';
CREATE TABLE bench.ingest_brin (LIKE bench.ingest_piped INCLUDING ALL);
CREATE TABLE bench.ingest_brin_nv (LIKE bench.ingest_piped_nv INCLUDING ALL);
SELECT microbatch.create_pipeline('ingest', 'bench.ingest_piped');
SELECT microbatch.create_pipeline('ingest_nv', 'bench.ingest_piped_nv');
SELECT microbatch.create_pipeline('ingest_brin', 'bench.ingest_brin');
SELECT microbatch.create_pipeline('ingest_brin_nv', 'bench.ingest_brin_nv');
SELECT microbatch.set_tracking_index('bench.ingest_brin', 'brin');
SELECT microbatch.set_tracking_index('bench.ingest_brin_nv', 'brin');
CREATE TABLE bench.ingest_bronze (LIKE bench.ingest_plain);
SELECT microbatch.add_transform('ingest', 'raw', 'bronze',
    'INSERT INTO bench.ingest_bronze SELECT * FROM microbatch.ingest_batch');
SELECT microbatch.add_transform('ingest_nv', 'raw', 'bronze',
    'INSERT INTO bench.ingest_bronze SELECT * FROM microbatch.ingest_nv_batch');
SELECT microbatch.add_transform('ingest_brin', 'raw', 'bronze',
    'INSERT INTO bench.ingest_bronze SELECT * FROM microbatch.ingest_brin_batch');
SELECT microbatch.add_transform('ingest_brin_nv', 'raw', 'bronze',
    'INSERT INTO bench.ingest_bronze SELECT * FROM microbatch.ingest_brin_nv_batch');
SELECT microbatch.pause_pipeline('ingest');
SELECT microbatch.pause_pipeline('ingest_nv');
SELECT microbatch.pause_pipeline('ingest_brin');
SELECT microbatch.pause_pipeline('ingest_brin_nv');
COPY (SELECT * FROM bench.gen_events($INGEST_COPY_ROWS, 4242)) TO '$WORK/events.csv' (FORMAT csv);
EOF
    # The columns' defaults but the identity's, as the report shows them,
    # with their functions' volatility (i immutable, s stable, v volatile)
    declare -gA INGEST_DEFAULTS=()
    local t
    for t in $INGEST_TABLES; do
        INGEST_DEFAULTS[$t]=$(val bench "SELECT string_agg(format('%s %s%s', a.attname, e.expr,
                                                   coalesce(' [' || (SELECT string_agg(DISTINCT f.m[1] || ' ' || p.provolatile::text, ', ')
                                                                       FROM regexp_matches(e.expr, '([a-z_]+)\(', 'g') AS f(m)
                                                                       JOIN pg_proc p ON p.proname = f.m[1]) || ']', '')),
                                                   '; ' ORDER BY a.attnum)
                                           FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                                          CROSS JOIN LATERAL (SELECT pg_get_expr(d.adbin, d.adrelid) AS expr) e
                                          WHERE d.adrelid = 'bench.ingest_$t'::regclass AND a.attidentity = ''")
    done
    local cols="event_id, user_id, email, url, event_type, amount, payload" round t0 t1 lsn0 lsn1
    # rows/s of every run, per table, in round order; the figures are
    # medians (this VM's disk makes single runs vary by 10-20%)
    declare -gA INGEST_COPY_RUNS=() INGEST_INSERT_RUNS=() INGEST_COPY_WAL=()
    for t in $INGEST_TABLES; do INGEST_COPY_RUNS[$t]="" INGEST_INSERT_RUNS[$t]=""; done
    # Alternate the tables, so that a drift of the machine hits all of them.
    for round in $(seq 1 "$INGEST_COPY_ROUNDS"); do
        for t in $(ingest_order "$round"); do
            val bench "CHECKPOINT" >/dev/null
            [ "$round" = 1 ] && lsn0=$(val bench "SELECT pg_current_wal_insert_lsn()")
            t0=$(date +%s%N)
            val bench "COPY bench.ingest_$t ($cols) FROM '$WORK/events.csv' (FORMAT csv)" >/dev/null
            t1=$(date +%s%N)
            INGEST_COPY_RUNS[$t]+=" $(calc %.0f "$INGEST_COPY_ROWS / (($t1 - $t0) / 1e9)")"
            if [ "$round" = 1 ]; then
                # How the first COPY into each table inserted, from its WAL
                lsn1=$(val bench "SELECT pg_current_wal_insert_lsn()")
                INGEST_COPY_WAL[$t]=$(ingest_wal_records "$lsn0" "$lsn1")
            fi
        done
    done
    # One statement of 100 literal rows per transaction, from 2 clients.
    val bench "SELECT 'INSERT INTO bench.ingest_TABLE ($cols) VALUES '
                      || string_agg(format('(%L, %L, %L, %L, %L, %L, %L)', $cols), ', ') || ';'
                 FROM bench.gen_events(100, 4243)" >"$WORK/insert-values.tmpl"
    for t in $INGEST_TABLES; do
        sed "s/ingest_TABLE/ingest_$t/" "$WORK/insert-values.tmpl" >"$WORK/insert-$t.pgbench"
    done
    # The scheduler of the database, watched during the INSERT runs: the
    # pipeline's trigger wakes it when an inserting transaction commits.
    local spid u0 u1
    declare -gA INGEST_WAKES=() INGEST_SCHED_CPU=()
    for t in $INGEST_TABLES; do INGEST_WAKES[$t]=0 INGEST_SCHED_CPU[$t]=0; done
    spid=$(scheduler_pid bench)
    for round in $(seq 1 "$INGEST_INSERT_ROUNDS"); do
        for t in $(ingest_order "$round"); do
            val bench "CHECKPOINT" >/dev/null
            u0=$(proc_usage "$spid" 2>/dev/null || echo "0 0")
            pg pgbench -n -c 2 -j 2 -T "$INGEST_SECONDS" -f "$WORK/insert-$t.pgbench" bench \
                >"$WORK/insert-$t-$round.log" 2>&1
            u1=$(proc_usage "$spid" 2>/dev/null || echo "0 0")
            INGEST_INSERT_RUNS[$t]+=" $(calc %.0f "$(tps_of "$WORK/insert-$t-$round.log") * 100")"
            INGEST_WAKES[$t]=$(calc %.0f "${INGEST_WAKES[$t]} + (${u1#* } - ${u0#* }) / $INGEST_SECONDS / $INGEST_INSERT_ROUNDS")
            INGEST_SCHED_CPU[$t]=$(calc %.1f "${INGEST_SCHED_CPU[$t]} + 100 * (${u1% *} - ${u0% *}) / $CLK_TCK / $INGEST_SECONDS / $INGEST_INSERT_ROUNDS")
        done
    done
    # Medians per table; ratios of the pairs, round by round: "median min max"
    declare -gA INGEST_COPY_MEDIAN=() INGEST_INSERT_MEDIAN=() INGEST_RATIO=()
    for t in $INGEST_TABLES; do
        INGEST_COPY_MEDIAN[$t]=$(calc %.0f "$(printf '%s\n' ${INGEST_COPY_RUNS[$t]} | median)")
        INGEST_INSERT_MEDIAN[$t]=$(calc %.0f "$(printf '%s\n' ${INGEST_INSERT_RUNS[$t]} | median)")
    done
    INGEST_RATIO[copy]=$(paired_ratio "${INGEST_COPY_RUNS[piped]}" "${INGEST_COPY_RUNS[plain]}")
    INGEST_RATIO[copy_nv]=$(paired_ratio "${INGEST_COPY_RUNS[piped_nv]}" "${INGEST_COPY_RUNS[plain_nv]}")
    INGEST_RATIO[insert]=$(paired_ratio "${INGEST_INSERT_RUNS[piped]}" "${INGEST_INSERT_RUNS[plain]}")
    INGEST_RATIO[insert_nv]=$(paired_ratio "${INGEST_INSERT_RUNS[piped_nv]}" "${INGEST_INSERT_RUNS[plain_nv]}")
    INGEST_RATIO[copy_brin]=$(paired_ratio "${INGEST_COPY_RUNS[brin]}" "${INGEST_COPY_RUNS[plain]}")
    INGEST_RATIO[copy_brin_nv]=$(paired_ratio "${INGEST_COPY_RUNS[brin_nv]}" "${INGEST_COPY_RUNS[plain_nv]}")
    INGEST_RATIO[insert_brin]=$(paired_ratio "${INGEST_INSERT_RUNS[brin]}" "${INGEST_INSERT_RUNS[plain]}")
    INGEST_RATIO[insert_brin_nv]=$(paired_ratio "${INGEST_INSERT_RUNS[brin_nv]}" "${INGEST_INSERT_RUNS[plain_nv]}")
    for t in $INGEST_TABLES; do
        say "  $t: COPY rows/s ${INGEST_COPY_MEDIAN[$t]} (runs${INGEST_COPY_RUNS[$t]}; first COPY's WAL heap inserts|multi-inserts ${INGEST_COPY_WAL[$t]}), INSERT rows/s ${INGEST_INSERT_MEDIAN[$t]} (runs${INGEST_INSERT_RUNS[$t]}); scheduler ${INGEST_WAKES[$t]} wake-ups/s, ${INGEST_SCHED_CPU[$t]}% of a core"
    done
    say "  ratios with over without (median min max): COPY volatile ${INGEST_RATIO[copy]}, not volatile ${INGEST_RATIO[copy_nv]}; INSERT volatile ${INGEST_RATIO[insert]}, not volatile ${INGEST_RATIO[insert_nv]}"
    say "  BRIN tracking index, ratios with over without: COPY volatile ${INGEST_RATIO[copy_brin]}, not volatile ${INGEST_RATIO[copy_brin_nv]}; INSERT volatile ${INGEST_RATIO[insert_brin]}, not volatile ${INGEST_RATIO[insert_brin_nv]}"
    # Nothing was lost on the way: every row loaded is waiting for the pipeline.
    INGEST_WAITING=$(val bench "SELECT CASE WHEN microbatch.rows_waiting('ingest') = (SELECT count(*) FROM bench.ingest_piped)
                                         AND microbatch.rows_waiting('ingest_nv') = (SELECT count(*) FROM bench.ingest_piped_nv)
                                         AND microbatch.rows_waiting('ingest_brin') = (SELECT count(*) FROM bench.ingest_brin)
                                         AND microbatch.rows_waiting('ingest_brin_nv') = (SELECT count(*) FROM bench.ingest_brin_nv)
                                       THEN 'yes' ELSE 'NO' END")
    val bench "SELECT microbatch.drop_pipeline('ingest')" >/dev/null
    val bench "SELECT microbatch.drop_pipeline('ingest_nv')" >/dev/null
    val bench "SELECT microbatch.drop_pipeline('ingest_brin')" >/dev/null
    val bench "SELECT microbatch.drop_pipeline('ingest_brin_nv')" >/dev/null
}

#--------------------------------------------------------------------------
# 4. pgbench TPC-B with and without a pipeline on pgbench_history
#--------------------------------------------------------------------------
section_tpcb() {
    say "[4 tpcb] pgbench TPC-B, scale $TPCB_SCALE, $TPCB_CLIENTS clients, ${TPCB_SECONDS}s x $TPCB_ROUNDS rounds per variant"
    local db
    for db in pgb_plain pgb_pipe; do
        val postgres "CREATE DATABASE $db" >/dev/null
        pg pgbench -i -q -s "$TPCB_SCALE" "$db" >"$WORK/pgbench-init-$db.log" 2>&1
    done
    sql pgb_pipe -f "$BENCH/history.sql" >/dev/null
    set_enabled on
    # Autovacuum would wake on any database in the middle of a run (the
    # sections before loaded millions of rows); instead each run starts like
    # pgbench's own runs do, with branches and tellers vacuumed (but
    # pgbench_history kept: the pipeline reads it).
    val postgres "ALTER SYSTEM SET autovacuum = off" >/dev/null
    val postgres "SELECT pg_reload_conf()" >/dev/null
    for db in bench pgb_plain pgb_pipe; do val "$db" "VACUUM ANALYZE" >/dev/null; done
    declare -gA TPCB_TPS=() TPCB_RUNS=() TPCB_LEDGER=()
    TPCB_TPS=([plain]=0 ['1 s']=0 ['100 ms']=0 ['0']=0)
    TPCB_RUNS=([plain]="" ['1 s']="" ['100 ms']="" ['0']="")
    local round variant tps t0 t1 log
    for round in $(seq 1 "$TPCB_ROUNDS"); do
        for variant in plain '1 s' '100 ms' '0'; do
            db=pgb_pipe
            if [ "$variant" = plain ]; then
                db=pgb_plain
            else
                val pgb_pipe "SELECT microbatch.alter_pipeline('history', batch_interval => '$variant')" >/dev/null
                drain pgb_pipe history
            fi
            val "$db" "VACUUM pgbench_branches, pgbench_tellers" >/dev/null
            val "$db" "CHECKPOINT" >/dev/null
            log="$WORK/tpcb-$db-$round-${variant// /}.log"
            t0=$(val pgb_pipe "SELECT clock_timestamp()")
            # -n: pgbench's vacuum step would truncate pgbench_history
            pg pgbench -n -c "$TPCB_CLIENTS" -j 2 -T "$TPCB_SECONDS" "$db" >"$log" 2>&1
            t1=$(val pgb_pipe "SELECT clock_timestamp()")
            tps=$(tps_of "$log")
            TPCB_RUNS[$variant]+="${TPCB_RUNS[$variant]:+, }$(calc %.0f "$tps")"
            if [ "$variant" != plain ]; then
                # The batches of the run: how many a second, how big, and
                # how much of the run a batch was running.
                TPCB_LEDGER[$variant]+="$(val pgb_pipe "SELECT concat_ws('|', count(*), round(avg(rows_in), 1),
                        round((sum(extract(epoch FROM duration)) / extract(epoch FROM timestamptz '$t1' - timestamptz '$t0'))::numeric, 3))
                      FROM microbatch.batches WHERE started_at >= '$t0' AND started_at < '$t1'")"$'\n'
            fi
            say "  round $round, $([ "$variant" = plain ] && echo "no pipeline" || echo "pipeline, batch_interval $variant"): $tps tps"
        done
    done
    for variant in plain '1 s' '100 ms' '0'; do
        TPCB_TPS[$variant]=$(tr ',' '\n' <<<"${TPCB_RUNS[$variant]}" | median)
    done
    drain pgb_pipe history
    val postgres "ALTER SYSTEM RESET autovacuum" >/dev/null
    val postgres "SELECT pg_reload_conf()" >/dev/null
    # Exactly once: the batches' sums equal pgbench_history's.
    TPCB_CHECK=$(val pgb_pipe "SELECT CASE WHEN (SELECT sum(delta) FROM history_by_batch) = (SELECT sum(delta) FROM pgbench_history)
                                         AND (SELECT sum(rows) FROM history_by_batch) = (SELECT count(*) FROM pgbench_history)
                                       THEN 'yes' ELSE 'NO' END")
    TPCB_HISTORY_ROWS=$(val pgb_pipe "SELECT count(*) FROM pgbench_history")
    TPCB_BATCHES=$(val pgb_pipe "SELECT count(*) FROM microbatch.batches WHERE status = 'committed'")
    say "  sums of the batches equal pgbench_history: $TPCB_CHECK"
}

#--------------------------------------------------------------------------
# 7. The alternative: pg_cron calling a watermark procedure
#--------------------------------------------------------------------------
section_cron() {
    say "[7 cron] pg_cron + watermark procedure vs microbatch, under out-of-order commits"
    set_enabled on
    sql bench -f "$BENCH/watermark.sql" >/dev/null
    # pg_cron 1.5 added schedules in seconds; older versions only take cron
    # syntax, whose finest step is a minute.
    if val bench "SELECT cron.schedule('probe_seconds', '1 second', 'SELECT 1')" >/dev/null 2>&1; then
        val bench "SELECT cron.unschedule('probe_seconds')" >/dev/null
        CRON_SECONDS=yes
    else
        CRON_SECONDS=no
    fi
    val bench "SELECT cron.schedule('wm_rollup', '* * * * *', \$\$CALL bench.wm_rollup('pg_cron')\$\$)" >/dev/null
    # Every second: by pg_cron itself where it can, else a loop that does
    # what a '1 second' schedule would (on each whole second, one run, one
    # transaction), standing in for pg_cron 1.5+.
    local sec_now duration loop_pid=""
    sec_now=$(date +%S)
    duration=$((60 - 10#$sec_now + 10))
    [ "$duration" -lt "$CRON_MIN_SECONDS" ] && duration=$CRON_MIN_SECONDS
    if [ "$CRON_SECONDS" = yes ]; then
        val bench "SELECT cron.schedule('wm_every_second', '1 second', \$\$CALL bench.wm_rollup('every_second')\$\$)" >/dev/null
    else
        sql bench -c "CALL bench.every_second($duration)" &
        loop_pid=$!
        BG_PIDS+=("$loop_pid")
    fi
    CRON_START=$(val bench "SELECT clock_timestamp()")
    say "  8 inserters for ${duration}s (spanning a pg_cron run at the minute)"
    pg pgbench -n -c 8 -j 2 -T "$duration" -f "$BENCH/watermark-insert.pgbench" bench \
        >"$WORK/cron-insert.log" 2>&1
    CRON_END=$(val bench "SELECT clock_timestamp()")
    [ -n "$loop_pid" ] && wait "$loop_pid"
    CRON_RUNS=$(val bench "SELECT count(*) || ' run(s) by pg_cron, ' || coalesce(string_agg(DISTINCT status, ', '), 'none')
                             FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                            WHERE j.jobname = 'wm_rollup' AND d.start_time >= '$CRON_START'")
    val bench "SELECT cron.unschedule(jobname) FROM cron.job WHERE jobname LIKE 'wm_%'" >/dev/null
    # Inserters are done: one last run of each job takes everything left
    # above its watermark; what it has lost by now it has lost for good.
    val bench "CALL bench.wm_rollup('pg_cron')" >/dev/null
    val bench "CALL bench.wm_rollup('every_second')" >/dev/null
    drain bench orders
    CRON_ROWS=$(val bench "SELECT count(*) FROM bench.orders")
    CRON_LATE=$(val bench "SELECT count(*) FROM (
                              SELECT committed_at > min(committed_at) OVER (ORDER BY id ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS late
                                FROM bench.order_commits) x WHERE late")
    mapfile -t CRON_CHECK < <(val bench "SELECT concat_ws('|', consumer, orders, counted, lost, doubled) FROM bench.wm_check()")
    CRON_LAT_CRON=$(val bench "SELECT concat_ws('|', runs, rows, round(p50::numeric), round(p99::numeric), round(pmax::numeric)) FROM bench.wm_latency('pg_cron', '$CRON_END')")
    CRON_LAT_SEC=$(val bench "SELECT concat_ws('|', runs, rows, round(p50::numeric), round(p99::numeric), round(pmax::numeric)) FROM bench.wm_latency('every_second', '$CRON_END')")
    CRON_LAT_MB=$(val bench "SELECT concat_ws('|', batches, rows, round(p50::numeric, 1), round(p99::numeric, 1), round(pmax::numeric, 1)) FROM bench.mb_orders_latency('$CRON_END')")
    say "  rows $CRON_ROWS, committed out of id order: $CRON_LATE; pg_cron runs during the load: $CRON_RUNS"
    local line
    for line in "${CRON_CHECK[@]}"; do say "  consumer|orders|counted|lost|doubled: $line"; done
    say "  latency runs|rows|p50|p99|max ms: pg_cron $CRON_LAT_CRON; every second $CRON_LAT_SEC; microbatch $CRON_LAT_MB"
}

#--------------------------------------------------------------------------
# 5. Idle cost of 100 pipelines
#--------------------------------------------------------------------------
# cpu_window SECONDS: CPU ticks used by microbatch's processes over a window,
# sampled every second from /proc/<pid>/stat (utime + stime); processes that
# start during the window count from zero, those that exit count up to their
# last sample.  Prints "<all microbatch> <idle database's> <all postgres>".
cpu_window() {
    local seconds=$1 idle_oid=$2 end pid ticks title
    declare -A first=() last=() kind=()
    end=$((SECONDS + seconds))
    local start=1
    while :; do
        for pid in $(pgrep -P "$POSTMASTER_PID"); do
            [ -r "/proc/$pid/stat" ] || continue
            ticks=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null) || continue
            [ -n "$ticks" ] || continue
            if [ -z "${kind[$pid]:-}" ]; then
                title=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
                case $title in
                    *"database $idle_oid"*) kind[$pid]=idle ;;
                    *microbatch*) kind[$pid]=mb ;;
                    *) kind[$pid]=other ;;
                esac
                if [ "$start" = 1 ]; then first[$pid]=$ticks; else first[$pid]=0; fi
            fi
            last[$pid]=$ticks
        done
        start=0
        [ "$SECONDS" -ge "$end" ] && break
        sleep 1
    done
    local mb=0 idle=0 all=0 d
    for pid in "${!last[@]}"; do
        d=$((last[$pid] - first[$pid]))
        all=$((all + d))
        case ${kind[$pid]} in
            idle) idle=$((idle + d)); mb=$((mb + d)) ;;
            mb) mb=$((mb + d)) ;;
        esac
    done
    echo "$mb $idle $all"
}

# idle_window LABEL SECONDS: CPU and WAL of a window, per minute, in
# IDLE[LABEL.cpu_mb] (all microbatch processes), IDLE[LABEL.cpu_db] (those of
# the idle database), IDLE[LABEL.cpu_all] (every postgres process),
# IDLE[LABEL.wal] (bytes) and IDLE[LABEL.waldump] (what the WAL holds).
declare -A IDLE=()
idle_window() {
    local label=$1 seconds=$2 lsn0 lsn1 wal mb idle all
    # Start once the cluster has written no WAL for 26 s (60 s at most): the
    # set-up wrote some, and the bgwriter logs the running transactions (a
    # 50-byte Standby record) up to 15 s after any WAL, plus up to 10 s of
    # its hibernation.  No CHECKPOINT: it would make the bgwriter log one.
    local quiet=0 waited=0 prev cur
    prev=$(val postgres "SELECT pg_current_wal_insert_lsn()")
    while [ "$quiet" -lt 26 ] && [ "$waited" -lt 60 ]; do
        sleep 1
        waited=$((waited + 1))
        cur=$(val postgres "SELECT pg_current_wal_insert_lsn()")
        if [ "$cur" = "$prev" ]; then quiet=$((quiet + 1)); else quiet=0; prev=$cur; fi
    done
    lsn0=$(val postgres "SELECT pg_current_wal_insert_lsn()")
    read -r mb idle all < <(cpu_window "$seconds" "$IDLE_OID")
    lsn1=$(val postgres "SELECT pg_current_wal_insert_lsn()")
    wal=$(val postgres "SELECT pg_wal_lsn_diff('$lsn1', '$lsn0')")
    IDLE[$label.cpu_mb]=$(calc %.2f "$mb / $CLK_TCK * 60 / $seconds")
    IDLE[$label.cpu_db]=$(calc %.2f "$idle / $CLK_TCK * 60 / $seconds")
    IDLE[$label.cpu_all]=$(calc %.2f "$all / $CLK_TCK * 60 / $seconds")
    IDLE[$label.wal]=$(calc %.0f "$wal * 60 / $seconds")
    IDLE[$label.waldump]=
    if [ "${IDLE[$label.wal]}" != 0 ]; then
        # What was written, by resource manager: whose it is.
        IDLE[$label.waldump]=$(pg pg_waldump -p "$PGDATA_DIR/pg_wal" -s "$lsn0" -e "$lsn1" --stats=record 2>&1 \
            | awk 'NR <= 3 || ($2 ~ /^[0-9]+$/ && $2 > 0) || /^Total/ || /^ *-/' | head -n 40)
    fi
    say "  $label: microbatch CPU ${IDLE[$label.cpu_mb]} s/min (the idle database's ${IDLE[$label.cpu_db]}), all postgres ${IDLE[$label.cpu_all]} s/min, WAL ${IDLE[$label.wal]} bytes/min"
}

section_idle() {
    say "[5 idle] 100 idle pipelines: CPU and WAL over ${IDLE_SECONDS}s (batch_interval 1 s) and ${IDLE0_SECONDS}s (0)"
    set_enabled on
    val postgres "CREATE DATABASE idle" >/dev/null
    sql idle -f "$BENCH/idle.sql" >/dev/null
    IDLE_OID=$(val postgres "SELECT oid FROM pg_database WHERE datname = 'idle'")
    local i
    for i in $(seq 1 100); do drain idle "idle_$i" 60; done
    IDLE_BATCHES=$(val idle "SELECT count(*) FROM microbatch.batches WHERE status = 'committed'")
    # Autovacuum would write WAL for the tables of the sections before;
    # the window is about microbatch's own.
    val postgres "ALTER SYSTEM SET autovacuum = off" >/dev/null
    val postgres "SELECT pg_reload_conf()" >/dev/null
    local deadline=$((SECONDS + 120))
    while [ "$(val postgres "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")" != 0 ]; do
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 1
    done
    idle_window interval1s "$IDLE_SECONDS"
    val idle "SELECT microbatch.alter_pipeline(pipeline, batch_interval => '0') FROM microbatch.pipelines" >/dev/null
    idle_window interval0 "$IDLE0_SECONDS"
    IDLE_PROCS=$(val idle "SELECT count(*) FILTER (WHERE backend_type = 'microbatch scheduler') || ' schedulers and '
                               || count(*) FILTER (WHERE backend_type = 'microbatch worker') || ' batch workers'
                             FROM pg_stat_activity")
    val postgres "ALTER SYSTEM RESET autovacuum" >/dev/null
    val postgres "SELECT pg_reload_conf()" >/dev/null
    val idle "SELECT microbatch.pause_pipeline(pipeline) FROM microbatch.pipelines" >/dev/null
}

#--------------------------------------------------------------------------
# 3. Sweep: a 10k-row batch over an empty vs a large staging table
#--------------------------------------------------------------------------
# sweep_round DB: 1 + SWEEP_BATCHES batches of 10k rows from one connection;
# prints the durations of all but the first (which warms the connection's
# caches up), from the ledger: started_at to finished_at, the batch's work.
sweep_round() {
    local db=$1 before
    before=$(last_batch "$db" clickstream)
    val "$db" "ANALYZE" >/dev/null
    pg pgbench -n -M prepared -c 1 -t $((SWEEP_BATCHES + 1)) -D rows=10000 -f "$WORK/tp-mb.pgbench" "$db" \
        >>"$WORK/sweep-$db.log" 2>&1
    val "$db" "SELECT extract(epoch FROM duration) * 1000 FROM microbatch.batches
                WHERE pipeline = 'clickstream' AND batch_id > $before + 1 AND rows_in = 10000"
}

section_sweep() {
    say "[3 sweep] 10k-row batches over an empty staging table vs over up to $SWEEP_ROWS processed rows"
    set_enabled off
    # Two databases alike, with the same pipeline, fed the same rows: batch
    # durations grow with the layers' tables (the demo's gold dedups users
    # against all it has seen), so the two are measured in alternating
    # rounds with the same history, and differ only by the processed rows
    # in sweep_big's staging table.
    local db
    printf '%s\n' "SELECT nextval('bench.load_seq') AS seed \\gset
INSERT INTO staging.events (event_id, user_id, email, url, event_type, amount, payload)
SELECT * FROM bench.gen_events(:rows, :seed);
SELECT microbatch.run_batch('clickstream');" >"$WORK/tp-mb.pgbench"
    for db in sweep_small sweep_big; do
        demo_db "$db"
        # Autovacuum would start on the big table in the middle of the
        # batches, and analyse the growing layers of one database and not
        # yet the other's, whose plans would then differ (a 10x slower gold
        # transform seen once): statistics come from the ANALYZE before each
        # round, the same in both.
        val "$db" "DO \$\$ DECLARE t regclass; BEGIN
                     FOR t IN SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                               WHERE c.relkind = 'r' AND n.nspname IN ('staging', 'bronze', 'silver', 'gold') LOOP
                       EXECUTE format('ALTER TABLE %s SET (autovacuum_enabled = off)', t);
                     END LOOP; END \$\$" >/dev/null
        # The processed rows are processed by one real batch whose transforms
        # are swapped for a no-op: running them through the six transforms
        # would take many minutes here, and the sweep does not depend on what
        # the transforms did.  Both databases go through the same swap.
        sql "$db" >/dev/null <<'SQL'
CREATE TABLE bench.saved_transforms AS
SELECT transform, layer, command, run_order FROM microbatch.transforms WHERE pipeline = 'clickstream';
SELECT microbatch.remove_transform('clickstream', transform) FROM bench.saved_transforms;
SELECT microbatch.add_transform('clickstream', 'noop', 'gold', 'SELECT 1');
SQL
    done

    # Loaded by two sessions in 500k-row transactions, each its own
    # transaction id as a loader's would be; seeds apart from bench.load_seq,
    # which must stay in step in the two databases.
    local t0=$SECONDS loaded=0 chunk=0 pids s
    while [ "$loaded" -lt "$SWEEP_ROWS" ] && [ $((SECONDS - t0)) -lt "$SWEEP_LOAD_BUDGET" ]; do
        pids=()
        for s in 1 2; do
            chunk=$((chunk + 1))
            val sweep_big "INSERT INTO staging.events (event_id, user_id, email, url, event_type, amount, payload)
                           SELECT * FROM bench.gen_events(500000, 1000000000 + $chunk)" >/dev/null &
            pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p"; done
        loaded=$((loaded + 1000000))
    done
    SWEEP_LOADED=$loaded
    SWEEP_LOAD_S=$((SECONDS - t0))
    say "  loaded $SWEEP_LOADED rows in ${SWEEP_LOAD_S}s; processing them with a no-op batch"
    t0=$SECONDS
    val sweep_big "SELECT microbatch.run_batch('clickstream')" >/dev/null
    SWEEP_NOOP_S=$((SECONDS - t0))
    for db in sweep_small sweep_big; do
        sql "$db" >/dev/null <<'SQL'
SELECT microbatch.remove_transform('clickstream', 'noop');
SELECT microbatch.add_transform('clickstream', transform, layer, command)
  FROM bench.saved_transforms ORDER BY run_order;
SQL
    done
    SWEEP_PROCESSED=$(val sweep_big "SELECT sum(rows_in) FROM microbatch.batches WHERE pipeline = 'clickstream'")

    local round small=() big=()
    for round in 1 2 3; do
        mapfile -t -O "${#small[@]}" small < <(sweep_round sweep_small)
        mapfile -t -O "${#big[@]}" big < <(sweep_round sweep_big)
    done
    SWEEP_EMPTY_MS=$(printf '%s\n' "${small[@]}" | median)
    SWEEP_FULL_MS=$(printf '%s\n' "${big[@]}" | median)
    SWEEP_N=${#big[@]}
    say "  median 10k-row batch: $SWEEP_EMPTY_MS ms over an empty table, $SWEEP_FULL_MS ms over $SWEEP_PROCESSED processed rows"

    # Where a 10k-row batch's time goes, and how it reads its window in the
    # big table: one more batch under auto_explain (statements over 1 ms,
    # nested ones included, row counts and buffers but no timing).
    local log_lines
    log_lines=$(wc -l <"$WORK/postgres.log")
    sql sweep_big >/dev/null <<'SQL'
SELECT nextval('bench.load_seq') AS seed \gset
INSERT INTO staging.events (event_id, user_id, email, url, event_type, amount, payload)
SELECT * FROM bench.gen_events(10000, :seed);
ANALYZE;
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 1;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_analyze = on;
SET auto_explain.log_buffers = on;
SET auto_explain.log_timing = off;
SELECT microbatch.run_batch('clickstream');
SQL
    # "layer transform ms" per transform (a statement's own duration comes
    # after its nested ones'), then "total run_batch ms"
    SWEEP_PROFILE=$(tail -n +"$((log_lines + 1))" "$WORK/postgres.log" \
        | awk '/duration: [0-9.]+ ms  plan:/ { match($0, /duration: [0-9.]+/); d = substr($0, RSTART + 10, RLENGTH - 10); next }
               /Query Text: SELECT microbatch.run_batch/ { total = d }
               /microbatch transform "/ && d != "" {
                   match($0, /transform "[^"]+" \([a-z]+\)/); t = substr($0, RSTART + 11, RLENGTH - 11)
                   split(t, parts, "\" \\("); name = parts[1]; layer = parts[2]; sub(/\)$/, "", layer)
                   if (!(name in ms)) order[++n] = name
                   ms[name] = d; lay[name] = layer; d = "" }
               END { for (i = 1; i <= n; i++) print lay[order[i]], order[i], ms[order[i]]; print "total run_batch", total }')
    SWEEP_PLAN=$(tail -n +"$((log_lines + 1))" "$WORK/postgres.log" \
        | awk '/Query Text: SELECT pg_catalog.count\(\*\) FROM microbatch.clickstream_batch/ { on = 1; next }
               on && /^\t/ { sub(/^\t/, ""); print; next }
               { on = 0 }')
}

#--------------------------------------------------------------------------
# 8. Data quality: what the demo's expectations and audit cost
#--------------------------------------------------------------------------
# quality_round: the durations of QUALITY_BATCHES 10k-row batches (the first
# batch of the connection, which warms its caches, not counted)
quality_round() {
    local before
    before=$(last_batch quality clickstream)
    pg pgbench -n -M prepared -c 1 -t $((QUALITY_BATCHES + 1)) -D rows=10000 -f "$WORK/quality.pgbench" quality \
        >>"$WORK/quality.log" 2>&1 || { tail "$WORK/quality.log"; fail "pgbench failed"; }
    val quality "SELECT extract(epoch FROM duration) * 1000 FROM microbatch.batches
                  WHERE pipeline = 'clickstream' AND batch_id > $before + 1 AND rows_in = 10000
                    AND status = 'committed'" | median
}

section_quality() {
    say "[8 quality] 10k-row batches of the demo pipeline with its five expectations and audit vs without"
    set_enabled off
    demo_db quality
    # Valid rows only, so that the pipeline without its checks does the same
    # work with them (a malformed amount would fail its silver cast): what
    # is measured is the checks' own cost, the pass over the batch and the
    # views' row filter.
    printf '%s\n' "SELECT nextval('bench.load_seq') AS seed \\gset
INSERT INTO staging.events (event_id, user_id, email, url, event_type, amount, payload)
SELECT * FROM bench.gen_events(:rows + :rows / 10, :seed) g
 WHERE g.user_id IS NOT NULL AND g.amount IS DISTINCT FROM '12,50' AND length(g.payload) > 25
 LIMIT :rows;
SELECT microbatch.run_batch('clickstream');" >"$WORK/quality.pgbench"
    sql quality >/dev/null <<'SQL'
CREATE TABLE bench.saved_expectations AS
SELECT expectation, predicate, on_violation FROM microbatch.expectations WHERE pipeline = 'clickstream';
CREATE TABLE bench.saved_audits AS
SELECT audit, layer, query, on_failure, search_path FROM microbatch.audits WHERE pipeline = 'clickstream';
SQL
    QUALITY_CHECKS=$(val quality "SELECT (SELECT count(*) FROM bench.saved_expectations) || ' expectations ('
        || (SELECT string_agg(on_violation, ', ' ORDER BY expectation) FROM bench.saved_expectations)
        || '), ' || (SELECT count(*) FROM bench.saved_audits) || ' audit'")
    # Three sides in each round: the demo's checks; as many checks with the
    # same actions whose predicates cost nothing (true, and an audit that
    # reads nothing), which is the engine's own cost; no checks at all.
    local round with=() trivial=() without=()
    for round in $(seq 1 "$QUALITY_ROUNDS"); do
        with+=("$(quality_round)")
        sql quality >/dev/null <<'SQL'
SELECT microbatch.remove_expectation('clickstream', expectation) FROM bench.saved_expectations;
SELECT microbatch.remove_audit('clickstream', audit) FROM bench.saved_audits;
SELECT microbatch.add_expectation('clickstream', expectation, 'true', on_violation)
  FROM bench.saved_expectations ORDER BY expectation;
SELECT microbatch.add_audit('clickstream', audit, layer, 'SELECT 1 WHERE false', on_failure)
  FROM bench.saved_audits;
SQL
        trivial+=("$(quality_round)")
        sql quality >/dev/null <<'SQL'
SELECT microbatch.remove_expectation('clickstream', expectation) FROM bench.saved_expectations;
SELECT microbatch.remove_audit('clickstream', audit) FROM bench.saved_audits;
SQL
        without+=("$(quality_round)")
        sql quality >/dev/null <<'SQL'
SELECT microbatch.add_expectation('clickstream', expectation, predicate, on_violation)
  FROM bench.saved_expectations ORDER BY expectation;
SELECT set_config('search_path', search_path, true),
       microbatch.add_audit('clickstream', audit, layer, query, on_failure)
  FROM bench.saved_audits;
SQL
    done
    QUALITY_WITH_MS=$(printf '%s\n' "${with[@]}" | median)
    QUALITY_TRIVIAL_MS=$(printf '%s\n' "${trivial[@]}" | median)
    QUALITY_WITHOUT_MS=$(printf '%s\n' "${without[@]}" | median)
    # throughput with the checks over throughput without, round by round
    read -r QUALITY_RATIO QUALITY_RATIO_MIN QUALITY_RATIO_MAX \
        <<<"$(paired_ratio "${with[*]}" "${without[*]}" | awk '{ printf "%.2f %.2f %.2f\n", 1 / $1, 1 / $3, 1 / $2 }')"
    read -r QUALITY_ENGINE_RATIO QUALITY_ENGINE_MIN QUALITY_ENGINE_MAX \
        <<<"$(paired_ratio "${trivial[*]}" "${without[*]}" | awk '{ printf "%.2f %.2f %.2f\n", 1 / $1, 1 / $3, 1 / $2 }')"
    # what each of the demo's predicates costs alone, over 10,000 rows of a batch
    QUALITY_PREDICATES=$(sql quality -At -F'|' <<'SQL'
SET jit = off;
CREATE TEMP TABLE sample AS
SELECT * FROM staging.events ORDER BY ingest_id DESC LIMIT 10000;
CREATE FUNCTION pg_temp.cost_ms(predicate text) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    best numeric;
    n bigint;
BEGIN
    FOR i IN 1..3 LOOP
        t0 := clock_timestamp();
        EXECUTE format('SELECT count(*) FROM pg_temp.sample WHERE (%s) IS NOT TRUE', predicate) INTO n;
        best := least(best, extract(epoch FROM clock_timestamp() - t0) * 1000);
    END LOOP;
    RETURN round(best, 1);
END $$;
SET search_path = pg_catalog;
SELECT expectation, pg_temp.cost_ms(predicate) FROM bench.saved_expectations ORDER BY expectation;
SQL
)
    QUALITY_N=$QUALITY_ROUNDS
    say "  median batch: $QUALITY_WITH_MS ms with the demo's checks, $QUALITY_TRIVIAL_MS ms with trivial ones, $QUALITY_WITHOUT_MS ms without; throughput ratios $QUALITY_RATIO ($QUALITY_RATIO_MIN-$QUALITY_RATIO_MAX), engine only $QUALITY_ENGINE_RATIO"
}

#--------------------------------------------------------------------------
# 10. Catch-up: a backlog drained in capped batches
#--------------------------------------------------------------------------
# catchup_pgbench DB SCRIPT MODE TRANSACTIONS SKIP: one pgbench connection
# runs SCRIPT (in $WORK) TRANSACTIONS times; prints the time in ms of its
# statements after the first SKIP, over all the transactions (pgbench's
# average statement latencies times the transactions).
catchup_pgbench() {
    local log="$WORK/cu-$1.log"
    pg pgbench -n -r -M "$3" -c 1 -t "$4" -D rows="$CATCHUP_LOAD_ROWS" -f "$WORK/$2" "$1" \
        >"$log" 2>&1 || { tail "$log"; fail "pgbench failed"; }
    sed -n '/statement latencies/,$p' "$log" >"$WORK/cu-last.log"
    statement_ms "$WORK/cu-last.log" | tail -n +$(($5 + 1)) | awk -v t="$4" '{ s += $1 } END { printf "%.3f\n", s * t }'
}

# catchup_batches DB BEFORE: the clickstream batches after batch BEFORE, as
# "committed|failed|rows_in sum|min|max|ledger ms sum|ms of each, in order"
# (ledger durations: finished_at - started_at)
catchup_batches() {
    val "$1" "SELECT concat_ws('|', count(*) FILTER (WHERE status = 'committed'),
                     count(*) FILTER (WHERE status = 'failed'),
                     coalesce(sum(rows_in) FILTER (WHERE status = 'committed'), 0),
                     min(rows_in) FILTER (WHERE status = 'committed'),
                     max(rows_in) FILTER (WHERE status = 'committed'),
                     round(coalesce(sum(ms) FILTER (WHERE status = 'committed'), 0), 1),
                     string_agg(round(ms, 1)::text, ', ' ORDER BY batch_id) FILTER (WHERE status = 'committed'))
                FROM (SELECT batch_id, status, rows_in, extract(epoch FROM duration) * 1000 AS ms
                        FROM microbatch.batches WHERE pipeline = 'clickstream' AND batch_id > $2) b"
}

# catchup_failed DB BEFORE: fail when a batch after BEFORE failed, with its error
catchup_failed() {
    local err
    err=$(val "$1" "SELECT string_agg(format('batch %s: %s %s', batch_id, sqlstate, error), '; ')
                      FROM microbatch.batches WHERE pipeline = 'clickstream' AND batch_id > $2 AND status = 'failed'")
    [ -z "$err" ] || fail "catchup: $1: $err"
}

# catchup_drain: run_batch in catchup_backlog until nothing is left; sets
# CATCHUP_DRAIN_MS (the calls that found rows, from pgbench) and
# CATCHUP_DRAIN_CALLS.  One pgbench connection makes as many calls as the
# waiting rows need at the cap; should a call take fewer rows, another
# connection makes the calls for what is left, and so on.  Then one more
# call must return NULL: nothing new.
catchup_drain() {
    local before=$1 waiting n ms
    CATCHUP_DRAIN_MS=0 CATCHUP_DRAIN_CALLS=0
    waiting=$(val catchup_backlog "SELECT microbatch.rows_waiting('clickstream')")
    while [ "$waiting" -gt 0 ]; do
        n=$(((waiting + CATCHUP_CAP - 1) / CATCHUP_CAP))
        ms=$(catchup_pgbench catchup_backlog cu-drain.pgbench prepared "$n" 0)
        catchup_failed catchup_backlog "$before"
        CATCHUP_DRAIN_MS=$(calc %.3f "$CATCHUP_DRAIN_MS + $ms")
        CATCHUP_DRAIN_CALLS=$((CATCHUP_DRAIN_CALLS + n))
        [ "$CATCHUP_DRAIN_CALLS" -le $((4 * CATCHUP_LOADS + 4)) ] \
            || fail "catchup: the backlog did not drain in $CATCHUP_DRAIN_CALLS calls of run_batch"
        waiting=$(val catchup_backlog "SELECT microbatch.rows_waiting('clickstream')")
    done
    [ -z "$(val catchup_backlog "SELECT microbatch.run_batch('clickstream')")" ] \
        || fail "catchup: run_batch still found rows once rows_waiting said none were left"
    catchup_failed catchup_backlog "$before"
}

# catchup_counts DB: target_counts, less gold.page_events_by_batch (one row
# per batch, day, page and event type: the hand side has one batch where the
# others have one per load), plus what reports read of it, the totals of
# the view gold.page_events_daily
catchup_counts() {
    echo "$(target_counts "$1" | sed 's/ *gold\.page_events_by_batch=[0-9]*//') $(val "$1" \
        "SELECT format('gold.page_events_daily=%s/%s/%s/%s', count(*), sum(events), sum(users), sum(revenue))
           FROM gold.page_events_daily")"
}

# catchup_side SIDE: one round of one side; appends to CATCHUP_RUNS[SIDE]
# (ms) and, for backlog and live, to CATCHUP_BATCH_MS[SIDE] (one line a
# round: each batch's ledger ms, in order) and CATCHUP_LEDGER_MS[SIDE]
catchup_side() {
    local side=$1 db=catchup_$1 before ms b committed failed rows_sum rows_min rows_max ledger_ms each
    local total=$((CATCHUP_LOADS * CATCHUP_LOAD_ROWS))
    # backlog and hand: every load first (not timed)
    if [ "$side" != live ]; then
        catchup_pgbench "$db" cu-load.pgbench simple "$CATCHUP_LOADS" 0 >/dev/null
    fi
    case $side in
        backlog)
            before=$(last_batch "$db" clickstream)
            catchup_drain "$before"
            ms=$CATCHUP_DRAIN_MS
            CATCHUP_CALLS+="${CATCHUP_CALLS:+, }$CATCHUP_DRAIN_CALLS"
            ;;
        live)
            before=$(last_batch "$db" clickstream)
            ms=$(catchup_pgbench "$db" cu-live.pgbench prepared "$CATCHUP_LOADS" 2)
            catchup_failed "$db" "$before"
            ;;
        hand)
            ms=$(catchup_pgbench "$db" cu-hand.pgbench simple 1 0)
            ;;
    esac
    ms=$(calc %.1f "$ms")
    CATCHUP_RUNS[$side]+="${CATCHUP_RUNS[$side]:+, }$ms"
    if [ "$side" = hand ]; then
        say "  round $round, by hand in one transaction: $ms ms"
        return
    fi
    b=$(catchup_batches "$db" "$before")
    IFS='|' read -r committed failed rows_sum rows_min rows_max ledger_ms each <<<"$b"
    # Every row loaded processed, exactly once; live batches take each load whole.
    [ "$rows_sum" = "$total" ] || fail "catchup: $side: the batches took $rows_sum rows, $total were loaded"
    if [ "$side" = live ] && [ "$committed|$rows_min|$rows_max" != "$CATCHUP_LOADS|$CATCHUP_LOAD_ROWS|$CATCHUP_LOAD_ROWS" ]; then
        fail "catchup: live batches are not the loads: $b"
    fi
    if [ "$side" = backlog ]; then
        CATCHUP_BACKLOG_SHAPE+="${CATCHUP_BACKLOG_SHAPE:+; }$committed batches of $rows_min"
        [ "$rows_min" = "$rows_max" ] || CATCHUP_BACKLOG_SHAPE+="-$rows_max"
        CATCHUP_BACKLOG_SHAPE+=" rows"
    fi
    CATCHUP_BATCH_MS[$side]+="$each"$'\n'
    CATCHUP_LEDGER_MS[$side]+="${CATCHUP_LEDGER_MS[$side]:+, }$ledger_ms"
    say "  round $round, $side: $ms ms ($committed batches of $rows_min-$rows_max rows; ledger ms: $each)"
}

section_catchup() {
    local total=$((CATCHUP_LOADS * CATCHUP_LOAD_ROWS)) db round side order i
    say "[10 catchup] $total rows ($CATCHUP_LOADS loads of $CATCHUP_LOAD_ROWS): drained as a backlog with max_batch_rows $CATCHUP_CAP vs as live batches vs by hand in one transaction, $CATCHUP_ROUNDS round(s)"
    set_enabled off
    # As in section 1: no autovacuum in the middle of one side's batches; a
    # VACUUM ANALYZE of the three databases before each round instead.
    val postgres "ALTER SYSTEM SET autovacuum = off" >/dev/null
    val postgres "SELECT pg_reload_conf()" >/dev/null

    # Three databases with the same tables: the demo's pipeline, capped, in
    # two; the stand-in of section 1 (hand.sql) in the third.
    for db in catchup_backlog catchup_live; do
        demo_db "$db"
        val "$db" "SELECT microbatch.alter_pipeline('clickstream', max_batch_rows => $CATCHUP_CAP)" >/dev/null
    done
    val postgres "CREATE DATABASE catchup_hand" >/dev/null
    sql catchup_hand -f "$BENCH/hand.sql" >/dev/null
    sed '/^CREATE EXTENSION/Id' "$DEMO_SQL" | sql catchup_hand >/dev/null
    sql catchup_hand -f "$BENCH/gen.sql" >/dev/null
    CATCHUP_SETTINGS=$(val catchup_backlog "SELECT max_batch_rows FROM microbatch.pipelines WHERE pipeline = 'clickstream'")

    # The scripts: a load (one transaction of CATCHUP_LOAD_ROWS rows); a
    # load and run_batch at once (live); run_batch alone (the drain); the
    # pipeline's statements by hand in one transaction.
    printf '%s\n' "$LOAD_EVENTS" >"$WORK/cu-load.pgbench"
    printf '%s\nSELECT microbatch.run_batch('"'clickstream'"');\n' "$LOAD_EVENTS" >"$WORK/cu-live.pgbench"
    echo "SELECT microbatch.run_batch('clickstream');" >"$WORK/cu-drain.pgbench"
    hand_transaction catchup_backlog >"$WORK/cu-hand.pgbench"

    declare -gA CATCHUP_RUNS=([backlog]="" [live]="" [hand]="") CATCHUP_BATCH_MS=([backlog]="" [live]="")
    declare -gA CATCHUP_LEDGER_MS=([backlog]="" [live]="")
    CATCHUP_CALLS="" CATCHUP_BACKLOG_SHAPE=""
    for round in $(seq 1 "$CATCHUP_ROUNDS"); do
        for db in catchup_backlog catchup_live catchup_hand; do val "$db" "VACUUM ANALYZE" >/dev/null; done
        # the sides in turn, a different one first each round
        order="backlog live hand"
        for i in $(seq 2 "$round"); do order="${order#* } ${order%% *}"; done
        for side in $order; do catchup_side "$side"; done
    done

    # drain: backlog over live (≤ 1.10); throughput: hand's time over the
    # backlog's, i.e. the backlog's rows/s over hand's (≥ 0.90)
    read -r CATCHUP_DRAIN_RATIO CATCHUP_DRAIN_MIN CATCHUP_DRAIN_MAX \
        <<<"$(paired_ratio "${CATCHUP_RUNS[backlog]}" "${CATCHUP_RUNS[live]}")"
    read -r CATCHUP_TP_RATIO CATCHUP_TP_MIN CATCHUP_TP_MAX \
        <<<"$(paired_ratio "${CATCHUP_RUNS[hand]}" "${CATCHUP_RUNS[backlog]}")"
    declare -gA CATCHUP_MS=()
    for side in backlog live hand; do
        CATCHUP_MS[$side]=$(tr ',' '\n' <<<"${CATCHUP_RUNS[$side]}" | median)
    done
    CATCHUP_TOTAL=$total

    # Same rows, same statements: the same results on the three sides.
    CATCHUP_COUNTS=$(catchup_counts catchup_backlog)
    if [ "$(target_counts catchup_backlog)" = "$(target_counts catchup_live)" ] \
        && [ "$CATCHUP_COUNTS" = "$(catchup_counts catchup_live)" ] \
        && [ "$CATCHUP_COUNTS" = "$(catchup_counts catchup_hand)" ]; then
        CATCHUP_SAME=yes
    else
        CATCHUP_SAME=no
        say "  results differ: backlog $(target_counts catchup_backlog); live $(target_counts catchup_live); hand $(catchup_counts catchup_hand)"
    fi
    say "  drain backlog over live: $CATCHUP_DRAIN_RATIO ($CATCHUP_DRAIN_MIN-$CATCHUP_DRAIN_MAX); backlog rows/s over hand: $CATCHUP_TP_RATIO ($CATCHUP_TP_MIN-$CATCHUP_TP_MAX); results identical: $CATCHUP_SAME"

    # Nothing left for the background workers, nor for autovacuum.
    for db in catchup_backlog catchup_live; do
        val "$db" "SELECT microbatch.pause_pipeline('clickstream')" >/dev/null
    done
    for db in catchup_backlog catchup_live catchup_hand; do val "$db" "VACUUM ANALYZE" >/dev/null; done
    val postgres "ALTER SYSTEM RESET autovacuum" >/dev/null
    val postgres "SELECT pg_reload_conf()" >/dev/null
}

#--------------------------------------------------------------------------
# 11. Per-batch overhead: a 1-row batch with an empty transform
#--------------------------------------------------------------------------
# overhead_run SCRIPT LABEL [ENV...]: one pgbench run (-c 1 -T
# OVERHEAD_SECONDS -r) of SCRIPT (in $WORK) in database overhead, with the
# environment ENV (e.g. PGOPTIONS); prints "ms per transaction|statement
# latencies, ms, comma-separated|transactions"
overhead_run() {
    local script=$1 log="$WORK/ov-$2.log"
    shift 2
    pg env "$@" pgbench -n -r -c 1 -T "$OVERHEAD_SECONDS" -f "$WORK/$script" overhead >"$log" 2>&1 \
        || { tail "$log"; fail "pgbench failed"; }
    echo "$(calc %.4f "1000 / $(tps_of "$log")")|$(statement_ms "$log" | paste -sd,)|$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")"
}

section_overhead() {
    say "[11 overhead] 1-row batches with an empty transform (SELECT 1): $OVERHEAD_ROUNDS rounds of ${OVERHEAD_SECONDS}s, INSERT + run_batch vs the INSERT alone; then the breakdown"
    set_enabled off
    val postgres "CREATE DATABASE overhead" >/dev/null
    sql overhead >/dev/null <<'SQL'
CREATE EXTENSION microbatch;
CREATE EXTENSION pg_stat_statements;
CREATE TABLE src (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v integer NOT NULL);
SELECT microbatch.create_pipeline('p', 'src');
SELECT microbatch.add_transform('p', 'noop', 'gold', 'SELECT 1');
SQL
    # Each in autocommit: the INSERT commits its row, then run_batch runs
    # (and commits) a batch of that one row.  The baseline: the INSERT alone.
    printf '%s\n' "INSERT INTO src (v) VALUES (1);" "SELECT microbatch.run_batch('p');" >"$WORK/ov-batch.pgbench"
    printf '%s\n' "INSERT INTO src (v) VALUES (1);" >"$WORK/ov-base.pgbench"
    # The baseline leaves its rows waiting: one batch takes them all after
    # each of its runs (not timed), so that every timed batch has one row.
    printf '%s\n' "SELECT microbatch.run_batch('p');" >"$WORK/ov-drain.sql"
    # A warm-up run of each, not counted.
    overhead_run ov-batch.pgbench warmup-batch >/dev/null
    overhead_run ov-base.pgbench warmup-base >/dev/null
    sql overhead -f "$WORK/ov-drain.sql" >/dev/null
    val overhead "VACUUM ANALYZE" >/dev/null
    local round side order r tx ms n b0 b1 ranges="false" st
    # per round: ms of the run_batch statement, of the INSERT statement in
    # each script, and per transaction of each script; the batches of the
    # timed runs (ledger ranges) and the engine's counters over them
    # (stat_pipelines, reset before each timed run: "batches total_time
    # lock_wait commit", ms, summed)
    declare -gA OVERHEAD_RUNS=([batch]="" [batch_insert]="" [base_insert]="" [batch_tx]="" [base_tx]="")
    OVERHEAD_BATCHES_RUN=0
    local sums="0 0 0 0"
    for round in $(seq 1 "$OVERHEAD_ROUNDS"); do
        order="batch base"
        [ $((round % 2)) = 0 ] && order="base batch"
        for side in $order; do
            if [ "$side" = batch ]; then
                b0=$(last_batch overhead p)
                val overhead "SELECT microbatch.stat_reset('p')" >/dev/null
            fi
            r=$(overhead_run "ov-$side.pgbench" "$side-$round")
            IFS='|' read -r tx ms n <<<"$r"
            OVERHEAD_RUNS[${side}_tx]+="${OVERHEAD_RUNS[${side}_tx]:+, }$(calc %.3f "$tx")"
            OVERHEAD_RUNS[${side}_insert]+="${OVERHEAD_RUNS[${side}_insert]:+, }${ms%%,*}"
            if [ "$side" = batch ]; then
                OVERHEAD_RUNS[batch]+="${OVERHEAD_RUNS[batch]:+, }${ms#*,}"
                OVERHEAD_BATCHES_RUN=$((OVERHEAD_BATCHES_RUN + n))
                b1=$(last_batch overhead p)
                ranges+=" OR (batch_id > $b0 AND batch_id <= $b1)"
                st=$(val overhead "SELECT concat_ws(' ', batches, total_time, total_lock_wait_time, total_commit_time)
                                     FROM microbatch.stat_pipelines WHERE pipeline = 'p'")
                sums=$(awk -v a="$sums" -v b="${st:-0 0 0 0}" 'BEGIN { split(a, x, " "); split(b, y, " ")
                           printf "%s %s %s %s", x[1] + y[1], x[2] + y[2], x[3] + y[3], x[4] + y[4] }')
            else
                sql overhead -f "$WORK/ov-drain.sql" >/dev/null
            fi
        done
        say "  round $round: run_batch ${OVERHEAD_RUNS[batch]##*, } ms; ms per transaction, INSERT + run_batch ${OVERHEAD_RUNS[batch_tx]##*, }, INSERT alone ${OVERHEAD_RUNS[base_tx]##*, }"
    done
    OVERHEAD_MS=$(tr ',' '\n' <<<"${OVERHEAD_RUNS[batch]}" | median3)
    OVERHEAD_TX_DIFF=$(paste -d' ' <(tr ',' '\n' <<<"${OVERHEAD_RUNS[batch_tx]}") <(tr ',' '\n' <<<"${OVERHEAD_RUNS[base_tx]}") \
                           | awk '{ printf "%.3f\n", $1 - $2 }' | median3)
    OVERHEAD_INSERT_MS=$(tr ',' '\n' <<<"${OVERHEAD_RUNS[base_insert]}" | median3)
    # The ledger's view of the same batches: "batches|1-row batches|median
    # duration µs (microbatch.batches)|median lock_wait µs (batch_progress)"
    OVERHEAD_LEDGER=$(val overhead "SELECT concat_ws('|', count(*), count(*) FILTER (WHERE rows_in = 1),
                   round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM duration) * 1e6))::numeric),
                   (SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM lock_wait) * 1e6))::numeric)
                      FROM microbatch.batch_progress
                     WHERE pipeline = 'p' AND status = 'committed' AND ($ranges)))
              FROM microbatch.batches
             WHERE pipeline = 'p' AND status = 'committed' AND ($ranges)")
    # each kind of step: "kind|steps per batch|median µs|mean µs"
    mapfile -t OVERHEAD_STEPS < <(val overhead "SELECT concat_ws('|', kind, round(count(*)::numeric / count(DISTINCT batch_id), 2),
                   round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM duration) * 1e6))::numeric),
                   round(avg(extract(epoch FROM duration) * 1e6)::numeric))
              FROM microbatch.batch_steps
             WHERE pipeline = 'p' AND status = 'committed' AND ($ranges)
             GROUP BY kind ORDER BY min(step)")
    # the engine's counters over the timed runs: "batches|mean start to
    # commit µs|lock wait µs per batch|ledger row and commit µs per batch"
    OVERHEAD_STATS=$(awk -v a="$sums" 'BEGIN { split(a, x, " "); n = x[1] > 0 ? x[1] : 1
                         printf "%d|%.0f|%.0f|%.0f", x[1], x[2] * 1000 / n, x[3] * 1000 / n, x[4] * 1000 / n }')

    # The breakdown: one more run of the same script, in which
    # pg_stat_statements tracks every statement, nested ones included, with
    # their planning (for this connection only).
    val overhead "SELECT pg_stat_statements_reset()" >/dev/null
    r=$(overhead_run ov-batch.pgbench profile \
        PGOPTIONS="-c compute_query_id=on -c pg_stat_statements.track=all -c pg_stat_statements.track_planning=on")
    IFS='|' read -r tx ms n <<<"$r"
    OVERHEAD_PROFILE_MS=${ms#*,}
    OVERHEAD_PROFILE_BATCHES=$(val overhead "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
                                              WHERE toplevel AND query LIKE '%microbatch.run_batch(%'
                                                AND dbid = (SELECT oid FROM pg_database WHERE datname = 'overhead')")
    [ "$OVERHEAD_PROFILE_BATCHES" -gt 0 ] || fail "overhead: pg_stat_statements counted no run_batch call"
    # the nested statements, top 10 by time: "calls|calls per batch|exec µs
    # per batch|plan µs per batch|query, shortened", tab-separated; then their sum
    mapfile -t OVERHEAD_NESTED < <(sql overhead -F $'\t' -c "
            SELECT calls, round(calls::numeric / $OVERHEAD_PROFILE_BATCHES, 2),
                   round((total_exec_time * 1000 / $OVERHEAD_PROFILE_BATCHES)::numeric, 1),
                   round((total_plan_time * 1000 / $OVERHEAD_PROFILE_BATCHES)::numeric, 1),
                   CASE WHEN length(q) > 110 THEN left(q, 107) || '...' ELSE q END
              FROM (SELECT *, regexp_replace(btrim(query), '\s+', ' ', 'g') AS q FROM pg_stat_statements
                     WHERE NOT toplevel AND dbid = (SELECT oid FROM pg_database WHERE datname = 'overhead')) s
             ORDER BY total_exec_time + total_plan_time DESC LIMIT 10")
    OVERHEAD_NESTED_SUM=$(val overhead "SELECT concat_ws('|', count(*), round(sum(calls)::numeric / $OVERHEAD_PROFILE_BATCHES, 2),
                   round((sum(total_exec_time) * 1000 / $OVERHEAD_PROFILE_BATCHES)::numeric, 1),
                   round((sum(total_plan_time) * 1000 / $OVERHEAD_PROFILE_BATCHES)::numeric, 1))
              FROM pg_stat_statements
             WHERE NOT toplevel AND dbid = (SELECT oid FROM pg_database WHERE datname = 'overhead')")
    # the top-level statements of the profiling run, for reference
    mapfile -t OVERHEAD_TOPLEVEL < <(sql overhead -F $'\t' -c "
            SELECT calls, round((total_exec_time * 1000 / calls)::numeric, 1), round((total_plan_time * 1000 / calls)::numeric, 1),
                   CASE WHEN query LIKE '%run_batch(%' THEN 'run_batch' ELSE 'insert' END,
                   regexp_replace(btrim(query), '\s+', ' ', 'g')
              FROM pg_stat_statements
             WHERE toplevel AND dbid = (SELECT oid FROM pg_database WHERE datname = 'overhead')
               AND (query LIKE '%run_batch(%' OR query LIKE 'INSERT INTO src%')
             ORDER BY query")
    val overhead "SELECT pg_stat_statements_reset()" >/dev/null
    OVERHEAD_ROWS_WAITING=$(val overhead "SELECT microbatch.rows_waiting('p')")
    say "  run_batch of 1 row: $OVERHEAD_MS ms (median of rounds: ${OVERHEAD_RUNS[batch]}); per transaction +$OVERHEAD_TX_DIFF ms over the INSERT alone; ledger batches|1-row|median duration µs|median lock_wait µs: $OVERHEAD_LEDGER; stat_pipelines batches|mean µs|lock µs|commit µs: $OVERHEAD_STATS"
    local l
    for l in "${OVERHEAD_STEPS[@]}"; do say "  step kind|per batch|median µs|mean µs: $l"; done
    say "  profiled run: run_batch $OVERHEAD_PROFILE_MS ms, $OVERHEAD_PROFILE_BATCHES batches; nested statements|calls|exec µs|plan µs per batch: $OVERHEAD_NESTED_SUM"
    for l in "${OVERHEAD_NESTED[@]}"; do say "    $l"; done
}

#--------------------------------------------------------------------------
# 9. Soak: retention at 5k rows/s for 10 minutes
#--------------------------------------------------------------------------
# soak_tp_run SIDE: one unthrottled loader run into bench.tp_events, with
# retention at 0 (on) or none (off), from the same starting point: every row
# loaded before processed and removed, the table vacuumed.  Sets
# SOAK_TP_RATE (rows/s) and SOAK_TP_RUN_REMOVED (rows retention removed
# during the run).
soak_tp_run() {
    local side=$1 removed0 removed1 log
    val soak "SELECT microbatch.set_retention('bench.tp_events', '0')" >/dev/null
    drain soak tp
    val soak "SELECT microbatch.retention_now('bench.tp_events')" >/dev/null
    val soak "VACUUM bench.tp_events" >/dev/null
    if [ "$side" = off ]; then
        val soak "SELECT microbatch.set_retention('bench.tp_events', NULL)" >/dev/null
    fi
    val soak "CHECKPOINT" >/dev/null
    SOAK_TP_N=$((SOAK_TP_N + 1))
    log="$WORK/soak-tp-$SOAK_TP_N-$side.log"
    removed0=$(val soak "SELECT rows_removed FROM microbatch.retention WHERE source = 'bench.tp_events'::regclass")
    pg pgbench -n -c 4 -j 2 -T "$SOAK_TP_SECONDS" -f "$WORK/soak-tp.pgbench" soak >"$log" 2>&1 \
        || { tail "$log"; fail "pgbench failed"; }
    removed1=$(val soak "SELECT rows_removed FROM microbatch.retention WHERE source = 'bench.tp_events'::regclass")
    SOAK_TP_LOADED=$((SOAK_TP_LOADED + 100 * $(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")))
    SOAK_TP_RATE=$(calc %.0f "$(tps_of "$log") * 100")
    SOAK_TP_RUN_REMOVED=$((removed1 - removed0))
}

section_soak() {
    say "[9 soak] ${SOAK_SECONDS}s at $SOAK_RATE rows/s with retain $SOAK_RETAIN and history_retention 1 min; then loader rows/s with and without retention"
    set_enabled on
    # The brief of the issue: batches every second, retention checked every
    # second, the batch history kept for a minute (a cluster-wide setting:
    # this section runs last, and resets it).
    val postgres "ALTER SYSTEM SET microbatch.naptime = '1s'" >/dev/null
    val postgres "ALTER SYSTEM SET microbatch.history_retention = '1min'" >/dev/null
    val postgres "SELECT pg_reload_conf()" >/dev/null
    demo_db soak "$BENCH/soak.sql"
    sql soak >/dev/null <<SQL
SELECT microbatch.alter_pipeline('clickstream', batch_interval => '1 s');
SELECT microbatch.set_retention('staging.events', '$SOAK_RETAIN');
SQL
    sleep 1
    SOAK_GUCS=$(val soak "SELECT string_agg(name || ' = ' || setting || coalesce(unit, ''), ', ' ORDER BY name)
                            FROM pg_settings WHERE name IN ('microbatch.naptime', 'microbatch.history_retention',
                                                            'microbatch.retention_step_rows', 'autovacuum_naptime',
                                                            'autovacuum_vacuum_scale_factor')")
    SOAK_RETENTION_WORKERS=$(val soak "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'microbatch retention' AND datname = 'soak'")

    # The loader: 100-row transactions at SOAK_RATE rows/s from 2 clients
    # (Poisson arrivals); sampled every SOAK_SAMPLE_SECONDS meanwhile.
    local lsn0 start pid next t wait_s line
    lsn0=$(val soak "SELECT pg_current_wal_lsn()")
    SOAK_START=$(val soak "SELECT clock_timestamp()")
    start=$(date +%s.%N)
    pg pgbench -n -c 2 -j 2 -R $((SOAK_RATE / 100)) -T "$SOAK_SECONDS" -D rows=100 \
        -f "$BENCH/soak-insert.pgbench" soak >"$WORK/soak-load.log" 2>&1 &
    pid=$!
    BG_PIDS+=("$pid")
    next=0
    while :; do
        t=$(calc %.1f "$(date +%s.%N) - $start")
        val soak "SELECT bench.soak_sample($t, '$lsn0')" >/dev/null
        if [ $((next % 60)) = 0 ]; then
            line=$(val soak "SELECT format('staging %s rows, %s MB table + %s MB indexes; ledger %s rows; %s rows removed, %s waiting',
                                         staging_rows, round(staging_table_bytes / 1048576.0, 1),
                                         round(staging_index_bytes / 1048576.0, 1), ledger_rows, rows_removed, rows_waiting)
                               FROM bench.soak_samples ORDER BY t DESC LIMIT 1")
            say "  ${t}s: $line"
        fi
        next=$((next + SOAK_SAMPLE_SECONDS))
        [ "$next" -le "$SOAK_SECONDS" ] || break
        wait_s=$(calc %.3f "$start + $next - $(date +%s.%N)")
        if [ "$(calc %d "($wait_s > 0)")" = 1 ]; then sleep "$wait_s"; fi
    done
    wait "$pid" || { tail "$WORK/soak-load.log"; fail "the soak's loader failed"; }
    SOAK_END=$(val soak "SELECT clock_timestamp()")
    SOAK_LOAD_TXNS=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$WORK/soak-load.log")
    SOAK_LOAD_LAG=$(sed -n 's/^rate limit schedule lag: avg \([0-9.]*\) .*max \([0-9.]*\).*/\1 ms average, \2 ms max/p' "$WORK/soak-load.log")

    # Ground truth: the loader stopped, the pipeline drained, what committed
    # into the staging table against what the batches took (rows_in) and the
    # distinct rows they processed: bronze keeps one row per staging row
    # (keyed by ingest_id) that the expectations kept, the quarantine the
    # others.
    drain soak clickstream 300
    val soak "SELECT bench.soak_copy_ledger()" >/dev/null
    IFS='|' read -r SOAK_LOADED SOAK_PROCESSED SOAK_BRONZE SOAK_QUARANTINED SOAK_BOTH SOAK_BATCHES SOAK_BATCH_GAPS SOAK_STAGING_LEFT SOAK_REMOVED \
        <<<"$(val soak "SELECT concat_ws('|',
                (SELECT sum(rows) FROM bench.soak_loaded),
                (SELECT sum(rows_in) FROM bench.soak_ledger WHERE status = 'committed'),
                (SELECT count(*) FROM bronze.events),
                (SELECT count(DISTINCT ingest_id) FROM bench.soak_quarantine),
                (SELECT count(*) FROM bronze.events WHERE ingest_id IN (SELECT ingest_id FROM bench.soak_quarantine)),
                (SELECT count(*) FROM bench.soak_ledger WHERE status = 'committed'),
                (SELECT max(batch_id) - count(*) FROM bench.soak_ledger),
                (SELECT count(*) FROM staging.events),
                (SELECT rows_removed FROM microbatch.retention WHERE source = 'staging.events'::regclass))")"
    SOAK_DISTINCT=$((SOAK_BRONZE + SOAK_QUARANTINED - SOAK_BOTH))
    SOAK_LOST=$((SOAK_LOADED - SOAK_DISTINCT))
    SOAK_TWICE=$((SOAK_PROCESSED - SOAK_DISTINCT))
    SOAK_PGBENCH_ROWS=$((SOAK_LOAD_TXNS * 100))
    say "  loaded $SOAK_LOADED rows (pgbench: $SOAK_PGBENCH_ROWS); $SOAK_BATCHES batches took $SOAK_PROCESSED (ids missing from the copy: $SOAK_BATCH_GAPS); distinct rows processed $SOAK_DISTINCT (bronze $SOAK_BRONZE, quarantine $SOAK_QUARANTINED, both $SOAK_BOTH): lost $SOAK_LOST, twice $SOAK_TWICE"
    # The soak's batches and load, from the ledger's copy and the samples
    SOAK_BATCH_STATS=$(val soak "SELECT concat_ws('|', round(avg(rows_in)), max(rows_in),
            round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at) * 1000))::numeric, 1),
            round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at) * 1000))::numeric, 1))
          FROM bench.soak_ledger WHERE status = 'committed' AND started_at < '$SOAK_END'")
    # "rows/s loaded|WAL MB/s|most rows waiting|autovacuums of the staging
    # table|outputs MB at the end|most ledger rows|most staging rows"
    SOAK_RUN=$(val soak "SELECT concat_ws('|', round(max(loaded_rows) / max(t)), round((max(wal_bytes) / max(t) / 1048576)::numeric, 2),
            max(rows_waiting), max(staging_autovacuums) - min(staging_autovacuums),
            round(max(outputs_bytes) / 1048576.0), max(ledger_rows), max(staging_rows))
          FROM bench.soak_samples")
    mapfile -t SOAK_FLAT < <(val soak "SELECT concat_ws('|', figure, round(middle::numeric, 2), round(last::numeric, 2), round(ratio::numeric, 3))
                                         FROM bench.soak_flatness($SOAK_SECONDS) ORDER BY figure")
    # One sample a minute, for the report's table
    mapfile -t SOAK_MINUTES < <(val soak "SELECT concat_ws('|', m, staging_rows, round(staging_table_bytes / 1048576.0, 1),
                    round(staging_index_bytes / 1048576.0, 1), staging_dead_rows, ledger_rows,
                    round((ledger_bytes + checks_bytes) / 1048576.0, 2), rows_removed, removable_rows, rows_waiting,
                    round(wal_bytes / 1048576))
              FROM (SELECT DISTINCT ON (round(t / 60)) round(t / 60)::int AS m, *
                      FROM bench.soak_samples ORDER BY round(t / 60), abs(t - 60 * round(t / 60))) s
             ORDER BY m")
    local f
    for f in "${SOAK_FLAT[@]}"; do say "  flatness figure|middle third|last third|ratio: $f"; done

    # The figure: sizes over time
    {
        echo "# minutes table_MB indexes_MB staging_MB staging_krows ledger_rows ledger_MB removed_krows removable_krows wal_MB outputs_MB loaded_krows dead_krows"
        sql soak -F ' ' -c "SELECT round((t / 60)::numeric, 3), round(staging_table_bytes / 1048576.0, 2),
                round(staging_index_bytes / 1048576.0, 2), round((staging_table_bytes + staging_index_bytes) / 1048576.0, 2),
                round(staging_rows / 1000.0, 1), ledger_rows, round((ledger_bytes + checks_bytes) / 1048576.0, 3),
                round(rows_removed / 1000.0, 1), round(removable_rows / 1000.0, 1), round(wal_bytes / 1048576.0, 1),
                round(outputs_bytes / 1048576.0, 1), round(loaded_rows / 1000.0, 1), round(staging_dead_rows / 1000.0, 1)
              FROM bench.soak_samples ORDER BY t"
    } >"$WORK/soak.dat"
    SOAK_SVG=$WORK/soak.svg
    gnuplot -e "datafile='$WORK/soak.dat'; outfile='$SOAK_SVG'; minutes=$(calc %.2f "$SOAK_SECONDS / 60")" \
        -e "titletext='Soak: $((SOAK_SECONDS / 60)) min at $SOAK_RATE rows/s, staging retention $SOAK_RETAIN, history retention 1 min'" \
        "$BENCH/soak.gp" 2>"$WORK/gnuplot.log" || { cat "$WORK/gnuplot.log"; fail "gnuplot failed"; }
    [ -s "$SOAK_SVG" ] || fail "gnuplot wrote no figure"

    # What is left of the staging table once its retention allows removing
    # everything processed: nothing but the rows above the horizon.
    val soak "SELECT microbatch.set_retention('staging.events', '0')" >/dev/null
    SOAK_FINAL_REMOVED=$(val soak "SELECT microbatch.retention_now('staging.events')")
    SOAK_FINAL_LEFT=$(val soak "SELECT count(*) FROM staging.events")
    val soak "SELECT microbatch.set_retention('staging.events', NULL)" >/dev/null
    # Vacuumed now rather than by autovacuum in the middle of the runs below
    # (bronze and silver got millions of rows).
    val soak "VACUUM ANALYZE" >/dev/null

    # Loader throughput with retention deleting behind it (retain 0: a row
    # goes as soon as its batch committed) vs without: an unthrottled
    # loader (4 clients, 100 literal rows per INSERT) into a copy of the
    # staging table whose pipeline counts each batch's rows (it keeps up,
    # so the retention worker deletes as fast as the loader inserts).
    sql soak >/dev/null <<'SQL'
CREATE TABLE bench.tp_events (LIKE staging.events INCLUDING ALL);
ALTER TABLE bench.tp_events DROP COLUMN microbatch_xid;
CREATE TABLE bench.tp_counts (batch_id bigint PRIMARY KEY, rows bigint NOT NULL);
SELECT microbatch.create_pipeline('tp', 'bench.tp_events', batch_interval => '1 s');
SELECT microbatch.add_transform('tp', 'count', 'gold', $$
    INSERT INTO bench.tp_counts
    SELECT microbatch.current_batch_id(), count(*) FROM microbatch.tp_batch
        ON CONFLICT (batch_id) DO UPDATE SET rows = excluded.rows
$$);
SQL
    val soak "SELECT 'INSERT INTO bench.tp_events (event_id, user_id, email, url, event_type, amount, payload) VALUES '
                     || string_agg(format('(%L, %L, %L, %L, %L, %L, %L)', event_id, user_id, email, url, event_type, amount, payload), ', ') || ';'
                FROM bench.gen_events(100, 4244)" >"$WORK/soak-tp.pgbench"
    declare -gA SOAK_TP_RUNS=([off]="" [on]="")
    SOAK_TP_REMOVED="" SOAK_TP_N=0 SOAK_TP_LOADED=0
    local round side order
    for round in $(seq 1 "$SOAK_TP_ROUNDS"); do
        # alternate which side goes first
        order="off on"
        [ $((round % 2)) = 0 ] && order="on off"
        for side in $order; do
            soak_tp_run "$side"
            SOAK_TP_RUNS[$side]+="${SOAK_TP_RUNS[$side]:+, }$SOAK_TP_RATE"
            if [ "$side" = on ]; then
                SOAK_TP_REMOVED+="${SOAK_TP_REMOVED:+, }$SOAK_TP_RUN_REMOVED"
                say "  round $round, retention on (retain 0): $SOAK_TP_RATE rows/s, $SOAK_TP_RUN_REMOVED rows removed during the run"
            else
                say "  round $round, retention off: $SOAK_TP_RATE rows/s"
            fi
        done
    done
    read -r SOAK_TP_RATIO SOAK_TP_MIN SOAK_TP_MAX <<<"$(paired_ratio "${SOAK_TP_RUNS[on]}" "${SOAK_TP_RUNS[off]}")"
    SOAK_TP_OFF=$(calc %.0f "$(tr ',' '\n' <<<"${SOAK_TP_RUNS[off]}" | median)")
    SOAK_TP_ON=$(calc %.0f "$(tr ',' '\n' <<<"${SOAK_TP_RUNS[on]}" | median)")
    drain soak tp
    SOAK_TP_PROCESSED=$(val soak "SELECT coalesce(sum(rows), 0) FROM bench.tp_counts")
    say "  loader rows/s with retention over without: $SOAK_TP_RATIO ($SOAK_TP_MIN-$SOAK_TP_MAX); loaded $SOAK_TP_LOADED rows, the pipeline counted $SOAK_TP_PROCESSED"

    val soak "SELECT microbatch.pause_pipeline(pipeline) FROM microbatch.pipelines" >/dev/null
    val postgres "ALTER SYSTEM RESET microbatch.naptime" >/dev/null
    val postgres "ALTER SYSTEM RESET microbatch.history_retention" >/dev/null
    val postgres "SELECT pg_reload_conf()" >/dev/null
}

#--------------------------------------------------------------------------
# 12. A first batch over a million rows, and parallel query
#--------------------------------------------------------------------------
section_first() {
    say "[12 first] the demo's first batch over $FIRST_ROWS rows: its steps; a parallel scan of the rows by hand"
    set_enabled off
    demo_db first_batch
    val first_batch "ALTER TABLE staging.events SET (autovacuum_enabled = off)" >/dev/null
    val first_batch "INSERT INTO staging.events (event_id, user_id, email, url, event_type, amount, payload)
                     SELECT * FROM bench.gen_events($FIRST_ROWS, 5151)" >/dev/null
    val first_batch "VACUUM ANALYZE staging.events" >/dev/null
    val first_batch "CHECKPOINT" >/dev/null
    FIRST_PARALLEL_SETTINGS=$(val first_batch "SELECT concat_ws(', ', 'max_parallel_workers_per_gather = ' || current_setting('max_parallel_workers_per_gather'),
                                                         'max_parallel_workers = ' || current_setting('max_parallel_workers'))")
    local t0 t1
    t0=$(val first_batch "SELECT extract(epoch FROM clock_timestamp())")
    val first_batch "SELECT microbatch.run_batch('clickstream')" >/dev/null
    t1=$(val first_batch "SELECT extract(epoch FROM clock_timestamp())")
    FIRST_MS=$(calc %.0f "($t1 - $t0) * 1000")
    FIRST_BATCH_ROWS=$(val first_batch "SELECT rows_in FROM microbatch.batches WHERE pipeline = 'clickstream' AND status = 'committed' ORDER BY batch_id DESC LIMIT 1")
    # kind|name|rows|ms of each step of the batch, in order
    mapfile -t FIRST_STEPS < <(val first_batch "SELECT concat_ws('|', kind, coalesce(name, ''), rows,
                                                       round((extract(epoch FROM duration) * 1000)::numeric))
                                                  FROM microbatch.batch_steps
                                                 WHERE pipeline = 'clickstream' AND batch_id = 1 AND status = 'committed'
                                                 ORDER BY step")
    # What a parallel plan does for a read of the same rows by hand: a count
    # and a checksum of the staging table, serially and with the workers
    # allowed, best of three each.
    sql first_batch >/dev/null <<'SQL'
CREATE FUNCTION bench.execution_ms(q text, OUT ms float8, OUT parallel boolean)
LANGUAGE plpgsql AS $$
DECLARE
    plan json;
BEGIN
    EXECUTE 'EXPLAIN (ANALYZE, FORMAT JSON) ' || q INTO plan;
    ms := (plan -> 0 ->> 'Execution Time')::float8;
    parallel := plan::text LIKE '%"Workers Launched": %' AND plan::text NOT LIKE '%"Workers Launched": 0%';
END $$;
SQL
    local q="SELECT count(*), sum(hashtext(url)) FROM staging.events"
    FIRST_SCAN_SERIAL=$(val first_batch "SET max_parallel_workers_per_gather = 0;
        SELECT round(min(ms)::numeric, 1) FROM generate_series(1, 3), bench.execution_ms('$q')")
    FIRST_SCAN_PARALLEL=$(val first_batch "SELECT concat_ws('|', round(min(ms)::numeric, 1), bool_and(parallel))
        FROM generate_series(1, 3), bench.execution_ms('$q')")
    say "  first batch: $FIRST_BATCH_ROWS rows in $FIRST_MS ms; steps: $(IFS=';'; echo "${FIRST_STEPS[*]}"); the scan by hand: $FIRST_SCAN_SERIAL ms serially, $FIRST_SCAN_PARALLEL (ms|parallel) with workers"
    val postgres "DROP DATABASE first_batch" >/dev/null
}

#--------------------------------------------------------------------------
# Run the sections, then write the report
#--------------------------------------------------------------------------
for section in $SECTIONS; do
    "section_$section"
done

say "writing $REPORT"
# The results, to rewrite the report without measuring again (with
# MB_BENCH_KEEP): . results.sh; . report.sh; write_report
declare -p $(compgen -v | grep -E '^(TP_|LAT_|SWEEP_|TPCB_|IDLE|INGEST_|CRON_|QUALITY_|SOAK_|CATCHUP_|OVERHEAD_|FIRST_|MB_|SETTINGS|PG_VERSION|QUICK|WORK|ROOT)') \
    >"$WORK/results.sh" 2>/dev/null || true
. "$BENCH/report.sh"
write_report >"$REPORT.tmp" || fail "writing the report failed (the results are in $WORK/results.sh with MB_BENCH_KEEP=1)"
mv "$REPORT.tmp" "$REPORT"
# the soak's figure, next to the report that shows it
if [ -n "${SOAK_SVG:-}" ]; then
    cp "$SOAK_SVG" "$ROOT/docs/benchmarks-soak.svg"
fi
say "done in ${SECONDS}s"
