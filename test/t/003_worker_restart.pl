# Background workers run the batches, and carry on after a restart.
#
# With the library preloaded, nobody calls run_batch() in this test: the
# scheduler of the database hands the pipeline to a batch worker every
# batch_interval.  A bronze transform copies (batch id, id, backend type of
# the process that ran it) into a target table, so the target shows which
# batch took each row and that a batch worker, not this script, ran it.
# Rows go in before and after a clean restart, and while the pipeline is
# paused; in the end every source row must have been copied exactly once,
# by batches numbered 1..N without gaps.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

# Shared polling helpers (test/t/MicrobatchTest.pm); prove puts only the top
# directory in @INC, so look next to this script.
use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $naptime_ms = 200;

my $node = PostgreSQL::Test::Cluster->new('worker_restart');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '${naptime_ms}ms'
});
$node->start;

my $db = 'postgres';

my $next_id = 1;

# Insert $n rows in $xacts transactions of their own.
sub insert_rows
{
	my ($n, $xacts) = @_;
	for (1 .. $xacts)
	{
		my $from = $next_id;
		my $to   = $next_id + $n - 1;
		$node->safe_psql($db,
			"INSERT INTO events (id, payload) SELECT g, 'row ' || g FROM generate_series($from, $to) g"
		);
		$next_id = $to + 1;
	}
}

sub rows_copied
{
	return $node->safe_psql($db, q{SELECT count(*) FROM event_copy});
}

sub ledger_rows
{
	return $node->safe_psql($db, q{SELECT count(*) FROM microbatch.batch});
}

my $scheduler_sql = q{
SELECT count(*) FROM microbatch.workers
 WHERE kind = 'scheduler' AND database = current_database()};

$node->safe_psql(
	$db, q{
CREATE EXTENSION microbatch;
CREATE TABLE events (id bigint PRIMARY KEY, payload text NOT NULL);
CREATE TABLE event_copy (
    batch_id     bigint NOT NULL,
    id           bigint NOT NULL,
    backend_type text
);
SELECT microbatch.create_pipeline('copy', 'events', interval '100 ms');
SELECT microbatch.add_transform('copy', 'copy_rows', 'bronze', $$
    INSERT INTO event_copy (batch_id, id, backend_type)
    SELECT microbatch.current_batch_id(), b.id,
           (SELECT a.backend_type FROM pg_catalog.pg_stat_activity a
             WHERE a.pid = pg_catalog.pg_backend_pid())
      FROM microbatch.copy_batch b
$$);
});

ok( poll_until_tolerant(
		$node, $db, $scheduler_sql, '1', 30, 'a scheduler for the database'),
	'CREATE EXTENSION starts a scheduler for the database');

# --- Rows are processed by the workers alone --------------------------------

insert_rows(10, 5);
ok( poll_until_tolerant(
		$node, $db, q{SELECT count(*) FROM event_copy}, '50', 30,
		'the first 50 rows to be copied'),
	'batch workers process rows inserted in 5 transactions');
is( $node->safe_psql(
		$db, q{SELECT rows_waiting FROM microbatch.pipelines WHERE pipeline = 'copy'}),
	'0',
	'no row is waiting once they are copied');
cmp_ok(ledger_rows(), '>', 0, 'batches are in the ledger, with no run_batch call');

# Idle batch workers stay around for a while, so one is visible now.
cmp_ok(
	$node->safe_psql(
		$db,
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'microbatch worker'}
	),
	'>', 0,
	"pg_stat_activity shows a backend of type 'microbatch worker'");
cmp_ok(
	$node->safe_psql(
		$db,
		q{SELECT count(*) FROM microbatch.workers w
		    JOIN pg_stat_activity a USING (pid)
		   WHERE w.kind = 'batch worker' AND a.backend_type = 'microbatch worker'}
	),
	'>', 0,
	'microbatch.workers lists that batch worker');

# --- A running batch is visible ---------------------------------------------

# Hold a lock the transform needs, so the next batch stays in flight long
# enough to be looked at.  Nothing may read event_copy meanwhile.
my $blocker = $node->background_psql($db);
$blocker->query_safe(q{BEGIN; LOCK TABLE event_copy IN ACCESS EXCLUSIVE MODE;});
my $expected_batch = $node->safe_psql($db,
	q{SELECT max(batch_id) + 1 FROM microbatch.batch WHERE status = 'committed'});
insert_rows(10, 1);

my $running_sql = q{
SELECT w.state, w.batch_id, a.backend_type, a.wait_event_type, a.query
  FROM microbatch.workers w JOIN pg_stat_activity a USING (pid)
 WHERE w.pipeline = 'copy'};
ok( poll_until_tolerant(
		$node, $db,
		q{SELECT count(*) FROM microbatch.workers w JOIN pg_stat_activity a USING (pid)
		   WHERE w.pipeline = 'copy' AND w.batch_id IS NOT NULL
		     AND a.wait_event_type = 'Lock'},
		'1', 30,
		'a batch of pipeline copy blocked on the lock'),
	'a batch worker picks up the new rows and waits for the lock');
is( $node->safe_psql($db, $running_sql),
	"running|$expected_batch|microbatch worker|Lock|microbatch: pipeline copy, batch $expected_batch",
	'microbatch.workers and pg_stat_activity show the pipeline and batch being run');
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'microbatch worker' AND state = 'active'}),
	'1',
	'exactly one batch worker is busy with the pipeline');
$blocker->query_safe(q{COMMIT});
$blocker->quit;

ok( poll_until_tolerant(
		$node, $db, q{SELECT count(*) FROM event_copy}, '60', 30,
		'the blocked batch to finish'),
	'the blocked batch completes once the lock is released');
