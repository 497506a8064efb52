#!/usr/bin/env bash
#
# make bench-citus: one node against a Citus coordinator and two workers on
# this machine, and the cost of the distributed design per batch; writes
# docs/benchmarks-citus.md from that one run.
#
# It measures the extension as installed (no build, no install: run make
# install first) and skips, exiting 0, when Citus is not installed.  It
# starts four throwaway clusters of its own in a temporary directory (as the
# unprivileged postgres user when run as root: PostgreSQL refuses root):
#
#   single   PostgreSQL with microbatch: the one-node side
#   coord    Citus coordinator  \
#   w1, w2   Citus workers      /  the Citus side, on 127.0.0.1
#
# and stops exactly those four (pg_ctl stop -D, on exit and on error).  All
# of them share this machine's cores: the ratios say what the design costs,
# not what scaling out buys.
#
#   A throughput   the same rows loaded by pgbench (multi-row INSERTs from a
#                  few clients), rows/s from the start of the load until
#                  gold counts every row; the two sides alternate, a few rounds;
#                  and the same load into the same tables without a pipeline
#   B per batch    batches of a fixed size, one load at a time, the pipeline's
#                  own background workers running them: the ledger's duration
#                  of a shard pipeline's batch on a worker against a one-node
#                  batch of the same size
#
# Environment: MB_BENCH_QUICK=1 (a short smoke run: the report says so),
# MB_BENCH_KEEP=1 (keep the clusters' directory), MICROBATCH_BENCH_USER.
#
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
REPORT=$ROOT/docs/benchmarks-citus.md
PG_MAJOR=15
PG_BINDIR=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PG_BINDIR/pg_config
RUN_USER=${MICROBATCH_BENCH_USER:-postgres}
QUICK=${MB_BENCH_QUICK:-}

say() { printf '[%s %4ds] %s\n' "$(date +%H:%M:%S)" "$SECONDS" "$*"; }
fail() { echo "bench-citus: $*" >&2; exit 1; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
now_s() { date +%s.%N; }

[ -x "$PG_CONFIG" ] || fail "PostgreSQL $PG_MAJOR is not installed ($PG_CONFIG is missing)"
LIBDIR=$("$PG_CONFIG" --pkglibdir)
if [ ! -f "$LIBDIR/citus.so" ]; then
    echo "bench-citus: skipped: Citus is not installed ($LIBDIR/citus.so is missing)."
    echo "bench-citus: ../shared/vendor/build-citus.sh builds and installs Citus 13.2.2."
    exit 0
fi
[ -f "$LIBDIR/microbatch.so" ] || fail "microbatch is not installed ($LIBDIR/microbatch.so is missing): make install first"
command -v pgbench >/dev/null || [ -x "$PG_BINDIR/pgbench" ] || fail "pgbench is missing"

# Sizes.  A full run takes 5 to 7 minutes on a 2-core machine, a quick one under a minute.
SHARDS=4                        # citus.shard_count: two shards per worker
CLIENTS=4 TX_ROWS=500           # pgbench clients; rows per INSERT (one transaction)
if [ -z "$QUICK" ]; then
    ROWS=1000000 ROUNDS=3       # throughput: rows per run (~5 s of load on one node); rounds
    B_SIZES="1000 10000"        # per batch: rows per batch
    B_LOADS=10 B_ROUNDS=4       # loads per side and round (after a warm-up load); rounds
else
    ROWS=40000 ROUNDS=1
    B_SIZES="1000"
    B_LOADS=3 B_ROUNDS=1
fi
TX_PER_CLIENT=$((ROWS / CLIENTS / TX_ROWS))
[ $((TX_PER_CLIENT * CLIENTS * TX_ROWS)) -eq "$ROWS" ] || fail "ROWS must be a multiple of CLIENTS x TX_ROWS"
WAIT_TIMEOUT=600                # s: gold must count every row by then
WARM_ROWS=5000                  # a warm-up load before each timed one: every page, every batch worker
POLL=0.05                       # s between two looks at gold

LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
say "load average at start: $LOADAVG_START"

#--------------------------------------------------------------------------
# The clusters
#--------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/microbatch-bench-citus.XXXXXX)
NODES="single coord w1 w2"
STARTED=()
LOADER_PID=
if [ "$(id -u)" = 0 ]; then
    chown "$RUN_USER" "$WORK"
    asu() { runuser -u "$RUN_USER" -- env PATH="$PG_BINDIR:$PATH" "$@"; }
else
    asu() { env PATH="$PG_BINDIR:$PATH" "$@"; }
fi
chmod 700 "$WORK"

# the pipelines of every running node, for a run that failed
diagnose() {
    local n
    for n in "${STARTED[@]}"; do
        echo "== $n: microbatch.pipelines"
        asu psql -X -At -h "$WORK" -p "${PORT[$n]}" -d bench -c \
            "SELECT pipeline, state, consecutive_failures, last_error FROM microbatch.pipelines" 2>&1 | head -n 20
        echo "== $n: last lines of the server log"
        tail -n 15 "$WORK/$n/server.log"
    done
}

cleanup() {
    local status=$? n
    set +e
    rm -f "$REPORT.tmp"
    if [ -n "$LOADER_PID" ]; then
        [ ! -f "$WORK/loader.pid" ] || kill "$(cat "$WORK/loader.pid")" 2>/dev/null
        kill "$LOADER_PID" 2>/dev/null
    fi
    [ "$status" -eq 0 ] || diagnose
    for n in "${STARTED[@]}"; do
        if [ -f "$WORK/$n/data/postmaster.pid" ]; then
            asu pg_ctl -D "$WORK/$n/data" -m fast -w -t 120 stop >/dev/null
        fi
    done
    if [ -n "${MB_BENCH_KEEP:-}" ]; then
        echo "clusters' directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. test/lib.sh
declare -A PORT
for n in $NODES; do
    while :; do
        p=$(mb_free_port)
        case " ${PORT[*]} " in *" $p "*) ;; *) break ;; esac
    done
    PORT[$n]=$p
done

# The settings, the same on every node but the preload, also printed in the
# report.  fsync stays on, as in make bench: Citus' two-phase commits flush
# WAL on every node they touch, and that is part of what is measured.
common_settings() {
    cat <<EOF
max_prepared_transactions = 20
max_worker_processes = 24
shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
jit = off
EOF
}
CITUS_SETTINGS="shared_preload_libraries = 'citus,microbatch'
citus.log_distributed_deadlock_detection = on
$(common_settings)"
SINGLE_SETTINGS="shared_preload_libraries = 'microbatch'
$(common_settings)"

