# Failed batches in the background: retries with backoff, the failed state,
# alerts, and recovery.
#
# A gold transform divides by a column; a zero makes the batch fail.  The
# workers retry the same batch id with a growing delay (from about one
# second, with jitter, capped by microbatch.max_retry_delay); after
# microbatch.max_retries failures in a row the pipeline is marked failed,
# once: one WARNING in the server log and one NOTIFY microbatch_alerts with a
# JSON payload.  A failed pipeline is left alone until resume_pipeline(); the
# next batch, with the transform fixed, commits every waiting row exactly
# once and sends a 'recovered' alert.

use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

# Shared polling helpers (test/t/MicrobatchTest.pm); prove puts only the top
# directory in @INC, so look next to this script.
use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $node = PostgreSQL::Test::Cluster->new('worker_failures');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '200ms'
microbatch.max_retries = 3
microbatch.max_retry_delay = '2s'
max_worker_processes = 16
});
$node->start;

my $db = 'postgres';

$node->safe_psql(
	$db, q{
CREATE EXTENSION microbatch;
CREATE TABLE readings (id int PRIMARY KEY, v int NOT NULL);
CREATE TABLE bronze_readings (batch_id bigint NOT NULL, id int NOT NULL, v int NOT NULL);
CREATE TABLE gold_inverse (batch_id bigint NOT NULL, id int NOT NULL, inverse numeric);
SELECT microbatch.create_pipeline('inv', 'readings', '100ms');
SELECT microbatch.add_transform('inv', 'bronze', 'bronze', $$
    INSERT INTO bronze_readings
    SELECT microbatch.current_batch_id(), id, v FROM microbatch.inv_batch
$$);
SELECT microbatch.add_transform('inv', 'inverse', 'gold', $$
    INSERT INTO gold_inverse
    SELECT microbatch.current_batch_id(), id, 1.0 / v FROM microbatch.inv_batch
$$);
});

ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.workers
           WHERE kind = 'scheduler' AND database = current_database()},
		'1', 30),
	'the database has a scheduler');

# A good row goes through: batch 1.
$node->safe_psql($db, q{INSERT INTO readings VALUES (1, 2)});
ok(poll_until($node, $db, q{SELECT count(*) FROM gold_inverse}, '1', 30),
	'a good row is processed in the background');

my $pipeline_id = $node->safe_psql($db,
	q{SELECT pipeline_id FROM microbatch.pipelines WHERE pipeline = 'inv'});

# Listen for alerts from here on.  psql prints the notifications it got
# after each command it runs.
my $listener = $node->background_psql($db);
$listener->query_safe('LISTEN microbatch_alerts');
my $listener_output = '';

# All alerts received so far, decoded.
sub alerts
{
	$listener_output .= $listener->query_safe('SELECT 1') . "\n";
	my @alerts;
	while ($listener_output =~
		/Asynchronous notification "microbatch_alerts" with payload "(.*)" received from server process/g
	  )
	{
		push @alerts, decode_json($1);
	}
	return @alerts;
}

# The zero fails the batch (22012, division by zero); the row next to it
# goes down with it.
$node->safe_psql($db, q{INSERT INTO readings VALUES (2, 0), (3, 4)});
ok( poll_until(
		$node, $db,
		q{SELECT state FROM microbatch.pipelines WHERE pipeline = 'inv'},
		'failed', 45),
	'the pipeline is marked failed after repeated failures');

my $attempts_sql = q{
SELECT count(*), count(DISTINCT batch_id), min(batch_id), max(attempt),
       bool_and(sqlstate = '22012')
  FROM microbatch.batches WHERE pipeline = 'inv' AND status = 'failed'};
my $attempts = $node->safe_psql($db, $attempts_sql);
my ($nfailed, $nids, $failed_batch, $max_attempt, $all_22012) =
  split /\|/, $attempts;
cmp_ok($nfailed, '>=', 3, 'at least max_retries (3) failed attempts recorded');
is($nids, '1', 'all failed attempts are of the same batch');
is($failed_batch, '2', 'the failed batch is batch 2');
is($max_attempt, $nfailed, 'attempts are numbered 1, 2, 3...');
is($all_22012, 't', 'every attempt failed with SQLSTATE 22012');
is( $node->safe_psql(
		$db, q{SELECT state, consecutive_failures, last_error
                 FROM microbatch.pipelines WHERE pipeline = 'inv'}),
	'failed|3|division by zero',
	'pipelines shows the failed state, 3 failures and the last error');

# Seconds from the end of each failed attempt of a pipeline to the start of
# the next one.
sub failed_attempt_gaps
{
	my ($pipeline) = @_;
	return split /\n/, $node->safe_psql(
		$db, qq{
SELECT extract(epoch FROM started_at - lag(finished_at) OVER (ORDER BY attempt))
  FROM microbatch.batches
 WHERE pipeline = '$pipeline' AND status = 'failed'
 ORDER BY attempt OFFSET 1});
}

# Backoff: the wait between the end of an attempt and the start of the next
# one grows, and the first one is already the retry delay (at least half a
# second with jitter), not the 100ms batch interval.
my @gaps = failed_attempt_gaps('inv');
note "gaps between failed attempts (s): @gaps";
cmp_ok(scalar(@gaps), '>=', 2, 'two retries to compare');
cmp_ok($gaps[0], '>=', 0.45,
	'first retry waits the backoff (>= 0.5 s with jitter), not the batch interval');
cmp_ok($gaps[1], '>', $gaps[0], 'the second retry waits longer than the first');
cmp_ok($gaps[1], '<', 3.5,
	'the second retry waits no more than max_retry_delay (2s), give or take');

