# Batch workers and signals: SIGTERM, commit wake-ups, microbatch.enabled.
#
# (a) SIGTERM ends a batch worker at once, even inside a long transform; its
#     batch rolls back and is done again later, exactly once.
# (b) A pipeline with batch_interval 0 runs when an inserting transaction
#     commits: with a naptime of a minute, nothing but that wake-up can
#     explain rows processed within seconds.
# (c) microbatch.enabled = off (a reload) stops the batches; on again, they
#     resume.
# (d) Background batches commit with microbatch.synchronous_commit.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

# Shared polling helpers (test/t/MicrobatchTest.pm); prove puts only the top
# directory in @INC, so look next to this script.
use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $node = PostgreSQL::Test::Cluster->new('worker_signals');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '200ms'
max_worker_processes = 16
});
$node->start;

my $db = 'postgres';

my $scheduler_sql = q{
SELECT pid FROM microbatch.workers
 WHERE kind = 'scheduler' AND database = current_database()};

$node->safe_psql($db, q{CREATE EXTENSION microbatch});
ok( poll_until(
		$node, $db, qq{SELECT count(*) FROM ($scheduler_sql) s}, '1', 30),
	'the database has a scheduler');
my $scheduler_pid = $node->safe_psql($db, $scheduler_sql);

# A source, a log of the rows each batch processed, and a pipeline over them.
sub make_pipeline
{
	my ($name, $interval) = @_;
	$node->safe_psql(
		$db, qq{
CREATE TABLE ${name}_src (id int PRIMARY KEY);
CREATE TABLE ${name}_log (batch_id bigint NOT NULL, id int NOT NULL);
SELECT microbatch.create_pipeline('$name', '${name}_src', '$interval');
SELECT microbatch.add_transform('$name', 'log', 'bronze', \$\$
    INSERT INTO ${name}_log SELECT microbatch.current_batch_id(), id FROM microbatch.${name}_batch
\$\$);
});
}

# "n|distinct ids|ids" of a pipeline's log
sub log_summary
{
	my ($name) = @_;
	return $node->safe_psql($db,
		"SELECT count(*), count(DISTINCT id), string_agg(id::text, ',' ORDER BY id) FROM ${name}_log"
	);
}

#
# (a) SIGTERM in the middle of a long transform
#
make_pipeline('slow', '100ms');
$node->safe_psql(
	$db, q{SELECT microbatch.add_transform('slow', 'nap', 'gold', 'SELECT pg_sleep(60)')});
$node->safe_psql($db, q{INSERT INTO slow_src VALUES (1)});

my $running_sql = q{
SELECT w.pid || '|' || w.batch_id
  FROM microbatch.workers w JOIN pg_stat_activity a ON a.pid = w.pid
 WHERE w.kind = 'batch worker' AND w.pipeline = 'slow'
   AND a.backend_type = 'microbatch worker' AND a.state = 'active'
   AND a.wait_event = 'PgSleep'};
my $running = '';
my $deadline = time() + 30;
while (time() < $deadline)
{
	$running = $node->safe_psql($db, $running_sql);
	last if $running ne '';
	usleep(100_000);
}
my ($worker_pid, $running_batch) = split /\|/, $running;
ok(defined $worker_pid && $worker_pid =~ /^\d+$/,
	'a microbatch worker is sleeping in the transform');
is($running_batch, '1', 'microbatch.workers shows the batch it runs');

# Paused first, so that the only thing to run the batch again is the
# resume_pipeline() below, once the transform is replaced (pausing does not
# wait for the running batch).
$node->safe_psql($db, q{SELECT microbatch.pause_pipeline('slow')});

