# Background workers serve every database that has the extension.
#
# db1 has the extension and a pipeline before the server starts, so the
# launcher must find it when it starts; db2 is created while the server runs,
# and gets the extension and a pipeline afterwards, so the launcher must find
# it later (CREATE EXTENSION wakes it at commit).  Rows inserted in both are
# processed by the background workers alone (no run_batch here), each exactly
# once, and each database has exactly one scheduler of its own.  Last, a
# database gets the extension in a prepared transaction, as Citus creates
# it on its workers (two-phase commit): COMMIT PREPARED wakes the launcher.

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

my $node = PostgreSQL::Test::Cluster->new('worker_databases');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '200ms'
max_worker_processes = 16
});
$node->start;

# Source, targets and pipeline of one database.  The bronze transform logs
# every row with the batch that processed it: a row processed twice shows up
# as a duplicate id.
sub setup_database
{
	my ($db, $pipeline) = @_;
	$node->safe_psql(
		$db, qq{
CREATE EXTENSION microbatch;
CREATE TABLE events (id int PRIMARY KEY, amount int NOT NULL);
CREATE TABLE event_log (batch_id bigint NOT NULL, id int NOT NULL, amount int NOT NULL);
CREATE TABLE totals (n bigint NOT NULL, total bigint NOT NULL);
INSERT INTO totals VALUES (0, 0);
SELECT microbatch.create_pipeline('$pipeline', 'events', '100ms');
SELECT microbatch.add_transform('$pipeline', 'log', 'bronze', \$\$
    INSERT INTO event_log (batch_id, id, amount)
    SELECT microbatch.current_batch_id(), id, amount FROM microbatch.${pipeline}_batch
\$\$);
SELECT microbatch.add_transform('$pipeline', 'totals', 'gold', \$\$
    UPDATE totals SET n = totals.n + b.rows, total = totals.total + b.amount
      FROM (SELECT count(*) AS rows, coalesce(sum(amount), 0) AS amount
              FROM microbatch.${pipeline}_batch) b
\$\$);
});
}

# db1: extension and pipeline in place before the server (re)starts.
$node->safe_psql('postgres', 'CREATE DATABASE db1');
setup_database('db1', 'p1');
$node->restart;

my $schedulers_sql = q{
SELECT count(*) FROM microbatch.workers
 WHERE kind = 'scheduler' AND database = current_database()};

ok(poll_until($node, 'db1', $schedulers_sql, '1', 30),
	'db1, which had the extension at server start, gets a scheduler');

# db2: created while the server runs, then the extension and a pipeline.
$node->safe_psql('postgres', 'CREATE DATABASE db2');
setup_database('db2', 'p2');
ok(poll_until($node, 'db2', $schedulers_sql, '1', 30),
	'db2, created after the server started, gets a scheduler');

# Rows in both databases, several transactions each, interleaved.  Amounts
# are distinct powers of two per database, so a row counted twice or missed
# changes the total.
my %expected_total = (db1 => 0, db2 => 0);
my $id = 0;
for my $round (1 .. 4)
{
	for my $db ('db1', 'db2')
	{
		my @values;
		for (1 .. 3)
		{
			$id++;
			push @values, "($id, " . (2**$id) . ")";
			$expected_total{$db} += 2**$id;
		}
		$node->safe_psql($db,
			'INSERT INTO events (id, amount) VALUES ' . join(', ', @values));
	}
	usleep(150_000) if $round % 2;
}

# Processed by the background workers alone.
for my $db ('db1', 'db2')
{
	ok( poll_until(
			$node, $db, q{SELECT count(*) = 12 FROM event_log}, 't', 60),
		"$db: background workers processed all 12 rows");
}

