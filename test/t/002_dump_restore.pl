# A pipeline survives pg_dump and a restore into a new database.
#
# The catalog, the ledger and the source rows' tracking xids are all data, so
# a restored database must carry on where the original stopped: same
# pipeline, owner and transforms, same batch history, and the next batch
# picks up exactly the rows no batch has seen, neither re-processing old rows
# nor skipping rows that were waiting at dump time.  The restore goes into a
# database of the same cluster, so transaction ids remain comparable.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump_restore');
$node->init;
# Batches are run by hand here; background workers would race for them.
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'microbatch'\nmicrobatch.enabled = off\n");
$node->start;

# Roles are cluster-wide, so the restored pipeline can keep its owner.  A
# non-superuser owner also checks that ownership is restored, not replaced
# by the restoring superuser.
$node->safe_psql('postgres', q{CREATE ROLE etl LOGIN});
$node->safe_psql('postgres', q{CREATE DATABASE shop_src});
$node->safe_psql(
	'shop_src', q{
CREATE EXTENSION microbatch;
GRANT CREATE ON SCHEMA public TO etl;
});

# Everything pipeline-related is done by the owner.
sub etl_psql
{
	my ($db, $sql) = @_;
	return $node->safe_psql($db, $sql, extra_params => [ '-U', 'etl' ]);
}

etl_psql(
	'shop_src', q{
CREATE TABLE events (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind   text NOT NULL,
    amount int NOT NULL
);
-- bronze: one copy of each row per batch that processed it; a duplicate
-- id would be a row processed twice.
CREATE TABLE event_log (
    batch_id bigint NOT NULL,
    id       bigint NOT NULL,
    amount   int NOT NULL
);
-- gold: running totals, which double counting would inflate.
CREATE TABLE kind_totals (
    kind  text PRIMARY KEY,
    n     bigint NOT NULL,
    total bigint NOT NULL
);
SELECT microbatch.create_pipeline('shop', 'events');
SELECT microbatch.add_transform('shop', 'log_events', 'bronze', $$
    INSERT INTO event_log (batch_id, id, amount)
    SELECT microbatch.current_batch_id(), id, amount FROM microbatch.shop_batch
$$);
SELECT microbatch.add_transform('shop', 'kind_totals', 'gold', $$
    INSERT INTO kind_totals (kind, n, total)
    SELECT kind, count(*), sum(amount) FROM microbatch.shop_batch GROUP BY kind
    ON CONFLICT (kind) DO UPDATE
    SET n = kind_totals.n + excluded.n, total = kind_totals.total + excluded.total
$$);
SELECT microbatch.add_expectation('shop', 'positive', 'amount > 0');
SELECT microbatch.add_audit('shop', 'logged_once', 'bronze',
    'SELECT id FROM event_log GROUP BY id HAVING count(*) > 1', 'warn');
});

# Two batches of history, then rows that are committed but not yet batched
# when the dump is taken.
etl_psql('shop_src',
	q{INSERT INTO events (kind, amount) VALUES ('a', 1), ('b', 10), ('a', 100)});
is(etl_psql('shop_src', q{SELECT microbatch.run_batch('shop')}),
	'1', 'first batch before the dump');
etl_psql('shop_src',
	q{INSERT INTO events (kind, amount) VALUES ('b', 1000), ('c', 10000)});
is(etl_psql('shop_src', q{SELECT microbatch.run_batch('shop')}),
	'2', 'second batch before the dump');
etl_psql('shop_src',
	q{INSERT INTO events (kind, amount) VALUES ('a', 100000), ('c', 1000000)});