for n in $NODES; do
    mkdir "$WORK/$n"
    [ "$(id -u)" = 0 ] && chown "$RUN_USER" "$WORK/$n"
    asu initdb -D "$WORK/$n/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 --no-sync >"$WORK/$n/initdb.log" 2>&1 \
        || { cat "$WORK/$n/initdb.log"; fail "initdb $n failed"; }
    if [ "$n" = single ]; then settings=$SINGLE_SETTINGS; else settings=$CITUS_SETTINGS; fi
    {
        echo "# make bench-citus (test/bench/citus.sh): node $n"
        echo "port = ${PORT[$n]}"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$WORK'"
        echo "cluster_name = 'mbcitus-$n'"
        echo "log_line_prefix = '%m [%p] %q%a '"
        echo "$settings"
    } | asu tee -a "$WORK/$n/data/postgresql.conf" >/dev/null
    echo "host all all 127.0.0.1/32 trust" | asu tee -a "$WORK/$n/data/pg_hba.conf" >/dev/null
    STARTED+=("$n")
    asu pg_ctl -D "$WORK/$n/data" -l "$WORK/$n/server.log" -w -t 120 start >/dev/null \
        || { tail -n 40 "$WORK/$n/server.log"; fail "starting $n failed"; }
done
say "four clusters started in $WORK: single :${PORT[single]}, coord :${PORT[coord]}, w1 :${PORT[w1]}, w2 :${PORT[w2]}"

# q NODE ARGS...: psql to database bench of NODE, quiet, unaligned, stop on the first error
q() { local n=$1; shift; asu psql -X -q -At -v ON_ERROR_STOP=1 -h "$WORK" -p "${PORT[$n]}" -d bench "$@"; }
qdb() { local n=$1 db=$2; shift 2; asu psql -X -q -At -v ON_ERROR_STOP=1 -h "$WORK" -p "${PORT[$n]}" -d "$db" "$@"; }

for n in $NODES; do qdb "$n" postgres -c "CREATE DATABASE bench"; done
q single -c "CREATE EXTENSION microbatch"
for n in coord w1 w2; do q "$n" -c "CREATE EXTENSION citus"; done
q coord -c "SELECT citus_add_node('127.0.0.1', ${PORT[w1]})" -c "SELECT citus_add_node('127.0.0.1', ${PORT[w2]})" >/dev/null
# Citus creates it on the workers too
q coord -c "CREATE EXTENSION microbatch"
for n in w1 w2; do
    [ "$(q "$n" -c "SELECT extversion FROM pg_extension WHERE extname = 'microbatch'")" = 0.5.0 ] \
        || fail "microbatch 0.5.0 is not installed on $n"
done

# Waits until gold counts TARGET events, committing between looks (every
# POLL s), so that each look sees what the batches committed meanwhile.
WAIT_PROC="CREATE PROCEDURE bench_wait(target bigint, timeout_s float8)
LANGUAGE plpgsql AS \$\$
DECLARE
    t0 timestamptz := clock_timestamp();
    n bigint;
BEGIN
    LOOP
        SELECT coalesce(sum(events), 0) INTO n FROM gold_users;
        EXIT WHEN n >= target;
        IF clock_timestamp() > t0 + make_interval(secs => timeout_s) THEN
            RAISE EXCEPTION 'gold_users counts % events of %, after % s', n, target, timeout_s;
        END IF;
        COMMIT;
        PERFORM pg_sleep($POLL);
    END LOOP;
END \$\$;"
q single -c "$WAIT_PROC"
q coord -c "$WAIT_PROC"

