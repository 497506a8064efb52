# Background workers and failover: nothing runs on a standby; after
# promotion the launcher starts and pipelines continue from the replicated
# ledger, exactly once.  Also: DROP DATABASE is not blocked by our workers.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $conf = "shared_preload_libraries = 'microbatch'\nmicrobatch.naptime = '200ms'\n";

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', $conf);
$primary->start;

$primary->safe_psql('postgres', q{
	CREATE EXTENSION microbatch;
	CREATE TABLE events (id int PRIMARY KEY);
	CREATE TABLE processed (batch_id bigint, id int);
	SELECT microbatch.create_pipeline('events', 'events', '100 ms');
	SELECT microbatch.add_transform('events', 'copy', 'bronze',
		'INSERT INTO processed SELECT microbatch.current_batch_id(), id FROM microbatch.events_batch');
	INSERT INTO events SELECT generate_series(1, 10);
});
ok( $primary->poll_query_until('postgres',
		'SELECT count(*) = 10 FROM processed'),
	'the primary processes its rows');

$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;

$primary->safe_psql('postgres',
	'INSERT INTO events SELECT generate_series(11, 20)');
ok( $primary->poll_query_until('postgres',
		'SELECT count(*) = 20 FROM processed'),
	'the primary processes more rows');
$primary->wait_for_catchup($standby);

# Give a launcher every chance to show up on the standby: it must not.
sleep(1);
is( $standby->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'microbatch%'}),
	'0',
	'no microbatch process runs on a standby');
my ($rc, $out, $err) = $standby->psql('postgres',
	q{SELECT microbatch.run_batch('events')});
like($err, qr/cannot run a batch during recovery/,
	'run_batch is refused during recovery');

# Rows committed on the primary but not yet batched when it fails.
$primary->safe_psql('postgres', q{
	SELECT microbatch.pause_pipeline('events');
	INSERT INTO events SELECT generate_series(21, 30);
	SELECT microbatch.resume_pipeline('events');
});
$primary->wait_for_catchup($standby);
$primary->stop('immediate');

$standby->promote;
ok( $standby->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'microbatch scheduler'}),
	'after promotion a scheduler starts');
$standby->safe_psql('postgres',
	'INSERT INTO events SELECT generate_series(31, 40)');
ok( $standby->poll_query_until('postgres',
		'SELECT count(*) = 40 FROM processed'),
	'the promoted server processes the rows left over and the new ones');
is( $standby->safe_psql('postgres', q{
		SELECT count(*) FROM events e
		 WHERE (SELECT count(*) FROM processed p WHERE p.id = e.id) <> 1}),
	'0',
	'every row processed exactly once across the failover');
is( $standby->safe_psql('postgres', q{
		SELECT max(batch_id) = count(*) FROM microbatch.batches
		 WHERE pipeline = 'events' AND status = 'committed'}),
	't',
	'batch ids stay contiguous across the failover');

# Our scheduler and workers are connected to a database that is dropped.
$standby->safe_psql('postgres', 'CREATE DATABASE doomed');
$standby->safe_psql('doomed', q{
	CREATE EXTENSION microbatch;
	CREATE TABLE t (id int);
	CREATE TABLE u (id int);
	SELECT microbatch.create_pipeline('t', 't', '50 ms');
	SELECT microbatch.add_transform('t', 'copy', 'bronze', 'INSERT INTO u SELECT id FROM microbatch.t_batch');
	INSERT INTO t VALUES (1);
});
ok( $standby->poll_query_until('doomed', 'SELECT count(*) = 1 FROM u'),
	'a pipeline runs in the new database');
ok( $standby->poll_query_until('postgres',
		q{SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = 'doomed' AND backend_type LIKE 'microbatch%'}),
	'microbatch processes are connected to it');
($rc, $out, $err) = $standby->psql('postgres', 'DROP DATABASE doomed');
is($rc, 0, 'DROP DATABASE succeeds without FORCE') or diag($err);

$standby->stop;
done_testing();