# What the restored database must reproduce.  microbatch.batch is read
# directly (as superuser) to compare the windows too, not just the counts.
my %queries = (
	pipelines => q{
SELECT pipeline, source, owner, batch_interval, max_batch_rows, state,
       last_batch_id, last_batch_at, rows_waiting, created_at
  FROM microbatch.pipelines ORDER BY pipeline},
	transforms => q{
SELECT pipeline, transform, layer, run_order, command, search_path, created_at
  FROM microbatch.transforms ORDER BY pipeline, run_order},
	batches => q{SELECT * FROM microbatch.batches ORDER BY pipeline, batch_id, attempt},
	ledger => q{
SELECT batch_id, attempt, status, lower_snapshot, upper_snapshot,
       xid_from, xid_to, rows_in
  FROM microbatch.batch ORDER BY batch_id, attempt},
	targets => q{
SELECT 'log', batch_id, id, amount FROM event_log
UNION ALL
SELECT 'total', n, NULL, total FROM kind_totals
ORDER BY 1, 2, 3, 4},
	source => q{SELECT id, kind, amount, microbatch_xid FROM events ORDER BY id},
	expectations => q{SELECT * FROM microbatch.expectations ORDER BY pipeline, expectation},
	audits => q{SELECT * FROM microbatch.audits ORDER BY pipeline, audit},
	results => q{SELECT * FROM microbatch.expectation_results ORDER BY pipeline, batch_id, kind, name},);
my %before;
$before{$_} = $node->safe_psql('shop_src', $queries{$_}) for keys %queries;

is( $node->safe_psql(
		'shop_src', q{SELECT rows_waiting FROM microbatch.pipelines WHERE pipeline = 'shop'}),
	'2',
	'two rows are waiting at dump time');

# Plain format restored with ON_ERROR_STOP: an error in any statement of the
# restore fails the test with its text, instead of being skipped over.
sub dump_and_restore
{
	my ($src, $dst, $what) = @_;
	my $file = $node->basedir . "/$src.sql";
	$node->command_ok(
		[ 'pg_dump', '-h', $node->host, '-p', $node->port, '-f', $file, $src ],
		"pg_dump of $what");
	$node->safe_psql('postgres', qq{CREATE DATABASE $dst});
	my ($out, $err) = run_command(
		[
			'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
			'-h', $node->host, '-p', $node->port,
			'-d', $dst, '-f', $file
		]);
	is($err, '', "the restore of $what prints no error or warning");
}
dump_and_restore('shop_src', 'shop_dst', 'the source database');
is( $node->safe_psql('shop_dst',
		q{SELECT count(*) FROM pg_extension WHERE extname = 'microbatch'}),
	'1', 'restored database has the extension');

# Catalog and history, compared row for row.
for my $what (qw(pipelines transforms batches ledger targets source expectations audits results))
{
	is($node->safe_psql('shop_dst', $queries{$what}),
		$before{$what}, "restored $what match the original");
}
is( $node->safe_psql(
		'shop_dst', q{SELECT owner FROM microbatch.pipelines WHERE pipeline = 'shop'}),
	'etl',
	'restored pipeline is owned by etl');
is( $node->safe_psql(
		'shop_dst', q{SELECT string_agg(transform, ',' ORDER BY run_order)
                        FROM microbatch.transforms WHERE pipeline = 'shop'}),
	'log_events,kind_totals',
	'restored transforms are listed in run order');

# The batch view: same relation the catalog points to, same owner, same
# columns as the source minus the tracking column.
is( $node->safe_psql(
		'shop_dst', q{
SELECT p.batch_view = 'microbatch.shop_batch'::regclass,
       pg_get_userbyid(c.relowner), c.relkind
  FROM microbatch.pipeline p JOIN pg_class c ON c.oid = p.batch_view
 WHERE p.pipeline_name = 'shop'}),
	't|etl|v',
	'batch view exists, is the one in the catalog and belongs to etl');
is( $node->safe_psql(
		'shop_dst', q{
SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute
 WHERE attrelid = 'microbatch.shop_batch'::regclass AND attnum > 0}),
	'id,kind,amount',
	'batch view has the source columns');