is( $node->safe_psql(
		$db, q{SELECT string_agg(DISTINCT batch_id::text, ',') FROM event_copy WHERE id BETWEEN 51 AND 60}),
	$expected_batch,
	'the rows inserted under the lock went to the batch that was seen running');

# --- Clean restart ------------------------------------------------------------

# Some rows are committed just before the restart: whether a batch takes
# them before the shutdown or after the start, they must be copied once.
insert_rows(5, 2);
my $batches_before_restart = $node->safe_psql($db,
	q{SELECT coalesce(max(batch_id), 0) FROM microbatch.batch WHERE status = 'committed'});
$node->restart;

ok( poll_until_tolerant(
		$node, $db, $scheduler_sql, '1', 30, 'the scheduler to come back'),
	'the scheduler is started again after the restart');
insert_rows(10, 3);
ok( poll_until_tolerant(
		$node, $db, q{SELECT count(*) FROM event_copy}, '100', 30,
		'all 100 rows to be copied after the restart'),
	'batch workers process the rows inserted after the restart');
cmp_ok(
	$node->safe_psql(
		$db, q{SELECT max(batch_id) FROM microbatch.batch WHERE status = 'committed'}),
	'>', $batches_before_restart,
	'new batches were committed after the restart');

# --- Pause and resume --------------------------------------------------------

$node->safe_psql($db, q{SELECT microbatch.pause_pipeline('copy')});
# The scheduler takes the pause at once (the function wakes it): it stops
# publishing a next run, and any batch already handed out finishes.
ok( poll_until_tolerant(
		$node, $db,
		q{SELECT p.state = 'paused' AND p.next_run_at IS NULL
		         AND NOT EXISTS (SELECT 1 FROM microbatch.workers w WHERE w.pipeline = 'copy')
		    FROM microbatch.pipelines p WHERE p.pipeline = 'copy'},
		't', 10,
		'the paused pipeline to have no next run and no worker'),
	'a paused pipeline has no next run and no batch running');

my $ledger_at_pause = ledger_rows();
my $copied_at_pause = rows_copied();
is($copied_at_pause, '100', 'everything before the pause was copied');
insert_rows(10, 2);

# Several naptimes and many batch intervals: nothing may run.
usleep(6 * $naptime_ms * 1000);
is(rows_copied(), $copied_at_pause, 'no row is copied while the pipeline is paused');
is(ledger_rows(), $ledger_at_pause, 'no batch is recorded while the pipeline is paused');
is( $node->safe_psql(
		$db, q{SELECT state || ':' || rows_waiting FROM microbatch.pipelines WHERE pipeline = 'copy'}),
	'paused:20',
	'the paused pipeline shows its 20 waiting rows');

$node->safe_psql($db, q{SELECT microbatch.resume_pipeline('copy')});
ok( poll_until_tolerant(
		$node, $db, q{SELECT count(*) FROM event_copy}, '120', 30,
		'the rows inserted during the pause to be copied'),
	'resume_pipeline lets the workers pick up the rows inserted while paused');
ok( poll_until_tolerant(
		$node, $db,
		q{SELECT rows_waiting FROM microbatch.pipelines WHERE pipeline = 'copy'},
		'0', 10, 'rows_waiting to reach 0'),
	'no row is waiting after the resume');

# --- Exactly once, contiguous, and done by the workers -----------------------

is($node->safe_psql($db, q{SELECT count(*) FROM events}),
	$next_id - 1, 'the source holds every inserted row');

my $exactly_once_sql = q{
SELECT count(*)
  FROM events e
  FULL JOIN (SELECT id, count(*) AS n FROM event_copy GROUP BY id) c USING (id)
 WHERE e.id IS NULL OR c.n IS DISTINCT FROM 1};
is($node->safe_psql($db, $exactly_once_sql),
	'0', 'every source id appears exactly once in the target');

my ($n_batches, $contiguous) = split /\|/, $node->safe_psql(
	$db, q{
SELECT count(*),
       count(*) = count(DISTINCT batch_id)
       AND min(batch_id) = 1 AND max(batch_id) = count(*)
  FROM microbatch.batches
 WHERE pipeline = 'copy' AND status = 'committed'});
is($contiguous, 't', "committed batch ids are contiguous 1..$n_batches");
cmp_ok($n_batches, '>', 2, 'several batches ran');
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM microbatch.batches WHERE status <> 'committed'}),
	'0', 'no batch failed');

# The ledger agrees with the target, batch by batch.
is( $node->safe_psql(
		$db, q{
SELECT count(*)
  FROM (SELECT batch_id, rows_in FROM microbatch.batches
         WHERE pipeline = 'copy' AND status = 'committed') b
  FULL JOIN (SELECT batch_id, count(*) AS n FROM event_copy GROUP BY batch_id) c
       USING (batch_id)
 WHERE b.rows_in IS DISTINCT FROM c.n}),
	'0',
	'each committed batch copied exactly its rows_in rows');

is( $node->safe_psql(
		$db, q{SELECT string_agg(DISTINCT coalesce(backend_type, '(null)'), ',') FROM event_copy}),
	'microbatch worker',
	'every row was copied by a batch worker');

# Negative control: the exactly-once check notices a batch processed twice.
$node->safe_psql($db, q{SELECT microbatch.pause_pipeline('copy')});
$node->safe_psql($db, q{SELECT microbatch.replay_batch('copy', 1)});
cmp_ok($node->safe_psql($db, $exactly_once_sql),
	'>', 0, 'the exactly-once check detects a batch processed twice');

$node->stop;

done_testing();
