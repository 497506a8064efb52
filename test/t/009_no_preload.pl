# Without shared_preload_libraries: no background worker, a clear warning,
# and the SQL API working by hand.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('no_preload');
$node->init;
$node->start;

my ($rc, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION microbatch');
is($rc, 0, 'CREATE EXTENSION works without the preload');
like($err, qr/no background worker will run batches/,
	'CREATE EXTENSION warns that no worker will run batches');

($rc, $out, $err) = $node->psql('postgres', q{
	CREATE TABLE events (id int);
	CREATE TABLE copied (batch_id bigint, id int);
	SELECT microbatch.create_pipeline('events', 'events', '10 ms');
	SELECT microbatch.add_transform('events', 'copy', 'bronze',
		'INSERT INTO copied SELECT microbatch.current_batch_id(), id FROM microbatch.events_batch');
	INSERT INTO events SELECT generate_series(1, 5);
});
is($rc, 0, 'pipelines can be created');
like($err, qr/no background worker will run batches/,
	'create_pipeline warns too');

sleep(1);
is($node->safe_psql('postgres', 'SELECT count(*) FROM copied'),
	'0', 'nothing runs the batches by itself');
is($node->safe_psql('postgres', q{SELECT microbatch.run_batch('events')}),
	'1', 'run_batch works by hand');
is($node->safe_psql('postgres', 'SELECT count(*) FROM copied'),
	'5', 'and processes the rows');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM microbatch.workers}),
	'0', 'microbatch.workers is empty');
is( $node->safe_psql('postgres', q{
		SELECT next_run_at IS NULL FROM microbatch.pipelines}),
	't', 'no next run is scheduled');


# The statistics live in shared memory the library did not get: nothing is
# counted, and the rest of the monitoring works
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM microbatch.stat_pipelines}),
	'0', 'microbatch.stat_pipelines is empty');
is( $node->safe_psql('postgres', q{
		SELECT rows_in, rows_written FROM microbatch.batch_progress}),
	'5|5', 'microbatch.batch_progress shows the batch');
is( $node->safe_psql('postgres', q{
		SELECT rows_waiting, lag FROM microbatch.freshness}),
	'0|00:00:00', 'microbatch.freshness shows nothing waiting');
($rc, $out, $err) = $node->psql('postgres', 'SELECT microbatch.stat_reset()');
like($err, qr/microbatch statistics are not available/,
	'stat_reset says the statistics are not available');
($rc, $out, $err) = $node->psql('postgres', q{
	SELECT microbatch.drop_pipeline('events');
	DROP EXTENSION microbatch;
	CREATE EXTENSION microbatch;});
is($rc, 0, 'a pipeline and the extension can be dropped and created again');

$node->stop;
done_testing();
