# Backfills and staging retention with background workers.
#
# A pipeline with a slow transform (a delay read from a table, so that the
# 20 batches it starts with are made quickly) and idempotent gold outputs
# (each batch deletes what it wrote before, then inserts):
#
# (a) start_replay() replays on a background worker, visible in
#     microbatch.replay_progress, while live batches keep committing; it can
#     be cancelled with pg_cancel_backend();
# (b) an interrupted CALL microbatch.replay keeps the batches it committed;
# (c) rerun, it prints a progress NOTICE every 5 seconds and a final one,
#     and the gold totals are those of a run that was never interrupted;
# (d) retention during a backfill holds back the batches it still has to
#     replay, and refuses replays of removed batches afterwards;
# (e) a range-partitioned source: past partitions whose rows are all
#     processed are dropped, others emptied of their processed rows; one
#     holding a row a paused pipeline has not processed stays;
# (f) the retention worker removes processed rows by itself, in steps
#     back to back, and leaves those a paused pipeline holds;
# (g) history retention: the worker removes old ledger rows, except the
#     pipeline's position and what comes after it.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $node = PostgreSQL::Test::Cluster->new('backfill');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '1s'
microbatch.retention_step_rows = 10
max_worker_processes = 16
});
$node->start;

my $db = 'postgres';
sub q_ { return $node->safe_psql($db, $_[0]); }

q_(q{
CREATE EXTENSION microbatch;
CREATE TABLE bf_src (id int PRIMARY KEY, v int NOT NULL);
CREATE TABLE bf_gold (batch_id bigint NOT NULL, n bigint NOT NULL, total bigint NOT NULL);
CREATE TABLE bf_delay (seconds float8 NOT NULL);
INSERT INTO bf_delay VALUES (0);
SELECT microbatch.create_pipeline('bf', 'bf_src', '100ms');
SELECT microbatch.pause_pipeline('bf');
SELECT microbatch.add_transform('bf', 'slow', 'bronze',
    $$SELECT pg_sleep(seconds) FROM bf_delay$$);
SELECT microbatch.add_transform('bf', 'clear', 'gold',
    $$DELETE FROM bf_gold WHERE batch_id = microbatch.current_batch_id()$$);
SELECT microbatch.add_transform('bf', 'load', 'gold',
    $$INSERT INTO bf_gold SELECT microbatch.current_batch_id(), count(*), sum(v)
        FROM microbatch.bf_batch$$);
});

ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.workers
           WHERE kind = 'scheduler' AND database = current_database()},
		'1', 30),
	'the database has a scheduler');

# 20 batches of 10 rows: batch i holds ids 10(i-1)+1 .. 10i
my @made;
for my $i (1 .. 20)
{
	my ($lo, $hi) = (($i - 1) * 10 + 1, $i * 10);
	push @made,
	  q_(qq{INSERT INTO bf_src SELECT g, g FROM generate_series($lo, $hi) g;
            SELECT microbatch.run_batch('bf')});
}
is(join(',', @made), join(',', 1 .. 20), '20 batches committed');

# The gold rows of batches 1 to 20, and how often each was replayed
sub gold
{
	return q_(
		q{SELECT string_agg(format('%s:%s:%s', batch_id, n, total), ',' ORDER BY batch_id, n, total)
            FROM bf_gold WHERE batch_id <= 20});
}
sub replays
{
	return split /,/, q_(
		q{SELECT string_agg(replays::text, ',' ORDER BY batch_id)
            FROM microbatch.batches
           WHERE pipeline = 'bf' AND status = 'committed' AND batch_id <= 20});
}
my $fresh_gold = gold();
is( $fresh_gold,
	join(',', map { my $s = 0; $s += $_ for (($_ - 1) * 10 + 1 .. $_ * 10); "$_:10:$s" } 1 .. 20),
	'gold has one row per batch');