PG_VERSION=$(q single -c "SELECT version()")
CITUS_VERSION=$(q coord -c "SELECT citus_version()")
MB_VERSION=$(q single -c "SELECT extversion FROM pg_extension WHERE extname = 'microbatch'")
MB_GUCS=$(q single -c "SELECT string_agg(format('%s = %s', name, setting || coalesce(unit, '')), ', ' ORDER BY name)
                         FROM pg_settings WHERE name IN ('microbatch.max_workers', 'microbatch.naptime',
                                                         'microbatch.coalesce_delay', 'microbatch.synchronous_commit')")

#--------------------------------------------------------------------------
# The pipeline: the same tables and transforms on both sides
#--------------------------------------------------------------------------
# Not the demo's SQL (test/demo/clickstream.sql): its unique keys do not
# contain a common distribution column (staging's ingest_id, silver's
# event_id, the gold facts' day and page), which Citus cannot enforce on
# distributed tables, and its gold facts, keyed by page, would not be
# co-located with a source distributed by user.  So a clickstream of the same
# shape: a bronze copy, a gold count and sum per user (the key the source is
# distributed by, so co-located), and a page dimension (a reference table on
# Citus) that is only written when a batch brings a page it has not seen.
TABLES_SQL="CREATE TABLE events (
    user_id     bigint NOT NULL,
    event_id    uuid NOT NULL,
    page        text NOT NULL,
    event_type  text NOT NULL,
    amount      numeric(12,2),
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE bronze_events (
    user_id     bigint NOT NULL,
    event_id    uuid NOT NULL,
    page        text NOT NULL,
    event_type  text NOT NULL,
    amount      numeric(12,2),
    received_at timestamptz NOT NULL,
    batch_id    bigint NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE TABLE gold_users (
    user_id bigint PRIMARY KEY,
    events  bigint NOT NULL,
    revenue numeric(14,2) NOT NULL
);
CREATE TABLE dim_page (
    page       text PRIMARY KEY,
    first_seen timestamptz NOT NULL
);"
CITUS_DISTRIBUTE_SQL="SET citus.shard_count = $SHARDS;
SELECT create_distributed_table('events', 'user_id');
SELECT create_distributed_table('bronze_events', 'user_id', colocate_with => 'events');
SELECT create_distributed_table('gold_users', 'user_id', colocate_with => 'events');
SELECT create_reference_table('dim_page');"
T_BRONZE='INSERT INTO bronze_events
SELECT b.user_id, b.event_id, b.page, b.event_type, b.amount, b.received_at,
       microbatch.current_batch_id()
  FROM microbatch.clicks_batch b
    ON CONFLICT (user_id, event_id) DO NOTHING'
T_GOLD='INSERT INTO gold_users AS g (user_id, events, revenue)
SELECT b.user_id, count(*), coalesce(sum(b.amount), 0)
  FROM microbatch.clicks_batch b
 GROUP BY b.user_id
    ON CONFLICT (user_id) DO UPDATE
   SET events = g.events + excluded.events, revenue = g.revenue + excluded.revenue'
T_DIM='INSERT INTO dim_page (page, first_seen)
SELECT b.page, min(b.received_at)
  FROM microbatch.clicks_batch b
 WHERE NOT EXISTS (SELECT 1 FROM dim_page d WHERE d.page = b.page)
 GROUP BY b.page
    ON CONFLICT (page) DO NOTHING'

# setup SIDE [raw]: the tables and the pipeline 'clicks' (batch_interval 0),
# from scratch: what an earlier round left is dropped first; with raw, the
# tables only
setup() {
    local side=$1 raw=${2:-}
    if [ -n "$raw" ]; then
        q "$(entry "$side")" >/dev/null <<EOF
SET client_min_messages = warning;
SELECT microbatch.drop_pipeline('clicks') FROM microbatch.pipelines WHERE pipeline = 'clicks'
   AND NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus');
SELECT microbatch.drop_distributed_pipeline('clicks') FROM microbatch.distributed_pipelines WHERE pipeline = 'clicks';
DROP TABLE IF EXISTS events, bronze_events, gold_users, dim_page;
$TABLES_SQL
$(if [ "$side" = citus ]; then echo "$CITUS_DISTRIBUTE_SQL"; fi)
EOF
    elif [ "$side" = single ]; then
        q single -v tb="$T_BRONZE" -v tg="$T_GOLD" -v td="$T_DIM" >/dev/null <<EOF
SET client_min_messages = warning;
SELECT microbatch.drop_pipeline('clicks') FROM microbatch.pipelines WHERE pipeline = 'clicks';
DROP TABLE IF EXISTS events, bronze_events, gold_users, dim_page;
$TABLES_SQL
SELECT microbatch.create_pipeline('clicks', 'events', batch_interval => '0');
SELECT microbatch.add_transform('clicks', 'bronze', 'bronze', :'tb');
SELECT microbatch.add_transform('clicks', 'gold_users', 'gold', :'tg');
SELECT microbatch.add_transform('clicks', 'dim_page', 'gold', :'td');
EOF
    else
        q coord -v tb="$T_BRONZE" -v tg="$T_GOLD" -v td="$T_DIM" >/dev/null <<EOF
SET client_min_messages = warning;
SELECT microbatch.drop_distributed_pipeline('clicks') FROM microbatch.distributed_pipelines WHERE pipeline = 'clicks';
DROP TABLE IF EXISTS events, bronze_events, gold_users, dim_page;
$TABLES_SQL
$CITUS_DISTRIBUTE_SQL
SELECT microbatch.create_distributed_pipeline('clicks', 'events', batch_interval => '0');
SELECT microbatch.add_distributed_transform('clicks', 'bronze', 'bronze', :'tb');
SELECT microbatch.add_distributed_transform('clicks', 'gold_users', 'gold', :'tg');
SELECT microbatch.add_distributed_transform('clicks', 'dim_page', 'gold', :'td');
EOF
    fi
}
# the nodes a side runs on, and the one its loader and the wait connect to
side_nodes() { if [ "$1" = single ]; then echo single; else echo coord w1 w2; fi; }
batch_nodes() { if [ "$1" = single ]; then echo single; else echo w1 w2; fi; }
entry() { if [ "$1" = single ]; then echo single; else echo coord; fi; }
# the pipelines that run a side's batches, on a node that runs them
PIPELINES_OF="(SELECT 'clicks'::name WHERE NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')
               UNION ALL
               SELECT pipeline FROM microbatch.shard_pipelines WHERE distributed_pipeline = 'clicks')"

# A loader transaction: :rows events of seed :seed (the same rows for the
# same seed on either side): 5,000 users, 203 pages, ~80% page views, ~8%
# purchases with an amount.
LOAD_INSERT="INSERT INTO events (user_id, event_id, page, event_type, amount)
SELECT 1 + (h & 8191) % 5000,
       md5(:seed || ':' || g)::uuid,
       CASE WHEN (h >> 13) & 3 = 0 THEN (ARRAY['/', '/search', '/deals'])[1 + ((h >> 15) & 1023) % 3]
            ELSE '/products/' || (1 + ((h >> 15) & 1023) % 200) END,
       CASE WHEN (h >> 25) & 127 < 102 THEN 'page_view'
            WHEN (h >> 25) & 127 < 117 THEN 'add_to_cart' ELSE 'purchase' END,
       CASE WHEN (h >> 25) & 127 >= 117 THEN 9.99 + ((h >> 32) & 63) END
  FROM (SELECT g, hashint8extended(g, :seed) AS h FROM generate_series(1, :rows) AS g) s"
{
    echo '\set seed random(1, 2000000000)'
    echo "$LOAD_INSERT;"
} | asu tee "$WORK/load.pgbench" >/dev/null

checkpoint() { local n; for n in $(side_nodes "$1"); do q "$n" -c "CHECKPOINT"; done; }

# median / sum of the numbers on stdin, one a line
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } printf "%.3f\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# batch_lines SIDE SINCE: "rows_in ms" of each committed batch of the side
# that started at or after SINCE (a timestamptz), from the ledger of every
# node that runs its batches
batch_lines() {
    local n
    for n in $(batch_nodes "$1"); do
        q "$n" -F ' ' -c "SELECT rows_in, extract(epoch FROM duration) * 1000
                            FROM microbatch.batches
                           WHERE pipeline IN $PIPELINES_OF AND status = 'committed'
                             AND started_at >= '$2'"
    done
}
# step_lines SIDE SINCE: "step name µs" of each step of the same batches
step_lines() {
    local n
    for n in $(batch_nodes "$1"); do
        q "$n" -F ' ' -c "SELECT s.step, coalesce(s.name, s.kind), extract(epoch FROM s.duration) * 1e6
                            FROM microbatch.batch_steps s
                            JOIN microbatch.batches b USING (pipeline, batch_id, attempt)
                           WHERE s.pipeline IN $PIPELINES_OF AND b.status = 'committed'
                             AND b.started_at >= '$2'"
    done
}
# stat_sums SIDE: "batches total_ms commit_ms failures" of the side's
# pipelines, summed over its nodes (microbatch.stat_pipelines)
stat_sums() {
    local n
    for n in $(batch_nodes "$1"); do
        q "$n" -F ' ' -c "SELECT coalesce(sum(batches), 0), coalesce(sum(total_time), 0),
                                 coalesce(sum(total_commit_time), 0), coalesce(sum(failures), 0)
                            FROM microbatch.stat_pipelines WHERE pipeline IN $PIPELINES_OF"
    done | awk '{ b += $1; t += $2; c += $3; f += $4 } END { printf "%d %.3f %.3f %d\n", b, t, c, f }'
}
# counts SIDE: what the side's tables hold
counts() {
    q "$(entry "$1")" -c "SELECT format('events=%s bronze=%s gold_events=%s gold_revenue=%s dim_page=%s',
                                        (SELECT count(*) FROM events), (SELECT count(*) FROM bronze_events),
                                        (SELECT sum(events) FROM gold_users), (SELECT sum(revenue) FROM gold_users),
                                        (SELECT count(*) FROM dim_page))"
}
ts_now() { date -u '+%Y-%m-%d %H:%M:%S.%6N+00'; }
# record_failures SIDE PHASE: the side's failed batch attempts (warm-ups
# included), grouped by error, as "PHASE|side|attempts|sqlstate|error|where"
# lines of $WORK/failures: the ledger goes with the pipeline, so before the
# next setup
record_failures() {
    local n label
    if [ "$1" = single ]; then label="one node"; else label=Citus; fi
    for n in $(batch_nodes "$1"); do
        q "$n" -F '|' -c "SELECT sqlstate, error,
                                 coalesce(substring(error_context FROM 'microbatch transform \"[^\"]*\"'), '')
                            FROM microbatch.batches
                           WHERE pipeline IN $PIPELINES_OF AND status = 'failed'"
    done | sort | uniq -c | sed 's/^ *\([0-9]*\) /\1|/' | while IFS='|' read -r count st err where; do
        echo "$2|$label|$count|$st|$err|$where"
    done >>"$WORK/failures"
}

