# A continuous pipeline's worker runs its batches back to back, and stops
# doing so the moment anything else needs a say.
#
# Under a steady stream of commits, the worker that ran a batch of a
# continuous pipeline (batch_interval 0) runs the next one itself, without
# handing the pipeline back to the scheduler in between; it logs, at DEBUG1,
# how many it ran in a row when it hands it back.  It must hand it back at
# once when the pipeline is paused or its interval changed, when batches are
# disabled, and when another pipeline waits for the only worker; otherwise a
# paused pipeline would keep running, and one stream would starve every
# other pipeline of the database.  Every row is processed exactly once
# throughout.
#
# The streams are dense (two sessions committing back to back, without
# waiting for WAL flushes), so that rows are always waiting when a batch
# ends: only the hand-back rules can take the worker away.  The naptime is
# a minute, so the scheduler's regular reload explains nothing here.  A
# batch handed out for a pipeline paused by hand in the catalog runs
# nothing, not even the checks that could count a failure against it.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $node = PostgreSQL::Test::Cluster->new('continuous');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '60s'
microbatch.max_workers = 1
max_worker_processes = 16
log_min_messages = debug1
synchronous_commit = off
});
$node->start;

my $db = 'postgres';
$node->safe_psql(
	$db, q{
CREATE EXTENSION microbatch;
CREATE TABLE a (id bigserial, v int);
CREATE TABLE b (id bigserial, v int);
CREATE TABLE a_out (id bigint);
CREATE TABLE b_out (id bigint);
SELECT microbatch.create_pipeline('pa', 'a', '0');
SELECT microbatch.add_transform('pa', 'copy', 'bronze',
    'INSERT INTO a_out SELECT id FROM microbatch.pa_batch');
SELECT microbatch.create_pipeline('pb', 'b', '0');
SELECT microbatch.add_transform('pb', 'copy', 'bronze',
    'INSERT INTO b_out SELECT id FROM microbatch.pb_batch');
-- one row per transaction, back to back, for a while
CREATE PROCEDURE feed(tab text, seconds float8) LANGUAGE plpgsql AS $$
DECLARE
    stop_at timestamptz := clock_timestamp() + make_interval(secs => seconds);
BEGIN
    WHILE clock_timestamp() < stop_at LOOP
        EXECUTE format('INSERT INTO %I (v) VALUES (1)', tab);
        COMMIT;
    END LOOP;
END $$;
});

ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.workers WHERE kind = 'scheduler'},
		'1', 30),
	'the database has a scheduler');

# Two sessions feeding $table in the background, for $seconds.
package Feed
{
	sub new
	{
		my ($class, $node, $db, $table, $seconds) = @_;
		my @runs;
		for (1 .. 2)
		{
			my ($out, $err) = ('', '');
			push @runs,
			  IPC::Run::start(
				[
					'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1',
					'-d', $node->connstr($db),
					'-c', "CALL feed('$table', $seconds)"
				],
				'>', \$out, '2>', \$err);
		}
		return bless \@runs, $class;
	}

	sub finish
	{
		my ($self) = @_;
		$_->finish or die "a feed failed" for @$self;
	}
}

sub start_feed
{
	my ($table, $seconds) = @_;
	return Feed->new($node, $db, $table, $seconds);
}

# Every row of $table in its copy, once.
sub caught_up
{
	my ($table, $what) = @_;
	ok( poll_until(
			$node, $db,
			"SELECT (SELECT count(*) FROM $table) = (SELECT count(*) FROM ${table}_out)
			    AND (SELECT count(*) FROM ${table}_out) = (SELECT count(DISTINCT id) FROM ${table}_out)",
			't', 60),
		"$what: every row of $table processed once");
}

sub batches_since
{
	my ($pipeline, $since) = @_;
	return $node->safe_psql($db,
		"SELECT count(*) FROM microbatch.batches
		  WHERE pipeline = '$pipeline' AND started_at > '$since'");
}

# 1. A stream runs as batches back to back on one worker.
my $offset = -s $node->logfile;
my $feed = start_feed('a', 3);
$feed->finish;
caught_up('a', 'a stream');
ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.workers WHERE kind = 'batch worker' AND pipeline IS NULL},
		'1', 30),
	'the worker handed the pipeline back once the stream ended');
my $log = substr(slurp_file($node->logfile), $offset);
my @runs = $log =~ /microbatch pipeline "pa" ran (\d+) batches in a row/g;
my $longest = (sort { $b <=> $a } @runs, 0)[0];
cmp_ok($longest, '>', 10,
	"the worker ran batches of the stream back to back (longest run: $longest)");
my $batches = $node->safe_psql($db,
	q{SELECT count(*) FROM microbatch.batches WHERE pipeline = 'pa'});
cmp_ok($batches, '>', 10, "the stream made many batches ($batches)");