# The batches replayed between two readings of replays(): 1..k replayed
# once more, the others not.  Returns k, or -1 if it is not such a prefix.
sub replayed_prefix
{
	my ($before, $after) = @_;
	my $k = 0;
	my $in_prefix = 1;
	for my $i (0 .. $#$before)
	{
		my $d = $after->[$i] - $before->[$i];
		if ($d == 1 && $in_prefix) { $k++; }
		elsif ($d == 0) { $in_prefix = 0; }
		else { return -1; }
	}
	return $k;
}

sub backfills_running
{
	return q_(q{SELECT count(*) FROM microbatch.replay_progress});
}

# ---------------------------------------------------------------------------
# (a) start_replay, with live batches meanwhile

q_(q{UPDATE bf_delay SET seconds = 0.3; SELECT microbatch.resume_pipeline('bf')});
my @before = replays();
my $pid = q_(q{SELECT microbatch.start_replay('bf', 1, 20)});
like($pid, qr/^\d+$/, 'start_replay returns a process id at once');

ok( poll_until(
		$node, $db,
		qq{SELECT backend_type FROM pg_stat_activity WHERE pid = $pid},
		'microbatch backfill', 10),
	'the backfill runs as backend_type "microbatch backfill"');
ok( poll_until(
		$node, $db,
		qq{SELECT pipeline, background, from_batch, to_batch, batches_total
             FROM microbatch.replay_progress WHERE pid = $pid},
		'bf|t|1|20|20', 10),
	'replay_progress shows the backfill');

# Live rows, committed during the backfill
q_(q{INSERT INTO bf_src SELECT g, g FROM generate_series(1001, 1010) g});

my @done_seen;
my $consistent = 1;
my $estimate_after_one = 0;
my $deadline = time() + 30;
while (time() < $deadline)
{
	my $row = q_(
		qq{SELECT batches_done, rows_done, current_batch,
                  estimated_remaining IS NOT NULL, elapsed >= interval '0'
             FROM microbatch.replay_progress WHERE pid = $pid});
	last if $row eq '';
	my ($done, $rows, $current, $has_estimate, $elapsed_ok) = split /\|/, $row;
	push @done_seen, $done;
	my $row_ok = $rows == 10 * $done
	  && $current >= 1 && $current <= 21    # 21 once the last batch is done
	  && $elapsed_ok eq 't'
	  && ($done == 0 ? $has_estimate eq 'f' : $has_estimate eq 't');
	if (!$row_ok && $consistent)
	{
		diag "inconsistent replay_progress row (batches_done|rows_done|current_batch|has_estimate|elapsed_ok): $row";
		$consistent = 0;
	}
	$estimate_after_one = 1 if $done >= 1 && $has_estimate eq 't';
	usleep(100_000);
}
note 'batches_done seen: ' . join(' ', @done_seen);
ok($consistent,
	'replay_progress: rows_done follows batches_done, estimated_remaining NULL only before the first batch');
ok($estimate_after_one, 'estimated_remaining is set once a batch is done');
cmp_ok(scalar(@done_seen), '>', 5, 'the backfill was watched while it ran');
ok(@done_seen && $done_seen[-1] > $done_seen[0], 'batches_done grows');
ok( poll_until($node, $db, q{SELECT count(*) FROM microbatch.replay_progress}, '0', 20),
	'the backfill ends');
ok( poll_until(
		$node, $db, qq{SELECT count(*) FROM pg_stat_activity WHERE pid = $pid},
		'0', 10),
	'the backfill process exits');
is(replayed_prefix(\@before, [ replays() ]), 20, 'the backfill replayed every batch once');
is( q_(
		q{SELECT bool_and(ordered) FROM (
            SELECT last_replayed_at >= lag(last_replayed_at, 1, '-infinity')
                   OVER (ORDER BY batch_id) AS ordered
              FROM microbatch.batches
             WHERE pipeline = 'bf' AND status = 'committed' AND batch_id <= 20) s}),
	't', 'in batch order');
is(gold(), $fresh_gold, 'gold is unchanged by the backfill');

ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.batches
           WHERE pipeline = 'bf' AND status = 'committed' AND batch_id > 20},
		'1', 20),
	'a live batch processed the new rows');
is( q_(
		q{SELECT live.finished_at < last.last_replayed_at
            FROM microbatch.batches live, microbatch.batches last
           WHERE live.pipeline = 'bf' AND live.batch_id = 21 AND live.status = 'committed'
             AND last.pipeline = 'bf' AND last.batch_id = 20 AND last.status = 'committed'}),
	't', 'the live batch committed while the backfill was running');
