# report.sh: docs/benchmarks.md from the results of run-bench.sh (sourced by
# it; every variable used here is set by a section there, and a section that
# did not run reads "not run").

# num 1234567: 1,234,567
num() { sed -e ':a' -e 's/^\([0-9]\{1,\}\)\([0-9]\{3\}\)/\1,\2/;ta' <<<"$1"; }
# num_list "1234, 5678": 1,234, 5,678
num_list() { local n out=""; for n in ${1//,/ }; do out+="${out:+, }$(num "$n")"; done; echo "$out"; }
# verdict OK: "met" or "**missed**"
verdict() { if [ "$1" = 1 ]; then echo met; else echo "**missed**"; fi; }
# cmp A OP B: 1 when the comparison holds (floating point)
cmp() { awk "BEGIN { print ($1 $2 $3) ? 1 : 0 }"; }

# One row of section 1's table, for a batch size.  The baseline is the
# faster of the two ways of running the statements by hand.
tp_line() {
    local rows batches mb_ms hs hp best
    IFS='|' read -r rows batches mb_ms hs hp <<<"$1"
    best=$(calc %.3f "($hs < $hp) ? $hs : $hp")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$rows" "$batches" "$mb_ms" "$hs" "$hp" \
        "$(calc %.0f "$rows / $mb_ms * 1000")" "$(calc %.0f "$rows / $best * 1000")" \
        "$(calc %.2f "$best / $mb_ms")"
}

# tp_at ROWS EXPR: EXPR (awk) of the throughput run at ROWS-row batches, over
# its fields rows, mb_ms (run_batch) and best (the faster by hand)
tp_at() {
    local line rows batches mb_ms hs hp
    for line in "${TP_ROWS[@]:-}"; do
        IFS='|' read -r rows batches mb_ms hs hp <<<"$line"
        if [ "$rows" = "$1" ]; then
            awk -v rows="$rows" -v mb_ms="$mb_ms" -v hs="$hs" -v hp="$hp" \
                "BEGIN { best = hs < hp ? hs : hp; $2 }"
        fi
    done
}

tp_ratio_at() { tp_at "$1" 'printf "%.2f", best / mb_ms'; }

# the engine's time per row at ROWS-row batches, in µs
tp_us_per_row() { tp_at "$1" 'printf "%.0f", mb_ms * 1000 / rows'; }

# tpcb_ledger VARIANT: "batches/s | rows per batch | busy share", mean of the rounds
tpcb_ledger() {
    awk -F'|' -v secs="$TPCB_SECONDS" 'NF == 3 { n++; b += $1; r += $2; busy += $3 }
        END { if (n) printf "%.0f | %.1f | %.0f%%", b / n / secs, r / n, 100 * busy / n }' <<<"${TPCB_LEDGER[$1]}"
}

# soak_flat FIGURE: "middle|last|ratio" of a figure of the soak
soak_flat() {
    local line
    for line in "${SOAK_FLAT[@]:-}"; do
        if [ "${line%%|*}" = "$1" ]; then
            echo "${line#*|}"
            return
        fi
    done
}
# soak_is_flat RATIO: yes within ±20 %
soak_is_flat() { if [ "$(cmp "$1" '>=' 0.8)$(cmp "$1" '<=' 1.2)" = 11 ]; then echo yes; else echo "**no**"; fi; }

# catchup_batch_ms SIDE: each batch's ledger ms in the catch-up section,
# the median over the rounds, one a line, in batch order
catchup_batch_ms() {
    awk -F', *' 'NF { for (i = 1; i <= NF; i++) v[i, ++n[i]] = $i; if (NF > m) m = NF }
        END { for (i = 1; i <= m; i++) {
                  k = n[i]
                  for (a = 1; a <= k; a++) s[a] = v[i, a]
                  for (a = 1; a <= k; a++) for (b = a + 1; b <= k; b++) if (s[b] < s[a]) { t = s[a]; s[a] = s[b]; s[b] = t }
                  printf "%.1f\n", k % 2 ? s[(k + 1) / 2] : (s[k / 2] + s[k / 2 + 1]) / 2 } }' <<<"${CATCHUP_BATCH_MS[$1]}"
}
# catchup_first_last SIDE: "first ms|last ms" of catchup_batch_ms
catchup_first_last() {
    local ms
    ms=$(catchup_batch_ms "$1")
    echo "$(head -n 1 <<<"$ms")|$(tail -n 1 <<<"$ms")"
}
# catchup_quarters SIDE: "batches per quarter|mean ms of the first quarter of
# the batches|of the last quarter" of catchup_batch_ms
catchup_quarters() {
    catchup_batch_ms "$1" | awk '{ v[NR] = $1 } END { q = int(NR / 4); if (q < 1) q = 1
        for (i = 1; i <= q; i++) { f += v[i]; l += v[NR - q + i] }
        printf "%d|%.1f|%.1f\n", q, f / q, l / q }'
}
# catchup_rate SIDE: rows/s of a catch-up side, its median time
catchup_rate() { num "$(calc %.0f "$CATCHUP_TOTAL / ${CATCHUP_MS[$1]} * 1000")"; }

# ingest_ratio KEY FIELD: a field (1 median, 2 min, 3 max) of a ratio of
# section 6 (copy, copy_nv, insert, insert_nv)
ingest_ratio() { awk -v f="$2" '{ print $f }' <<<"${INGEST_RATIO[$1]}"; }
# ingest_wal TABLE: how the first COPY into a table of section 6 inserted
ingest_wal() {
    local ins multi
    IFS='|' read -r ins multi <<<"${INGEST_COPY_WAL[$1]:-}"
    [ -n "$ins" ] || { echo "not read"; return; }
    echo "$(num "$ins") row inserts, $(num "$multi") multi-inserts"
}
# ingest_verdict KEY1 KEY2: met when both ratios are at least 0.90
ingest_verdict() {
    local a b
    a=$(cmp "$(ingest_ratio "$1" 1)" '>=' 0.9) b=$(cmp "$(ingest_ratio "$2" 1)" '>=' 0.9)
    case $a$b in
        11) echo met ;;
        10) echo "**missed** (not volatile)" ;;
        01) echo "**missed** (volatile)" ;;
        *) echo "**missed** (both)" ;;
    esac
}
# overhead_step KIND FIELD: a field (2 steps per batch, 3 median µs, 4 mean
# µs) of a kind of step in section 11
overhead_step() {
    local l
    for l in "${OVERHEAD_STEPS[@]:-}"; do
        if [ "${l%%|*}" = "$1" ]; then awk -F'|' -v f="$2" '{ print $f }' <<<"$l"; return; fi
    done
}

# lat_p99 INTERVAL RATE: a latency run's p99, exact (commit timestamps) when
# measured, else the watcher's upper bound
lat_p99() {
    local exact
    exact=$(lat_field "$1" "$2" 22)
    if [ -n "$exact" ]; then echo "$exact"; else lat_field "$1" "$2" 10; fi
}
lat_p50() {
    local exact
    exact=$(lat_field "$1" "$2" 20)
    if [ -n "$exact" ]; then echo "$exact"; else lat_field "$1" "$2" 8; fi
}
# lat_bounds INTERVAL RATE: the p99 of the upper and lower bounds, when the
# p99 given is the exact one
lat_bounds() {
    [ -n "$(lat_field "$1" "$2" 22)" ] || return 0
    echo "; bounds: the watcher's p99 $(lat_field "$1" "$2" 10) ms, finished_at's $(lat_field "$1" "$2" 13) ms"
}

first_step_ms() {  # first_step_ms KIND: the ms of section 12's steps of a kind
    local l kind ms total=0
    for l in "${FIRST_STEPS[@]:-}"; do
        IFS='|' read -r kind _ _ ms <<<"$l"
        [ "$kind" = "$1" ] && total=$((total + ms))
    done
    echo "$total"
}

lat_field() {  # lat_field INTERVAL RATE FIELD#: a field of a latency run
    local line
    for line in "${LAT_ROWS[@]}"; do
        IFS='|' read -r -a f <<<"$line"
        if [ "${f[0]}" = "$1" ] && [ "${f[1]}" = "$2" ]; then
            echo "${f[$3]}"
            return
        fi
    done
}

