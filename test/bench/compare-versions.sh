#!/usr/bin/env bash
#
# compare-versions.sh [REV]: the per-batch cost of the working tree's build
# against an older revision's, measured in one run on this machine.
#
#   old: REV (default HEAD) of this repository, built from `git archive REV`
#        in a temporary directory and installed into a relocated copy of the
#        PostgreSQL 15 installation ($T/usr/lib/postgresql/15 and
#        $T/usr/share/postgresql/15: the binaries find their share and lib
#        directories relative to their own location).  Nothing is installed
#        into /usr.
#   new: the build installed in /usr/lib/postgresql/15 (make install of the
#        working tree).  This script does not build or install it.
#
# Two throwaway clusters, one per side, with the same settings (the defaults,
# plus synchronous_commit = off, microbatch preloaded, microbatch.enabled =
# off so that only run_batch called by hand runs batches), each with the
# extension at its own default version.  The pgbench script inserts one row
# into the source and then calls run_batch in a separate transaction
# (autocommit), so every run_batch is one batch of one row.  The figure
# compared is pgbench's per-statement latency of the run_batch statement
# (-r): the time of one batch as the client sees it.
#
# Variants (MB_CMP_VARIANTS, default "simple quality commit_ts"):
#   simple     one bronze transform INSERT INTO ... SELECT * FROM the batch view
#   quality    five transforms (bronze, silver, gold), one expectation, one audit
#   commit_ts  simple, with track_commit_timestamp = on on both sides (restart)
#
# Rounds: each round runs pgbench -t MB_CMP_TX on both sides, one after the
# other, the order alternating between rounds (old new, new old, ...), after
# one warm-up run per side that is not counted.  The ratio new/old is taken
# round by round, so that it holds when the machine's speed drifts; the table
# gives its median and its range over the rounds.
#
# Environment: MB_CMP_ROUNDS (default 11), MB_CMP_TX (transactions per run,
# default 10000), MB_CMP_VARIANTS, MB_CMP_KEEP=1 (leave both clusters running
# and the temporary directory in place; the script prints how to stop them),
# MB_CMP_USER (the clusters' OS user when run as root, default postgres).
#
set -euo pipefail

cd "$(dirname "$0")/../.."
REPO=$PWD
REV=${1:-HEAD}
PG_MAJOR=15
SYS_LIB=/usr/lib/postgresql/$PG_MAJOR
SYS_SHARE=/usr/share/postgresql/$PG_MAJOR
SYS_BIN=$SYS_LIB/bin
ROUNDS=${MB_CMP_ROUNDS:-11}
TX=${MB_CMP_TX:-10000}
VARIANTS=${MB_CMP_VARIANTS:-simple quality commit_ts}
RUN_USER=${MB_CMP_USER:-postgres}

say() { printf '[%s %4ds] %s\n' "$(date +%H:%M:%S)" "$SECONDS" "$*" >&2; }
fail() { echo "compare-versions: $*" >&2; exit 1; }

[ -x "$SYS_BIN/postgres" ] || fail "no PostgreSQL $PG_MAJOR in $SYS_LIB"
[ -f "$SYS_LIB/lib/microbatch.so" ] || fail "no microbatch.so installed in $SYS_LIB/lib (make install the working tree first)"
OLD_SHA=$(git -C "$REPO" rev-parse --verify -q "$REV^{commit}") || fail "no such revision: $REV"

T=$(mktemp -d /tmp/mb-compare.XXXXXX)
chmod 755 "$T"
if [ "$(id -u)" = 0 ]; then
    as_user() { runuser -u "$RUN_USER" -- "$@"; }
else
    as_user() { "$@"; }
    RUN_USER=$(id -un)
fi

OLD_DIR=$T/old NEW_DIR=$T/new
OLD_BIN=$T/usr/lib/postgresql/$PG_MAJOR/bin
declare -A BIN=([old]=$OLD_BIN [new]=$SYS_BIN) DIR=([old]=$OLD_DIR [new]=$NEW_DIR) PORT=()