# While failed: no attempt at all, even with new rows and a 100ms interval.
$node->safe_psql($db, q{INSERT INTO readings VALUES (4, 5)});
usleep(2_500_000);    # more than 10 naptimes, and the longest retry delay
is($node->safe_psql($db, $attempts_sql),
	$attempts, 'no new attempt while the pipeline is failed');
is( $node->safe_psql(
		$db, q{SELECT state, rows_waiting FROM microbatch.pipelines WHERE pipeline = 'inv'}),
	'failed|3',
	'still failed, with the three rows waiting');
is($node->safe_psql($db, q{SELECT string_agg(id::text, ',' ORDER BY id) FROM bronze_readings}),
	'1', 'failed attempts left nothing behind in earlier layers');

# The WARNING, once.
my @warnings = grep { /WARNING: .*pipeline "inv" is marked failed/ }
  split /\n/, slurp_file($node->logfile);
is(scalar(@warnings), 1, 'the server log has the "is marked failed" WARNING once')
  or diag(join("\n", @warnings));

# The alert, once.
my @failed = grep { $_->{event} eq 'failed' } alerts();
is(scalar(@failed), 1, 'one "failed" alert received');
if (@failed)
{
	my $a = $failed[0];
	is($a->{pipeline_id}, $pipeline_id, 'alert names the pipeline by id');
	is($a->{database}, $db, 'alert names the database');
	is($a->{sqlstate}, '22012', 'alert has the SQLSTATE');
	is($a->{batch_id}, 2, 'alert has the batch id');
	is($a->{consecutive_failures}, 3, 'alert has the failure count');
	# any role may LISTEN: the error text, which may hold row data, is only
	# in the views, which show it to roles with the owner's privileges
	ok(!exists $a->{message} && !exists $a->{pipeline},
		'alert carries neither the error message nor the pipeline name');
}

# Fix the transform, resume: the batch commits with every waiting row.
$node->safe_psql(
	$db, q{
SELECT microbatch.remove_transform('inv', 'inverse');
SELECT microbatch.add_transform('inv', 'inverse', 'gold', $$
    INSERT INTO gold_inverse
    SELECT microbatch.current_batch_id(), id, 1.0 / nullif(v, 0) FROM microbatch.inv_batch
$$);
SELECT microbatch.resume_pipeline('inv');
});
ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.batches
           WHERE pipeline = 'inv' AND batch_id = 2 AND status = 'committed'},
		'1', 30),
	'after resume_pipeline the failed batch commits');
usleep(500_000);    # a double processing would show by now

is( $node->safe_psql(
		$db, q{
SELECT string_agg(format('%s:%s', batch_id, id), ',' ORDER BY id) FROM bronze_readings}),
	'1:1,2:2,2:3,2:4',
	'bronze has every row exactly once, the waiting ones in batch 2');
is( $node->safe_psql(
		$db, q{
SELECT string_agg(format('%s:%s:%s', batch_id, id, coalesce(round(inverse, 2)::text, 'null')), ',' ORDER BY id)
  FROM gold_inverse}),
	'1:1:0.50,2:2:null,2:3:0.25,2:4:0.20',
	'gold has every row exactly once, the previously failing row included');
is( $node->safe_psql(
		$db, q{
SELECT attempt, rows_in FROM microbatch.batches
 WHERE pipeline = 'inv' AND batch_id = 2 AND status = 'committed'}),
	($nfailed + 1) . '|3',
	'batch 2 committed at the attempt after the failed ones, with the 3 rows');
is( $node->safe_psql(
		$db, q{SELECT state, consecutive_failures, last_error, rows_waiting
                 FROM microbatch.pipelines WHERE pipeline = 'inv'}),
	'enabled|0||0',
	'pipeline enabled again, no failures, nothing waiting');

# The recovery alert.
my @recovered;
my $deadline = time() + 10;
while (time() < $deadline)
{
	@recovered = grep { $_->{event} eq 'recovered' } alerts();
	last if @recovered;
	usleep(200_000);
}
is(scalar(@recovered), 1, 'one "recovered" alert received');
if (@recovered)
{
	is($recovered[0]{pipeline_id}, $pipeline_id, 'recovered alert names the pipeline');
	is($recovered[0]{batch_id}, 2, 'recovered alert has the batch that committed');
}
is(scalar(grep { $_->{event} eq 'failed' } alerts()),
	1, 'still just the one "failed" alert');
note "alerts received:\n",
  join("\n", grep { /Asynchronous notification/ } split /\n/, $listener_output);

$listener->quit;

# A continuous pipeline (batch_interval 0) backs off the same way: commits
# that keep coming while it fails do not start retries before their time.
$node->safe_psql(
	$db, q{
CREATE TABLE feed (id serial PRIMARY KEY, v int NOT NULL);
CREATE TABLE feed_inverse (id int NOT NULL, inverse numeric);
SELECT microbatch.create_pipeline('feed', 'feed', '0');
SELECT microbatch.add_transform('feed', 'inverse', 'gold', $$
    INSERT INTO feed_inverse SELECT id, 1.0 / v FROM microbatch.feed_batch
$$);
INSERT INTO feed (v) VALUES (0);
});
for (1 .. 40)
{
	$node->safe_psql($db, q{INSERT INTO feed (v) VALUES (1)});
	usleep(50_000);
}
my @feed_gaps = failed_attempt_gaps('feed');
note "gaps between failed attempts of the continuous pipeline (s): @feed_gaps";
cmp_ok(scalar(@feed_gaps), '>=', 1, 'the continuous pipeline retried');
cmp_ok((sort { $a <=> $b } @feed_gaps)[0], '>=', 0.45,
	'commits during the backoff do not bring a retry forward');

unlike(
	slurp_file($node->logfile),
	qr/was terminated by signal|terminating any other active server processes|PANIC:/,
	'no server process crashed');

$node->stop;

done_testing();