is( $node->safe_psql(
		'shop_dst', q{SELECT count(*) FROM microbatch.shop_batch}),
	'0', 'batch view is empty outside a batch');

# The tracking column keeps its default, so new rows are tracked; and its
# index, so sweeps stay cheap.
is( $node->safe_psql(
		'shop_dst', q{
SELECT a.attnotnull, pg_get_expr(d.adbin, d.adrelid), format_type(a.atttypid, a.atttypmod)
  FROM pg_attribute a
  JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = 'events'::regclass AND a.attname = 'microbatch_xid'}),
	't|pg_current_xact_id()|xid8',
	'microbatch_xid keeps its NOT NULL and pg_current_xact_id() default');
is( $node->safe_psql(
		'shop_dst', q{
SELECT count(*) FROM pg_index i
 WHERE i.indrelid = 'events'::regclass
   AND i.indkey[0] = (SELECT attnum FROM pg_attribute
                       WHERE attrelid = 'events'::regclass AND attname = 'microbatch_xid')}),
	'1',
	'microbatch_xid keeps its index');

# The ledger's windows still select the same rows: replaying batch 2 finds
# its rows (replay checks the count) and runs; rolled back, it leaves nothing.
is( $node->safe_psql(
		'shop_dst', q{
BEGIN;
SELECT microbatch.replay_batch('shop', 2);
ROLLBACK;}, extra_params => [ '-U', 'etl' ]),
	'2',
	'restored batch 2 can be replayed over its 2 rows');

# New rows in the restored database: the next batch is 3 and takes exactly
# the two rows waiting since the dump plus these, and nothing processed
# before the dump.
etl_psql('shop_dst',
	q{INSERT INTO events (kind, amount) VALUES ('b', 10000000), ('d', 100000000)});
is( $node->safe_psql(
		'shop_dst', q{SELECT rows_waiting FROM microbatch.pipelines WHERE pipeline = 'shop'}),
	'4',
	'rows waiting in the restored database: 2 from before the dump, 2 new');
is(etl_psql('shop_dst', q{SELECT microbatch.run_batch('shop')}),
	'3', 'first batch after the restore gets the next contiguous id');
is( $node->safe_psql(
		'shop_dst', q{SELECT rows_in FROM microbatch.batches WHERE pipeline = 'shop' AND batch_id = 3}),
	'4',
	'batch 3 processed 4 rows');
is( $node->safe_psql(
		'shop_dst', q{
SELECT string_agg(kind || ':' || name || ':' || coalesce(passed_rows::text, '-') || ':' || failed_rows, ',' ORDER BY kind)
  FROM microbatch.expectation_results WHERE pipeline = 'shop' AND batch_id = 3}),
	'audit:logged_once:-:0,expectation:positive:4:0',
	'the restored expectation and audit checked batch 3');
is(etl_psql('shop_dst', q{SELECT microbatch.run_batch('shop')}),
	'', 'nothing left after batch 3');

is( $node->safe_psql(
		'shop_dst', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM event_log WHERE batch_id = 3}),
	'6,7,8,9',
	'batch 3 logged exactly the rows no batch had seen');
is( $node->safe_psql(
		'shop_dst', q{
SELECT count(*), count(DISTINCT id), (SELECT count(*) FROM events)
  FROM event_log}),
	'9|9|9',
	'every event logged exactly once');
# Amounts are distinct powers of ten, so any row counted twice or missed
# shows up as a wrong digit.
is( $node->safe_psql(
		'shop_dst', q{SELECT string_agg(format('%s:%s:%s', kind, n, total), ' ' ORDER BY kind) FROM kind_totals}),
	'a:3:100101 b:3:10001010 c:2:1010000 d:1:100000000',
	'kind_totals has no double counting');
is( $node->safe_psql(
		'shop_dst', q{
SELECT count(*) FROM (
    SELECT kind, count(*) AS n, sum(amount) AS total FROM events GROUP BY kind
    EXCEPT
    SELECT kind, n, total FROM kind_totals) d}),
	'0',
	'kind_totals agrees with the events table');
