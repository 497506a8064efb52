# Exactly-once under concurrent load.
#
# pgbench's TPC-B script updates an account's balance and appends the same
# delta to pgbench_history in one transaction, so at any committed state
# sum(delta) per aid in pgbench_history equals pgbench_accounts.abalance.  A
# pipeline on pgbench_history folds each batch's deltas into account_totals
# while eight clients write; once everything is drained, a lost batch (or a
# lost row) leaves a total too small and a batch processed twice leaves one
# too large, so the totals must equal the balances exactly.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

# Length of the pgbench run, in seconds.  Long enough for many batches to
# interleave with the writers, short enough for a 2-core machine.
my $load_seconds = 15;

my $node = PostgreSQL::Test::Cluster->new('pgbench_totals');
$node->init;
# Batches are run by hand here; background workers would race for them.
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'microbatch'\nmicrobatch.enabled = off\n");
$node->start;

my $db = 'postgres';

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
SELECT microbatch.create_pipeline('history', 'pgbench_history');
SELECT microbatch.add_transform('history', 'account_totals', 'gold', $$
    INSERT INTO account_totals (aid, total)
    SELECT aid, sum(delta) FROM microbatch.history_batch GROUP BY aid
    ON CONFLICT (aid) DO UPDATE SET total = account_totals.total + excluded.total
$$);
});

# Nothing to do before the load: run_batch must say so with NULL rather than
# committing an empty batch that would shift the batch ids.
is($node->safe_psql($db, q{SELECT microbatch.run_batch('history') IS NULL}),
	't', 'run_batch returns NULL when no row is waiting');

# -n: pgbench's default vacuum step would TRUNCATE pgbench_history under the
# pipeline; the load itself must be the only writer.
my ($pgbench_out, $pgbench_err) = ('', '');
my $pgbench = IPC::Run::start(
	[
		'pgbench', '-n', '-c', '8', '-j', '2', '-T', $load_seconds,
		'-h', $node->host, '-p', $node->port, $db
	],
	'>', \$pgbench_out, '2>', \$pgbench_err);

# One long-lived session runs the batches, as a scheduler would: each
# run_batch is its own transaction, so every batch commits while the writers
# keep committing around it.  query_safe dies on any stderr output, so a
# failed batch (reported as a WARNING) fails the test here.
my $runner = $node->background_psql($db);
my @load_batches;
my $deadline = time() + $load_seconds + 60;
while (1)
{
	$pgbench->pump_nb;
	last unless $pgbench->pumpable;
	if (time() > $deadline)
	{
		$pgbench->kill_kill;
		die "pgbench did not finish in time";
	}

	my $id =
	  $runner->query_safe(q{SELECT microbatch.run_batch('history')});
	push @load_batches, $id if $id ne '';
	usleep(200_000);
}
# finish() is true when every child exited with status 0.
ok($pgbench->finish, 'pgbench exited cleanly')
  or diag("pgbench stderr:\n$pgbench_err");
note "pgbench output:\n$pgbench_out";

my ($processed) =
  $pgbench_out =~ /number of transactions actually processed: (\d+)/;
ok(defined $processed && $processed > 0, 'pgbench committed transactions')
  or diag("pgbench stdout:\n$pgbench_out");
$processed //= -1;
like($pgbench_out, qr/number of failed transactions: 0 /,
	'no pgbench transaction failed');

# The interleaving is the point of the test: one batch run after the load
# would prove nothing about concurrent commits.
cmp_ok(scalar(@load_batches), '>', 1,
	'more than one batch committed while pgbench was running');
note scalar(@load_batches) . " batches during the load";

# Drain: the writers are gone, so this converges; bounded anyway.
my $drained = 0;
for (1 .. 100)
{
	my $id =
	  $runner->query_safe(q{SELECT microbatch.run_batch('history')});
	if ($id eq '')
	{
		$drained = 1;
		last;
	}
}
ok($drained, 'run_batch returns NULL once everything is processed');
$runner->quit;

is($node->safe_psql($db, q{SELECT microbatch.rows_waiting('history')}),
	'0', 'no row is left waiting');

# Every history row is one TPC-B transaction: none lost or invented before
# the pipeline even looks at them.
is($node->safe_psql($db, q{SELECT count(*) FROM pgbench_history}),
	$processed, 'pgbench_history holds one row per processed transaction');

# The core check.  The FULL JOIN catches both accounts whose total is off
# and accounts with a nonzero balance that never got a total (a lost batch),
# as well as totals for accounts that do not exist.
my $mismatches_sql = q{
SELECT count(*)
  FROM pgbench_accounts a
  FULL JOIN account_totals t USING (aid)
 WHERE a.aid IS NULL
    OR coalesce(t.total, 0) <> a.abalance
};
is($node->safe_psql($db, $mismatches_sql),
	'0', 'account_totals equals pgbench_accounts.abalance for every account');

# Guard against a vacuous pass: the load must actually have moved balances.
cmp_ok($node->safe_psql($db, q{SELECT count(*) FROM account_totals}),
	'>', 0, 'account_totals is not empty');

# The ledger accounts for every row exactly once.
is( $node->safe_psql(
		$db, q{
SELECT (SELECT count(*) FROM pgbench_history)
     = (SELECT coalesce(sum(rows_in), 0) FROM microbatch.batches
         WHERE pipeline = 'history' AND status = 'committed')
}),
	't',
	'count(*) of pgbench_history equals the sum of rows_in over committed batches'
);

is($node->safe_psql($db, q{SELECT count(*) FROM microbatch.batches WHERE status <> 'committed'}),
	'0', 'no batch failed');

# Ids are 1..N without gaps or duplicates.
my ($n_batches, $contiguous) = split /\|/, $node->safe_psql(
	$db, q{
SELECT count(*),
       count(*) = count(DISTINCT batch_id)
       AND min(batch_id) = 1 AND max(batch_id) = count(*)
  FROM microbatch.batches
 WHERE pipeline = 'history' AND status = 'committed'
});
is($contiguous, 't', "committed batch ids are contiguous 1..$n_batches");
cmp_ok($n_batches, '>', 1, 'more than one batch ran');
is( $node->safe_psql(
		$db, q{SELECT last_batch_id FROM microbatch.pipelines WHERE pipeline = 'history'}),
	$n_batches,
	'microbatch.pipelines reports the last batch id');

# Negative control: processing one batch a second time (replay runs its
# transforms again over the same rows) must make the totals check fail, or
# the check above could not have caught a doubled batch either.
$node->safe_psql($db, q{SELECT microbatch.replay_batch('history', 1)});
cmp_ok($node->safe_psql($db, $mismatches_sql),
	'>', 0, 'the totals check detects a batch processed twice');

$node->stop;

done_testing();
