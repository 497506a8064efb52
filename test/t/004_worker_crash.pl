# Exactly-once through crashes of batch workers and of the whole server.
#
# As in 001, pgbench's TPC-B script keeps sum(delta) per aid in
# pgbench_history equal to pgbench_accounts.abalance at every committed
# state, and a pipeline on pgbench_history folds each batch's deltas into
# account_totals.  Here nobody calls run_batch(): batch workers run the
# pipeline every 50 ms while pgbench writes, and the test repeatedly
#
#  - kills a batch worker that is in the middle of a batch with SIGKILL,
#    which makes the postmaster terminate every backend and reinitialise,
#    and
#  - crashes the whole server with an immediate shutdown and starts it
#    again.
#
# Each crash also ends that pgbench run (its clients lose their
# connections), so the load is several runs in sequence.  Whatever was
# committed must then be consistent: once the workers have caught up, the
# totals equal the balances exactly, the ledger accounts for every history
# row once, and batch ids are 1..N without gaps.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

# Shared polling helpers (test/t/MicrobatchTest.pm); prove puts only the top
# directory in @INC, so look next to this script.
use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

# Each run is cut short by its crash; the last one runs to the end.
my $run_seconds  = 6;
my $last_seconds = 4;
my @crashes      = qw(kill_worker immediate kill_worker immediate kill_worker immediate);

my $node = PostgreSQL::Test::Cluster->new('worker_crash');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '200ms'
restart_after_crash = on
# pgbench's statements would make a log of many megabytes
log_statement = 'none'
});
$node->start;

my $db = 'postgres';

sub start_pgbench
{
	my ($seconds) = @_;
	my %run = (out => '', err => '');
	$run{h} = IPC::Run::start(
		[
			'pgbench', '-n', '-c', '8', '-j', '2', '-T', $seconds,
			'-h', $node->host, '-p', $node->port, $db
		],
		'>', \$run{out}, '2>', \$run{err});
	return \%run;
}

# Wait for a pgbench run to end; true if it exited with status 0.
sub finish_pgbench
{
	my ($run, $timeout) = @_;
	my $deadline = time() + $timeout;
	while ($run->{h}->pumpable)
	{
		if (time() > $deadline)
		{
			$run->{h}->kill_kill;
			diag "pgbench did not finish within ${timeout}s";
			return 0;
		}
		$run->{h}->pump_nb;
		usleep(50_000);
	}
	return $run->{h}->finish;
}

# Scale 1: 100000 accounts, one branch, ten tellers.
$node->command_ok(
	[
		'pgbench', '-i', '-q', '-s', '1',
		'-h', $node->host, '-p', $node->port, $db
	],
	'pgbench -i');

$node->safe_psql(
	$db, q{
CREATE EXTENSION microbatch;
CREATE TABLE account_totals (aid int PRIMARY KEY, total bigint NOT NULL);
SELECT microbatch.create_pipeline('history', 'pgbench_history', interval '50 ms');
SELECT microbatch.add_transform('history', 'account_totals', 'gold', $$
    INSERT INTO account_totals (aid, total)
    SELECT aid, sum(delta) FROM microbatch.history_batch GROUP BY aid
    ON CONFLICT (aid) DO UPDATE SET total = account_totals.total + excluded.total
$$);

-- A batch worker in the middle of a batch of the pipeline: polled inside
-- the server, as batches are short.  NULL if none shows up in time.
CREATE FUNCTION busy_batch_worker(timeout interval, OUT pid int, OUT query text)
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout;
BEGIN
    LOOP
        PERFORM pg_stat_clear_snapshot();
        SELECT a.pid, a.query INTO pid, query
          FROM pg_stat_activity a
         WHERE a.backend_type = 'microbatch worker' AND a.state = 'active'
           AND a.query LIKE 'microbatch: pipeline history, batch %'
         LIMIT 1;
        EXIT WHEN pid IS NOT NULL OR clock_timestamp() > deadline;
        PERFORM pg_sleep(0.001);
    END LOOP;
END $$;
});

my $drained_sql = q{
SELECT p.rows_waiting = 0
       AND NOT EXISTS (SELECT 1 FROM microbatch.workers w WHERE w.pipeline = 'history')
  FROM microbatch.pipelines p WHERE p.pipeline = 'history'};

my $committed_sql = q{
SELECT coalesce(max(batch_id), 0) FROM microbatch.batch WHERE status = 'committed'};

