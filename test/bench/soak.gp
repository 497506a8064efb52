# soak.gp: the soak benchmark's figure (gnuplot, svg terminal).
# gnuplot -e "datafile='soak.dat'; outfile='soak.svg'; minutes=10; titletext='...'" soak.gp
#
# datafile columns (one line per 10 s sample): 1 minutes since the loader
# started, 2 staging table MB, 3 staging indexes MB, 4 staging table +
# indexes MB, 5 staging rows (thousands), 6 ledger rows, 7 ledger tables MB
# (batch, check_result, quarantined_row), 8 rows removed (thousands),
# 9 removable rows (thousands), 10 WAL MB, 11 outputs MB, 12 rows loaded
# (thousands), 13 dead rows (thousands)

set terminal svg size 960,760 dynamic font "Helvetica,13" background rgb "white"
set output outfile
set datafile commentschars "#"
set grid lc rgb "#dddddd"
set key top left opaque box lc rgb "#bbbbbb"
set xrange [0:minutes]
set border lc rgb "#444444"

# the two thirds the report compares
third1 = minutes / 3.0
third2 = 2 * minutes / 3.0
set arrow 1 from third1, graph 0 to third1, graph 1 nohead dt 2 lc rgb "#888888"
set arrow 2 from third2, graph 0 to third2, graph 1 nohead dt 2 lc rgb "#888888"

# the same plot area in both panels, the lower one has a right axis
set lmargin at screen 0.09
set rmargin at screen 0.90

set multiplot layout 2,1 title titletext font "Helvetica,15"

set label 1 "middle third" at (third1 + third2) / 2, graph 1.04 center tc rgb "#666666"
set label 2 "last third" at (third2 + minutes) / 2, graph 1.04 center tc rgb "#666666"
set ylabel "MB"
set yrange [0:*]
# room above the curves for the key
set offsets 0, 0, graph 0.45, 0
set format x ""
set tmargin 3
plot datafile using 1:4 with lines lw 3 lc rgb "#1f77b4" title "staging.events, table + indexes", \
     datafile using 1:2 with lines lw 1.5 dt 3 lc rgb "#1f77b4" title "staging.events, table", \
     datafile using 1:3 with lines lw 1.5 dt 4 lc rgb "#17becf" title "staging.events, indexes", \
     datafile using 1:7 with lines lw 3 lc rgb "#d62728" title "ledger tables (batch, check results, quarantine)"

unset label 1
unset label 2
set offsets 0, 0, 0, 0
# each curve at its own height: ledger rows lower, staging rows higher
stats datafile using 6 name "LEDGER" nooutput
stats datafile using 5 name "STAGING" nooutput
set yrange [0:(LEDGER_max > 0 ? LEDGER_max * 1.8 : 1)]
set y2range [0:(STAGING_max > 0 ? STAGING_max * 1.15 : 1)]
set format x "%g"
set xlabel "minutes since the loader started"
set ylabel "ledger rows"
set y2label "staging rows, thousands"
set ytics nomirror
set y2tics
set tmargin 1
plot datafile using 1:6 with lines lw 3 lc rgb "#d62728" axes x1y1 title "ledger rows (microbatch.batch)", \
     datafile using 1:5 with lines lw 3 lc rgb "#1f77b4" axes x1y2 title "staging.events rows (right axis)"

unset multiplot