# 2. Two streams, one worker: the second pipeline is served while the first
# still has rows waiting after every batch, and the other way round.
my $start = $node->safe_psql($db, 'SELECT clock_timestamp()');
my $feed_a = start_feed('a', 4);
usleep(300_000);
my $feed_b = start_feed('b', 3);
$feed_b->finish;
$feed_a->finish;
my $first_b = $node->safe_psql($db,
	"SELECT extract(epoch FROM min(started_at) - '$start')
	   FROM microbatch.batches WHERE pipeline = 'pb' AND started_at > '$start'");
ok($first_b ne '' && $first_b < 1.5,
	"pb got the worker while pa's stream went on (first batch after ${first_b}s)");
my $b_during = $node->safe_psql($db,
	"SELECT count(*) FROM microbatch.batches
	  WHERE pipeline = 'pb' AND started_at > '$start'
	    AND started_at < timestamptz '$start' + interval '3 s'");
cmp_ok($b_during, '>=', 3, "pb kept getting batches during both streams ($b_during)");
my $turns = $node->safe_psql($db,
	"SELECT count(*) FILTER (WHERE pipeline <> previous)
	   FROM (SELECT pipeline, lag(pipeline) OVER (ORDER BY started_at) AS previous
	           FROM microbatch.batches
	          WHERE started_at > timestamptz '$start' + interval '0.5 s'
	            AND started_at < timestamptz '$start' + interval '3 s') t");
cmp_ok($turns, '>=', 20,
	"the two pipelines took turns on the worker, batch after batch ($turns turns)");
caught_up('a', 'two streams');
caught_up('b', 'two streams');

# 3. pause_pipeline under a stream: no batch starts once the pause committed.
$feed = start_feed('a', 3);
usleep(1_000_000);
$node->safe_psql($db, q{SELECT microbatch.pause_pipeline('pa')});
my $paused_at = $node->safe_psql($db, 'SELECT clock_timestamp()');
$feed->finish;
usleep(500_000);
is(batches_since('pa', $paused_at), '0', 'no batch of a paused pipeline');
ok( $node->safe_psql($db, q{SELECT microbatch.rows_waiting('pa')}) > 0,
	'its rows wait');
$node->safe_psql($db, q{SELECT microbatch.resume_pipeline('pa')});
caught_up('a', 'paused and resumed');

# 3b. The same pause made by hand in the catalog, which wakes no scheduler
# (a restore, a superuser's UPDATE): the worker does not run it either,
# though the scheduler reads the catalog only every naptime.
$feed = start_feed('a', 2);
usleep(1_000_000);
$node->safe_psql($db,
	q{UPDATE microbatch.pipeline SET state = 'paused' WHERE pipeline_name = 'pa'});
$paused_at = $node->safe_psql($db, 'SELECT clock_timestamp()');
$feed->finish;
usleep(500_000);
is(batches_since('pa', $paused_at), '0',
	'no batch of a pipeline paused in the catalog by hand');
$node->safe_psql($db, q{SELECT microbatch.resume_pipeline('pa')});
caught_up('a', 'paused by hand and resumed');

# 3c. A batch handed out for a pipeline paused by hand runs no check of the
# pipeline either: one that fails (here its owner, NOLOGIN since) would be
# recorded as a failed attempt, and enough of them would mark the paused
# pipeline failed.
$node->safe_psql(
	$db, q{
CREATE ROLE carol LOGIN;
GRANT CREATE ON SCHEMA public TO carol;
SET ROLE carol;
CREATE TABLE c (id bigserial, v int);
CREATE TABLE c_out (id bigint);
SELECT microbatch.create_pipeline('pc', 'c', '0');
SELECT microbatch.add_transform('pc', 'copy', 'bronze',
    'INSERT INTO c_out SELECT id FROM microbatch.pc_batch');
INSERT INTO c (v) VALUES (1);
});
caught_up('c', 'a pipeline of carol');
$node->safe_psql(
	$db, q{
UPDATE microbatch.pipeline SET state = 'paused' WHERE pipeline_name = 'pc';
ALTER ROLE carol NOLOGIN;
});
$paused_at = $node->safe_psql($db, 'SELECT clock_timestamp()');
$node->safe_psql($db, q{INSERT INTO c (v) VALUES (2)});
usleep(1_000_000);
is( $node->safe_psql(
		$db, qq{
SELECT state, consecutive_failures,
       (SELECT count(*) FROM microbatch.batches
         WHERE pipeline = 'pc' AND started_at > '$paused_at')
  FROM microbatch.pipelines WHERE pipeline = 'pc'}),
	'paused|0|0',
	'a pipeline paused by hand whose owner cannot log in any more stays paused, with no attempt');
$node->safe_psql(
	$db, q{
ALTER ROLE carol LOGIN;
SELECT microbatch.resume_pipeline('pc');
});
caught_up('c', 'paused by hand, owner NOLOGIN, and resumed');
$node->safe_psql($db, q{SELECT microbatch.drop_pipeline('pc')});

# 4. A new interval applies from the next batch.
$feed = start_feed('a', 3);
usleep(1_000_000);
$node->safe_psql($db,
	q{SELECT microbatch.alter_pipeline('pa', batch_interval => '1 hour')});
my $altered_at = $node->safe_psql($db, 'SELECT clock_timestamp()');
$feed->finish;
usleep(500_000);
cmp_ok(batches_since('pa', $altered_at), '<=', 1,
	'at most the batch already due once the interval is an hour');
$node->safe_psql($db,
	q{SELECT microbatch.alter_pipeline('pa', batch_interval => '0')});
caught_up('a', 'interval changed and back');

# 5. microbatch.enabled off under a stream: batches stop.
$feed = start_feed('a', 3);
usleep(1_000_000);
$node->safe_psql($db, 'ALTER SYSTEM SET microbatch.enabled = off');
$node->safe_psql($db, 'SELECT pg_reload_conf()');
usleep(300_000);
my $disabled_at = $node->safe_psql($db, 'SELECT clock_timestamp()');
$feed->finish;
usleep(700_000);
is(batches_since('pa', $disabled_at), '0', 'no batch once batches are disabled');
$node->safe_psql($db, 'ALTER SYSTEM RESET microbatch.enabled');
$node->safe_psql($db, 'SELECT pg_reload_conf()');
caught_up('a', 'disabled and enabled again');

is( $node->safe_psql($db,
		q{SELECT count(*) FROM microbatch.batches WHERE status <> 'committed'}),
	'0', 'no batch failed');

$node->stop;
done_testing();