write_report() {
    local now host_cpu mem commit
    now=$(date -u '+%Y-%m-%d %H:%M UTC')
    host_cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
    mem=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    # a copy owned by the benchmark's user is still ours to describe
    commit=$(git -c safe.directory="$ROOT" -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)

    # The summary's figures; empty when a section did not run.
    local tp10k="" lat99="" copy99="" sweep_ratio="" mb_lost="" wm_line=""
    [ -n "${TP_ROWS+x}" ] && tp10k=$(tp_ratio_at 10000)
    [ -n "${LAT_ROWS+x}" ] && lat99=$(lat_p99 0 10000)
    [ -n "${LAT_ROWS+x}" ] && copy99=$(lat_p99 "$LAT_COPY_LABEL" 10000)
    [ -n "${SWEEP_FULL_MS:-}" ] && sweep_ratio=$(calc %.2f "$SWEEP_FULL_MS / $SWEEP_EMPTY_MS")
    # Ratios: the median of the ratios of runs made side by side (see
    # paired_ratio), with their range.
    local lo hi variant
    local tpcb_variants=('1 s' '100 ms' '0')
    declare -A TPCB_RATIO=() TPCB_RANGE=()
    if declare -p TPCB_TPS >/dev/null 2>&1; then
        for variant in "${tpcb_variants[@]}"; do
            read -r "TPCB_RATIO[$variant]" lo hi < <(paired_ratio "${TPCB_RUNS[$variant]}" "${TPCB_RUNS[plain]}")
            TPCB_RANGE[$variant]="$lo-$hi"
        done
    fi
    local line consumer orders counted lost doubled
    declare -A LOST=() DOUBLED=()
    for line in "${CRON_CHECK[@]:-}"; do
        [ -n "$line" ] || continue
        IFS='|' read -r consumer orders counted lost doubled <<<"$line"
        LOST[$consumer]=$lost
        DOUBLED[$consumer]=$doubled
    done

    cat <<EOF
# Benchmarks

Generated by \`make bench\` ([test/bench/run-bench.sh](../test/bench/run-bench.sh))
on $now from \`$commit\`: do not edit, run it again.  Every figure comes from
one run on one throwaway cluster on the machine described below, and every
ratio compares two measurements taken in that run, side by side.
EOF
    [ -n "$QUICK" ] && printf '\n**MB_BENCH_QUICK run: shortened measurements, not for comparison.**\n'
    cat <<EOF

## Results against targets

| measurement | target | result | |
|---|---|---|---|
EOF
    if [ -n "$tp10k" ]; then
        echo "| [1](#1-throughput) throughput at 10k-row batches, run_batch vs the same statements by hand | ≥ 0.90× | ${tp10k}× (1k: $(tp_ratio_at 1000)×, 100k: $(tp_ratio_at 100000)×) | $(verdict "$(cmp "$tp10k" '>=' 0.9)") |"
    else
        echo "| [1](#1-throughput) throughput | ≥ 0.90× | not run | |"
    fi
    if [ -n "$lat99" ]; then
        echo "| [2](#2-latency) the demo pipeline's p99 commit → gold at batch_interval 0, 10k rows/s (2 clients, 100 rows per transaction) | ≤ 25 ms | ${lat99} ms (p50 $(lat_p50 0 10000) ms, $(num "$(lat_field 0 10000 6)") rows/s done$(lat_bounds 0 10000); at 1k rows/s: p99 $(lat_p99 0 1000) ms) | $(verdict "$(cmp "$lat99" '<=' 25)") |"
    else
        echo "| [2](#2-latency) the demo pipeline's p99 latency | ≤ 25 ms | not run | |"
    fi
    if [ -n "$copy99" ]; then
        local copy_done copy_verdict
        copy_done=$(lat_field "$LAT_COPY_LABEL" 10000 6)
        copy_verdict=$(verdict "$(cmp "$copy99" '<=' 5)")
        # the target holds at 10k rows/s: a loader that fell short did not show it
        if [ "$copy_verdict" = met ] && [ "$(cmp "$copy_done" '<' 9500)" = 1 ]; then
            copy_verdict="**not shown** (the loader reached $(num "$copy_done") rows/s)"
        fi
        echo "| [2](#2-latency) p99 commit-to-visible at batch_interval 0 and 10k rows/s (8 clients, one row per transaction) with a single copy transform | ≤ 5 ms | ${copy99} ms (p50 $(lat_p50 "$LAT_COPY_LABEL" 10000) ms, $(num "$copy_done") rows/s done$(lat_bounds "$LAT_COPY_LABEL" 10000); a counting transform at 10k rows/s from 2 clients × 100 rows: p99 $(lat_p99 '0, one transform' 10000) ms) | $copy_verdict |"
    else
        echo "| [2](#2-latency) p99 latency, single copy transform | ≤ 5 ms | not run | |"
    fi
    if [ -n "$sweep_ratio" ]; then
        echo "| [3](#3-sweep-scaling) 10k-row batch over $(num "$SWEEP_PROCESSED") processed rows vs over an empty table | ≤ 1.20× | ${sweep_ratio}× ($SWEEP_FULL_MS vs $SWEEP_EMPTY_MS ms) | $(verdict "$(cmp "$sweep_ratio" '<=' 1.2)") |"
    else
        echo "| [3](#3-sweep-scaling) sweep scaling | ≤ 1.20× | not run | |"
    fi
    if [ ${#TPCB_RATIO[@]} -gt 0 ]; then
        local what
        for variant in "${tpcb_variants[@]}"; do
            what="the same, batch_interval $variant"
            [ "$variant" = "${tpcb_variants[0]}" ] &&
                what="pgbench TPC-B tps with a pipeline on pgbench_history (batch_interval $variant)"
            echo "| [4](#4-ingest-overhead-pgbench-tpc-b) $what | ≥ 0.90× | ${TPCB_RATIO[$variant]}× (rounds ${TPCB_RANGE[$variant]}) | $(verdict "$(cmp "${TPCB_RATIO[$variant]}" '>=' 0.9)") |"
        done
    else
        echo "| [4](#4-ingest-overhead-pgbench-tpc-b) pgbench TPC-B | ≥ 0.90× | not run | |"
    fi
    if [ -n "${IDLE[interval1s.wal]:-}" ]; then
        echo "| [5](#5-idle-cost) WAL of 100 idle pipelines (batch_interval 1 s; 0) | 0 bytes | ${IDLE[interval1s.wal]}; ${IDLE[interval0.wal]} bytes/min | $(verdict "$(cmp "${IDLE[interval1s.wal]} + ${IDLE[interval0.wal]}" == 0)") |"
    else
        echo "| [5](#5-idle-cost) idle WAL | 0 bytes | not run | |"
    fi
    if [ -n "${INGEST_WAITING:-}" ]; then
        echo "| [6](#6-raw-ingest-cost) COPY rows/s into a tracked table vs an untracked one: with a volatile default (row by row); without (in batches) | ≥ 0.90× each | volatile $(ingest_ratio copy 1)× (runs $(ingest_ratio copy 2)-$(ingest_ratio copy 3)); not volatile $(ingest_ratio copy_nv 1)× (runs $(ingest_ratio copy_nv 2)-$(ingest_ratio copy_nv 3)) | $(ingest_verdict copy copy_nv) |"
        echo "| [6](#6-raw-ingest-cost) multi-row INSERT rows/s, the same tables | ≥ 0.90× each | volatile $(ingest_ratio insert 1)× (runs $(ingest_ratio insert 2)-$(ingest_ratio insert 3)); not volatile $(ingest_ratio insert_nv 1)× (runs $(ingest_ratio insert_nv 2)-$(ingest_ratio insert_nv 3)) | $(ingest_verdict insert insert_nv) |"
        echo "| [6](#6-raw-ingest-cost) COPY rows/s, tracked with a BRIN index (set_tracking_index) vs untracked | ≥ 0.90× each | volatile $(ingest_ratio copy_brin 1)× (runs $(ingest_ratio copy_brin 2)-$(ingest_ratio copy_brin 3)); not volatile $(ingest_ratio copy_brin_nv 1)× (runs $(ingest_ratio copy_brin_nv 2)-$(ingest_ratio copy_brin_nv 3)) | $(ingest_verdict copy_brin copy_brin_nv) |"
        echo "| [6](#6-raw-ingest-cost) multi-row INSERT rows/s, BRIN vs untracked | ≥ 0.90× each | volatile $(ingest_ratio insert_brin 1)× (runs $(ingest_ratio insert_brin 2)-$(ingest_ratio insert_brin 3)); not volatile $(ingest_ratio insert_brin_nv 1)× (runs $(ingest_ratio insert_brin_nv 2)-$(ingest_ratio insert_brin_nv 3)) | $(ingest_verdict insert_brin insert_brin_nv) |"
    else
        echo "| [6](#6-raw-ingest-cost) COPY and INSERT | ≥ 0.90× | not run | |"
    fi
    if [ -n "${LOST[microbatch]:-}" ]; then
        echo "| [7](#7-the-alternative-pg_cron-and-a-watermark) rows lost / counted twice under out-of-order commits | 0 / 0 | microbatch ${LOST[microbatch]} / ${DOUBLED[microbatch]}; pg_cron + watermark ${LOST[pg_cron]} / ${DOUBLED[pg_cron]}, every second ${LOST[every_second]} / ${DOUBLED[every_second]} (of $CRON_ROWS) | $(verdict "$(cmp "${LOST[microbatch]} + ${DOUBLED[microbatch]}" == 0)") |"
    else
        echo "| [7](#7-the-alternative-pg_cron-and-a-watermark) lost / doubled rows | 0 / 0 | not run | |"
    fi
    if [ -n "${QUALITY_RATIO:-}" ]; then
        echo "| [8](#8-data-quality) the demo pipeline's throughput at 10k-row batches with its five expectations and audit vs without | ≥ 0.90× | ${QUALITY_RATIO}× (rounds ${QUALITY_RATIO_MIN}-${QUALITY_RATIO_MAX}×; $QUALITY_WITH_MS vs $QUALITY_WITHOUT_MS ms); the engine's part alone, with trivial predicates: ${QUALITY_ENGINE_RATIO}× | $(verdict "$(cmp "$QUALITY_RATIO" '>=' 0.9)") |"
    else
        echo "| [8](#8-data-quality) expectations' cost | ≥ 0.90× | not run | |"
    fi
    if [ -n "${SOAK_LOADED:-}" ]; then
        local smid slast sratio lmid llast lratio
        IFS='|' read -r smid slast sratio <<<"$(soak_flat staging_mb)"
        IFS='|' read -r lmid llast lratio <<<"$(soak_flat ledger_rows)"
        echo "| [9](#9-soak) staging.events table + indexes over a $((SOAK_SECONDS / 60))-minute soak at $(num "$SOAK_RATE") rows/s with retain $SOAK_RETAIN: last third over middle third | flat (0.80-1.20×) | ${sratio}× ($slast vs $smid MB) | $(verdict "$(cmp "$(cmp "$sratio" '>=' 0.8) + $(cmp "$sratio" '<=' 1.2)" == 2)") |"
        echo "| [9](#9-soak) ledger rows in the same soak, history retention 1 min | flat (0.80-1.20×) | ${lratio}× ($llast vs $lmid rows) | $(verdict "$(cmp "$(cmp "$lratio" '>=' 0.8) + $(cmp "$lratio" '<=' 1.2)" == 2)") |"
        echo "| [9](#9-soak) rows lost / processed twice in the soak | 0 / 0 | $SOAK_LOST / $SOAK_TWICE (of $(num "$SOAK_LOADED")) | $(verdict "$(cmp "$SOAK_LOST + $SOAK_TWICE" == 0)") |"
        echo "| [9](#9-soak) unthrottled loader rows/s with retention (retain 0) deleting behind it vs without | ≥ 0.90× | ${SOAK_TP_RATIO}× (rounds ${SOAK_TP_MIN}-${SOAK_TP_MAX}) | $(verdict "$(cmp "$SOAK_TP_RATIO" '>=' 0.9)") |"
    else
        echo "| [9](#9-soak) soak with retention | flat, 0 lost, ≥ 0.90× | not run | |"
    fi
    if [ -n "${CATCHUP_DRAIN_RATIO:-}" ]; then
        local cu_bf cu_bl cu_lf cu_ll
        IFS='|' read -r cu_bf cu_bl <<<"$(catchup_first_last backlog)"
        IFS='|' read -r cu_lf cu_ll <<<"$(catchup_first_last live)"
        echo "| [10](#10-catch-up) catch-up: a $(num "$CATCHUP_TOTAL")-row backlog ($CATCHUP_LOADS loads of $(num "$CATCHUP_LOAD_ROWS")) drained with max_batch_rows $(num "$CATCHUP_CAP") vs the same rows as live batches of the same size | ≤ 1.10× | ${CATCHUP_DRAIN_RATIO}× (rounds ${CATCHUP_DRAIN_MIN}-${CATCHUP_DRAIN_MAX}; ${CATCHUP_MS[backlog]} vs ${CATCHUP_MS[live]} ms; first / last batch of the drain $cu_bf / $cu_bl ms, the same batches live $cu_lf / $cu_ll ms) | $(verdict "$(cmp "$CATCHUP_DRAIN_RATIO" '<=' 1.1)") |"
        echo "| [10](#10-catch-up) catch-up throughput: the drain's rows/s vs the same statements by hand in one transaction over the backlog | ≥ 0.90× | ${CATCHUP_TP_RATIO}× (rounds ${CATCHUP_TP_MIN}-${CATCHUP_TP_MAX}; $(catchup_rate backlog) vs $(catchup_rate hand) rows/s) | $(verdict "$(cmp "$CATCHUP_TP_RATIO" '>=' 0.9)") |"
    else
        echo "| [10](#10-catch-up) catch-up | ≤ 1.10×, ≥ 0.90× | not run | |"
    fi
    if [ -n "${OVERHEAD_MS:-}" ]; then
        local ov_batches ov_one ov_dur ov_lock
        IFS='|' read -r ov_batches ov_one ov_dur ov_lock <<<"$OVERHEAD_LEDGER"
        echo "| [11](#11-per-batch-overhead) engine time of a 1-row batch with an empty transform: the run_batch statement, its commit included | ≤ 1 ms | ${OVERHEAD_MS} ms (rounds ${OVERHEAD_RUNS[batch]}, the best $(tr ',' '\n' <<<"${OVERHEAD_RUNS[batch]}" | sort -g | head -n 1 | tr -d ' ') ms; in the ledger ${ov_dur} µs from start to ledger row, median; breakdown in the section) | $(verdict "$(cmp "$OVERHEAD_MS" '<=' 1)") |"
    else
        echo "| [11](#11-per-batch-overhead) 1-row batch | ≤ 1 ms | not run | |"
    fi
    if [ -n "${FIRST_MS:-}" ]; then
        local window_ms scan_par scan_par_used
        window_ms=$(first_step_ms window)
        IFS='|' read -r scan_par scan_par_used <<<"$FIRST_SCAN_PARALLEL"
        echo "| [12](#12-a-first-batch-over-a-million-rows) a first batch over $(num "$FIRST_BATCH_ROWS") rows with parallel query where the transforms allow it | report the speed-up | 1.00×: no step of the demo's batch may run in parallel on PostgreSQL 15 (its transforms write; see the section). The one read that could, the window's count, is $(calc %.1f "100 * $window_ms / $FIRST_MS")% of the batch's $(num "$FIRST_MS") ms; a parallel scan of the same rows by hand ran at $(calc %.2f "$FIRST_SCAN_SERIAL / $scan_par")× | reported |"
    else
        echo "| [12](#12-a-first-batch-over-a-million-rows) first batch, parallel query | report | not run | |"
    fi

    cat <<EOF

## Machine and settings

| | |
|---|---|
| CPU | $host_cpu, $(nproc) cores |
| memory | $mem |
| kernel | $(uname -sr) |
| PostgreSQL | $PG_VERSION |
| pg_cron | package $CRON_PKG (extension $CRON_EXT); schedules in seconds: ${CRON_SECONDS:-not checked} |
| WAL fsync | the data directory's file system, \`wal_sync_method\` fdatasync, \`synchronous_commit\` on |

One cluster (\`initdb -E UTF8 --locale=C.UTF-8\`), a fresh data directory under
/tmp, a Unix socket only, the defaults plus:

\`\`\`
$SETTINGS
\`\`\`

\`microbatch.enabled\` is switched with \`ALTER SYSTEM\` and a reload: off where
batches are run by hand (sections 1, 3, 10, 11 and 12), on elsewhere.
\`track_commit_timestamp\` is on for section 2 only, with a restart before
and after it, to measure latency exactly.  Other microbatch
settings are the defaults (${MB_GUCS:-not read}), but in section 9,
which sets its own.  \`pg_stat_statements\` is loaded for section 11's
breakdown and tracks nothing elsewhere (\`track = none\`, no query ids
computed); that section's profiling connection turns both on for itself.
Load comes from pgbench on the same machine, so it shares the two cores with
the server.
EOF

    # ------------------------------------------------------------------
    echo
    echo "## 1. Throughput"
    echo
    if [ -n "${TP_ROWS+x}" ]; then
        cat <<EOF
**Method.** The demo's clickstream pipeline ([test/demo/clickstream.sql](../test/demo/clickstream.sql):
bronze, silver and four gold transforms) in database \`bench\`, background
workers off.  Each iteration loads B rows in one transaction
([gen.sql](../test/bench/gen.sql): deterministic events shaped like the demo's
load, ~2.4% malformed, ~1.6% re-sent), then runs
\`SELECT microbatch.run_batch('clickstream')\`, which takes exactly those B rows
(checked in the ledger).  The baseline runs in two databases, \`hand_s\` and
\`hand_p\`, which have the same tables and no extension
([hand.sql](../test/bench/hand.sql)): they load the same rows (same seeds),
then run the pipeline's own six statements, taken from
\`microbatch.transforms\` in run order, in one transaction over those rows read
by primary-key range, as a job with an id watermark would, plus the update of
its watermark row (the script is below).  No lock, no ledger, no snapshot
bookkeeping, no subtransaction, no role switch: the physical limit.
\`hand_s\` sends each statement as a simple query, planned for the values at
hand as the engine plans a batch's statements; \`hand_p\` prepares them once
(generic plans, no planning per batch).  The ratio is against the faster of
the two.  All three run from pgbench (\`-c 1 -t <batches>\`), which reports each
statement's average latency; a batch's time is the \`run_batch\` statement
(including its commit) on one side, BEGIN to COMMIT on the other; the load is
not counted.  Each batch size runs in 2 rounds alternating the three databases
(1 for a single batch), after a VACUUM ANALYZE of all three; autovacuum is off
for this section, so that it does not run in the middle of one side's
batches.  The three databases end with identical row counts in every bronze,
silver and gold table: **$TP_SAME**.

| batch rows | batches | run_batch ms | by hand, planned ms | by hand, prepared ms | microbatch rows/s | by hand rows/s (faster) | ratio |
|---|---|---|---|---|---|---|---|
EOF
        for line in "${TP_ROWS[@]}"; do tp_line "$line"; done
        cat <<EOF

The hand-written transaction, as run (\`bench.lo\`, \`bench.hi\` and
\`bench.batch_id\` feed the stand-in view and \`current_batch_id()\`):

\`\`\`sql
$(sed -n '/^BEGIN;/,$p' "$WORK/tp-hand.sql.txt")
\`\`\`
EOF
    else
        echo "Not run."
    fi

    # ------------------------------------------------------------------
    echo
    echo "## 2. Latency"
    echo
    if [ -n "${LAT_ROWS+x}" ]; then
        cat <<EOF
**Method.** The same pipeline with background workers on, its
\`batch_interval\` set with \`alter_pipeline\`, drained before each run.
pgbench ([insert-events.pgbench](../test/bench/insert-events.pgbench)) runs 100
loader transactions a second from 2 clients (\`-R\`, Poisson arrivals) for
${LAT_SECONDS} s: 10 rows each for 1k rows/s, 100 rows each for 10k rows/s and
more.  Each transaction's **last statement** records its transaction id and
\`clock_timestamp()\` in \`bench.commits\`, right before COMMIT.  A watcher
session ([latency.sql](../test/bench/latency.sql), \`bench.watch\`) polls the
ledger every 1 ms and records when each batch id first appears: a batch's gold
rows and its ledger row commit in one transaction, so that is when the batch
becomes visible in gold.  A transaction's batch is the first committed batch
whose upper snapshot shows it committed (the definition of a batch window).
With commit timestamps (\`track_commit_timestamp\`, ${LAT_COMMIT_TS:-on} for
this section only, which the cluster is restarted for), latency = the commit
timestamp of the batch's transaction (its ledger row's \`xmin\`) − the
commit timestamp of the loader's transaction, per row: both are taken as the
commit record is written, so this is exact, and counts the loader's WAL
flush.  With commit timestamps on, each batch also looks up when its oldest
row committed (\`oldest_row_committed_at\`), a query more.
At batch_interval 0 a batch starts as soon as rows are waiting, but two
batches of a pipeline start \`microbatch.coalesce_delay\`
(${LAT_COALESCE_DELAY:-its default}) apart at least: rows committed meanwhile
share the next batch.

**Bounds.** Two more figures bracket the exact one, from the loader's last
statement (before its COMMIT): the watcher's sighting, an upper bound that
counts the loader's COMMIT (round trip and WAL flush, ~0.2-0.5 ms here) and up
to one polling period plus the poll query (~1.1 ms); and the batch's
\`finished_at\` (lb), taken before the batch commits, a lower bound that
misses the batch's commit.  The watcher costs a few percent of a core.

| batch_interval | rows/s asked | rows/s done | rows/tx | clients | batches | rows/batch avg (max) | batch ms p50 (p99) | **p50 ms** | **p95 ms** | **p99 ms** | max ms | watcher p50 | watcher p99 | lb p50 | lb p99 | rows not in gold by the end |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
EOF
        for line in "${LAT_ROWS[@]}"; do
            IFS='|' read -r -a f <<<"$line"
            # interval|rate|rows_per_tx|txns|rows|unseen|rows/s|batches|p50|p95|p99|max|lb50|lb99|
            # avg rows/batch|max rows|batch p50 ms|batch p99 ms|clients|schedule lag avg/max ms|
            # exact p50|p95|p99|max (empty without commit timestamps: the watcher's then)
            printf '| %s | %s | %s | %s | %s | %s | %s (%s) | %s (%s) | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
                "${f[0]}" "${f[1]}" "${f[6]}" "${f[2]}" "${f[18]:-2}" "${f[7]}" "${f[14]}" "${f[15]}" "${f[16]}" "${f[17]}" \
                "${f[20]:-${f[8]}}" "${f[21]:-${f[9]}}" "${f[22]:-${f[10]}}" "${f[23]:-${f[11]}}" \
                "${f[8]}" "${f[10]}" "${f[12]}" "${f[13]}" "${f[5]}"
        done
        echo
        echo "The rows at 20000 rows/s and more try rates beyond the targets at batch_interval 0: what one pipeline keeps up with on this machine (\"rows not in gold\" counts the rows still waiting ${LAT_SECONDS}+5 s after the run began)."
        echo
        printf '%s' "The row \"0, one transform\" runs the 10k rows/s load through a pipeline on the same staging table whose only transform counts the batch's rows per event type (the demo's pipeline paused meanwhile): the engine's own latency, without the demo's transforms."
        local us_per_row
        us_per_row=$(tp_us_per_row 1000)
        if [ -n "$us_per_row" ]; then
            printf '%s' "  The demo's batches cost ${us_per_row} µs per row at 1k-row batches (section 1), so at 10k rows/s they alone keep one of the two cores busy ${us_per_row}% of the time, on cores shared with the loaders and the watcher."
        fi
        echo
        local copy_lag
        copy_lag=$(lat_field "$LAT_COPY_LABEL" 10000 19)
        if [ -n "$copy_lag" ]; then
            cat <<EOF

The row "$LAT_COPY_LABEL" is the target's: a pipeline \`lat_copy\` on the
same staging table (created with \`start_from => 'now'\`, so that the rows
already there are none of its business), at batch_interval 0, whose only
transform copies the batch into a table with the batch view's columns
(\`INSERT INTO bench.lat_copy SELECT * FROM microbatch.lat_copy_batch\`, a
bronze copy; columns: ${LAT_COPY_COLUMNS:-}), the demo's pipeline paused
meanwhile.  Its load: 8 pgbench clients (\`-c 8 -j 2\`), one row per
transaction, \`-R 10000\` transactions a second, for ${LAT_SECONDS} s, from
[insert-one-event.pgbench](../test/bench/insert-one-event.pgbench): one
prepared statement in autocommit that inserts the next of the client's rows
of a table of gen.sql's events (\`bench.event_pool\`) and, once it is
inserted, records the transaction id and \`clock_timestamp()\` in
\`bench.commits\` as the other loader's last statement does.  (The other
loader's four statements, with \`bench.gen_events(1)\`, cost so much more
that in a trial here 8 clients sent 1,500 to 2,000 of the 10,000
transactions a second asked.)  pgbench's rate-limit schedule lag in this
run, average / max: $copy_lag ms: when it is more than a few ms, the
loader could not keep up with the arrivals asked and sent its transactions
as fast as it could, at the rate in the "rows/s done" column, on the cores
the server, the batches and the watcher share.  Latency is measured from
each transaction's own last statement, not from its scheduled arrival, so
the lag itself is not in it.  Every row the loader committed was copied,
once: **${LAT_COPY_CHECK:-not checked}**.
EOF
        fi
    else
        echo "Not run."
    fi

    # ------------------------------------------------------------------
    echo
    echo "## 3. Sweep scaling"
    echo
    if [ -n "${SWEEP_FULL_MS:-}" ]; then
        cat <<EOF
**Method.** Two databases alike, \`sweep_small\` and \`sweep_big\`, each
with the demo's pipeline and background workers off.  In \`sweep_big\`,
$(num "$SWEEP_LOADED") rows are loaded by two sessions in transactions of
500,000 rows (${SWEEP_LOAD_S} s; the load stops at $(num "$SWEEP_ROWS") rows or after
${SWEEP_LOAD_BUDGET} s, whichever comes first) and processed by one real batch
(${SWEEP_NOOP_S} s) during which the transforms are swapped for a no-op \`SELECT 1\`
(both databases go through the same swap): running them through the six
transforms would take several minutes here, and the sweep does not depend on
what the transforms did.  Autovacuum is off for every table of both, so that
it neither starts in the middle nor gives one database's growing layers newer
statistics, and other plans, than the other's.  Then, in 3 alternating
rounds, each database is analysed and runs 1 + $SWEEP_BATCHES iterations of "load 10,000 rows,
\`run_batch\`" from one pgbench connection (the first batch of a connection,
which warms its caches, is not counted).  The figure is the median of the
$SWEEP_N counted batches' durations in the ledger (\`finished_at - started_at\`:
window, count, transforms, ledger row).  The two databases get the same rows
in the same order, so their layers' tables are identical at every step: batch
durations do grow with those (the demo's gold layer looks users and pages up in
everything it has seen), which is why the two are measured side by side rather
than before and after the load.

| processed rows in the staging table | median 10k-row batch, ms |
|---|---|
| none (\`sweep_small\`: only the measured batches) | $SWEEP_EMPTY_MS |
| $(num "$SWEEP_PROCESSED") (\`sweep_big\`) | $SWEEP_FULL_MS |
| **ratio** | **$sweep_ratio** |
EOF
        if [ -n "${SWEEP_PROFILE:-}" ]; then
            local total engine=0 layer name ms
            total=$(awk '$1 == "total" { print $3 }' <<<"$SWEEP_PROFILE")
            cat <<EOF

Where a 10k-row batch's time goes: one more batch in \`sweep_big\` under
auto_explain (\`log_nested_statements\`, \`log_analyze\` without timing,
statements over 1 ms); the rest is the engine's own work (lock, ledger reads,
snapshot, count, subtransaction, ledger row) and the commit is not included.
The same statements by hand cost the same (section 1).

| layer | transform | ms | share |
|---|---|---|---|
EOF
            while read -r layer name ms; do
                [ "$layer" = total ] && continue
                engine=$(calc %.1f "$engine + $ms")
                printf '| %s | %s | %s | %s%% |\n' "$layer" "$name" "$ms" "$(calc %.0f "100 * $ms / $total")"
            done <<<"$SWEEP_PROFILE"
            printf '| | everything else in run_batch | %s | %s%% |\n' "$(calc %.1f "$total - $engine")" "$(calc %.0f "100 * ($total - $engine) / $total")"
            printf '| | **run_batch** | **%s** | |\n' "$total"
        fi
        if [ -n "${SWEEP_PLAN:-}" ]; then
            cat <<EOF

How a batch reads its window in the big table: the plan of the engine's
count over the batch view in one more 10k-row batch (auto_explain, analyze,
buffers; the transforms' reads of the view use the same scan):

\`\`\`
$SWEEP_PLAN
\`\`\`
EOF
        fi
    else
        echo "Not run."
    fi

    # ------------------------------------------------------------------
    echo
    echo "## 4. Ingest overhead: pgbench TPC-B"
    echo
    if [ ${#TPCB_RATIO[@]} -gt 0 ]; then
        cat <<EOF
**Method.** Two databases initialised alike (\`pgbench -i -s $TPCB_SCALE\`);
one has a pipeline on \`pgbench_history\` ([history.sql](../test/bench/history.sql):
each batch's deltas per account, under its batch id), run by the background
workers.  \`pgbench -n -c $TPCB_CLIENTS -j 2 -T $TPCB_SECONDS\` (the built-in
TPC-B-like script), in $TPCB_ROUNDS rounds that alternate: no pipeline,
pipeline at batch_interval 1 s, 100 ms and 0.
Before each run: \`VACUUM pgbench_branches, pgbench_tellers\` (what pgbench's
own vacuum step does, less truncating \`pgbench_history\`, which the pipeline
reads) and a CHECKPOINT; autovacuum is off for this section, so that it does
not start in one run and not another.  The speed of this VM drifts by tens
of percent from one minute to the next (the same variant's rounds below), so
each ratio is computed within a round, against the run without a pipeline
made just before, and the figure is the median of the rounds' ratios, with
their range.  The batches run on the same two
cores as the clients and the server, so this counts their CPU as well as the
inserting side's cost (tracking column, index, trigger).  Afterwards the sums
of the batches equal \`pgbench_history\`'s
($(num "$TPCB_HISTORY_ROWS") rows, $(num "$TPCB_BATCHES") batches): **$TPCB_CHECK**.

| variant | tps, each round | tps, median | ratio: median of the rounds' (range) | batches/s | rows per batch | share of the run a batch was running |
|---|---|---|---|---|---|---|
| no pipeline | ${TPCB_RUNS[plain]} | ${TPCB_TPS[plain]} | 1 | | | |
$(for variant in "${tpcb_variants[@]}"; do
    echo "| pipeline, batch_interval $variant | ${TPCB_RUNS[$variant]} | ${TPCB_TPS[$variant]} | **${TPCB_RATIO[$variant]}** (${TPCB_RANGE[$variant]}) | $(tpcb_ledger "$variant") |"
done)

The last three columns come from the ledger (\`microbatch.batches\`) over each
run, averaged over the rounds.  At batch_interval 0 a batch starts when
commits have come, at least \`microbatch.coalesce_delay\` (2 ms) after the
previous one started: while commits keep coming, a hundred or more batches of
a few rows a second, each a transaction of its own, on the two cores the
clients use.  An interval of 100 ms gathers them into ten a second.
EOF
    else
        echo "Not run."
    fi

    # ------------------------------------------------------------------
    echo
    echo "## 5. Idle cost"
    echo
    if [ -n "${IDLE[interval1s.wal]:-}" ]; then
        cat <<EOF
**Method.** Database \`idle\` with 100 pipelines ([idle.sql](../test/bench/idle.sql)),
each with one transform; each processed one row ($IDLE_BATCHES batches), then
nothing arrives.  Autovacuum is turned off for the windows (it would be
vacuuming the tables of the sections before).  Each window starts once the
cluster has written no WAL for 26 s (at most 60 s of waiting): the set-up
writes some, and the bgwriter logs the running transactions (one 50-byte
Standby record) up to 15 s after any WAL, plus up to 10 s of hibernation; it
writes nothing more while nothing else is written.  WAL:
\`pg_current_wal_insert_lsn()\` before and after the window.  CPU: utime +
stime from \`/proc/<pid>/stat\` of every child of the postmaster, sampled every
second (a process that starts in the window counts from zero, one that exits
counts to its last sample).  "microbatch" is every process whose title says
microbatch: the launcher, one scheduler per database with the extension (the
other databases' pipelines are idle too) and the batch workers ($IDLE_PROCS
at the end of the windows); "idle database" is the scheduler and workers of
database \`idle\`.
Windows: ${IDLE_SECONDS} s with the default batch_interval (1 s), then
${IDLE0_SECONDS} s with batch_interval 0; both scaled to a minute.

| batch_interval | microbatch CPU s/min | of which the idle database's | all postgres processes CPU s/min | WAL bytes/min |
|---|---|---|---|---|
| 1 s | ${IDLE[interval1s.cpu_mb]} | ${IDLE[interval1s.cpu_db]} | ${IDLE[interval1s.cpu_all]} | ${IDLE[interval1s.wal]} |
| 0 | ${IDLE[interval0.cpu_mb]} | ${IDLE[interval0.cpu_db]} | ${IDLE[interval0.cpu_all]} | ${IDLE[interval0.wal]} |
EOF
        for label in interval1s interval0; do
            if [ -n "${IDLE[$label.waldump]}" ]; then
                printf '\nWAL written during the %s window (`pg_waldump --stats=record`, record types written only):\n\n```\n%s\n```\n' \
                    "$label" "${IDLE[$label.waldump]}"
            fi
        done
    else
        echo "Not run."
    fi

    # ------------------------------------------------------------------
    echo
    echo "## 6. Raw ingest cost"
    echo
    if [ -n "${INGEST_WAITING:-}" ]; then
        local t what
        cat <<EOF
**Method.** Two triples of tables made alike from the demo's staging table
(\`LIKE staging.events INCLUDING ALL\`, tracking column dropped); in each
triple two tables get a pipeline (its tracking column with \`DEFAULT
pg_current_xact_id()\`, the index on it, the \`CHECK\` constraint on
its values and the statement triggers on \`INSERT\`, \`UPDATE\` and
\`TRUNCATE\`), paused
so that no batch competes for the CPU (the cost of batches is section 4's).
One of the two keeps the B-tree tracking index \`create_pipeline\` makes
(\`piped\`); the other trades it for a BRIN index,
\`microbatch.set_tracking_index(..., 'brin')\` (\`brin\`).
The first triple keeps the staging table's \`received_at DEFAULT
clock_timestamp()\`, a volatile default: PostgreSQL's COPY then inserts row
by row.  The second triple's \`received_at\` defaults to a constant (\`ALTER
TABLE ... ALTER received_at SET DEFAULT '2026-01-01 00:00:00+00'\`, on all three
tables, before the pipeline): COPY then inserts in batches of rows
(multi-insert) unless something else of the table stops it.  The
defaults, with the volatility of their functions (i immutable, s stable, v
volatile) and how the first COPY into each table wrote its rows
(\`pg_waldump --stats=record\` over its WAL: \`Heap/INSERT\` records are
rows inserted one by one, \`Heap2/MULTI_INSERT\` records batches):

| table | defaults (identity aside) | first COPY's WAL |
|---|---|---|
$(for t in $INGEST_TABLES; do
    echo "| \`bench.ingest_$t\` | ${INGEST_DEFAULTS[$t]:-} | $(ingest_wal "$t") |"
done)

COPY: $(num "$INGEST_COPY_ROWS") rows from a CSV file on the server (\`received_at\`
not in it: its default fills it), one transaction, timed from the client,
$INGEST_COPY_ROUNDS times per table.  INSERT: one statement of 100 literal
rows per transaction, pgbench \`-c 2 -j 2 -T $INGEST_SECONDS\`,
$INGEST_INSERT_ROUNDS times per table.  The six tables take turns within each
round, in reverse order every other round, so that each side of a pair goes
first as often; a CHECKPOINT before each run.  This VM's speed drifts by tens
of percent from one minute to the next, so each ratio is that of the two runs
of a pair in the same round (with over without), and the figure is the
median of those ratios, with their range; each run's rows/s is in the last
columns.  Afterwards every row loaded into the pipelines' tables is counted
as waiting for them: **$INGEST_WAITING**.

| | tracking index | default of received_at | without pipeline rows/s (median) | with pipeline rows/s (median) | ratio: median of the rounds' (range) | runs without | runs with |
|---|---|---|---|---|---|---|---|
EOF
        for what in copy insert; do
            local key label plain piped index rk
            for index in btree brin; do
            for key in "" _nv; do
                plain=plain$key piped=piped$key rk=$what$key
                [ "$index" = brin ] && piped=brin$key rk=${what}_brin$key
                if [ "$what" = copy ]; then label="COPY"; else label="INSERT, 100 rows per statement"; fi
                printf '| %s | %s | %s | %s | %s | **%s** (%s-%s) | %s | %s |\n' "$label" "$index" \
                    "$([ -z "$key" ] && echo "volatile, clock_timestamp()" || echo "constant")" \
                    "$(num "$([ "$what" = copy ] && echo "${INGEST_COPY_MEDIAN[$plain]}" || echo "${INGEST_INSERT_MEDIAN[$plain]}")")" \
                    "$(num "$([ "$what" = copy ] && echo "${INGEST_COPY_MEDIAN[$piped]}" || echo "${INGEST_INSERT_MEDIAN[$piped]}")")" \
                    "$(ingest_ratio "$rk" 1)" "$(ingest_ratio "$rk" 2)" "$(ingest_ratio "$rk" 3)" \
                    "$(num_list "$([ "$what" = copy ] && echo "${INGEST_COPY_RUNS[$plain]}" || echo "${INGEST_INSERT_RUNS[$plain]}")")" \
                    "$(num_list "$([ "$what" = copy ] && echo "${INGEST_COPY_RUNS[$piped]}" || echo "${INGEST_INSERT_RUNS[$piped]}")")"
            done
            done
        done
        cat <<EOF

During the INSERT runs, the database's microbatch scheduler was woken
${INGEST_WAKES[plain]} and ${INGEST_WAKES[plain_nv]} times a second (${INGEST_SCHED_CPU[plain]}% and ${INGEST_SCHED_CPU[plain_nv]}% of a core) while the
tables without a pipeline were loaded, and ${INGEST_WAKES[piped]} and ${INGEST_WAKES[piped_nv]} times a second
(${INGEST_SCHED_CPU[piped]}% and ${INGEST_SCHED_CPU[piped_nv]}% of a core) while those with the paused pipelines were
(voluntary context switches and utime + stime of the scheduler, from /proc): the
statement trigger counts every inserting commit, but the commit sets the
scheduler's latch only while a continuous pipeline of the database waits for
rows.
EOF
    else
        echo "Not run."
    fi

    # ------------------------------------------------------------------
    echo
    echo "## 7. The alternative: pg_cron and a watermark"
    echo
    if [ -n "${LOST[microbatch]:-}" ]; then
        local cron_runs cron_rows cron_p50 cron_p99 cron_max sec_runs sec_rows sec_p50 sec_p99 sec_max
        local mb_batches mb_rows mb_p50 mb_p99 mb_max
        IFS='|' read -r cron_runs cron_rows cron_p50 cron_p99 cron_max <<<"$CRON_LAT_CRON"
        IFS='|' read -r sec_runs sec_rows sec_p50 sec_p99 sec_max <<<"$CRON_LAT_SEC"
        IFS='|' read -r mb_batches mb_rows mb_p50 mb_p99 mb_max <<<"$CRON_LAT_MB"
        cat <<EOF
**Method.** What users do today without microbatch
([watermark.sql](../test/bench/watermark.sql)): a pg_cron job calls a PL/pgSQL
procedure that folds the rows above the last id it processed (a bigserial
watermark) into per-user totals.  It is written with care (upper bound read
first, state row locked, totals and watermark committed together).  The same
totals are kept by a microbatch pipeline (batch_interval 0) on the same table.

pg_cron installed here is $CRON_PKG: schedules in seconds (\`'1 second'\`,
pg_cron 1.5+) are **$( [ "$CRON_SECONDS" = yes ] && echo "supported" || echo "not supported" )**, so its
finest schedule is one minute (\`* * * * *\`), and its latency floor is the
minute: a row waits up to 60 s (30 s on average) for the next run.  The job
ran with that schedule ($CRON_RUNS, during the load).  $( [ "$CRON_SECONDS" = yes ] \
    && echo "A second job ran the same procedure with a '1 second' schedule." \
    || echo "To show what pg_cron 1.5's '1 second' would give, the same procedure also ran on every whole second, each run its own transaction, from a loop (\`bench.every_second\`) standing in for the scheduler." )

Load: 8 pgbench clients ([watermark-insert.pgbench](../test/bench/watermark-insert.pgbench))
for as long as it takes to span a pg_cron run at the minute (at least
${CRON_MIN_SECONDS} s); each inserts one row, then waits 0-50 ms inside its
transaction before committing, so ids commit out of order:
$(num "$CRON_ROWS") rows, $(num "$CRON_LATE") of them committed after a row with a higher id.
When the load stopped, each watermark consumer ran once more by hand (taking
everything above its watermark) and microbatch drained.  Then each consumer's
per-user counts were compared with the table's: rows missing are lost, rows in
excess counted twice.  Latency: from the inserting transaction's last statement
to the end of the run or batch that took the row (before its commit), for the
runs during the load; lost rows have none.

| consumer | rows lost | rows counted twice | runs or batches during the load | p50 latency ms | p99 ms | max ms |
|---|---|---|---|---|---|---|
| pg_cron, every minute, watermark | ${LOST[pg_cron]} | ${DOUBLED[pg_cron]} | $cron_runs | $cron_p50 | $cron_p99 | $cron_max |
| every second, watermark | ${LOST[every_second]} | ${DOUBLED[every_second]} | $sec_runs | $sec_p50 | $sec_p99 | $sec_max |
| microbatch, batch_interval 0 | ${LOST[microbatch]} | ${DOUBLED[microbatch]} | $mb_batches | $mb_p50 | $mb_p99 | $mb_max |

The watermark job cannot double count (a row is read only above the
watermark) and cannot avoid losing rows: when it runs, a row whose id is below
the highest committed id may still be uncommitted, and once the watermark has
passed its id it is never read.  Re-reading an overlap to catch such rows
would double count them instead, unless every row is tracked.  microbatch
decides membership by transaction visibility, not by id, which is why it
loses none.
EOF
    else
        echo "Not run."
    fi

    printf '\n## 8. Data quality\n\n'
    if [ -n "${QUALITY_RATIO:-}" ]; then
        cat <<EOF
**Method.** A database \`quality\` with the demo's pipeline, background
workers off, and its checks: $QUALITY_CHECKS.  One pgbench connection loads
10,000 valid rows and runs \`run_batch\`, $QUALITY_BATCHES times (plus a first
batch that warms the connection's caches, not counted); valid rows, so that
the same pipeline without its checks does the same work with them (a
malformed amount would fail its silver cast).  Each of $QUALITY_N rounds
measures three sides one after the other, on the same growing tables: the
demo's checks; the same number of checks with the same actions but
predicates that cost nothing (\`true\`, and an audit \`SELECT 1 WHERE
false\`), which is what the engine itself adds (the pass over the batch, the
batch views' row filter \`batch_row_kept\`, the result rows, the audit's
round trip); and no checks.  Figures are medians of the batch durations in the
ledger; ratios are throughput over throughput without checks, median of the
rounds' ratios.

| | median 10k-row batch, ms | throughput vs no checks |
|---|---|---|
| the demo's checks | $QUALITY_WITH_MS | **${QUALITY_RATIO}×** (rounds ${QUALITY_RATIO_MIN}-${QUALITY_RATIO_MAX}×) |
| as many trivial checks | $QUALITY_TRIVIAL_MS | ${QUALITY_ENGINE_RATIO}× (rounds ${QUALITY_ENGINE_MIN}-${QUALITY_ENGINE_MAX}×) |
| no checks | $QUALITY_WITHOUT_MS | 1 |

What each of the demo's predicates costs by itself, evaluated over the
10,000 latest rows of the staging table (best of three, ms): the difference
between the two first lines is the predicates' own work, mostly the JSON
check, a PL/pgSQL function with an exception block (a subtransaction per
row: PostgreSQL 15 has no \`IS JSON\`).

| expectation | ms per 10,000 rows |
|---|---|
$(awk -F'|' '{ printf "| %s | %s |\n", $1, $2 }' <<<"$QUALITY_PREDICATES")
EOF
    else
        echo "Not run."
    fi

    printf '\n## 9. Soak\n\n'
    if [ -n "${SOAK_LOADED:-}" ]; then
        local load_rate wal_rate max_waiting autovacuums outputs_mb ledger_max staging_max
        local avg_rows max_rows batch_p50 batch_p99
        IFS='|' read -r load_rate wal_rate max_waiting autovacuums outputs_mb ledger_max staging_max <<<"$SOAK_RUN"
        IFS='|' read -r avg_rows max_rows batch_p50 batch_p99 <<<"$SOAK_BATCH_STATS"
        cat <<EOF
**Method.** A database \`soak\` with the demo's pipeline at \`batch_interval\`
1 s and \`microbatch.set_retention('staging.events', '$SOAK_RETAIN')\`; with
\`ALTER SYSTEM\` and a reload, \`microbatch.history_retention = '1min'\` and
\`microbatch.naptime = '1s'\` (reset at the end of the section; in force:
$SOAK_GUCS; retention workers in the database: $SOAK_RETENTION_WORKERS).
Autovacuum runs with its defaults: it is what makes the space of the deleted
rows reusable (autovacuum runs on \`staging.events\` during the soak: $autovacuums).
pgbench ([soak-insert.pgbench](../test/bench/soak-insert.pgbench)) runs
$((SOAK_RATE / 100)) loader transactions a second of 100 rows each
([gen.sql](../test/bench/gen.sql)'s events) from 2 clients (\`-R\`, Poisson
arrivals) for $SOAK_SECONDS s: $(num "$SOAK_RATE") rows/s asked, $(num "$load_rate")
done (schedule lag ${SOAK_LOAD_LAG:-not reported}).  Every
$SOAK_SAMPLE_SECONDS s, \`bench.soak_sample()\` ([soak.sql](../test/bench/soak.sql))
records the size of the staging table (\`pg_table_size\`: heap, TOAST, free
space and visibility maps) and of its indexes (\`pg_indexes_size\`: primary
key and tracking index), its rows (\`count(*)\`), the ledger's rows
(\`microbatch.batch\`) and the size of the ledger's tables (\`batch\`,
\`check_result\`, \`quarantined_row\`, with indexes and TOAST),
\`rows_removed\` and \`removable_rows\` from \`microbatch.retention\`, and WAL
written.  The batches took $(num "$avg_rows") rows on average (at most
$(num "$max_rows")), in $batch_p50 ms at the median (p99 $batch_p99 ms); at most
$(num "$max_waiting") rows were waiting at a sample.  WAL: $wal_rate MB/s.
The bronze, silver and gold tables keep every event, as they should: they
grew to $(num "$outputs_mb") MB and are not part of what must stay flat.
EOF
        [ -n "$QUICK" ] && printf '\n**MB_BENCH_QUICK: a soak of %s s only, whose middle third is still within the retention of the first rows: the ratios below say nothing about flatness.**\n' "$SOAK_SECONDS"
        cat <<EOF

![Sizes of the staging table and of the ledger over the soak](benchmarks-soak.svg)

Flat: the mean of the last third of the soak over the mean of its middle third
(minutes $(calc %.1f "$SOAK_SECONDS / 180")-$(calc %.1f "$SOAK_SECONDS / 90") and $(calc %.1f "$SOAK_SECONDS / 90")-$(calc %.1f "$SOAK_SECONDS / 60"), the dashed lines), within ±20 %.

| figure | mean, middle third | mean, last third | last / middle | flat |
|---|---|---|---|---|
EOF
        local fig label middle last ratio
        for fig in staging_mb table_mb index_mb staging_rows ledger_rows ledger_mb outputs_mb; do
            case $fig in
                staging_mb) label="staging.events, table + indexes, MB" ;;
                table_mb) label="staging.events, table, MB" ;;
                index_mb) label="staging.events, indexes, MB" ;;
                staging_rows) label="staging.events, rows" ;;
                ledger_rows) label="ledger rows (microbatch.batch)" ;;
                ledger_mb) label="ledger tables, MB" ;;
                outputs_mb) label="bronze, silver and gold, MB (keep every event: grow)" ;;
            esac
            IFS='|' read -r middle last ratio <<<"$(soak_flat "$fig")"
            [ -n "$ratio" ] || continue
            case $fig in
                *_rows) middle=$(num "$(calc %.0f "$middle")") last=$(num "$(calc %.0f "$last")") ;;
            esac
            if [ "$fig" = outputs_mb ]; then
                printf '| %s | %s | %s | %s× | |\n' "$label" "$middle" "$last" "$ratio"
            else
                printf '| %s | %s | %s | **%s×** | %s |\n' "$label" "$middle" "$last" "$ratio" \
                    "$(soak_is_flat "$ratio")"
            fi
        done
        cat <<EOF

One sample a minute (the one nearest the whole minute; 0 is the loader's start):

| minute | staging rows | table MB | indexes MB | dead rows (pg_stat) | ledger rows | ledger tables MB | rows removed | removable rows | rows waiting | WAL MB |
|---|---|---|---|---|---|---|---|---|---|---|
$(for line in "${SOAK_MINUTES[@]}"; do
    IFS='|' read -r -a f <<<"$line"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${f[0]}" "$(num "${f[1]}")" "${f[2]}" "${f[3]}" \
        "$(num "${f[4]}")" "${f[5]}" "${f[6]}" "$(num "${f[7]}")" "$(num "${f[8]}")" "$(num "${f[9]}")" "$(num "${f[10]}")"
done)

**Ground truth.** When the loader stopped, the pipeline drained.  Each loader
transaction wrote its row count into \`bench.soak_loaded\` in the same
transaction as its rows: what committed, whatever retention removed since.
The batches' \`rows_in\` come from a copy of the ledger taken at every sample
(history retention removes ledger rows a minute after they finished; batch
ids missing from the copy: $SOAK_BATCH_GAPS), and so do the ids of the rows
the drop expectations quarantined.  Bronze keeps one row per staging row
that the expectations let through (keyed by \`ingest_id\`), the quarantine
the others ($SOAK_BOTH rows in both), so their union is the rows processed,
each once.  Lost = loaded − rows processed; processed twice = sum of
\`rows_in\` − rows processed.

| rows loaded (loader's count; pgbench's transactions × 100) | sum of rows_in of the $(num "$SOAK_BATCHES") committed batches | rows processed: in bronze + quarantined | lost | processed twice | rows removed by retention | rows still in staging |
|---|---|---|---|---|---|---|
| $(num "$SOAK_LOADED") ($(num "$SOAK_PGBENCH_ROWS")) | $(num "$SOAK_PROCESSED") | $(num "$SOAK_DISTINCT") ($(num "$SOAK_BRONZE") + $(num "$SOAK_QUARANTINED")) | **$SOAK_LOST** | **$SOAK_TWICE** | $(num "$SOAK_REMOVED") | $(num "$SOAK_STAGING_LEFT") |

Then the retention was set to 0 and \`retention_now()\` called: with the
retention worker, woken by the change, they removed what was left, and
$(num "$SOAK_FINAL_LEFT") rows stayed (those at or above the horizon, the next window's
lowest transaction id).

**Loader throughput with retention.** A copy of the staging table,
\`bench.tp_events\`, with a pipeline of its own at \`batch_interval\` 1 s
whose only transform counts each batch's rows, so that it keeps up with any
loader here and the retention worker deletes about as fast as the loader
inserts: the most retention can cost a loader.  pgbench, unthrottled (4
clients, \`-j 2\`, one INSERT of 100 literal rows per transaction), for
$SOAK_TP_SECONDS s, with \`set_retention('bench.tp_events', '0')\` (a row goes
as soon as its batch committed) or \`NULL\` (retention off), in $SOAK_TP_ROUNDS
rounds of one run each, alternating which side goes first.  Before each run
every row loaded so far is processed and removed (\`retention_now\`), the
table vacuumed and a CHECKPOINT taken, so that both sides start alike; the
pipeline runs on both sides.  The ratio is the median of the rounds' ratios.
Afterwards the pipeline had counted $(num "$SOAK_TP_PROCESSED") rows of the
$(num "$SOAK_TP_LOADED") loaded.

| | rows/s, each run | rows/s, median | ratio: median of the rounds' (range) | rows removed during each run |
|---|---|---|---|---|
| retention off | $(num_list "${SOAK_TP_RUNS[off]}") | $(num "$SOAK_TP_OFF") | 1 | |
| retention on, retain 0 | $(num_list "${SOAK_TP_RUNS[on]}") | $(num "$SOAK_TP_ON") | **$SOAK_TP_RATIO** ($SOAK_TP_MIN-$SOAK_TP_MAX) | $(num_list "$SOAK_TP_REMOVED") |
EOF
    else
        echo "Not run."
    fi

    printf '\n## 10. Catch-up\n\n'
    if [ -n "${CATCHUP_DRAIN_RATIO:-}" ]; then
        local cu_q cu_bq1 cu_bq4 cu_lq1 cu_lq4
        IFS='|' read -r cu_q cu_bq1 cu_bq4 <<<"$(catchup_quarters backlog)"
        IFS='|' read -r cu_q cu_lq1 cu_lq4 <<<"$(catchup_quarters live)"
        cat <<EOF
**Method.** Three databases with the same tables, background workers off:
\`catchup_backlog\` and \`catchup_live\` with the demo's pipeline
([test/demo/clickstream.sql](../test/demo/clickstream.sql)) capped with
\`alter_pipeline('clickstream', max_batch_rows => $CATCHUP_CAP)\` (the view
\`microbatch.pipelines\` then says $CATCHUP_SETTINGS), and \`catchup_hand\` with section 1's stand-in
([hand.sql](../test/bench/hand.sql)).  In each round every side gets the same
rows ([gen.sql](../test/bench/gen.sql), same seeds): $CATCHUP_LOADS loader
transactions of $(num "$CATCHUP_LOAD_ROWS") rows from one pgbench connection,
$(num "$CATCHUP_TOTAL") rows.  **Backlog**: all the loads, then
\`SELECT microbatch.run_batch('clickstream')\` from one pgbench connection
(\`-M prepared -t <n>\`, n the calls the waiting rows need at the cap; had a
call taken fewer rows, more calls would have followed until \`rows_waiting\`
said 0), then one more call, not timed, which must return NULL: nothing
left.  The drains took $CATCHUP_BACKLOG_SHAPE (calls per round: $CATCHUP_CALLS).
**Live**: each load followed at once by \`run_batch\`, in one pgbench script:
the same rows in batches of the same size, none with rows waiting behind it.
**Hand**: all the loads, then the pipeline's six statements by hand as
section 1 runs them (its script below that section, less the load), in
**one** transaction over the $(num "$CATCHUP_TOTAL") rows.  Times are
pgbench's average statement latencies (\`-r\`) times the calls: the
\`run_batch\` statements (with their commit) on the backlog and live sides,
BEGIN to COMMIT by hand; the loads are not counted.  $CATCHUP_ROUNDS round(s),
a different side first in each, after a VACUUM ANALYZE of the three
databases; autovacuum is off for the section.  The drain ratio is the
backlog's time over the live side's; the throughput ratio the backlog's rows/s
over the hand-written transaction's; both are the median of the rounds'
ratios, with their range.  The three databases end with the same row counts
in every bronze, silver and gold table but \`gold.page_events_by_batch\`,
which has a row per batch, day, page and event type (by hand there is one
batch a round), so the totals of its view \`gold.page_events_daily\` are
compared instead ($CATCHUP_COUNTS): **$CATCHUP_SAME**.

| side | ms, each round | ms, median | rows/s | sum of the batches' ledger durations, ms | ratio: median of the rounds' (range) |
|---|---|---|---|---|---|
| backlog, drained in capped batches | ${CATCHUP_RUNS[backlog]} | ${CATCHUP_MS[backlog]} | $(catchup_rate backlog) | ${CATCHUP_LEDGER_MS[backlog]} | |
| live batches of the same rows | ${CATCHUP_RUNS[live]} | ${CATCHUP_MS[live]} | $(catchup_rate live) | ${CATCHUP_LEDGER_MS[live]} | drain time over live: **${CATCHUP_DRAIN_RATIO}×** (${CATCHUP_DRAIN_MIN}-${CATCHUP_DRAIN_MAX}) |
| by hand, one transaction | ${CATCHUP_RUNS[hand]} | ${CATCHUP_MS[hand]} | $(catchup_rate hand) | | drain rows/s over by hand: **${CATCHUP_TP_RATIO}×** (${CATCHUP_TP_MIN}-${CATCHUP_TP_MAX}) |

Each batch's duration in the ledger (\`finished_at - started_at\`: window,
cut, count, transforms, ledger row; not the commit), the median over the
rounds.  The backlog's k-th batch takes the same rows as the live side's
k-th, into the same bronze, silver and gold tables: the two differ by the
rows waiting behind it, which the backlog's batch cuts its window from.
When cutting a window costs in proportion to the batch, the ratio stays
near 1 from the first batch to the last; when it costs in proportion to the
backlog, the first batches cost more than the last.

| batch | rows waiting when it started: backlog (live) | backlog ms | live ms | backlog / live |
|---|---|---|---|---|
$(paste -d '|' <(catchup_batch_ms backlog) <(catchup_batch_ms live) |
    awk -F'|' -v total="$CATCHUP_TOTAL" -v cap="$CATCHUP_CAP" '{
        waiting = total - (NR - 1) * cap; if (waiting < 0) waiting = 0
        printf "| %d | %d (%d) | %s | %s | %s |\n", NR, waiting, cap, $1 == "" ? "-" : $1, $2 == "" ? "-" : $2,
            ($1 != "" && $2 > 0) ? sprintf("%.2f", $1 / $2) : "-" }')
EOF
        if [ "$cu_q" -ge 2 ]; then
            cat <<EOF

The same, less noisy (single batches vary by tens of percent on this VM):
the mean of the first $cu_q batches and of the last $cu_q, $cu_bq1 and $cu_bq4 ms in the
backlog's drain ($(calc %.2f "$cu_bq1 / $cu_bq4")× from first to last), $cu_lq1 and
$cu_lq4 ms live ($(calc %.2f "$cu_lq1 / $cu_lq4")×).
EOF
        fi
    else
        echo "Not run."
    fi

    printf '\n## 11. Per-batch overhead\n\n'
    if [ -n "${OVERHEAD_MS:-}" ]; then
        local ov_batches ov_one ov_dur ov_lock st_batches st_mean st_lock st_commit
        local n_count n_calls n_exec n_plan steps_sum=0 kind per med mean calls exec plan query
        IFS='|' read -r ov_batches ov_one ov_dur ov_lock <<<"$OVERHEAD_LEDGER"
        IFS='|' read -r st_batches st_mean st_lock st_commit <<<"$OVERHEAD_STATS"
        IFS='|' read -r n_count n_calls n_exec n_plan <<<"$OVERHEAD_NESTED_SUM"
        cat <<EOF
**Method.** A database \`overhead\` with the extension, background workers
off (as in sections 1 and 3), a table \`src (id bigint GENERATED ALWAYS AS
IDENTITY PRIMARY KEY, v integer NOT NULL)\` and a pipeline \`p\` on it whose
only transform is \`SELECT 1\`.  One pgbench connection (\`-c 1 -T
$OVERHEAD_SECONDS -r\`, simple protocol) runs a script of two statements,
\`INSERT INTO src (v) VALUES (1);\` then \`SELECT microbatch.run_batch('p');\`,
each in autocommit: every batch takes the one row just committed.  The
baseline script is the INSERT alone.  The two alternate in $OVERHEAD_ROUNDS
rounds (the other one first every other round), after a warm-up run of each
that is not counted; after each run of the baseline, one \`run_batch\`, not
timed, takes the rows it left, so that every timed batch has one row.  The figure is the \`run_batch\` statement's average
latency from pgbench (\`-r\`), the median of the rounds: the engine's time for
a 1-row batch as its caller sees it, **its commit included** (it runs in
autocommit, with the session's \`synchronous_commit\` on, so the commit waits
for its WAL flush; the same flush is in the INSERT's own
${OVERHEAD_INSERT_MS} ms), plus the client's round trip.  The rounds made
$(num "$OVERHEAD_BATCHES_RUN") batches; the ledger has $(num "$ov_batches") committed
batches for them, $(num "$ov_one") of 1 row.

| | each round, ms | median, ms |
|---|---|---|
| \`run_batch\` statement | ${OVERHEAD_RUNS[batch]} | **$OVERHEAD_MS** |
| INSERT statement, before \`run_batch\` | ${OVERHEAD_RUNS[batch_insert]} | $(tr ',' '\n' <<<"${OVERHEAD_RUNS[batch_insert]}" | median3) |
| INSERT statement, alone (baseline) | ${OVERHEAD_RUNS[base_insert]} | $OVERHEAD_INSERT_MS |
| per transaction, INSERT + \`run_batch\` | ${OVERHEAD_RUNS[batch_tx]} | $(tr ',' '\n' <<<"${OVERHEAD_RUNS[batch_tx]}" | median3) |
| per transaction, INSERT alone | ${OVERHEAD_RUNS[base_tx]} | $(tr ',' '\n' <<<"${OVERHEAD_RUNS[base_tx]}" | median3) |
| difference per transaction (median of the rounds') | | $OVERHEAD_TX_DIFF |

**Where a 1-row batch's time goes.** The engine's own account of the same
batches: the ledger (\`microbatch.batch_progress\` and \`microbatch.batch_steps\`,
medians over the batches) and the counters of \`microbatch.stat_pipelines\`
(reset before each timed run, read after it and summed: means).  The steps lie between the batch's
\`started_at\` and its ledger row; the lock wait comes before, the ledger row's
write and the commit after.

| part | µs per batch | from |
|---|---|---|
| the \`run_batch\` statement, as pgbench sees it | $(calc %.0f "$OVERHEAD_MS * 1000") | pgbench \`-r\`, median of the rounds |
| waiting for the pipeline's lock, reading the pipeline | $ov_lock (mean $st_lock) | \`batch_progress.lock_wait\`, median (\`stat_pipelines.total_lock_wait_time\` / batches) |
EOF
        for kind in $(for l in "${OVERHEAD_STEPS[@]}"; do echo "${l%%|*}"; done); do
            per=$(overhead_step "$kind" 2) med=$(overhead_step "$kind" 3) mean=$(overhead_step "$kind" 4)
            steps_sum=$(calc %.0f "$steps_sum + $med")
            echo "| step \`$kind\`$([ "$per" != 1.00 ] && echo " ($per a batch)") | $med (mean $mean) | \`batch_steps.duration\`, median |"
        done
        cat <<EOF
| the rest, from start to ledger row (between and around the steps) | $(calc %.0f "$ov_dur - $steps_sum") | the line below less the steps' medians |
| from start to ledger row | $ov_dur | \`batches.duration\` (\`finished_at - started_at\`), median |
| writing the ledger row and committing | $st_commit | \`stat_pipelines.total_commit_time\` / batches |
| from start to commit | $st_mean | \`stat_pipelines.mean_time\` ($(num "$st_batches") batches) |
| outside all of these: the call (parse, plan, start and end of the transaction around the batch), the round trip | $(calc %.0f "$OVERHEAD_MS * 1000 - $st_lock - $st_mean") | the first line less the lock wait and start to commit (means) |

**The statements the engine runs.** One more run of the same script,
$OVERHEAD_SECONDS s, from a connection of its own
(\`PGOPTIONS='-c compute_query_id=on -c pg_stat_statements.track=all -c pg_stat_statements.track_planning=on'\`:
the rest of the run tracks nothing), after \`pg_stat_statements_reset()\`:
$(num "$OVERHEAD_PROFILE_BATCHES") batches, \`run_batch\` $OVERHEAD_PROFILE_MS ms on average
in this run, as pgbench saw it (the tracking costs some).  Every statement
the batch runs through the executor is counted, nested ones (\`toplevel\`
false) apart from the client's own; calls, execution and planning time
divided by the batches; $([ "$n_count" -gt 10 ] && echo "the top 10 of $n_count" || echo "all $n_count"), by time:

| calls | calls per batch | execution µs per batch | planning µs per batch | statement (shortened) |
|---|---|---|---|---|
EOF
        for line in "${OVERHEAD_NESTED[@]}"; do
            IFS=$'\t' read -r calls per exec plan query <<<"$line"
            printf '| %s | %s | %s | %s | `%s` |\n' "$(num "$calls")" "$per" "$exec" "$plan" "${query//|/\\|}"
        done
        echo "| | **$n_calls** | **$n_exec** | **$n_plan** | all $n_count nested statements (a statement nested in another would count in both) |"
        local rb_calls="" rb_exec="" rb_plan="" ins_exec="" ins_plan="" k q
        for line in "${OVERHEAD_TOPLEVEL[@]:-}"; do
            [ -n "$line" ] || continue
            IFS=$'\t' read -r calls exec plan k q <<<"$line"
            if [ "$k" = run_batch ]; then rb_calls=$calls rb_exec=$exec rb_plan=$plan; else ins_exec=$exec ins_plan=$plan; fi
        done
        if [ -n "$rb_exec" ]; then
            local prof_us
            prof_us=$(calc %.0f "$OVERHEAD_PROFILE_MS * 1000")
            cat <<EOF

The same run from the top: pg_stat_statements counts the client's
\`SELECT microbatch.run_batch(\$1)\` ($(num "$rb_calls") calls) at $rb_exec µs of
execution and $rb_plan µs of planning a call; the nested statements above
are part of that execution.

| part of a \`run_batch\` call, profiled run | µs per batch |
|---|---|
| the statement, as pgbench sees it | $prof_us |
| executing \`SELECT microbatch.run_batch(\$1)\` | $rb_exec |
| &nbsp;&nbsp;of which the nested statements (execution and planning) | $(calc %.1f "$n_exec + $n_plan") |
| &nbsp;&nbsp;of which the engine's own C work: the lock, snapshots, subtransaction, role switch, timing, all it does other than through SQL | $(calc %.1f "$rb_exec - $n_exec - $n_plan") |
| planning \`SELECT microbatch.run_batch(\$1)\` | $rb_plan |
| after the execution and around it: the commit (its WAL flush included), parsing, the round trip | $(calc %.0f "$prof_us - $rb_exec - $rb_plan") |

The INSERT before it, in the same run: $ins_exec µs of execution and
$ins_plan µs of planning; its statement took $(tr ',' '\n' <<<"${OVERHEAD_RUNS[batch_insert]}" | median3) ms in the rounds above, its commit
and round trip making up most of it, as for \`run_batch\`.
EOF
        fi
        [ "${OVERHEAD_ROWS_WAITING:-0}" = 0 ] || printf '\n**%s rows were still waiting for the pipeline at the end.**\n' "$OVERHEAD_ROWS_WAITING"
    else
        echo "Not run."
    fi
    # ------------------------------------------------------------------
    echo
    echo "## 12. A first batch over a million rows"
    echo
    if [ -n "${FIRST_MS:-}" ]; then
        local scan_par scan_par_used
        IFS='|' read -r scan_par scan_par_used <<<"$FIRST_SCAN_PARALLEL"
        cat <<EOF
**Method.** Database \`first_batch\` with the demo's pipeline, background
workers off; $(num "$FIRST_ROWS") rows from [gen.sql](../test/bench/gen.sql)
loaded in one transaction, the table vacuumed and analysed, then one
\`SELECT microbatch.run_batch('clickstream')\`: the pipeline's first batch,
over all of them.  Its steps come from its ledger row
(\`microbatch.batch_steps\`).  Parallel settings are the defaults
($FIRST_PARALLEL_SETTINGS).

The batch took $(num "$FIRST_MS") ms for $(num "$FIRST_BATCH_ROWS") rows:

| step | kind | rows | ms | share | may PostgreSQL 15 run it in parallel? |
|---|---|---|---|---|---|
EOF
        local l kind name rows ms why
        for l in "${FIRST_STEPS[@]}"; do
            IFS='|' read -r kind name rows ms <<<"$l"
            case $kind in
                window) why="no: the window's predicate reads the batch from the backend's memory (\`PARALLEL RESTRICTED\` functions), which parallel workers do not have" ;;
                expectations) why="no: the check reads the batch through a cursor, fetched in pieces, and PostgreSQL runs no parallel plan for a portal fetched in pieces" ;;
                transform) why="no: an INSERT, and PostgreSQL 15 plans no data-modifying statement in parallel" ;;
                audit) why="no: a cursor as well, over a query that calls \`microbatch.current_batch_id()\`, \`PARALLEL RESTRICTED\` as the window's functions are" ;;
                *) why="" ;;
            esac
            printf '| %s | %s | %s | %s | %s%% | %s |\n' "${name:-$kind}" "$kind" "$(num "$rows")" "$(num "$ms")" "$(calc %.1f "100 * $ms / $FIRST_MS")" "$why"
        done
        cat <<EOF

So parallel query speeds this batch up 1.00×: every transform writes, and
PostgreSQL 15 runs no data-modifying statement in parallel (\`INSERT ...
SELECT\` included), whatever the functions it calls.  The one step that only
reads, counting and fingerprinting the window, takes
$(calc %.1f "100 * $(first_step_ms window) / $FIRST_MS")% of the batch.  What
parallel workers do for a read of the same rows by hand
(\`SELECT count(*), sum(hashtext(url)) FROM staging.events\`, best of three):
$FIRST_SCAN_SERIAL ms serially, $scan_par ms with workers allowed (a parallel
plan ran: $scan_par_used), $(calc %.2f "$FIRST_SCAN_SERIAL / $scan_par")× on these two cores.
Making the window step parallel would save at most
$(calc %.1f "100 * $(first_step_ms window) / $FIRST_MS * (1 - $scan_par / $FIRST_SCAN_SERIAL)")% of a first batch, so it is not done.
EOF
    else
        echo "Not run."
    fi
}