#--------------------------------------------------------------------------
# A: throughput, load start to gold complete
#--------------------------------------------------------------------------
# throughput SIDE ROUND SEED: appends "round side load_s e2e_s batches
# median_rows median_ms sum_ms stat_batches stat_total_ms stat_commit_ms" to
# $WORK/a.results
throughput() {
    local side=$1 round=$2 seed=$3 e t0 t1 t2 since st_before st_after lines
    e=$(entry "$side")
    setup "$side"
    # not timed: the first batches write every page into the dimension and
    # start the batch workers
    printf '\\set seed %s\n\\set rows %s\n%s;\nCALL bench_wait(%s, 300);\n' \
        "$((round + 7))" "$WARM_ROWS" "$LOAD_INSERT" "$WARM_ROWS" | q "$e"
    checkpoint "$side"
    st_before=$(stat_sums "$side")
    since=$(ts_now)
    t0=$(now_s)
    (
        rc=0
        asu pgbench -n -h "$WORK" -p "${PORT[$e]}" -c "$CLIENTS" -j 2 -t "$TX_PER_CLIENT" \
            -D rows="$TX_ROWS" --random-seed="$seed" -f "$WORK/load.pgbench" bench \
            >"$WORK/pgbench.$side.$round.log" 2>&1 &
        echo $! >"$WORK/loader.pid"
        wait $! || rc=$?
        echo "$rc" >"$WORK/loader.rc"
        now_s >"$WORK/loader.end"
    ) &
    LOADER_PID=$!
    q "$e" -c "CALL bench_wait($((WARM_ROWS + ROWS)), $WAIT_TIMEOUT)"
    t2=$(now_s)
    wait "$LOADER_PID"
    LOADER_PID=
    [ "$(cat "$WORK/loader.rc")" = 0 ] || { cat "$WORK/pgbench.$side.$round.log"; fail "pgbench failed ($side, round $round)"; }
    t1=$(cat "$WORK/loader.end")
    st_after=$(stat_sums "$side")
    batch_lines "$side" "$since" >"$WORK/a.batches.$side.$round"
    counts "$side" >"$WORK/a.counts.$side.$round"
    record_failures "$side" "A, round $round"
    lines=$(wc -l <"$WORK/a.batches.$side.$round")
    echo "$round $side $(calc %.3f "$t1 - $t0") $(calc %.3f "$t2 - $t0") $lines" \
         "$(cut -d' ' -f1 "$WORK/a.batches.$side.$round" | median)" \
         "$(cut -d' ' -f2 "$WORK/a.batches.$side.$round" | median)" \
         "$(awk '{ s += $2 } END { printf "%.1f", s }' "$WORK/a.batches.$side.$round")" \
         "$(awk -v a="$st_after" -v b="$st_before" 'BEGIN { split(a, x, " "); split(b, y, " ");
               printf "%d %.3f %.3f %d", x[1] - y[1], x[2] - y[2], x[3] - y[3], x[4] - y[4] }')" \
         >>"$WORK/a.results"
    say "  $side: loaded in $(calc %.2f "$t1 - $t0") s, gold complete after $(calc %.2f "$t2 - $t0") s" \
        "($(calc %.0f "$ROWS / ($t2 - $t0)") rows/s), $lines batches; $(cat "$WORK/a.counts.$side.$round")"
}

# loadonly SIDE ROUND SEED: the same load into the same tables without a
# pipeline (after the same warm-up load); appends "round side load_s" to
# $WORK/a.raw
loadonly() {
    local side=$1 round=$2 seed=$3 e t0 t1
    e=$(entry "$side")
    setup "$side" raw
    printf '\\set seed %s\n\\set rows %s\n%s;\n' "$((round + 7))" "$WARM_ROWS" "$LOAD_INSERT" | q "$e"
    checkpoint "$side"
    t0=$(now_s)
    asu pgbench -n -h "$WORK" -p "${PORT[$e]}" -c "$CLIENTS" -j 2 -t "$TX_PER_CLIENT" \
        -D rows="$TX_ROWS" --random-seed="$seed" -f "$WORK/load.pgbench" bench \
        >"$WORK/pgbench.raw.$side.$round.log" 2>&1 \
        || { cat "$WORK/pgbench.raw.$side.$round.log"; fail "pgbench failed ($side without a pipeline, round $round)"; }
    t1=$(now_s)
    [ "$(q "$e" -c "SELECT count(*) FROM events")" = $((WARM_ROWS + ROWS)) ] || fail "$side without a pipeline: rows missing"
    echo "$round $side $(calc %.3f "$t1 - $t0")" >>"$WORK/a.raw"
    say "  $side without a pipeline: loaded in $(calc %.2f "$t1 - $t0") s ($(calc %.0f "$ROWS / ($t1 - $t0)") rows/s)"
}

: >"$WORK/a.results"
: >"$WORK/a.raw"
: >"$WORK/failures"
for r in $(seq 1 "$ROUNDS"); do
    seed=$((1000 + r))
    if [ $((r % 2)) = 1 ]; then order="single single:raw citus citus:raw"; else order="citus:raw citus single:raw single"; fi
    say "A: round $r of $ROUNDS ($order), $ROWS rows"
    for side in $order; do
        case $side in
            *:raw) loadonly "${side%:raw}" "$r" "$seed" ;;
            *) throughput "$side" "$r" "$seed" ;;
        esac
    done
done

