# More pipelines than workers: every pipeline gets its turn, and running out
# of background worker slots is said once, not at every attempt.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

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

my $log = slurp_file($node->logfile);
my $warnings = () = $log =~ /could not start a batch worker/g;
cmp_ok($warnings, '<=', 1,
	'running out of worker slots is logged at most once a minute');

$node->stop;
done_testing();
