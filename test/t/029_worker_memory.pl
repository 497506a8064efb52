# A batch worker's memory does not grow with the batches it runs.
#
# A worker runs for as long as batches keep coming, hundreds a second for a
# continuous pipeline, so anything a batch leaves in the worker's long-lived
# memory (TopMemoryContext, outside the batch's transaction) adds up without
# bound.  The worker's memory contexts are logged with
# pg_log_backend_memory_contexts() after a warm-up and again after a thousand
# more batches; TopMemoryContext must not have grown meanwhile.  Before the
# batch context, each batch left ~150 bytes there (the activity string set
# before its transaction), ~150 kB per thousand batches.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $node = PostgreSQL::Test::Cluster->new('worker_memory');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '60s'
microbatch.coalesce_delay = 0
max_worker_processes = 16
});
$node->start;

my $db = 'postgres';
$node->safe_psql(
	$db, q{
CREATE EXTENSION microbatch;
CREATE TABLE events (id int);
CREATE TABLE events_out (id int);
SELECT microbatch.create_pipeline('events', 'events', '0');
SELECT microbatch.add_transform('events', 'copy', 'bronze',
    'INSERT INTO events_out SELECT id FROM microbatch.events_batch');
-- one row per transaction, a little apart: about one batch each
CREATE PROCEDURE feed(first int, n int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN first .. first + n - 1 LOOP
        INSERT INTO events VALUES (i);
        COMMIT;
        PERFORM pg_sleep(0.001);
    END LOOP;
END $$;
});

# Feed n rows, wait until they are processed; returns the batches run so far.
sub feed
{
	my ($first, $n) = @_;
	$node->safe_psql($db, "CALL feed($first, $n)");
	ok( poll_until(
			$node, $db, 'SELECT count(*) FROM events_out',
			$first + $n - 1, 60),
		"rows up to $first + $n processed");
	return $node->safe_psql($db,
		q{SELECT count(*) FROM microbatch.batches WHERE status = 'committed'});
}

# The bytes TopMemoryContext of the worker uses, from its logged contexts.
sub worker_top_memory
{
	my ($pid) = @_;
	my $offset = -s $node->logfile;

	$node->safe_psql($db, "SELECT pg_log_backend_memory_contexts($pid)");
	$node->wait_for_log(qr/\[$pid\] LOG:  Grand total:/, $offset);
	my $log = substr(slurp_file($node->logfile), $offset);
	$log =~ /\[$pid\] LOG:  level: 0; TopMemoryContext: .*?; (\d+) used/
	  or die "no TopMemoryContext line for $pid in the log";
	return $1;
}

feed(1, 300);
my $pid = $node->safe_psql($db,
	q{SELECT pid FROM microbatch.workers WHERE kind = 'batch worker'});
like($pid, qr/^\d+$/, 'one batch worker');
my $batches_before = $node->safe_psql($db,
	q{SELECT count(*) FROM microbatch.batches WHERE status = 'committed'});
my $before = worker_top_memory($pid);

my $batches_after = feed(301, 1500);
my $after = worker_top_memory($pid);
is( $node->safe_psql($db,
		q{SELECT pid FROM microbatch.workers WHERE kind = 'batch worker'}),
	$pid, 'the same worker ran them');

my $batches = $batches_after - $batches_before;
cmp_ok($batches, '>=', 500, "enough batches in between ($batches)");
cmp_ok($after - $before, '<', 16 * 1024,
	"TopMemoryContext of the worker did not grow over $batches batches ($before -> $after bytes)"
);

$node->stop;
done_testing();