is(q_(q{SELECT n, total FROM bf_gold WHERE batch_id = 21}),
	'10|10055', 'the live batch wrote its gold row');

# Cancelled with pg_cancel_backend: it stops after the batches it committed
@before = replays();
$pid = q_(q{SELECT microbatch.start_replay('bf', 1, 20)});
ok( poll_until(
		$node, $db,
		qq{SELECT batches_done >= 2 FROM microbatch.replay_progress WHERE pid = $pid},
		't', 20),
	'a second backfill is under way');
q_(qq{SELECT pg_cancel_backend($pid)});
ok( poll_until(
		$node, $db,
		qq{SELECT count(*) FROM pg_stat_activity WHERE pid = $pid},
		'0', 15),
	'pg_cancel_backend stops the backfill');
is(backfills_running(), '0', 'replay_progress no longer shows it');
my $k = replayed_prefix(\@before, [ replays() ]);
ok($k >= 2 && $k < 20, "the cancelled backfill replayed batches 1 to $k only");
is(gold(), $fresh_gold, 'gold is unchanged');

# ---------------------------------------------------------------------------
# (b) CALL microbatch.replay, cancelled halfway

my $psql = $node->installed_command('psql');
my ($call_out, $call_err) = ('', '');
@before = replays();
my $call = IPC::Run::start(
	[
		$psql, '-XAtq', '-d', $node->connstr($db), '-c',
		q{CALL microbatch.replay('bf', 1, 20)}
	],
	'>', \$call_out, '2>', \$call_err);
ok( poll_until(
		$node, $db,
		q{SELECT batches_done >= 5 FROM microbatch.replay_progress WHERE NOT background},
		't', 20),
	'the CALL is under way, not in the background');
my $call_pid = q_(q{SELECT pid FROM microbatch.replay_progress WHERE NOT background});
is( q_(qq{SELECT backend_type FROM pg_stat_activity WHERE pid = $call_pid}),
	'client backend', 'the CALL runs in the client backend');
q_(qq{SELECT pg_cancel_backend($call_pid)});
$deadline = time() + 15;
while ($call->pumpable && time() < $deadline)
{
	$call->pump_nb;
	usleep(50_000);
}
if ($call->pumpable) { $call->kill_kill; fail('the cancelled CALL ends'); }
else { $call->finish; pass('the cancelled CALL ends'); }
like($call_err, qr/canceling statement due to user request/, 'the CALL was cancelled');
is(backfills_running(), '0', 'replay_progress no longer shows it');
$k = replayed_prefix(\@before, [ replays() ]);
ok($k >= 5 && $k < 20,
	"batches 1 to $k were replayed and committed, the others not");
is(gold(), $fresh_gold, 'gold is as before');

# ---------------------------------------------------------------------------
# (c) the CALL again, slow enough for a progress NOTICE; the totals are those
# of an uninterrupted run

q_(q{UPDATE bf_delay SET seconds = 0.35});
@before = replays();
my ($ret, $stdout, $stderr) = $node->psql($db, q{CALL microbatch.replay('bf', 1, 20)});
is($ret, 0, 'the CALL succeeds');
note "CALL stderr:\n$stderr";
my @progress = $stderr =~
  /NOTICE:  replaying pipeline "bf": (\d+) of 20 batches, (\d+) rows, about (\d+) s left/g;
my $n_progress = @progress / 3;
ok($n_progress >= 1 && $n_progress <= 2,
	"a progress NOTICE every 5 seconds over a 7-second backfill ($n_progress)");
my $progress_ok = $n_progress >= 1;
for (my $i = 0; $i < @progress; $i += 3)
{
	my ($done, $rows, $left) = @progress[ $i .. $i + 2 ];
	$progress_ok = 0
	  unless $done >= 1 && $done < 20 && $rows == 10 * $done && $left <= 20;
}
ok($progress_ok, 'the progress NOTICE counts batches and rows done, and seconds left');
like($stderr, qr/NOTICE:  replayed 20 batches of pipeline "bf" \(200 rows\)/,
	'the final NOTICE');
is(replayed_prefix(\@before, [ replays() ]), 20, 'every batch was replayed once more');
is(gold(), $fresh_gold, 'after the rerun, gold equals that of an uninterrupted run');

