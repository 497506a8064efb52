# More pipelines than workers: every pipeline gets its turn, and running out
# of background worker slots is said once, not at every attempt.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $pipelines = 6;

my $node = PostgreSQL::Test::Cluster->new('worker_slots');
$node->init;
# Slots for the logical replication launcher, ours, one scheduler and a
# single batch worker, while microbatch.max_workers asks for more: the
# scheduler must cope.
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '200ms'
microbatch.max_workers = 4
max_worker_processes = 4
max_parallel_workers = 0
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION microbatch');
for my $i (1 .. $pipelines)
{
	$node->safe_psql('postgres', qq{
		CREATE TABLE src_$i (id int);
		CREATE TABLE dst_$i (batch_id bigint, id int);
		SELECT microbatch.create_pipeline('p$i', 'src_$i', '100 ms');
		SELECT microbatch.add_transform('p$i', 'copy', 'bronze',
			'INSERT INTO dst_$i SELECT microbatch.current_batch_id(), id FROM microbatch.p${i}_batch');
	});
}

# Three rounds of rows for every pipeline, each waiting for the previous.
for my $round (1 .. 3)
{
	for my $i (1 .. $pipelines)
	{
		$node->safe_psql('postgres',
			"INSERT INTO src_$i SELECT g FROM generate_series($round * 100, $round * 100 + 9) g");
	}
	my $expected = $round * 10 * $pipelines;
	my $union = join(' + ',
		map { "(SELECT count(*) FROM dst_$_)" } 1 .. $pipelines);
	ok($node->poll_query_until('postgres', "SELECT $union = $expected"),
		"round $round: every pipeline processed its rows");
}

is( $node->safe_psql('postgres', q{
		SELECT count(DISTINCT pipeline) FROM microbatch.batches WHERE status = 'committed'}),
	$pipelines,
	'every pipeline committed batches');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM microbatch.workers WHERE kind = 'batch worker'}),
	'1',
	'a single batch worker did it all');

# The shortage is said in SQL too, to whoever changes a pipeline, not only
# in the log: a slow batch holds the only batch worker while another
# pipeline is due.
$node->safe_psql('postgres', q{
	CREATE TABLE slow_src (id int);
	SELECT microbatch.create_pipeline('slow', 'slow_src', '100 ms');
	SELECT microbatch.add_transform('slow', 'sleep', 'bronze',
		'SELECT pg_sleep(3) FROM microbatch.slow_batch LIMIT 1');
	INSERT INTO slow_src VALUES (1);
});
ok( $node->poll_query_until(
		'postgres', q{SELECT count(*) FROM microbatch.workers WHERE pipeline = 'slow'}, '1'),
	'a slow batch holds the batch worker');
$node->safe_psql('postgres', 'INSERT INTO src_1 VALUES (999)');
my $warned = '';
for (1 .. 50)
{
	my ($ret, $out, $err) = $node->psql('postgres',
		q{SELECT microbatch.alter_pipeline('p1', batch_interval => '100 ms')});
	if ($err =~ /(WARNING:  no background worker slot has been free for the batches of database "postgres" since .*)/)
	{
		$warned = $1;
		last;
	}
	select(undef, undef, undef, 0.1);
}
like($warned, qr/WARNING/, 'alter_pipeline says in SQL that no worker slot is free');
# Within a few naptimes of the 3-second batch: a failed start of a second
# worker is no run, so it neither postpones the pipeline's check nor takes
# its turn (it waited up to minutes while other pipelines' checks took the
# worker each time it was due).
ok(poll_until($node, 'postgres', 'SELECT count(*) = 31 FROM dst_1', 't', 15),
	'the waiting pipeline runs once the slow batch is over');

my $log = slurp_file($node->logfile);
my $warnings = () = $log =~ /could not start a batch worker/g;
cmp_ok($warnings, '<=', 1,
	'running out of worker slots is logged at most once a minute');

$node->stop;
done_testing();