cleanup() {
    local status=$?
    set +e
    if [ -n "${MB_CMP_KEEP:-}" ]; then
        echo "kept: $T; stop the clusters with:" >&2
        for side in old new; do
            [ -f "${DIR[$side]}/data/postmaster.pid" ] \
                && echo "  runuser -u $RUN_USER -- ${BIN[$side]}/pg_ctl stop -D ${DIR[$side]}/data -m fast" >&2
        done
        exit "$status"
    fi
    for side in old new; do
        if [ -f "${DIR[$side]}/data/postmaster.pid" ]; then
            as_user "${BIN[$side]}/pg_ctl" stop -D "${DIR[$side]}/data" -m fast -w >/dev/null
        fi
        if [ "$status" -ne 0 ] && [ -f "${DIR[$side]}/server.log" ]; then
            echo "== last lines of the $side server's log" >&2
            tail -n 20 "${DIR[$side]}/server.log" >&2
        fi
    done
    rm -rf "$T"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

#--------------------------------------------------------------------------
# The old side: build REV, relocated copy of PostgreSQL, install into it
#--------------------------------------------------------------------------
say "old side: $REV ($OLD_SHA), build from git archive"
mkdir -p "$T/src" "$T/usr/lib/postgresql" "$T/usr/share/postgresql"
git -C "$REPO" archive "$OLD_SHA" | tar -x -C "$T/src"
cp -a "$SYS_LIB" "$T/usr/lib/postgresql/"
cp -a "$SYS_SHARE" "$T/usr/share/postgresql/"
# The copy carries the new side's extension files: remove them, so that the
# old side can only have its own.
rm -rf "$T/usr/lib/postgresql/$PG_MAJOR/lib/microbatch.so" \
       "$T/usr/lib/postgresql/$PG_MAJOR/lib/bitcode/microbatch" \
       "$T/usr/lib/postgresql/$PG_MAJOR/lib/bitcode/microbatch.index.bc" \
       "$T/usr/share/postgresql/$PG_MAJOR/extension"/microbatch*
# Everything under $T belongs to the clusters' user: the build and the
# install below run as that user, who cannot write to /usr, so that nothing
# of the old build can land in the system installation.
chown -R "$RUN_USER" "$T"

OLD_PG_CONFIG=$OLD_BIN/pg_config
read -r OLD_SHAREDIR OLD_PKGLIBDIR < <(echo $("$OLD_PG_CONFIG" --sharedir --pkglibdir))
[ "$OLD_SHAREDIR" = "$T/usr/share/postgresql/$PG_MAJOR" ] \
    || fail "the copy's pg_config reports sharedir $OLD_SHAREDIR, not the copy's"
[ "$OLD_PKGLIBDIR" = "$T/usr/lib/postgresql/$PG_MAJOR/lib" ] \
    || fail "the copy's pg_config reports pkglibdir $OLD_PKGLIBDIR, not the copy's"

# Compiled against the system's server headers (the copy's pg_config points
# its include directories at $T/usr/include, which is not copied), installed
# with the copy's pg_config, into the copy.
BUILD_LOG=$T/build.log
as_user make -C "$T/src" -s PG_CONFIG="$SYS_BIN/pg_config" >"$BUILD_LOG" 2>&1 \
    || { tail -n 30 "$BUILD_LOG" >&2; fail "build of $REV failed"; }
as_user make -C "$T/src" -s PG_CONFIG="$OLD_PG_CONFIG" install >>"$BUILD_LOG" 2>&1 \
    || { tail -n 30 "$BUILD_LOG" >&2; fail "install of $REV into the copy failed"; }
cmp -s "$T/src/microbatch.so" "$OLD_PKGLIBDIR/microbatch.so" \
    || fail "$OLD_PKGLIBDIR/microbatch.so is not the build of $REV"
OLD_DEFAULT=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$OLD_SHAREDIR/extension/microbatch.control")
NEW_DEFAULT=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$SYS_SHARE/extension/microbatch.control")
say "old side installed into $T/usr (microbatch $OLD_DEFAULT); new side: $SYS_LIB (microbatch $NEW_DEFAULT)"

#--------------------------------------------------------------------------
# The clusters
#--------------------------------------------------------------------------
free_port() {
    local p
    for p in $(shuf -i 20000-60000 -n 100); do
        if ! awk -v p="$(printf ':%04X' "$p")" '$2 ~ p"$" && $4 == "0A" { f = 1 } END { exit !f }' \
                /proc/net/tcp /proc/net/tcp6 2>/dev/null \
            && [ "$p" != "${PORT[old]:-}" ]; then
            echo "$p"; return 0
        fi
    done
    fail "no free port"
}

# sql SIDE ARGS...: psql (the system's client) against that side's cluster
sql() { local side=$1; shift
        as_user "$SYS_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "${DIR[$side]}" -p "${PORT[$side]}" -d bench "$@"; }
val() { sql "$1" -c "$2"; }

# Other engineers may install another build into /usr while this runs; a
# server started after that would map it.  Each start checks that the server
# maps the very file (inode) each side had at the beginning.
declare -A SO_INODE=()
start() {
    as_user "${BIN[$1]}/pg_ctl" start -D "${DIR[$1]}/data" -l "${DIR[$1]}/server.log" -w -t 120 >/dev/null
    local pid ino
    pid=$(head -n 1 "${DIR[$1]}/data/postmaster.pid")
    ino=$(awk '$6 ~ /microbatch\.so$/ { print $5; exit }' "/proc/$pid/maps")
    if [ -z "${SO_INODE[$1]:-}" ]; then
        SO_INODE[$1]=$ino
    elif [ "$ino" != "${SO_INODE[$1]}" ]; then
        fail "the $1 server, restarted, maps another microbatch.so (inode $ino, was ${SO_INODE[$1]}): the installed build changed during the run; run again"
    fi
}
stop() { as_user "${BIN[$1]}/pg_ctl" stop -D "${DIR[$1]}/data" -m fast -w >/dev/null; }

for side in old new; do
    PORT[$side]=$(free_port)
    mkdir -p "${DIR[$side]}"
    chown "$RUN_USER" "${DIR[$side]}"
    as_user "${BIN[$side]}/initdb" -D "${DIR[$side]}/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 \
        >"${DIR[$side]}/initdb.log" 2>&1 || { cat "${DIR[$side]}/initdb.log" >&2; fail "initdb ($side)"; }
    as_user tee -a "${DIR[$side]}/data/postgresql.conf" >/dev/null <<EOF
# compare-versions.sh: the same settings on both sides
listen_addresses = ''
port = ${PORT[$side]}
unix_socket_directories = '${DIR[$side]}'
shared_preload_libraries = 'microbatch'
microbatch.enabled = off
synchronous_commit = off
EOF
    start "$side"
    as_user "$SYS_BIN/createdb" -h "${DIR[$side]}" -p "${PORT[$side]}" -U postgres bench
done

# Which microbatch.so each server has mapped: the postmaster loads it at
# start (shared_preload_libraries), and the backends inherit the mapping.
mapped_so() {
    local pid
    pid=$(head -n 1 "${DIR[$1]}/data/postmaster.pid")
    awk '$6 ~ /microbatch\.so$/ { print $6; exit }' "/proc/$pid/maps"
}
MAP_OLD=$(mapped_so old) MAP_NEW=$(mapped_so new)
[ "$(stat -c %i "$MAP_NEW")" = "${SO_INODE[new]}" ] || fail "$MAP_NEW was replaced while the new server started; run again"
NEW_SO_ID=$(md5sum "$MAP_NEW" | cut -c1-12)
NEW_SO_TIME=$(date -r "$MAP_NEW" '+%Y-%m-%d %H:%M')
NEW_SO_PKG=$(dpkg -S "$MAP_NEW" 2>/dev/null | cut -d: -f1 || true)
[ "$MAP_OLD" = "$OLD_PKGLIBDIR/microbatch.so" ] || fail "the old server maps '$MAP_OLD', not $OLD_PKGLIBDIR/microbatch.so"
[ "$MAP_NEW" = "$SYS_LIB/lib/microbatch.so" ] || fail "the new server maps '$MAP_NEW', not $SYS_LIB/lib/microbatch.so"

for side in old new; do
    sql "$side" >/dev/null <<'EOF'
CREATE EXTENSION microbatch;
-- simple: one bronze transform
CREATE TABLE src1 (id bigserial PRIMARY KEY, v int NOT NULL);
CREATE TABLE out1 (id bigint, v int);
SELECT microbatch.create_pipeline('p1', 'src1');
SELECT microbatch.add_transform('p1', 't1', 'bronze', 'INSERT INTO out1 SELECT * FROM microbatch.p1_batch');
-- quality: five transforms over the three layers, an expectation, an audit
CREATE TABLE src3 (id bigserial PRIMARY KEY, v int NOT NULL);
CREATE TABLE out3a (id bigint, v int);
CREATE TABLE out3b (id bigint, v int);
CREATE TABLE out3c (id bigint, v int);
CREATE TABLE out3d (id bigint, v int);
CREATE TABLE out3e (id bigint, v int);
SELECT microbatch.create_pipeline('p3', 'src3');
SELECT microbatch.add_transform('p3', 't1', 'bronze', 'INSERT INTO out3a SELECT * FROM microbatch.p3_batch');
SELECT microbatch.add_transform('p3', 't2', 'bronze', 'INSERT INTO out3b SELECT * FROM microbatch.p3_batch');
SELECT microbatch.add_transform('p3', 't3', 'silver', 'INSERT INTO out3c SELECT * FROM microbatch.p3_batch');
SELECT microbatch.add_transform('p3', 't4', 'silver', 'INSERT INTO out3d SELECT * FROM microbatch.p3_batch');
SELECT microbatch.add_transform('p3', 't5', 'gold', 'INSERT INTO out3e SELECT * FROM microbatch.p3_batch');
SELECT microbatch.add_expectation('p3', 'v_positive', 'v > 0', 'warn');
SELECT microbatch.add_audit('p3', 'no_negative', 'gold', 'SELECT * FROM microbatch.p3_batch WHERE v < 0', 'fail');
EOF
done
EXT_OLD=$(val old "SELECT extversion FROM pg_extension WHERE extname = 'microbatch'")
EXT_NEW=$(val new "SELECT extversion FROM pg_extension WHERE extname = 'microbatch'")
[ "$EXT_OLD" = "$OLD_DEFAULT" ] && [ "$EXT_NEW" = "$NEW_DEFAULT" ] \
    || fail "extension versions: old $EXT_OLD, new $EXT_NEW"
say "old server maps $MAP_OLD (extension $EXT_OLD), new server maps $MAP_NEW (extension $EXT_NEW)"

for p in 1 3; do
    cat >"$T/p$p.pgbench" <<EOF
INSERT INTO src$p (v) VALUES (1);
SELECT microbatch.run_batch('p$p');
EOF
done
chown "$RUN_USER" "$T"/p*.pgbench

#--------------------------------------------------------------------------
# The measurements
#--------------------------------------------------------------------------
# bench SIDE SCRIPT N OUT: one pgbench run; appends "batch_ms tx_ms wall_s" to OUT
bench() {
    local side=$1 script=$2 n=$3 out=$4 log t0 t1
    log=$T/pgbench.log
    t0=$(date +%s.%N)
    as_user "$SYS_BIN/pgbench" -n -r -t "$n" -f "$script" -h "${DIR[$side]}" -p "${PORT[$side]}" bench >"$log" 2>&1 \
        || { cat "$log" >&2; fail "pgbench ($side) failed"; }
    t1=$(date +%s.%N)
    grep -q "number of failed transactions: 0 " "$log" || grep -q "^number of transactions actually processed: $n/$n" "$log" \
        || { cat "$log" >&2; fail "pgbench ($side): not every transaction succeeded"; }
    awk -v t0="$t0" -v t1="$t1" '
        /^latency average/ { tx = $4 }
        /statement latencies/ { on = 1; next }
        on && /run_batch/ { batch = $1 }
        END { if (batch == "" || tx == "") exit 1; printf "%s %s %.3f\n", batch, tx, t1 - t0 }' "$log" >>"$out" \
        || { cat "$log" >&2; fail "cannot read pgbench's output"; }
}

# median/min/max of a column of numbers on stdin
stats() { sort -g | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2;
                                                printf "%s %s %s\n", m, a[1], a[NR] }'; }

set_commit_ts() {
    for side in old new; do
        val "$side" "ALTER SYSTEM SET track_commit_timestamp = $1" >/dev/null
        stop "$side"; start "$side"
        [ "$(val "$side" "SHOW track_commit_timestamp")" = "$1" ] || fail "track_commit_timestamp ($side)"
    done
}

ROWS=()
for variant in $VARIANTS; do
    case $variant in
        simple)    p=1 ctt=off desc="1 transform" ;;
        quality)   p=3 ctt=off desc="5 transforms, 1 expectation, 1 audit" ;;
        commit_ts) p=1 ctt=on  desc="1 transform, track_commit_timestamp=on" ;;
        *) fail "unknown variant $variant" ;;
    esac
    [ "$(val new "SHOW track_commit_timestamp")" = "$ctt" ] || set_commit_ts "$ctt"
    say "variant $variant ($desc): warm-up, then $ROUNDS rounds of $TX batches per side"
    rm -f "$T/$variant".*
    bench old "$T/p$p.pgbench" $((TX / 4)) "$T/warmup"
    bench new "$T/p$p.pgbench" $((TX / 4)) "$T/warmup"
    for r in $(seq 1 "$ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then order="old new"; else order="new old"; fi
        for side in $order; do
            bench "$side" "$T/p$p.pgbench" "$TX" "$T/$variant.$side"
        done
    done
    # every batch did its work: each output table holds each source row once
    for side in old new; do
        if [ "$p" = 1 ]; then outs=out1; else outs="out3a out3b out3c out3d out3e"; fi
        for o in $outs; do
            [ "$(val "$side" "SELECT (SELECT count(*) FROM src$p) = (SELECT count(DISTINCT id) FROM $o) AND (SELECT count(*) FROM src$p) = (SELECT count(*) FROM $o)")" = t ] \
                || fail "$side: $o does not hold every row of src$p exactly once"
        done
        [ "$(val "$side" "SELECT microbatch.rows_waiting('p$p')")" = 0 ] || fail "$side: rows left in p$p"
    done
    # and the new side did record what 0.2.0 adds (the progress ledger; with
    # track_commit_timestamp on, the oldest row's commit time)
    if [ "$EXT_NEW" != "$EXT_OLD" ]; then
        want="progress IS NOT NULL"
        [ "$ctt" = off ] || want="$want AND oldest_row_committed_at IS NOT NULL"
        recorded=$(val new "SELECT count(*) FILTER (WHERE $want) FROM microbatch.batch b
                             JOIN microbatch.pipeline USING (pipeline_id) WHERE pipeline_name = 'p$p'
                              AND b.batch_id > (SELECT max(batch_id) - $TX FROM microbatch.batch b2 WHERE b2.pipeline_id = b.pipeline_id)")
        [ "$recorded" = "$TX" ] || say "warning: only $recorded of the last $TX batches of p$p on the new side have ($want)"
    fi
    paste -d' ' "$T/$variant.old" "$T/$variant.new" >"$T/$variant.pairs"
    read -r bo_med bo_min bo_max < <(awk '{ print $1 }' "$T/$variant.pairs" | stats)
    read -r bn_med bn_min bn_max < <(awk '{ print $4 }' "$T/$variant.pairs" | stats)
    read -r rb_med rb_min rb_max < <(awk '{ print $4 / $1 }' "$T/$variant.pairs" | stats)
    read -r d_med d_min d_max < <(awk '{ print $4 - $1 }' "$T/$variant.pairs" | stats)
    read -r rt_med rt_min rt_max < <(awk '{ print $5 / $2 }' "$T/$variant.pairs" | stats)
    ROWS+=("$(printf '| %s | %.3f (%.3f–%.3f) | %.3f (%.3f–%.3f) | **%.3f** (%.3f–%.3f) | %+.3f (%+.3f…%+.3f) | %.3f (%.3f–%.3f) |' \
        "$desc" "$bo_med" "$bo_min" "$bo_max" "$bn_med" "$bn_min" "$bn_max" \
        "$rb_med" "$rb_min" "$rb_max" "$d_med" "$d_min" "$d_max" "$rt_med" "$rt_min" "$rt_max")")
done

echo
echo "microbatch per-batch cost: new = the build installed in $SYS_LIB (extension $EXT_NEW; microbatch.so md5 $NEW_SO_ID..., installed $NEW_SO_TIME${NEW_SO_PKG:+, from the package $NEW_SO_PKG}),"
echo "old = $REV ${OLD_SHA:0:7} (extension $EXT_OLD), built from git archive."
echo "One 1-row batch per pgbench transaction (INSERT, then run_batch in its own transaction); $ROUNDS rounds x $TX batches per side,"
echo "order alternating; medians over the rounds, (min–max) in brackets; ratio and difference taken round by round."
echo "synchronous_commit=off on both sides, other settings default; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| variant | old ms/batch | new ms/batch | ratio new/old (per batch) | new − old ms/batch | ratio new/old (per transaction) |"
echo "|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
echo
echo "ms/batch: pgbench's average latency of the run_batch statement; per transaction: the INSERT's transaction and the batch's."