# ---------------------------------------------------------------------------
# (d) retention during a backfill: the batches it still has to replay keep
# their rows; the others' rows go

q_(q{UPDATE bf_delay SET seconds = 0.3});
@before = replays();
$pid = q_(q{SELECT microbatch.start_replay('bf', 1, 20)});
ok( poll_until(
		$node, $db,
		qq{SELECT batches_done >= 1 FROM microbatch.replay_progress WHERE pid = $pid},
		't', 20),
	'a backfill is under way');
q_(q{SELECT microbatch.set_retention('bf_src', '0')});
my ($held_by_backfill, $kept) = (0, 1);
$deadline = time() + 30;
while (time() < $deadline)
{
	my $row = q_(
		qq{SELECT p.batches_done,
                  (SELECT count(*) FROM bf_src WHERE id > p.batches_done * 10 AND id <= 200),
                  (SELECT held_back_by || ':' || held_back_state FROM microbatch.retention
                    WHERE source = 'bf_src'::regclass)
             FROM microbatch.replay_progress p WHERE p.pid = $pid});
	last if $row eq '';
	my ($done, $rows, $held) = split /\|/, $row;
	$kept = 0 unless $rows == (20 - $done) * 10;
	$held_by_backfill = 1 if defined $held && $held eq 'bf:backfill';
	usleep(100_000);
}
ok($kept, 'the rows of the batches the backfill had not replayed yet stayed');
ok($held_by_backfill, 'microbatch.retention shows the backfill holding rows back');
ok(poll_until($node, $db, q{SELECT count(*) FROM microbatch.replay_progress}, '0', 20),
	'the backfill ends');
is(replayed_prefix(\@before, [ replays() ]), 20,
	'the backfill replayed every batch, none refused');
ok(poll_until($node, $db, q{SELECT count(*) FROM bf_src}, '0', 20),
	'then the retention worker removes every processed row');
is( q_(
		q{SELECT rows_removed, held_back_by, held_back_state, removable_rows
            FROM microbatch.retention WHERE source = 'bf_src'::regclass}),
	'210|bf|enabled|0', 'microbatch.retention counts them');
ok( poll_until(
		$node, $db,
		q{SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'microbatch retention'},
		't', 10),
	'the retention worker runs as backend_type "microbatch retention"');

# Replays of removed batches are refused, before anything is replayed
@before = replays();
($ret, $stdout, $stderr) = $node->psql($db, q{SELECT microbatch.replay_batch('bf', 20)});
isnt($ret, 0, 'replay_batch of a removed batch fails');
like($stderr, qr/ERROR:  batch 20 of pipeline "bf" is outside the retention of table "bf_src"/,
	'with the retention message');
like($stderr, qr/DETAIL:  .*(0|00:00:00)/, 'the DETAIL gives the retention interval');
like($stderr, qr/HINT:  .*set_retention\(\)/, 'the HINT suggests set_retention()');
($ret, $stdout, $stderr) =
  $node->psql($db, q{SET client_min_messages = error; CALL microbatch.replay('bf', 1, 20)});
like($stderr, qr/ERROR:  batch \d+ of pipeline "bf" is outside the retention/,
	'CALL microbatch.replay refuses too');
($ret, $stdout, $stderr) = $node->psql($db, q{SELECT microbatch.start_replay('bf', 1, 20)});
like($stderr, qr/ERROR:  batch \d+ of pipeline "bf" is outside the retention/,
	'start_replay refuses at once');
is(backfills_running(), '0', 'no backfill runs');
is(join(',', replays()), join(',', @before), 'nothing was replayed');
q_(q{SELECT microbatch.set_retention('bf_src', NULL); UPDATE bf_delay SET seconds = 0});

# ---------------------------------------------------------------------------
# (e) a source partitioned by time

