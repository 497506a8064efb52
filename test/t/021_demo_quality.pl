# The demo pipeline (test/demo/clickstream.sql) as make demo builds it, fed
# the benchmark's generator with its malformed rows and re-sent events, with
# batches run by hand: every staged row ends in bronze or in the quarantine,
# exactly once, the quarantine holds exactly the malformed rows with the
# right expectation names, the reconciliation of test/demo/queries.sql
# holds, and a replay of every batch changes neither gold nor the
# quarantine.  make test does not run make demo; this keeps the demo's use
# of expectations and audits honest.

use strict;
use warnings;

use FindBin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = "$FindBin::RealBin/../..";

my $node = PostgreSQL::Test::Cluster->new('demo_quality');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'microbatch'\nmicrobatch.enabled = off\n");
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE clickstream');

my ($rc, $out, $err) = $node->psql(
	'clickstream', undef,
	extra_params => [
		'-v', 'ON_ERROR_STOP=1', '-f', "$root/test/demo/clickstream.sql",
		'-f', "$root/test/bench/gen.sql"
	]);
is($rc, 0, 'the demo and the generator load') or diag($err);

is( $node->safe_psql(
		'clickstream',
		q{SELECT string_agg(expectation || ':' || on_violation, ',' ORDER BY expectation)
		    FROM microbatch.expectations}),
	'accepted_values_event_type:warn,amount_is_number:drop,email_has_domain:warn,'
	  . 'not_null_user_id:drop,payload_is_json:drop',
	'the demo has five expectations');

# Four loads of 5,000 rows, each processed by one batch.
for my $seed (1 .. 4)
{
	$node->safe_psql(
		'clickstream', qq{
INSERT INTO staging.events (event_id, user_id, email, url, event_type, amount, payload)
SELECT * FROM bench.gen_events(5000, $seed)});
	is($node->safe_psql('clickstream', q{SELECT microbatch.run_batch('clickstream')}),
		$seed, "batch $seed commits");
}

# What the expectations must have found, computed independently.
is( $node->safe_psql(
		'clickstream', q{
SELECT count(*) > 0,
       count(*) = (SELECT count(*) FROM microbatch.quarantine)
  FROM staging.events
 WHERE user_id IS NULL OR amount = '12,50' OR length(payload) <= 25}),
	't|t', 'the quarantine holds exactly the malformed rows');
is( $node->safe_psql(
		'clickstream', q{
SELECT count(*) FROM microbatch.quarantine q
  JOIN staging.events s ON s.ingest_id = (q.row_data->>'ingest_id')::bigint
 WHERE (s.user_id IS NULL) <> ('not_null_user_id' = ANY (q.expectations))
    OR (s.amount = '12,50') <> ('amount_is_number' = ANY (q.expectations))
    OR (length(s.payload) <= 25) <> ('payload_is_json' = ANY (q.expectations))}),
	'0', 'each quarantined row names exactly the expectations it failed');
is( $node->safe_psql(
		'clickstream', q{
SELECT sum(rows_dropped) = (SELECT count(*) FROM microbatch.quarantine)
  FROM microbatch.batches WHERE status = 'committed'}),
	't', 'the ledger counts the dropped rows');

my $reconciliation = $node->safe_psql('clickstream',
	q{SELECT ok FROM (} . reconciliation_query() . q{) r});
is($reconciliation, 't', 'staging = bronze + quarantine; silver = fact');

my $digest = q{
SELECT md5((SELECT string_agg(f::text, ';' ORDER BY f::text) FROM gold.page_events_daily f)
        || (SELECT string_agg(q.row_data::text || q.batch_id, ';' ORDER BY q.row_data::text)
              FROM microbatch.quarantine q))};
my $before = $node->safe_psql('clickstream', $digest);
$node->safe_psql('clickstream',
	q{SELECT microbatch.replay_batch('clickstream', b) FROM generate_series(1, 4) b});
is($node->safe_psql('clickstream', $digest),
	$before, 'replaying every batch changes neither gold nor the quarantine');
is( $node->safe_psql(
		'clickstream',
		q{SELECT count(*) FROM microbatch.expectation_results WHERE batch_id = 1}),
	'6', 'one result per check and batch after the replays');

$node->stop;
done_testing();

# The reconciliation query of test/demo/queries.sql, as it is there.
sub reconciliation_query
{
	open my $fh, '<', "$root/test/demo/queries.sql" or die $!;
	local $/;
	my $text = <$fh>;
	close $fh;
	$text =~ /(WITH loaded AS .*?FROM loaded l, user_mismatches m)/s
	  or die 'no reconciliation query in queries.sql';
	return $1;
}