#--------------------------------------------------------------------------
# B: batches of a fixed size
#--------------------------------------------------------------------------
# Each load is one transaction, and the next starts when gold counts it: on
# one node a load of SIZE rows is one batch of SIZE rows; on Citus a load of
# SHARDS x SIZE rows through the coordinator is one batch of about SIZE rows
# on each shard pipeline (two per worker).
# fixed SIDE SIZE ROUND: appends "size round side loads batches stat..." to
# $WORK/b.results and the batches to $WORK/b.batches.SIDE.SIZE
fixed() {
    local side=$1 size=$2 round=$3 e mult rows target seed i since st_before st_after script
    e=$(entry "$side")
    if [ "$side" = single ]; then mult=1; else mult=$SHARDS; fi
    rows=$((size * mult))
    target=$(q "$e" -c "SELECT coalesce(sum(events), 0) FROM gold_users")
    # a warm-up load, not counted
    seed=$((500000 + size + round * 100))
    target=$((target + rows))
    printf '\\set seed %s\n\\set rows %s\n%s;\nCALL bench_wait(%s, 300);\n' \
        "$seed" "$rows" "$LOAD_INSERT" "$target" | q "$e"
    checkpoint "$side"
    st_before=$(stat_sums "$side")
    since=$(ts_now)
    script=$WORK/b.$side.$size.$round.sql
    : >"$script"
    for i in $(seq 1 "$B_LOADS"); do
        seed=$((1000000 + size * 1000 + round * 100 + i))
        target=$((target + rows))
        printf '\\set seed %s\n\\set rows %s\n%s;\nCALL bench_wait(%s, 300);\n' \
            "$seed" "$rows" "$LOAD_INSERT" "$target" >>"$script"
    done
    [ "$(id -u)" = 0 ] && chown "$RUN_USER" "$script"
    q "$e" -f "$script"
    st_after=$(stat_sums "$side")
    batch_lines "$side" "$since" >>"$WORK/b.batches.$side.$size"
    step_lines "$side" "$since" >>"$WORK/b.steps.$side.$size"
    echo "$size $round $side $B_LOADS $(batch_lines "$side" "$since" | wc -l)" \
         "$(awk -v a="$st_after" -v b="$st_before" 'BEGIN { split(a, x, " "); split(b, y, " ");
               printf "%d %.3f %.3f %d", x[1] - y[1], x[2] - y[2], x[3] - y[3], x[4] - y[4] }')" \
         >>"$WORK/b.results"
}

: >"$WORK/b.results"
say "B: fixed batch sizes ($B_SIZES rows), $B_LOADS loads per side and round, $B_ROUNDS round(s)"
setup single
setup citus
k=0
for size in $B_SIZES; do
    : >"$WORK/b.batches.single.$size"; : >"$WORK/b.batches.citus.$size"
    : >"$WORK/b.steps.single.$size"; : >"$WORK/b.steps.citus.$size"
    for r in $(seq 1 "$B_ROUNDS"); do
        k=$((k + 1))
        if [ $((k % 2)) = 1 ]; then order="single citus"; else order="citus single"; fi
        for side in $order; do
            fixed "$side" "$size" "$r"
            say "  $size rows, round $r, $side: $(tail -n 1 "$WORK/b.results" | cut -d' ' -f5) batches"
        done
    done
done

record_failures single B
record_failures citus B
# The plans Citus makes for the transforms on a worker (EXPLAIN, not run:
# outside a batch the batch view is empty anyway)
for t in "$T_BRONZE" "$T_GOLD" "$T_DIM"; do
    q w1 -c "EXPLAIN (COSTS OFF) $t" | grep -E 'Citus|method|Task Count|Node:' \
        | sed -E 's/port=[0-9]+/port=…/' >>"$WORK/plans"
    echo >>"$WORK/plans"
done

# What the servers logged about deadlocks and failed batches, per node
: >"$WORK/logged"
for n in $NODES; do
    grep -h -i -E 'deadlock|could not run a batch' "$WORK/$n/server.log" \
        | sed -E 's/^[0-9-]+ [0-9:.]+ [A-Z]+ \[[0-9]+\] //; s/gpid=[0-9]+ //; s/^(LOG: +)\[[^]]*\] /\1/; s/"clicks_[0-9]+"/"clicks_<shard>"/; s/ \(transaction number = [0-9]+, pid = [0-9]+\)//' \
        | sort | uniq -c | sed "s/^ *\([0-9]*\) /$n|\1|/" >>"$WORK/logged" || true
done

LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)
say "load average at end: $LOADAVG_END"
[ ! -s "$WORK/failures" ] || { say "failed batch attempts (retried):"; cat "$WORK/failures"; }

#--------------------------------------------------------------------------
# The report
#--------------------------------------------------------------------------
fmt_int() { awk -v v="$1" 'BEGIN { s = sprintf("%.0f", v); n = length(s); o = "";
    for (i = 1; i <= n; i++) { o = o substr(s, i, 1); if ((n - i) % 3 == 0 && i < n) o = o "," } print o }'; }
# ratios "B1 B2 ..." "A1 A2 ...": "median min max" of Bi/Ai
ratios() {
    awk -v b="$1" -v a="$2" 'BEGIN {
        n = split(a, x, " "); split(b, y, " ")
        for (i = 1; i <= n; i++) r[i] = y[i] / x[i]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
        m = n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
        printf "%.2f %.2f %.2f\n", m, r[1], r[n] }'
}
# field SIDE COL: column COL of a.results for SIDE, in round order
a_field() { awk -v s="$1" -v c="$2" '$2 == s { printf "%s ", $c }' "$WORK/a.results"; }
a_rate() { awk -v s="$1" -v c="$2" -v n="$ROWS" '$2 == s { printf "%.1f ", n / $c }' "$WORK/a.results"; }

E2E_S=$(a_rate single 4) E2E_C=$(a_rate citus 4)
RAW_S=$(awk -v n="$ROWS" '$2 == "single" { printf "%.1f ", n / $3 }' "$WORK/a.raw")
RAW_C=$(awk -v n="$ROWS" '$2 == "citus" { printf "%.1f ", n / $3 }' "$WORK/a.raw")
read -r RAW_RATIO RAW_MIN RAW_MAX <<<"$(ratios "$RAW_C" "$RAW_S")"
LOAD_S=$(a_rate single 3) LOAD_C=$(a_rate citus 3)
# the load with a pipeline over the load without, on each side
read -r PIPE_S PIPE_S_MIN PIPE_S_MAX <<<"$(ratios "$LOAD_S" "$RAW_S")"
read -r PIPE_C PIPE_C_MIN PIPE_C_MAX <<<"$(ratios "$LOAD_C" "$RAW_C")"
read -r E2E_RATIO E2E_MIN E2E_MAX <<<"$(ratios "$E2E_C" "$E2E_S")"
read -r LOAD_RATIO LOAD_MIN LOAD_MAX <<<"$(ratios "$LOAD_C" "$LOAD_S")"
med_of() { tr ' ' '\n' | sed '/^$/d' | median; }
BATCHES_S=$(a_field single 5 | med_of) BATCHES_C=$(a_field citus 5 | med_of)