q_(q{
CREATE TABLE pt (at timestamptz NOT NULL, id int NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE pt_past PARTITION OF pt FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');
CREATE TABLE pt_now PARTITION OF pt FOR VALUES FROM ('2021-01-01') TO ('2100-01-01');
CREATE TABLE pt_late PARTITION OF pt DEFAULT;
CREATE TABLE pt_out (batch_id bigint, id int);
SELECT microbatch.create_pipeline('pt', 'pt');
SELECT microbatch.pause_pipeline('pt');
SELECT microbatch.add_transform('pt', 'copy', 'bronze',
    $$INSERT INTO pt_out SELECT microbatch.current_batch_id(), id FROM microbatch.pt_batch$$);
INSERT INTO pt VALUES ('2020-02-01', 1), ('2020-03-01', 2), (now(), 3), (now(), 4);
SELECT microbatch.run_batch('pt');
INSERT INTO pt VALUES (now(), 5);
});
my $removed = q_(q{
BEGIN;
DO $$BEGIN PERFORM microbatch.set_retention('pt', '0'); END$$;
SELECT microbatch.retention_now('pt');
COMMIT;
});
note "retention_now('pt') returned $removed";
ok($removed eq '4' || $removed eq '2',
	'retention_now counts the rows it removed (with or without the dropped partition\'s)');
is(q_(q{SELECT to_regclass('pt_past') IS NULL, to_regclass('pt_now') IS NOT NULL}),
	't|t', 'the past partition is dropped, the current one is not');
is(q_(q{SELECT string_agg(id::text, ',' ORDER BY id) FROM pt}),
	'5', 'the processed rows of the current partition are deleted, the unprocessed one stays');
is( q_(
		q{SELECT partitions_dropped, held_back_by, held_back_state
            FROM microbatch.retention WHERE source = 'pt'::regclass}),
	'1|pt|paused', 'microbatch.retention counts the dropped partition');
usleep(2_500_000);
is(q_(q{SELECT string_agg(id::text, ',' ORDER BY id) FROM pt}),
	'5', 'the worker leaves the row the paused pipeline has not processed');
q_(q{SELECT microbatch.run_batch('pt')});
ok(poll_until($node, $db, q{SELECT count(*) FROM pt}, '0', 15),
	'once processed, the worker removes it');
is(q_(q{SELECT to_regclass('pt_now') IS NOT NULL}), 't',
	'the current partition is never dropped');
is(q_(q{SELECT string_agg(format('%s:%s', batch_id, id), ',' ORDER BY id) FROM pt_out}),
	'1:1,1:2,1:3,1:4,2:5', 'every row was processed once');

# A past partition holding a row that the paused pipeline has not processed
# is emptied of the others, not dropped
q_(q{
CREATE TABLE pt2 (at timestamptz NOT NULL, id int NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE pt2_past PARTITION OF pt2 FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');
CREATE TABLE pt2_now PARTITION OF pt2 FOR VALUES FROM ('2021-01-01') TO (MAXVALUE);
CREATE TABLE pt2_late PARTITION OF pt2 DEFAULT;
CREATE TABLE pt2_out (batch_id bigint, id int);
SELECT microbatch.create_pipeline('pt2', 'pt2');
SELECT microbatch.pause_pipeline('pt2');
SELECT microbatch.add_transform('pt2', 'copy', 'bronze',
    $$INSERT INTO pt2_out SELECT microbatch.current_batch_id(), id FROM microbatch.pt2_batch$$);
INSERT INTO pt2 VALUES ('2020-02-01', 1), ('2020-03-01', 2), (now(), 3);
SELECT microbatch.run_batch('pt2');
INSERT INTO pt2 VALUES ('2020-04-01', 4);
SELECT microbatch.set_retention('pt2', '0');
});
ok(poll_until($node, $db, q{SELECT count(*) FROM pt2 WHERE id <> 4}, '0', 15),
	'the worker removes the processed rows');
usleep(2_500_000);
is( q_(
		q{SELECT to_regclass('pt2_past') IS NOT NULL,
                 (SELECT string_agg(tableoid::regclass || ':' || id, ',') FROM pt2)}),
	't|pt2_past:4', 'the past partition with an unprocessed row stays, with the row');
is( q_(
		q{SELECT partitions_dropped, held_back_by, held_back_state
            FROM microbatch.retention WHERE source = 'pt2'::regclass}),
	'0|pt2|paused', 'microbatch.retention shows the paused pipeline holding it');
q_(q{SELECT microbatch.run_batch('pt2')});
ok(poll_until($node, $db, q{SELECT to_regclass('pt2_past') IS NULL}, 't', 15),
	'once its row is processed, the worker drops the past partition');
is( q_(
		q{SELECT to_regclass('pt2_now') IS NOT NULL, partitions_dropped
            FROM microbatch.retention WHERE source = 'pt2'::regclass}),
	't|1', 'the partition without an upper bound stays');
is(q_(q{SELECT string_agg(format('%s:%s', batch_id, id), ',' ORDER BY id) FROM pt2_out}),
	'1:1,1:2,1:3,2:4', 'every row was processed once');

# ---------------------------------------------------------------------------
# (f) the retention worker on its own: 1000 rows in steps of 10

q_(q{
CREATE TABLE ew (id int NOT NULL);
CREATE TABLE ew_out (batch_id bigint, id int);
SELECT microbatch.create_pipeline('ew', 'ew', '100ms');
SELECT microbatch.add_transform('ew', 'copy', 'bronze',
    $$INSERT INTO ew_out SELECT microbatch.current_batch_id(), id FROM microbatch.ew_batch$$);
SELECT microbatch.set_retention('ew', '0');
INSERT INTO ew SELECT generate_series(1, 1000);
});
my $t0 = time();
ok( poll_until(
		$node, $db,
		q{SELECT (SELECT count(*) FROM ew), (SELECT count(DISTINCT id) FROM ew_out)},
		'0|1000', 30),
	'the rows are processed, then removed by the worker, 10 at a time, back to back');
note sprintf('processed and removed in %.1f s', time() - $t0);
is( q_(
		q{SELECT rows_removed, last_removed_at IS NOT NULL
            FROM microbatch.retention WHERE source = 'ew'::regclass}),
	'1000|t', 'microbatch.retention counts them');
q_(q{SELECT microbatch.pause_pipeline('ew'); INSERT INTO ew SELECT generate_series(1001, 1005)});
usleep(2_500_000);
is(q_(q{SELECT count(*) FROM ew}), '5', 'rows a paused pipeline has not processed stay');
is( q_(
		q{SELECT held_back_by, held_back_state FROM microbatch.retention
           WHERE source = 'ew'::regclass}),
	'ew|paused', 'microbatch.retention says why');
q_(q{SELECT microbatch.resume_pipeline('ew')});
ok(poll_until($node, $db, q{SELECT count(*) FROM ew}, '0', 15),
	'after resume they are processed and removed');

# ---------------------------------------------------------------------------
# (g) history retention

q_(q{
CREATE TABLE hr (id int, v int);
CREATE TABLE hr_out (batch_id bigint, id int);
SELECT microbatch.create_pipeline('hr', 'hr');
SELECT microbatch.pause_pipeline('hr');
SELECT microbatch.add_transform('hr', 'copy', 'bronze',
    $$INSERT INTO hr_out SELECT microbatch.current_batch_id(), id FROM microbatch.hr_batch$$);
SELECT microbatch.add_expectation('hr', 'positive', 'v > 0', 'drop');
});
for my $i (1 .. 5)
{
	my $neg = 100 + $i;
	if ($i == 3)
	{
		# batch 3 fails once
		q_(q{SELECT microbatch.add_expectation('hr', 'not_13', 'v <> 13', 'fail');
             INSERT INTO hr VALUES (13, 13)});
		q_(q{SET client_min_messages = error; SELECT microbatch.run_batch('hr')});
		q_(q{SELECT microbatch.remove_expectation('hr', 'not_13')});
	}
	q_(qq{INSERT INTO hr VALUES ($i, $i), ($neg, -1); SELECT microbatch.run_batch('hr')});
}
# a failed attempt after the position
q_(q{SELECT microbatch.add_expectation('hr', 'not_13', 'v <> 13', 'fail');
     INSERT INTO hr VALUES (113, 13);
     SET client_min_messages = error; SELECT microbatch.run_batch('hr')});
my $ledger_sql = q{SELECT string_agg(format('%s:%s:%s', batch_id, attempt, status), ','
                                    ORDER BY batch_id, attempt)
                     FROM microbatch.batches WHERE pipeline = 'hr'};
is(q_($ledger_sql),
	'1:1:committed,2:1:committed,3:1:failed,3:2:committed,4:1:committed,5:1:committed,6:1:failed',
	'the history of pipeline hr');
is(q_(q{SELECT string_agg(DISTINCT batch_id::text, ',') FROM microbatch.quarantine WHERE pipeline = 'hr'}),
	'1,2,3,4,5', 'each committed batch quarantined a row');

q_(q{SELECT microbatch.set_history_retention('hr', '0')});
is(q_(q{SELECT history_retention FROM microbatch.pipelines WHERE pipeline = 'hr'}),
	'00:00:00', 'microbatch.pipelines shows the setting');
ok(poll_until($node, $db, $ledger_sql, '5:1:committed,6:1:failed', 15),
	'the worker removes the history before the position');
is( q_(
		q{SELECT (SELECT string_agg(DISTINCT batch_id::text, ',') FROM microbatch.quarantine WHERE pipeline = 'hr'),
                 (SELECT string_agg(DISTINCT batch_id::text, ',') FROM microbatch.expectation_results WHERE pipeline = 'hr')}),
	'5|5', 'with the quarantined rows and check results of the removed batches');
($ret, $stdout, $stderr) = $node->psql($db, q{SELECT microbatch.replay_batch('hr', 2)});
like($stderr, qr/ERROR:  batch 2 of pipeline "hr" is no longer in its history/,
	'a removed batch cannot be replayed');
like($stderr, qr/HINT:  .*microbatch\.history_retention/, 'the HINT names the setting');
($ret, $stdout, $stderr) = $node->psql($db, q{CALL microbatch.replay('hr', 1, 5)});
like($stderr, qr/ERROR:  batch \d of pipeline "hr" is no longer in its history/,
	'nor a range that holds one');
is(q_(q{SELECT replays FROM microbatch.batches WHERE pipeline = 'hr' AND batch_id = 5 AND status = 'committed'}),
	'0', 'nothing was replayed');
is(q_(q{SELECT microbatch.replay_batch('hr', 5) IS NOT NULL}), 't', 'the position can be replayed');
q_(q{SELECT microbatch.remove_expectation('hr', 'not_13'); SELECT microbatch.run_batch('hr')});
is(q_(q{SELECT max(batch_id) FROM microbatch.batches WHERE pipeline = 'hr' AND status = 'committed'}),
	'6', 'batch ids go on');

# The setting, with a pipeline's own value first
q_(q{
CREATE TABLE hr2 (id int);
SELECT microbatch.create_pipeline('hr2', 'hr2');
SELECT microbatch.pause_pipeline('hr2');
SELECT microbatch.add_transform('hr2', 'count', 'bronze', 'SELECT count(*) FROM microbatch.hr2_batch');
INSERT INTO hr2 VALUES (1); SELECT microbatch.run_batch('hr2');
INSERT INTO hr2 VALUES (2); SELECT microbatch.run_batch('hr2');
SELECT microbatch.set_history_retention('hr2', '1 day');
ALTER SYSTEM SET microbatch.history_retention = '30d';
SELECT pg_reload_conf();
});
ok(poll_until($node, $db, q{SHOW microbatch.history_retention}, '30d', 10),
	'microbatch.history_retention takes units');
my $ew_ledger = q_(q{SELECT count(*) FROM microbatch.batches WHERE pipeline = 'ew'});
cmp_ok($ew_ledger, '>', 1, 'pipeline ew has a history');
q_(q{ALTER SYSTEM SET microbatch.history_retention = 0; SELECT pg_reload_conf()});
ok( poll_until(
		$node, $db,
		q{SELECT count(*) = 1 AND bool_and(batch_id = (SELECT last_batch_id FROM microbatch.pipelines WHERE pipeline = 'ew'))
            FROM microbatch.batches WHERE pipeline = 'ew'},
		't', 15),
	'with microbatch.history_retention = 0, a pipeline keeps only its position');
usleep(1_500_000);
is(q_(q{SELECT count(*) FROM microbatch.batches WHERE pipeline = 'hr2'}),
	'2', 'a pipeline with its own history_retention keeps its history');
q_(q{ALTER SYSTEM RESET microbatch.history_retention; SELECT pg_reload_conf()});

unlike(
	slurp_file($node->logfile),
	qr/was terminated by signal|terminating any other active server processes|PANIC:/,
	'no server process crashed');

$node->stop;

done_testing();
