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

$node->stop;
done_testing();