ok(kill('TERM', $worker_pid), 'SIGTERM sent to the worker');
my $gone = 0;
$deadline = time() + 5;
while (time() < $deadline)
{
	if (!kill(0, $worker_pid)
		&& $node->safe_psql($db,
			"SELECT count(*) FROM pg_stat_activity WHERE pid = $worker_pid") eq '0')
	{
		$gone = 1;
		last;
	}
	usleep(50_000);
}
ok($gone, 'the worker exits within 5 s of SIGTERM, in the middle of pg_sleep(60)');
ok( poll_until(
		$node, $db,
		"SELECT count(*) FROM microbatch.workers WHERE pid = $worker_pid", '0', 5),
	'its slot is free');
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM microbatch.batches
                WHERE pipeline = 'slow' AND status = 'committed'}),
	'0',
	'the interrupted batch did not commit');
is(log_summary('slow'), '0|0|', 'nothing of the interrupted batch is left');
is($node->safe_psql($db, $scheduler_sql),
	$scheduler_pid, 'the scheduler survived the worker');

# A fast transform instead, and the row goes through, once.
$node->safe_psql(
	$db, q{
SELECT microbatch.remove_transform('slow', 'nap');
SELECT microbatch.add_transform('slow', 'nap', 'gold', 'SELECT pg_sleep(0)');
SELECT microbatch.resume_pipeline('slow');
});
ok(poll_until($node, $db, q{SELECT count(*) FROM slow_log}, '1', 30),
	'after the transform is replaced, the row is processed');
usleep(500_000);
is(log_summary('slow'), '1|1|1', 'the row was processed exactly once');
is( $node->safe_psql(
		$db, q{SELECT string_agg(format('%s:%s', batch_id, rows_in), ',')
                 FROM microbatch.batches WHERE pipeline = 'slow' AND status = 'committed'}),
	'1:1',
	'one committed batch, batch 1, with the row');
$node->safe_psql($db, q{SELECT microbatch.drop_pipeline('slow')});

#
# (c) microbatch.enabled off, then on again
#
make_pipeline('toggle', '100ms');
$node->safe_psql($db, q{INSERT INTO toggle_src VALUES (1)});
ok(poll_until($node, $db, q{SELECT count(*) FROM toggle_log}, '1', 30),
	'with microbatch.enabled on, rows are processed');

$node->safe_psql($db, q{ALTER SYSTEM SET microbatch.enabled = off});
$node->reload;
ok(poll_until($node, $db, q{SHOW microbatch.enabled}, 'off', 10),
	'the reload took effect');
usleep(500_000);    # the scheduler got its SIGHUP too
my $batches_sql = q{SELECT count(*) FROM microbatch.batches WHERE pipeline = 'toggle'};
my $batches_before = $node->safe_psql($db, $batches_sql);

$node->safe_psql($db, q{INSERT INTO toggle_src VALUES (2), (3)});
usleep(1_500_000);    # 15 batch intervals, 7 naptimes
is(log_summary('toggle'), '1|1|1', 'with microbatch.enabled off, new rows wait');
is($node->safe_psql($db, $batches_sql),
	$batches_before, 'no batch ran while disabled');
is( $node->safe_psql(
		$db, q{SELECT state, rows_waiting FROM microbatch.pipelines WHERE pipeline = 'toggle'}),
	'enabled|2',
	'the pipeline itself is still enabled, with its rows waiting');

$node->safe_psql($db, q{ALTER SYSTEM SET microbatch.enabled = on});
$node->reload;
ok(poll_until($node, $db, q{SELECT count(*) FROM toggle_log}, '3', 30),
	'with microbatch.enabled on again, the waiting rows are processed');
usleep(500_000);
is(log_summary('toggle'), '3|3|1,2,3', 'each row processed exactly once');
$node->safe_psql($db, q{SELECT microbatch.drop_pipeline('toggle')});

#
# (b) batch_interval 0: the commit wakes the scheduler
#
# With a one-minute naptime, neither the scheduler's catalog reads nor its
# retries can explain a row processed within seconds of its commit.  The
# restart makes sure every process runs with that naptime.
make_pipeline('cont', '0');
$node->safe_psql($db, q{ALTER SYSTEM SET microbatch.naptime = '60s'});
$node->restart;
is($node->safe_psql($db, q{SHOW microbatch.naptime}), '1min',
	'naptime is one minute');