for my $pair ([ 'db1', 'p1' ], [ 'db2', 'p2' ])
{
	my ($db, $pipeline) = @$pair;

	# Give a double processing a chance to show.
	usleep(500_000);

	is( $node->safe_psql(
			$db, q{
SELECT count(*), count(DISTINCT id), (SELECT count(*) FROM events)
  FROM event_log}),
		'12|12|12',
		"$db: every row logged exactly once");
	is( $node->safe_psql(
			$db, q{
SELECT count(*) FROM (SELECT id, amount FROM events
                      EXCEPT SELECT id, amount FROM event_log) missing}),
		'0',
		"$db: the log has every source row");
	is($node->safe_psql($db, q{SELECT n || ':' || total FROM totals}),
		"12:$expected_total{$db}", "$db: totals count each row once");
	is( $node->safe_psql(
			$db, qq{
SELECT count(*) FILTER (WHERE status = 'failed'),
       sum(rows_in) FILTER (WHERE status = 'committed')
  FROM microbatch.batches WHERE pipeline = '$pipeline'}),
		'0|12',
		"$db: committed batches took 12 rows between them, none failed");
	is( $node->safe_psql(
			$db, q{
SELECT count(*) FROM event_log l
  LEFT JOIN microbatch.batches b ON b.batch_id = l.batch_id AND b.status = 'committed'
 WHERE b.batch_id IS NULL}),
		'0',
		"$db: each logged row belongs to a committed batch");
	is( $node->safe_psql(
			$db, qq{SELECT state, rows_waiting FROM microbatch.pipelines WHERE pipeline = '$pipeline'}),
		'enabled|0',
		"$db: pipeline enabled, nothing waiting");
	is( $node->safe_psql(
			$db, qq{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'microbatch scheduler' AND datname = '$db'}),
		'1',
		"$db: pg_stat_activity shows one microbatch scheduler connected to it");
}

# One scheduler per database.  microbatch.workers shows the whole cluster;
# it is read from db1 since postgres has no extension.  Databases without the
# extension are left out: the launcher tries them again every few naptimes,
# and their scheduler lives just long enough to find no extension.
is( $node->safe_psql(
		'db1', q{
SELECT string_agg(database || ':' || n, ',' ORDER BY database)
  FROM (SELECT database, count(*) AS n FROM microbatch.workers
         WHERE kind = 'scheduler' AND database IN ('db1', 'db2')
         GROUP BY database) s}),
	'db1:1,db2:1',
	'exactly one scheduler in each of db1 and db2');
is( $node->safe_psql(
		'db1', q{
SELECT count(*) FROM microbatch.workers w
  JOIN pg_stat_activity a ON a.pid = w.pid
 WHERE w.kind = 'scheduler' AND w.database IN ('db1', 'db2')
   AND a.datname = w.database AND a.backend_type = 'microbatch scheduler'}),
	'2',
	'the schedulers in microbatch.workers are the backends in pg_stat_activity');

# A second server, whose naptime is an hour: at its start the launcher
# tries its database postgres, finds no extension, and would look again only
# after ten naptimes.  CREATE EXTENSION there in a prepared transaction (as
# Citus creates it on its workers: two-phase commit), committed by COMMIT
# PREPARED in another session, must wake the launcher at once.
my $node2 = PostgreSQL::Test::Cluster->new('worker_databases_2pc');
$node2->init;
$node2->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '1h'
max_prepared_transactions = 2
log_min_messages = debug1
});
$node2->start;
$node2->wait_for_log(qr/microbatch scheduler exiting: the extension is not installed/);
my $postgres_schedulers_sql = q{
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'microbatch scheduler' AND datname = 'postgres'};
$node2->safe_psql('postgres',
	q{BEGIN; CREATE EXTENSION microbatch; PREPARE TRANSACTION 'create_microbatch'});
usleep(500_000);
is($node2->safe_psql('postgres', $postgres_schedulers_sql), '0',
	'no scheduler while CREATE EXTENSION is prepared');
$node2->safe_psql('postgres', q{COMMIT PREPARED 'create_microbatch'});
ok(poll_until($node2, 'postgres', $postgres_schedulers_sql, '1', 15),
	'a database whose extension was created by COMMIT PREPARED gets a scheduler within seconds');
$node2->stop;

# Nothing crashed.
my $log = slurp_file($node->logfile);
unlike(
	$log,
	qr/was terminated by signal|terminating any other active server processes|PANIC:/,
	'no server process crashed');

$node->stop;

done_testing();