is( $node->safe_psql(
		'shop_dst', q{
SELECT string_agg(batch_id::text, ',' ORDER BY batch_id)
  FROM microbatch.batches WHERE pipeline = 'shop' AND status = 'committed'}),
	'1,2,3',
	'restored history continues with contiguous batch ids');

# A data-only restore into the live copy would bring rows with the original
# database's tracking values, which no window of the copy's pipeline would
# hold: the constraint refuses them, and nothing is loaded.
my $rows_before = $node->safe_psql('shop_dst', q{SELECT count(*) FROM events});
my $data_file = $node->basedir . '/events_data.sql';
$node->command_ok(
	[
		'pg_dump', '-h', $node->host, '-p', $node->port, '--data-only',
		'-t', 'events', '-f', $data_file, 'shop_src'
	],
	'pg_dump --data-only of the source table');
my ($data_out, $data_err) = run_command(
	[
		'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
		'-h', $node->host, '-p', $node->port,
		'-d', 'shop_dst', '-f', $data_file
	]);
like($data_err,
	qr/microbatch_xid of a row of table "events" must be the id of the transaction writing the row/,
	'a data-only restore into a live source is refused');
is($node->safe_psql('shop_dst', q{SELECT count(*) FROM events}),
	$rows_before, 'and loads no row');

# The original database is independent of its copy: its pipeline still has
# the two waiting rows and continues with its own batch 3.
is(etl_psql('shop_src', q{SELECT microbatch.run_batch('shop')}),
	'3', 'original database continues on its own');
is( $node->safe_psql(
		'shop_src', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM event_log WHERE batch_id = 3}),
	'6,7',
	'original batch 3 took only its own waiting rows');

# A source with a BRIN tracking index (set_tracking_index) keeps it through
# the dump, with the extension's operator class, and its pipeline takes the
# rows waiting at dump time, once.
$node->safe_psql('postgres', q{CREATE DATABASE clicks_src});
$node->safe_psql('clicks_src',
	q{CREATE EXTENSION microbatch; GRANT CREATE ON SCHEMA public TO etl;});
etl_psql(
	'clicks_src', q{
CREATE TABLE clicks (id int NOT NULL);
CREATE TABLE click_log (batch_id bigint NOT NULL, id int NOT NULL);
SELECT microbatch.create_pipeline('clicks', 'clicks');
SELECT microbatch.set_tracking_index('clicks', 'brin');
SELECT microbatch.add_transform('clicks', 'log', 'bronze', $$
    INSERT INTO click_log SELECT microbatch.current_batch_id(), id FROM microbatch.clicks_batch
$$);
INSERT INTO clicks SELECT generate_series(1, 3);
SELECT microbatch.run_batch('clicks');
INSERT INTO clicks SELECT generate_series(4, 5);
});
dump_and_restore('clicks_src', 'clicks_dst', 'a database with a BRIN-tracked source');
is( $node->safe_psql(
		'clicks_dst', q{
SELECT string_agg(am.amname || ' ' || opc.opcname, ',')
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_am am ON am.oid = c.relam JOIN pg_opclass opc ON opc.oid = i.indclass[0]
 WHERE i.indrelid = 'clicks'::regclass}),
	'brin xid8_minmax_ops',
	'the restored source has its BRIN tracking index, and no other');
is(etl_psql('clicks_dst', q{SELECT microbatch.run_batch('clicks')}),
	'2', 'the restored BRIN-tracked pipeline runs its next batch');
is( $node->safe_psql(
		'clicks_dst', q{SELECT string_agg(batch_id || ':' || id, ',' ORDER BY id) FROM click_log}),
	'1:1,1:2,1:3,2:4,2:5',
	'and it took the rows waiting at dump time, each once');

$node->stop;

done_testing();