ok( poll_until(
		$node, $db, qq{SELECT count(*) FROM ($scheduler_sql) s}, '1', 30),
	'the scheduler is back after the restart');

for my $id (1 .. 4)
{
	$node->safe_psql($db, "INSERT INTO cont_src VALUES ($id)");
	ok( poll_until(
			$node, $db, q{SELECT count(*) FROM cont_log}, $id, 10),
		"continuous pipeline: insert $id is processed within 10 s of its commit");
}
usleep(500_000);
is(log_summary('cont'), '4|4|1,2,3,4', 'each row processed exactly once');
is( $node->safe_psql(
		$db, q{
SELECT string_agg(format('%s:%s', batch_id, rows_in), ',' ORDER BY batch_id)
  FROM microbatch.batches WHERE pipeline = 'cont' AND status = 'committed'}),
	'1:1,2:1,3:1,4:1',
	'one batch per committed insert');

# A transaction that inserted but rolled back wakes nobody up and leaves
# nothing behind; the next commit is processed as usual.
$node->safe_psql($db, q{BEGIN; INSERT INTO cont_src VALUES (100); ROLLBACK;});
$node->safe_psql($db, q{INSERT INTO cont_src VALUES (5)});
ok(poll_until($node, $db, q{SELECT count(*) FROM cont_log}, '5', 10),
	'continuous pipeline: the insert after a rollback is processed');
is(log_summary('cont'), '5|5|1,2,3,4,5', 'the rolled back row was never processed');

# Idle, the continuous pipeline waits for a commit, or a naptime.  Given an
# interval, it runs at that interval from now on, not after the naptime.
$node->safe_psql($db,
	q{SELECT microbatch.alter_pipeline('cont', batch_interval => '200ms')});
$node->safe_psql($db, q{INSERT INTO cont_src VALUES (6)});
ok(poll_until($node, $db, q{SELECT count(*) FROM cont_log}, '6', 10),
	'a continuous pipeline given an interval runs at that interval at once');

#
# (d) Background batches commit with microbatch.synchronous_commit (off by
# default); run_batch() keeps its caller's synchronous_commit.
#
$node->safe_psql(
	$db, q{
CREATE TABLE sync_src (id int PRIMARY KEY);
CREATE TABLE sync_log (id int NOT NULL, setting text NOT NULL);
SELECT microbatch.create_pipeline('sync', 'sync_src', '0');
SELECT microbatch.add_transform('sync', 'log', 'bronze', $$
    INSERT INTO sync_log
    SELECT id, current_setting('synchronous_commit') FROM microbatch.sync_batch
$$);
INSERT INTO sync_src VALUES (1);
});
ok(poll_until($node, $db, q{SELECT count(*) FROM sync_log}, '1', 10),
	'the first row is processed');
$node->safe_psql($db,
	q{ALTER SYSTEM SET microbatch.synchronous_commit = 'remote_write'});
$node->reload;
ok( poll_until(
		$node, $db, q{SHOW microbatch.synchronous_commit}, 'remote_write', 10),
	'the reload took effect');
usleep(500_000);    # the batch worker got its SIGHUP too
$node->safe_psql($db, q{INSERT INTO sync_src VALUES (2)});
ok(poll_until($node, $db, q{SELECT count(*) FROM sync_log}, '2', 10),
	'the second row is processed');
$node->safe_psql(
	$db, q{
SELECT microbatch.pause_pipeline('sync');
INSERT INTO sync_src VALUES (3);
SET synchronous_commit = local;
SELECT microbatch.run_batch('sync');
});
is( $node->safe_psql(
		$db, q{SELECT string_agg(id || ':' || setting, ',' ORDER BY id) FROM sync_log}),
	'1:off,2:remote_write,3:local',
	'batch workers commit with microbatch.synchronous_commit, run_batch() with the session\'s setting');

unlike(
	slurp_file($node->logfile),
	qr/was terminated by signal|terminating any other active server processes|PANIC:/,
	'no server process crashed');

$node->stop;

done_testing();