my $kills_mid_batch = 0;
my $signal9_expected = 0;
my $round = 0;
for my $crash (@crashes)
{
	$round++;
	my $run = start_pgbench($run_seconds);

	# Let the load and the batches get going; vary where the crash lands.
	usleep(1_000_000 + int(rand(1_000_000)));
	my $before = $node->safe_psql($db, $committed_sql);

	if ($crash eq 'kill_worker')
	{
		my ($pid, $query) = split /\|/,
		  $node->safe_psql($db,
			q{SELECT pid, query FROM busy_batch_worker(interval '5 s')});
		$pid //= '';
		if ($pid eq '')
		{
			# No batch caught in flight: kill an idle worker instead, which
			# still makes the postmaster restart every backend.
			$pid = $node->safe_psql($db,
				q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'microbatch worker' LIMIT 1});
			$query = '(idle)';
		}
		else
		{
			$kills_mid_batch++;
		}
		if ($pid eq '')
		{
			fail("round $round: found a batch worker to kill");
			finish_pgbench($run, 30);
			next;
		}
		my $log_offset = -s $node->logfile;
		note "round $round: kill -9 of batch worker $pid ($query) after batch $before";
		ok(kill('KILL', $pid), "round $round: SIGKILL sent to batch worker $pid");
		$signal9_expected++;
		$node->wait_for_log(qr/all server processes terminated; reinitializing/,
			$log_offset);
	}
	else
	{
		note "round $round: immediate shutdown after batch $before";
		$node->stop('immediate');
		$node->start;
	}

	ok( poll_until_tolerant(
			$node, $db, q{SELECT 1}, '1', 60,
			'the server to accept connections'),
		"round $round ($crash): server accepts connections again");

	# The crash ended the clients; the run is allowed to report errors.
	my $clean = finish_pgbench($run, 60);
	my ($processed) =
	  $run->{out} =~ /number of transactions actually processed: (\d+)/;
	note "round $round: pgbench "
	  . ($clean ? 'exited cleanly' : 'reported errors')
	  . ", processed " . ($processed // '?') . " transactions";

	# The scheduler comes back and the workers take what was committed
	# before the crash and not yet batched.
	ok( poll_until_tolerant(
			$node, $db, $drained_sql, 't', 60, 'the pipeline to catch up'),
		"round $round ($crash): workers catch up after the crash");
	cmp_ok($node->safe_psql($db, $committed_sql),
		'>', $before, "round $round ($crash): batches are committed after the crash");
}

cmp_ok($kills_mid_batch, '>', 0,
	'at least one batch worker was killed in the middle of a batch');

my $log = slurp_file($node->logfile);
my $signal9 = () = $log =~ /\(PID \d+\) was terminated by signal 9/g;
is($signal9, $signal9_expected,
	'the log shows each SIGKILLed batch worker and the restart it caused');

# A last run with no crash: it must complete without errors.
my $last = start_pgbench($last_seconds);
ok(finish_pgbench($last, $last_seconds + 60), 'last pgbench run exits cleanly')
  or diag("pgbench stderr:\n$last->{err}");
like($last->{out}, qr/number of failed transactions: 0 /,
	'no transaction of the last run failed');

ok( poll_until_tolerant(
		$node, $db, $drained_sql, 't', 60, 'the pipeline to drain'),
	'workers process everything: no row waiting and no batch running');

# --- Consistency of what was committed --------------------------------------

my $history = $node->safe_psql($db, q{SELECT count(*) FROM pgbench_history});
cmp_ok($history, '>', 0, 'pgbench_history is not empty');

my $mismatches_sql = q{
SELECT count(*)
  FROM pgbench_accounts a
  FULL JOIN account_totals t USING (aid)
 WHERE a.aid IS NULL
    OR coalesce(t.total, 0) <> a.abalance
};
is($node->safe_psql($db, $mismatches_sql),
	'0', 'account_totals equals pgbench_accounts.abalance for every account');
cmp_ok($node->safe_psql($db, q{SELECT count(*) FROM account_totals}),
	'>', 0, 'account_totals is not empty');

is( $node->safe_psql(
		$db, q{
SELECT coalesce(sum(rows_in), 0) FROM microbatch.batches
 WHERE pipeline = 'history' AND status = 'committed'}),
	$history,
	'count(*) of pgbench_history equals the sum of rows_in over committed batches'
);

my ($n_batches, $contiguous) = split /\|/, $node->safe_psql(
	$db, q{
SELECT count(*),
       count(*) = count(DISTINCT batch_id)
       AND min(batch_id) = 1 AND max(batch_id) = count(*)
  FROM microbatch.batches
 WHERE pipeline = 'history' AND status = 'committed'});
is($contiguous, 't', "committed batch ids are contiguous 1..$n_batches");
cmp_ok($n_batches, '>', scalar(@crashes), 'batches ran between the crashes');
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM microbatch.batches WHERE status <> 'committed'}),
	'0', 'no batch attempt was recorded as failed');
is( $node->safe_psql(
		$db, q{SELECT state FROM microbatch.pipelines WHERE pipeline = 'history'}),
	'enabled', 'the pipeline is still enabled');

# Negative control: a batch processed twice breaks the totals check.
$node->safe_psql($db, q{SELECT microbatch.pause_pipeline('history')});
$node->safe_psql($db, q{SELECT microbatch.replay_batch('history', 1)});
cmp_ok($node->safe_psql($db, $mismatches_sql),
	'>', 0, 'the totals check detects a batch processed twice');

$node->stop;

done_testing();