same_counts=yes
for r in $(seq 1 "$ROUNDS"); do
    cmp -s "$WORK/a.counts.single.$r" "$WORK/a.counts.citus.$r" || same_counts=no
done

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MEM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo ", with uncommitted changes" || true)

write_report() {
    local r side size
    cat <<EOF
# Benchmarks: one node and Citus

Generated by \`make bench-citus\` ([test/bench/citus.sh](../test/bench/citus.sh))
on $(date -u '+%Y-%m-%d %H:%M UTC') from \`$COMMIT\`$DIRTY: do not edit, run it again.
Every figure comes from one run on the machine described below (it took
$(calc %.1f "$SECONDS / 60") minutes), and every ratio compares two measurements taken in that
run, side by side.
EOF
    [ -z "$QUICK" ] || cat <<EOF

**This is a quick run (\`MB_BENCH_QUICK=1\`): $ROWS rows, one round, few
batches. Its numbers are only good for checking that the script works.**
EOF
    cat <<EOF

**Read this first.** The coordinator, both workers, the one-node server and
the load generator all run on this one machine and share its
$(nproc) cores. Nothing here measures scaling out: the Citus side does the one
node's work plus the design's own (routing the load through a coordinator,
two-phase commit of every multi-shard load, a batch per shard, Citus'
planning of the transforms), on the same cores. The ratios are what the
design costs on shared cores; they say nothing about how far it scales, and
nodes on machines of their own would add network round trips that loopback
does not have (every load's two-phase commit waits for a few). The machine was
also running other tests during this run, so the numbers are noisy: load
average $LOADAVG_START at the start, $LOADAVG_END at the end (1, 5 and 15
minutes; \`/proc/loadavg\`).

## Results

| measurement | one node | Citus, coordinator + 2 workers | Citus / one node |
|---|---|---|---|
| [A](#a-throughput) rows/s, load start to gold complete, $(fmt_int "$ROWS") rows (median of $ROUNDS round(s)) | $(fmt_int "$(echo "$E2E_S" | med_of)") | $(fmt_int "$(echo "$E2E_C" | med_of)") | **$E2E_RATIO×** (rounds $E2E_MIN-$E2E_MAX) |
| [A](#a-throughput) rows/s of the load (pgbench, $CLIENTS clients), the pipeline running | $(fmt_int "$(echo "$LOAD_S" | med_of)") | $(fmt_int "$(echo "$LOAD_C" | med_of)") | $LOAD_RATIO× (rounds $LOAD_MIN-$LOAD_MAX) |
| [A](#the-load-without-a-pipeline) rows/s of the same load into the same tables without a pipeline | $(fmt_int "$(echo "$RAW_S" | med_of)") | $(fmt_int "$(echo "$RAW_C" | med_of)") | $RAW_RATIO× (rounds $RAW_MIN-$RAW_MAX) |
| [A](#the-load-without-a-pipeline) load rows/s with the pipeline / without | $PIPE_S× (rounds $PIPE_S_MIN-$PIPE_S_MAX) | $PIPE_C× (rounds $PIPE_C_MIN-$PIPE_C_MAX) | |
| [A](#a-throughput) batches per 10,000 rows (median of the rounds) | $(calc %.2f "$BATCHES_S * 10000 / $ROWS") | $(calc %.1f "$BATCHES_C * 10000 / $ROWS") | $(calc %.0f "$BATCHES_C / $BATCHES_S")× |
EOF
    for size in $B_SIZES; do
        local ms mc
        ms=$(cut -d' ' -f2 "$WORK/b.batches.single.$size" | median)
        mc=$(cut -d' ' -f2 "$WORK/b.batches.citus.$size" | median)
        echo "| [B](#b-the-cost-per-batch) median batch duration in the ledger, ~$(fmt_int "$size")-row batches (ms) | $(calc %.2f "$ms") | $(calc %.2f "$mc") (a shard pipeline's, on a worker) | **$(calc %.2f "$mc / $ms")×** |"
    done
    cat <<EOF

## Machine and settings

| | |
|---|---|
| CPU | $CPU_MODEL, $(nproc) cores (\`nproc\`) |
| memory | $MEM |
| kernel | $(uname -sr) |
| PostgreSQL | $PG_VERSION |
| Citus | $CITUS_VERSION |
| microbatch | $MB_VERSION, as installed in $LIBDIR |

Four clusters (\`initdb -E UTF8 --locale=C.UTF-8\`), fresh data directories
under /tmp, each listening on 127.0.0.1 and a Unix socket, \`pg_hba\` trust
for 127.0.0.1; the defaults plus, on every node:

\`\`\`
$(common_settings)
\`\`\`

and \`shared_preload_libraries = 'microbatch'\` on the one-node server,
\`'citus,microbatch'\` on the coordinator and the two workers. fsync is on
and \`synchronous_commit\` is on (as in \`make bench\`): Citus' two-phase
commits flush WAL on each node they touch, and that is part of the cost.
Microbatch settings are the defaults ($MB_GUCS): each worker runs the
batches of its own shard pipelines on its own batch workers. The Citus
cluster: \`citus_add_node\` of both workers (the coordinator holds no shards),
\`citus.shard_count = $SHARDS\` (two shards per worker). Clients (pgbench,
psql) connect through the Unix socket, the nodes to one another over
127.0.0.1.

## The pipeline

Not the demo's ([test/demo/clickstream.sql](../test/demo/clickstream.sql)):
its unique keys (staging's \`ingest_id\`, silver's \`event_id\`, the gold
facts' day and page) share no column that a distribution column could be,
and Citus enforces a unique key on a distributed table only when it contains
the distribution column; its gold facts, keyed by page, would not be
co-located with a source distributed by user, so every batch would write
other nodes' shards. So a clickstream of the same shape, with the same
tables and transform texts on both sides:

\`\`\`sql
$TABLES_SQL
\`\`\`

On Citus (on the coordinator):

\`\`\`sql
$CITUS_DISTRIBUTE_SQL
SELECT microbatch.create_distributed_pipeline('clicks', 'events', batch_interval => '0');
\`\`\`

and one shard pipeline per shard on its worker, \`clicks_<shard id>\`; on one
node, \`microbatch.create_pipeline('clicks', 'events', batch_interval =>
'0')\`. The three transforms, added with \`add_distributed_transform\` and
\`add_transform\` in this order:

\`\`\`sql
-- bronze
$T_BRONZE;
-- gold_users: a count and a sum per user (co-located with events on Citus)
$T_GOLD;
-- dim_page: a dimension (a reference table on Citus), written only for pages it has not seen
$T_DIM;
\`\`\`

\`gold_users\` adds each batch to a running total, as in
[scaling.md](scaling.md)'s example; a replay would count a batch twice (the
demo's gold tables are keyed by batch instead). A loader transaction inserts
rows of a deterministic generator (\`hashint8extended\` of a seed; 5,000
users, 203 pages, about 80% page views and 8% purchases with an amount), the
same rows on both sides for the same seeds:

\`\`\`sql
$LOAD_INSERT
\`\`\`

On Citus the coordinator evaluates that \`INSERT ... SELECT\` and sends the
rows to the four shards: every load is a multi-shard write, committed with
two-phase commit on both workers.

## A. Throughput

**Method.** Each side starts from new tables and a new pipeline (the same
statements as above) and a warm-up load of $(fmt_int "$WARM_ROWS") rows, not timed, which
the pipeline processes before the timed load starts (its first batches
write every page into the dimension and start the batch workers); then a
CHECKPOINT of the side's nodes. pgbench loads
$(fmt_int "$ROWS") rows from $CLIENTS clients (\`-c $CLIENTS -j 2 -t $TX_PER_CLIENT\`,
$TX_ROWS rows per transaction, \`--random-seed\` the same on both sides of a
round, so the same rows), through the one-node server or the coordinator.
While it runs, one more session on the same server (the coordinator on
Citus) calls a procedure that reads \`SELECT sum(events) FROM gold_users\`
every $POLL s, committing in between, and returns when it counts every row.
The time is from the start of pgbench to that return; the load's own time
ends when pgbench exits. $ROUNDS round(s), the one-node side first in odd
rounds, Citus first in even ones; the ratio is the median of the rounds'
ratios, with their range. The batch figures are from the ledger
(\`microbatch.batches\`) of the one-node server or of both workers: every
committed batch of the timed run; the start-to-commit mean from
\`microbatch.stat_pipelines\` (\`total_time\`/\`batches\`, which includes the
commit that \`duration\` leaves out). After each run, what the tables hold
is the same on both sides: **$same_counts** ($(cat "$WORK/a.counts.single.1")
in round 1).

| round | side | load, s | load rows/s | gold complete, s | of which after the load ended, s | rows/s, load start to gold complete | Citus / one node |
|---|---|---|---|---|---|---|---|
EOF
    for r in $(seq 1 "$ROUNDS"); do
        local es ec
        es=$(awk -v r="$r" '$1 == r && $2 == "single" { print $4 }' "$WORK/a.results")
        ec=$(awk -v r="$r" '$1 == r && $2 == "citus" { print $4 }' "$WORK/a.results")
        awk -v r="$r" -v n="$ROWS" '$1 == r { printf "%s\n", $0 }' "$WORK/a.results" | while read -r rr side lt et rest; do
            local label ratio=""
            if [ "$side" = single ]; then label="one node"; else label="Citus"; ratio="**$(calc %.2f "$es / $ec")**"; fi
            echo "| $rr | $label | $(calc %.2f "$lt") | $(fmt_int "$(calc %.1f "$ROWS / $lt")") | $(calc %.2f "$et") | $(calc %.2f "$et - $lt") | $(fmt_int "$(calc %.1f "$ROWS / $et")") | $ratio |"
        done
    done
    cat <<EOF
| median | | | $(fmt_int "$(echo "$LOAD_S" | med_of)") / $(fmt_int "$(echo "$LOAD_C" | med_of)") | | | $(fmt_int "$(echo "$E2E_S" | med_of)") / $(fmt_int "$(echo "$E2E_C" | med_of)") | **$E2E_RATIO** ($E2E_MIN-$E2E_MAX) |

The batches of the same runs (on Citus, of all four shard pipelines, on both
workers). On one node a batch takes whatever committed since the previous
one; on Citus each shard pipeline does the same for its shard, so a load
that one node would process in one batch takes a batch on each shard. A
pipeline that keeps up with its load runs about a batch per commit and per
shard; one that falls behind takes larger batches, and fewer (the column
"after the load ended" above says which).

| round | side | batches | batches per 10,000 rows | rows per batch, median | duration in the ledger, median ms | sum of the durations, ms per 10,000 rows | start to commit, mean ms | failed attempts in the timed run (retried) |
|---|---|---|---|---|---|---|---|---|
EOF
    while read -r rr side lt et nb mrows mms summs sb stot _scom sfail; do
        local label
        if [ "$side" = single ]; then label="one node"; else label="Citus"; fi
        echo "| $rr | $label | $nb | $(calc %.2f "$nb * 10000 / $ROWS") | $(calc %.0f "$mrows") | $(calc %.2f "$mms") | $(calc %.0f "$summs * 10000 / $ROWS") | $(calc %.2f "$stot / ($sb > 0 ? $sb : 1)") | $sfail |"
    done <"$WORK/a.results"
    cat <<EOF

### The load without a pipeline

The same loads (same rows, same pgbench command, after the same warm-up
load and a CHECKPOINT) into the same tables, distributed the same way on
Citus, with no pipeline: no tracking column, no batches. What the load costs
on Citus without microbatch, and what the pipeline costs the loader on
each side (its tracking column and triggers, and its batches competing for
the same cores). In the same rounds, the four runs of a round in the order
one node, one node without, Citus, Citus without in odd rounds, the reverse
in even ones.

| round | one node, rows/s | Citus, rows/s | Citus / one node | one node: with the pipeline / without | Citus: with the pipeline / without |
|---|---|---|---|---|---|
EOF
    for r in $(seq 1 "$ROUNDS"); do
        local rs rc ls lc
        rs=$(awk -v r="$r" -v n="$ROWS" '$1 == r && $2 == "single" { print n / $3 }' "$WORK/a.raw")
        rc=$(awk -v r="$r" -v n="$ROWS" '$1 == r && $2 == "citus" { print n / $3 }' "$WORK/a.raw")
        ls=$(awk -v r="$r" -v n="$ROWS" '$1 == r && $2 == "single" { print n / $3 }' "$WORK/a.results")
        lc=$(awk -v r="$r" -v n="$ROWS" '$1 == r && $2 == "citus" { print n / $3 }' "$WORK/a.results")
        echo "| $r | $(fmt_int "$rs") | $(fmt_int "$rc") | $(calc %.2f "$rc / $rs") | $(calc %.2f "$ls / $rs") | $(calc %.2f "$lc / $rc") |"
    done
    cat <<EOF
| median | $(fmt_int "$(echo "$RAW_S" | med_of)") | $(fmt_int "$(echo "$RAW_C" | med_of)") | **$RAW_RATIO** ($RAW_MIN-$RAW_MAX) | **$PIPE_S** ($PIPE_S_MIN-$PIPE_S_MAX) | **$PIPE_C** ($PIPE_C_MIN-$PIPE_C_MAX) |

## B. The cost per batch

**Method.** New tables and pipelines on both sides (as above), then, per
batch size and side, one warm-up load (not counted), a CHECKPOINT, and
$B_LOADS loads from one psql session, each one transaction followed by the
same wait until \`gold_users\` counts it: no load overlaps the batches of
the one before. On one node a load of N rows is one batch of N rows; on
Citus a load of $SHARDS × N rows through the coordinator is one batch of
about N rows on each of the $SHARDS shard pipelines (users hash to shards
unevenly, so not exactly N), run by the workers' background workers, two
per worker at a time. $B_ROUNDS round(s) per size, the side that goes first
alternating. The durations are each committed batch's in the ledger
(\`finished_at - started_at\`: the window, the transforms, the ledger row; not
the commit), medians over the batches; the start-to-commit means from
\`microbatch.stat_pipelines\` over the same batches; the steps from
\`microbatch.batch_steps\`.

| batch rows | side | batches | rows per batch, median | duration, median ms | start to commit, mean ms | µs per row (median duration / median rows) | Citus / one node, median duration |
|---|---|---|---|---|---|---|---|
EOF
    for size in $B_SIZES; do
        local ms mc
        ms=$(cut -d' ' -f2 "$WORK/b.batches.single.$size" | median)
        mc=$(cut -d' ' -f2 "$WORK/b.batches.citus.$size" | median)
        for side in single citus; do
            local nb mrows mdur label ratio="" sb stot
            nb=$(wc -l <"$WORK/b.batches.$side.$size")
            mrows=$(cut -d' ' -f1 "$WORK/b.batches.$side.$size" | median)
            mdur=$(cut -d' ' -f2 "$WORK/b.batches.$side.$size" | median)
            sb=$(awk -v s="$side" -v z="$size" '$1 == z && $3 == s { b += $6 } END { print b + 0 }' "$WORK/b.results")
            stot=$(awk -v s="$side" -v z="$size" '$1 == z && $3 == s { t += $7 } END { print t + 0 }' "$WORK/b.results")
            if [ "$side" = single ]; then label="one node"; else label="Citus (shard pipeline)"; ratio="**$(calc %.2f "$mc / $ms")×**"; fi
            echo "| $(fmt_int "$size") | $label | $nb | $(calc %.0f "$mrows") | $(calc %.2f "$mdur") | $(calc %.2f "$stot / ($sb > 0 ? $sb : 1)") | $(calc %.1f "$mdur * 1000 / $mrows") | $ratio |"
        done
    done
    cat <<EOF

Where the time goes: each step's median in \`microbatch.batch_steps\`, in µs,
over the same batches (\`window\`: cutting the batch's window; then the
transforms in their run order).

| batch rows | step | one node, µs | Citus, µs | Citus / one node |
|---|---|---|---|---|
EOF
    for size in $B_SIZES; do
        for step in $(cat "$WORK/b.steps.single.$size" "$WORK/b.steps.citus.$size" | awk '{ print $1 }' | sort -n -u); do
            local name us uc
            name=$(awk -v s="$step" '$1 == s { print $2; exit }' "$WORK/b.steps.single.$size")
            us=$(awk -v s="$step" '$1 == s { print $3 }' "$WORK/b.steps.single.$size" | median)
            uc=$(awk -v s="$step" '$1 == s { print $3 }' "$WORK/b.steps.citus.$size" | median)
            echo "| $(fmt_int "$size") | \`$name\` | $(calc %.0f "$us") | $(calc %.0f "$uc") | $(calc %.2f "$uc / $us")× |"
        done
    done
    cat <<EOF

A shard's batch of N rows holds the users of its shard only (about one in
$SHARDS), so its \`gold_users\` upsert writes fewer rows than a one-node batch
of N rows, which holds all of them: that step is not the same work on both
sides. On Citus a load is also one batch per shard: $SHARDS batches, two on each
worker, where one node runs one. Per row processed, a shard pipeline's
batch of about N rows costs what the table above says; the whole load's
batches cost the sum of the $SHARDS, spread over the workers' cores.

The plans Citus makes for the three transforms on a worker (\`EXPLAIN
(COSTS OFF)\` of each on w1, its Citus lines only): the batch's rows are
read from the node's own shards, then handed to Citus' executor, which
writes them to the co-located shard (or to every placement of the
reference table).

\`\`\`
$(cat "$WORK/plans")
\`\`\`

## Failed batch attempts

Every attempt that failed in the run, warm-ups included, from the ledgers
before each pipeline was dropped; microbatch rolls a failed attempt back and
runs the batch again over the same rows (the counts above say none was lost
or counted twice).
EOF
    if [ -s "$WORK/failures" ]; then
        echo
        echo "| phase (warm-up included) | side | attempts | SQLSTATE | error | where |"
        echo "|---|---|---|---|---|---|"
        while IFS='|' read -r ph sd cnt st err where; do
            echo "| $ph | $sd | $cnt | $st | $err | $where |"
        done <"$WORK/failures"
        if grep -q '|57014|' "$WORK/failures"; then
            cat <<EOF

A cancelled attempt (57014) in the transform that writes the reference
table is what Citus' distributed deadlock detection does to its victim
(\`citus.log_distributed_deadlock_detection\` is on, so a deadlock it found
is in the logs below): batches of shards on both workers insert the same new
pages into both placements of \`dim_page\`, each into its own node's first,
and each then waits on the other node for the other's uncommitted row. Each
worker's maintenance daemon looks for deadlocks among the transactions that
node started (every 2 s by default) and cancels its youngest one.
EOF
        fi
    else
        echo
        echo "None."
    fi
    echo
    if [ -s "$WORK/logged" ]; then
        echo "What the four servers logged about deadlocks and batches that could not run, counted (prefixes and shard ids stripped):"
        echo
        echo "| node | times | message |"
        echo "|---|---|---|"
        while IFS='|' read -r n cnt msg; do
            echo "| $n | $cnt | $(printf '%s' "$msg" | sed 's/|/\\|/g') |"
        done <"$WORK/logged"
    else
        echo "No server logged a deadlock or a batch that could not run."
    fi
}

say "writing $REPORT"
write_report >"$REPORT.tmp"
mv "$REPORT.tmp" "$REPORT"
say "done: Citus / one node, rows/s load start to gold complete: $E2E_RATIO× (rounds $E2E_MIN-$E2E_MAX)"
