# Pipelines restored into another cluster.
#
# The ledger's snapshots and the source rows' microbatch_xid values are
# transaction ids of the cluster they were made in.  Restored into another
# cluster (another system identifier, unrelated transaction ids) they mean
# nothing there, whether that cluster's ids are behind the original's or
# ahead of them, so until microbatch.rebind_pipeline():
#
#   (1) run_batch() and the background workers refuse to run the restored
#       pipelines (55000 "pipeline ... was restored from another cluster",
#       HINT naming rebind_pipeline), and nothing is processed;
#   (2) inserts into the restored sources are refused (55000 "table ... was
#       restored from another cluster ...");
#   (3) rebind_pipeline() rebinds every pipeline of the source; afterwards
#       each pipeline processes exactly the rows it had not processed in the
#       original cluster, once, and no row of a batch it had committed there
#       (its NOTICE counts the rows some pipeline had not processed); new
#       rows are processed exactly once, by run_batch() and by the workers;
#       gold totals equal the ground truth;
#   (4) replay_batch() of a batch recorded in the original cluster is
#       refused; a batch run after the rebind can be replayed;
#   (5) all of it in both variants: a fresh cluster whose transaction ids
#       are lower than the original's, and one whose ids were moved far
#       above them with pg_resetwal -x.
#
# The original cluster has two pipelines on one source at different
# positions (shop: three batches, with a bronze copy and gold running
# totals; audit: one batch), a row whose transaction was still open at
# shop's last batch, rows committed after their last batches, and a
# pipeline capped by max_batch_rows whose position is in the middle of a cut
# window; and a partitioned source with a pipeline on the partitioned table
# and another on one of its partitions, which share that partition's rows.
# A restore into another database of the same cluster keeps working without
# a rebind (002_dump_restore.pl covers it in depth).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

# Shared polling helpers (test/t/MicrobatchTest.pm); prove puts only the top
# directory in @INC, so look next to this script.
use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

# Run SQL without dying on errors.  Returns a hash: ok, out, and, parsed
# from psql's verbose messages, error ("SQLSTATE: message" of the first
# ERROR), its hint and detail, and notices ("SQLSTATE: message", followed
# by "\nDETAIL: ..." if the notice has one).
sub run_sql
{
	my ($node, $db, $sql, %opt) = @_;
	my ($out, $err) = ('', '');
	my @extra = ('-v', 'VERBOSITY=verbose');
	push @extra, '-U', $opt{user} if defined $opt{user};
	my $rc = $node->psql(
		$db, $sql,
		stdout => \$out,
		stderr => \$err,
		extra_params => \@extra);
	my %r = (ok => $rc == 0, out => $out, err => $err, error => '',
		hint => '', detail => '', notices => []);
	my $last = '';
	for my $line (split /\n/, $err)
	{
		if ($line =~ /^(?:psql:[^:]*:\d+: )?(ERROR|FATAL|NOTICE|WARNING):\s+(\w{5}): (.*)$/)
		{
			$last = $1;
			if ($1 eq 'NOTICE' || $1 eq 'WARNING')
			{
				push @{ $r{notices} }, "$2: $3";
			}
			elsif ($r{error} eq '')
			{
				$r{error} = "$2: $3";
			}
		}
		elsif ($line =~ /^(HINT|DETAIL):\s+(.*)$/)
		{
			my ($field, $text) = (lc $1, $2);
			if (($last eq 'NOTICE' || $last eq 'WARNING') && $field eq 'detail')
			{
				$r{notices}[-1] .= "\nDETAIL: $text";
			}
			elsif (($last eq 'ERROR' || $last eq 'FATAL') && $r{$field} eq '')
			{
				$r{$field} = $text;
			}
		}
	}
	$r{error} = "?????: $err" if !$r{ok} && $r{error} eq '';
	return %r;
}

# stdout of a statement, or "ERROR SQLSTATE: message" if it failed
sub sql_value
{
	my %r = run_sql(@_);
	return $r{ok} ? $r{out} : "ERROR $r{error}";
}

#
# The original cluster.  Batches are run by hand there.
#
my $c1 = PostgreSQL::Test::Cluster->new('original');
$c1->init;
$c1->append_conf('postgresql.conf',
	"shared_preload_libraries = 'microbatch'\nmicrobatch.enabled = off\n");
$c1->start;

$c1->safe_psql('postgres', q{CREATE ROLE etl LOGIN});
$c1->safe_psql('postgres', q{CREATE DATABASE shop});
$c1->safe_psql(
	'shop', q{
CREATE EXTENSION microbatch;
GRANT CREATE ON SCHEMA public TO etl;
});

# Move the original's transaction ids well past what a fresh cluster uses
# up to the end of a restore, so that the fresh cluster is behind.
$c1->safe_psql(
	'shop', q{
DO $$
BEGIN
    FOR i IN 1 .. 3000 LOOP
        PERFORM pg_current_xact_id();
        COMMIT;
    END LOOP;
END $$});

sub etl1
{
	my ($sql) = @_;
	return $c1->safe_psql('shop', $sql, extra_params => [ '-U', 'etl' ]);
}

etl1(
	q{
CREATE TABLE events (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind   text NOT NULL,
    amount bigint NOT NULL
);
-- shop's bronze: one line per row per batch that processed it
CREATE TABLE event_log (batch_id bigint NOT NULL, id bigint NOT NULL, amount bigint NOT NULL);
-- shop's gold: running totals, which any row processed twice inflates
CREATE TABLE kind_totals (kind text PRIMARY KEY, n bigint NOT NULL, total bigint NOT NULL);
-- audit's bronze
CREATE TABLE audit_log (batch_id bigint NOT NULL, id bigint NOT NULL);

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
SELECT microbatch.create_pipeline('audit', 'events');
SELECT microbatch.add_transform('audit', 'log', 'bronze', $$
    INSERT INTO audit_log (batch_id, id)
    SELECT microbatch.current_batch_id(), id FROM microbatch.audit_batch
$$);

CREATE TABLE readings (id int PRIMARY KEY, v bigint NOT NULL);
CREATE TABLE reading_log (batch_id bigint NOT NULL, id int NOT NULL);
-- meter's gold: each batch's contribution under its batch id
CREATE TABLE meter_totals (batch_id bigint PRIMARY KEY, n bigint NOT NULL, total bigint NOT NULL);
SELECT microbatch.create_pipeline('meter', 'readings', max_batch_rows => 2);
-- replay-safe: a replay replaces the batch's lines
SELECT microbatch.add_transform('meter', 'log', 'bronze', $$
    WITH earlier AS (DELETE FROM reading_log WHERE batch_id = microbatch.current_batch_id())
    INSERT INTO reading_log (batch_id, id)
    SELECT microbatch.current_batch_id(), id FROM microbatch.meter_batch
$$);
SELECT microbatch.add_transform('meter', 'totals', 'gold', $$
    INSERT INTO meter_totals (batch_id, n, total)
    SELECT microbatch.current_batch_id(), count(*), sum(v) FROM microbatch.meter_batch
    ON CONFLICT (batch_id) DO UPDATE SET n = excluded.n, total = excluded.total
$$);

CREATE TABLE m (id int NOT NULL, part int NOT NULL) PARTITION BY LIST (part);
CREATE TABLE m_1 PARTITION OF m FOR VALUES IN (1);
CREATE TABLE m_2 PARTITION OF m FOR VALUES IN (2);
-- m_3: a row every pipeline reading it processed; m_4: no rows at all
CREATE TABLE m_3 PARTITION OF m FOR VALUES IN (3);
CREATE TABLE m_4 PARTITION OF m FOR VALUES IN (4);
CREATE TABLE m_log (pipeline text NOT NULL, batch_id bigint NOT NULL, id int NOT NULL);
SELECT microbatch.create_pipeline('par', 'm');
SELECT microbatch.add_transform('par', 'log', 'bronze', $$
    INSERT INTO m_log SELECT 'par', microbatch.current_batch_id(), id FROM microbatch.par_batch
$$);
SELECT microbatch.create_pipeline('leaf', 'm_1');
SELECT microbatch.add_transform('leaf', 'log', 'bronze', $$
    INSERT INTO m_log SELECT 'leaf', microbatch.current_batch_id(), id FROM microbatch.leaf_batch
$$);
});

# Amounts are distinct powers of two: a row counted twice or missed shows
# in the totals.  Ids 1-3: shop 1 and audit 1; 4-5: shop 2; 6, 7 (two
# transactions): shop 3; 8: inserted by a transaction still open during
# shop 3, committed after it; 9, 10 (two transactions): committed after
# shop 3.  So at dump time shop has not processed 8-10, audit 4-10.
etl1(q{INSERT INTO events (kind, amount) VALUES ('a', 1), ('b', 2), ('a', 4)});
is(etl1(q{SELECT microbatch.run_batch('shop')}), '1', 'original: shop batch 1');
is(etl1(q{SELECT microbatch.run_batch('audit')}), '1', 'original: audit batch 1');
etl1(q{INSERT INTO events (kind, amount) VALUES ('b', 8), ('c', 16)});
is(etl1(q{SELECT microbatch.run_batch('shop')}), '2', 'original: shop batch 2');
etl1(q{INSERT INTO events (kind, amount) VALUES ('a', 32)});
etl1(q{INSERT INTO events (kind, amount) VALUES ('c', 64)});
my $open = $c1->background_psql('shop', extra_params => [ '-U', 'etl' ]);
$open->query_safe(q{BEGIN; INSERT INTO events (kind, amount) VALUES ('g', 8192)});
is(etl1(q{SELECT microbatch.run_batch('shop')}), '3', 'original: shop batch 3');
$open->query_safe(q{COMMIT});
$open->quit;
is(etl1(q{SELECT string_agg(id::text, ',' ORDER BY id) FROM event_log WHERE batch_id = 3}),
	'6,7', 'original: shop batch 3 did not take the row of the open transaction');
etl1(q{INSERT INTO events (kind, amount) VALUES ('a', 128)});
etl1(q{INSERT INTO events (kind, amount) VALUES ('d', 256)});

# meter: five transactions of one row; capped at two rows, batch 1 takes
# readings 1 and 2, batch 2 readings 3 and 4, and reading 5 is still to
# come in the same cut window.  Reading 6 commits after that window.
etl1("INSERT INTO readings VALUES ($_, " . 2**($_ - 1) . ")") for 1 .. 5;
is(etl1(q{SELECT microbatch.run_batch('meter')}), '1', 'original: meter batch 1');
is(etl1(q{SELECT microbatch.run_batch('meter')}), '2', 'original: meter batch 2');
etl1(q{INSERT INTO readings VALUES (6, 32)});

# m: par processes 1, 2 and 9 (in m_3); leaf 1, 2, 3 (all in m_1);
# waiting at dump time: par 3-6, leaf 5.
etl1(q{INSERT INTO m VALUES (1, 1), (2, 1), (9, 3)});
is(etl1(q{SELECT microbatch.run_batch('par')}), '1', 'original: par batch 1');
etl1(q{INSERT INTO m VALUES (3, 1), (4, 2)});
is(etl1(q{SELECT microbatch.run_batch('leaf')}), '1', 'original: leaf batch 1');
etl1(q{INSERT INTO m VALUES (5, 1), (6, 2)});
is( $c1->safe_psql(
		'shop', q{
SELECT string_agg(format('%s:%s:%s', b.batch_id, b.rows_in, b.xid_to IS NOT NULL), ',' ORDER BY b.batch_id)
  FROM microbatch.batch b JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE p.pipeline_name = 'meter'}),
	'1:2:t,2:2:t',
	'original: meter stands in the middle of a cut window');
is( $c1->safe_psql(
		'shop', q{
SELECT string_agg(format('%s:%s', pipeline, rows_waiting), ',' ORDER BY pipeline)
  FROM microbatch.pipelines}),
	'audit:7,leaf:1,meter:2,par:4,shop:3',
	'original: rows waiting at dump time');

# What the original processed, to compare with the restored copies before
# their rebind.
my $targets_sql = q{
SELECT 'event_log', batch_id, id, amount FROM event_log
UNION ALL SELECT 'kind_totals', n, NULL, total FROM kind_totals
UNION ALL SELECT 'audit_log', batch_id, id, NULL FROM audit_log
UNION ALL SELECT 'reading_log', batch_id, id, NULL FROM reading_log
UNION ALL SELECT 'meter_totals', batch_id, n, total FROM meter_totals
UNION ALL SELECT 'm_log ' || pipeline, batch_id, id, NULL FROM m_log
ORDER BY 1, 2, 3, 4};
my $committed_sql = q{
SELECT string_agg(format('%s:%s', pipeline, batch_id), ',' ORDER BY pipeline, batch_id)
  FROM microbatch.batches WHERE status = 'committed'};
my $targets_before = $c1->safe_psql('shop', $targets_sql);
my $committed_before = $c1->safe_psql('shop', $committed_sql);
is($committed_before, 'audit:1,leaf:1,meter:1,meter:2,par:1,shop:1,shop:2,shop:3',
	'original: committed batches');

# The original's transaction ids: those of the restored rows, and where it
# stands now.
my ($c1_min_row_xid, $c1_max_row_xid) = split /\|/, $c1->safe_psql(
	'shop', q{
SELECT min(x::text::bigint), max(x::text::bigint) FROM (
    SELECT microbatch_xid FROM events UNION ALL SELECT microbatch_xid FROM readings) s(x)});
my $c1_next_xid = $c1->safe_psql('shop', q{SELECT pg_current_xact_id()});
my $c1_sysid = $c1->safe_psql('shop', q{SELECT system_identifier FROM pg_control_system()});
note("original cluster: rows carry xids $c1_min_row_xid..$c1_max_row_xid, next xid $c1_next_xid");

my $dump_file = $c1->basedir . '/shop.dump';
$c1->command_ok(
	[ 'pg_dump', '-Fc', '-h', $c1->host, '-p', $c1->port, '-f', $dump_file, 'shop' ],
	'pg_dump -Fc of the original database');

# pg_restore of the dump into database $db of $node, which must not exist
sub restore_into
{
	my ($node, $db) = @_;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	my ($out, $err) = run_command(
		[
			'pg_restore', '--exit-on-error', '-h', $node->host,
			'-p', $node->port, '-d', $db, $dump_file
		]);
	return $err;
}

#
# Same cluster, another database: no rebind, the pipelines carry on.
#
is(restore_into($c1, 'shop_copy'), '', 'restore into another database of the same cluster');
is( sql_value($c1, 'shop_copy', q{SELECT microbatch.run_batch('shop')}, user => 'etl'),
	'4', 'same cluster: the restored pipeline runs its next batch without a rebind');
is( $c1->safe_psql(
		'shop_copy', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM event_log WHERE batch_id = 4}),
	'8,9,10',
	'same cluster: it takes exactly the rows waiting at dump time');
is( sql_value($c1, 'shop_copy', q{INSERT INTO events (kind, amount) VALUES ('z', 0)}, user => 'etl'),
	'', 'same cluster: the restored source takes inserts');
like( sql_value($c1, 'shop_copy', q{SELECT microbatch.rebind_pipeline('shop')}, user => 'etl'),
	qr/^ERROR 55000: pipeline "shop" belongs to this cluster already/,
	'same cluster: rebind_pipeline() refuses, there is nothing to rebind');
$c1->safe_psql('postgres', 'DROP DATABASE shop_copy');

#
# Another cluster
#
sub check_restored_cluster
{
	my ($variant, $xid_jump) = @_;
	my $c2 = PostgreSQL::Test::Cluster->new("restored_$variant");
	$c2->init;
	$c2->append_conf(
		'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '200ms'
microbatch.max_retries = 1000
microbatch.max_retry_delay = '1s'
max_worker_processes = 16
});
	if ($xid_jump)
	{
		command_ok([ 'pg_resetwal', '-x', $xid_jump, $c2->data_dir ],
			"$variant: pg_resetwal -x $xid_jump moves the new cluster's xids far ahead");
	}
	$c2->start;

	my $etl = sub {
		my ($sql) = @_;
		return sql_value($c2, 'shop', $sql, user => 'etl');
	};

	$c2->safe_psql('postgres', q{CREATE ROLE etl LOGIN});
	is(restore_into($c2, 'shop'), '', "$variant: pg_restore into the other cluster");

	isnt($c2->safe_psql('shop', q{SELECT system_identifier FROM pg_control_system()}),
		$c1_sysid, "$variant: the clusters have different system identifiers");
	my $c2_xid = $c2->safe_psql('shop', q{SELECT pg_current_xact_id()});
	note("$variant cluster: next xid $c2_xid");
	if ($xid_jump)
	{
		cmp_ok($c2_xid, '>', $c1_next_xid,
			"$variant: this cluster's transaction ids are above all of the original's");
	}
	else
	{
		cmp_ok($c2_xid, '<', $c1_min_row_xid,
			"$variant: this cluster's transaction ids are below the restored rows'");
	}

	#
	# (1) Refused by the background workers and by run_batch()
	#
	ok( poll_until(
			$c2, 'shop', q{
SELECT string_agg(DISTINCT pipeline, ',' ORDER BY pipeline) FROM microbatch.batches
 WHERE status = 'failed' AND sqlstate = '55000'
   AND error = format('pipeline "%s" was restored from another cluster', pipeline)},
			'audit,leaf,meter,par,shop', 30),
		"$variant: the workers' batches of every restored pipeline fail with 55000 \"restored from another cluster\"");
	$etl->(q{SELECT microbatch.pause_pipeline(p) FROM unnest('{shop,audit,meter,par,leaf}'::name[]) p});
	ok( poll_until(
			$c2, 'shop',
			q{SELECT count(*) FROM microbatch.workers WHERE pipeline IS NOT NULL},
			'0', 10),
		"$variant: paused, no worker runs the pipelines any more");

	for my $p (qw(shop audit meter))
	{
		my %r = run_sql($c2, 'shop', "SELECT microbatch.run_batch('$p')", user => 'etl');
		is($r{error}, qq{55000: pipeline "$p" was restored from another cluster},
			"$variant: run_batch('$p') is refused");
		like($r{hint}, qr/microbatch\.rebind_pipeline\('$p'\)/,
			"$variant: its hint names rebind_pipeline('$p')");
	}
	is($c2->safe_psql('shop', $targets_sql), $targets_before,
		"$variant: nothing was processed before the rebind");
	is($c2->safe_psql('shop', $committed_sql), $committed_before,
		"$variant: no batch committed before the rebind");
	like( $etl->(q{SELECT microbatch.replay_batch('shop', 2)}),
		qr/^ERROR 55000: pipeline "shop" was restored from another cluster/,
		"$variant: replay_batch() is refused before the rebind");

	#
	# (2) Inserts into the restored sources are refused
	#
	# In a transaction rolled back, should it not be refused.  The refused
	# insert takes id 11 from the identity sequence all the same.
	for my $insert (q{INSERT INTO events (kind, amount) VALUES ('z', 0)},
		q{INSERT INTO readings VALUES (100, 0)})
	{
		my ($table) = $insert =~ /INTO (\w+)/;
		my %r = run_sql($c2, 'shop', "BEGIN; $insert; ROLLBACK;", user => 'etl');
		is( $r{error},
			qq{55000: table "$table" was restored from another cluster and takes no rows until its pipelines are rebound},
			"$variant: INSERT into $table is refused before the rebind");
		like($r{hint}, qr/rebind_pipeline/, "$variant: its hint names rebind_pipeline()");
	}
	is($c2->safe_psql('shop', q{SELECT count(*) FROM events WHERE kind = 'z'}),
		'0', "$variant: the refused row is not there");

	#
	# (3) rebind_pipeline(): both pipelines of events at once
	#
	my %r = run_sql($c2, 'shop', q{SELECT microbatch.rebind_pipeline('shop')}, user => 'etl');
	ok($r{ok}, "$variant: rebind_pipeline('shop') succeeds") or diag($r{err});
	my ($notice) = grep { /rebound/ } @{ $r{notices} };
	$notice //= '';
	like($notice, qr/^00000: rebound 2 pipelines of (?:the hierarchy of )?table "events"/,
		"$variant: the rebind of shop rebinds both pipelines of events");
	my ($again) = $notice =~ /\b(\d+) rows?\b/;
	is($again, 7,
		"$variant: the NOTICE counts the 7 rows not processed by both (ids 4-10)")
	  or diag("NOTICE: $notice");
	like($etl->(q{SELECT microbatch.rebind_pipeline('audit')}),
		qr/^ERROR 55000: pipeline "audit" belongs to this cluster already/,
		"$variant: audit was rebound with shop");
	is( sql_value(
			$c2, 'shop', q{
SELECT string_agg(format('%s:%s', pipeline, batch_id), ',' ORDER BY pipeline)
  FROM microbatch.batches WHERE status = 'skipped' AND note LIKE 'rebound%'}),
		'audit:2,shop:4',
		"$variant: a skipped batch marks the rebind in each history");
	like($etl->(q{INSERT INTO readings VALUES (100, 0)}),
		qr/^ERROR 55000: table "readings" was restored from another cluster/,
		"$variant: the other source still takes no rows");

	# Ids 12, 13: new rows after the rebind
	is($etl->(q{INSERT INTO events (kind, amount) VALUES ('b', 512), ('e', 1024)}),
		'', "$variant: the rebound source takes inserts");
	is($etl->(q{SELECT microbatch.run_batch('shop')}),
		'5', "$variant: shop runs again, batch 5");
	is( $c2->safe_psql(
			'shop', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM event_log WHERE batch_id = 5}),
		'8,9,10,12,13',
		"$variant: shop batch 5 takes the rows it had not processed and the new ones, nothing it had processed");
	is( $c2->safe_psql(
			'shop', q{SELECT rows_in FROM microbatch.batches WHERE pipeline = 'shop' AND batch_id = 5 AND status = 'committed'}),
		'5', "$variant: shop batch 5 has 5 rows");
	is($etl->(q{SELECT microbatch.run_batch('shop')}),
		'', "$variant: nothing left for shop");
	is($etl->(q{SELECT microbatch.run_batch('audit')}),
		'3', "$variant: audit runs again, batch 3");
	is( $c2->safe_psql(
			'shop', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM audit_log WHERE batch_id = 3}),
		'4,5,6,7,8,9,10,12,13',
		"$variant: audit batch 3 takes every row it had not processed");
	is($etl->(q{SELECT microbatch.run_batch('audit')}),
		'', "$variant: nothing left for audit");

	# meter, in the middle of its cut window
	%r = run_sql($c2, 'shop', q{SELECT microbatch.rebind_pipeline('meter')}, user => 'etl');
	ok($r{ok}, "$variant: rebind_pipeline('meter') succeeds") or diag($r{err});
	($notice) = grep { /rebound/ } @{ $r{notices} };
	$notice //= '';
	like($notice, qr/^00000: rebound 1 pipelines? of (?:the hierarchy of )?table "readings"/,
		"$variant: the rebind of meter rebinds its pipeline");
	($again) = $notice =~ /\b(\d+) rows?\b/;
	is($again, 2,
		"$variant: the NOTICE counts meter's 2 waiting rows (readings 5 and 6)")
	  or diag("NOTICE: $notice");
	is( $c2->safe_psql(
			'shop', q{
SELECT string_agg(conrelid::regclass::text, ',' ORDER BY conrelid::regclass::text) FROM pg_constraint
 WHERE conname = 'microbatch_xid_current' AND conrelid IN ('events'::regclass, 'readings'::regclass)
   AND pg_get_constraintdef(oid) LIKE '%' || (SELECT system_identifier FROM pg_control_system()) || '%'}),
		'events,readings',
		"$variant: the sources' constraints now name this cluster");
	is( $c2->safe_psql(
			'shop', q{
SELECT count(*) FROM (SELECT microbatch_xid FROM events UNION ALL SELECT microbatch_xid FROM readings) s(x)
 WHERE x >= pg_snapshot_xmin(pg_current_snapshot())
   AND NOT pg_visible_in_snapshot(x, pg_current_snapshot())}),
		'0',
		"$variant: after the rebinds no row carries an id this cluster has not committed");
	is($etl->(q{INSERT INTO readings VALUES (7, 64)}), '',
		"$variant: readings takes inserts after the rebind");
	my @meter_batches;
	for (1 .. 10)
	{
		my $b = $etl->(q{SELECT microbatch.run_batch('meter')});
		last if $b eq '' || $b =~ /^ERROR/;
		push @meter_batches, $b;
	}
	ok(@meter_batches >= 1, "$variant: meter runs again (batches @meter_batches)");
	is( $c2->safe_psql(
			'shop', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM reading_log WHERE batch_id > 2}),
		'5,6,7',
		"$variant: meter's new batches take the rest of the cut window, the reading after it and the new one, once each");

	my $exactly_once_sql = sub {
		my ($log, $source) = @_;
		return qq{
SELECT count(*), count(DISTINCT id), (SELECT count(*) FROM $source),
       (SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '')
          FROM (SELECT id FROM $log GROUP BY id HAVING count(*) > 1) d)
  FROM $log};
	};
	is($c2->safe_psql('shop', $exactly_once_sql->('event_log', 'events')),
		'12|12|12|', "$variant: shop processed every event exactly once");
	is($c2->safe_psql('shop', $exactly_once_sql->('audit_log', 'events')),
		'12|12|12|', "$variant: audit processed every event exactly once");
	is($c2->safe_psql('shop', $exactly_once_sql->('reading_log', 'readings')),
		'7|7|7|', "$variant: meter processed every reading exactly once");
	my $kind_totals_sql = q{
SELECT string_agg(format('%s:%s:%s', kind, n, total), ' ' ORDER BY kind) FROM kind_totals};
	my $kind_truth_sql = q{
SELECT string_agg(format('%s:%s:%s', kind, n, total), ' ' ORDER BY kind)
  FROM (SELECT kind, count(*) AS n, sum(amount) AS total FROM events GROUP BY kind) t};
	is($c2->safe_psql('shop', $kind_totals_sql), 'a:4:165 b:3:522 c:2:80 d:1:256 e:1:1024 g:1:8192',
		"$variant: shop's gold totals equal the ground truth");
	is($c2->safe_psql('shop', q{SELECT sum(n) || ':' || sum(total) FROM meter_totals}),
		$c2->safe_psql('shop', q{SELECT count(*) || ':' || sum(v) FROM readings}),
		"$variant: meter's gold total equals the ground truth");

	#
	# (4) Replays
	#
	for my $old ([ 'shop', 3 ], [ 'shop', 1 ], [ 'audit', 1 ], [ 'meter', 2 ])
	{
		my ($p, $b) = @$old;
		like($etl->("SELECT microbatch.replay_batch('$p', $b)"),
			qr/^ERROR 55000: batch $b of pipeline "$p" was recorded in another cluster/,
			"$variant: replay of $p batch $b, recorded in the original cluster, is refused");
	}
	like($etl->(q{SELECT microbatch.replay_batch('shop', 4)}),
		qr/^ERROR 55000: batch 4 of pipeline "shop" was skipped/,
		"$variant: the rebind's skipped batch cannot be replayed");
	my $rows_in_5 = $c2->safe_psql('shop',
		q{SELECT rows_in FROM microbatch.batches WHERE pipeline = 'shop' AND batch_id = 5 AND status = 'committed'});
	is( $etl->(q{BEGIN; SELECT microbatch.replay_batch('shop', 5); ROLLBACK;}),
		$rows_in_5,
		"$variant: shop batch 5, run after the rebind, can be replayed over its rows");
	is( $etl->(q{BEGIN; SELECT microbatch.replay_batch('audit', 3); ROLLBACK;}),
		'9', "$variant: so can audit batch 3");
	my $meter_first = $meter_batches[0] // 0;
	is( $etl->("SELECT microbatch.replay_batch('meter', $meter_first)"),
		$c2->safe_psql('shop',
			"SELECT rows_in FROM microbatch.batches WHERE pipeline = 'meter' AND batch_id = $meter_first AND status = 'committed'"),
		"$variant: and meter's first batch after the rebind, committed (its transforms are replay-safe)");
	is($c2->safe_psql('shop', q{SELECT sum(n) || ':' || sum(total) FROM meter_totals}),
		$c2->safe_psql('shop', q{SELECT count(*) || ':' || sum(v) FROM readings}),
		"$variant: meter's gold total is unchanged by the replay");
	is($c2->safe_psql('shop', $exactly_once_sql->('reading_log', 'readings')),
		'7|7|7|', "$variant: meter's bronze is unchanged by the replay");

	#
	# The partitioned source: leaf's rows are par's too.  Rebinding leaf
	# (m_1) and then par (m), each must process exactly what it had not.
	# Before the rebind no table may join it: its rows would carry this
	# cluster's ids, which the rebind would take for ids of the other.
	#
	like( $etl->(q{CREATE TABLE m_5 PARTITION OF m FOR VALUES IN (5)}),
		qr/^ERROR 55000: cannot add table "m_5" to the source of pipeline "(par|leaf)", which was restored from another cluster/,
		"$variant: no partition joins the source before the rebind");
	%r = run_sql($c2, 'shop', q{SELECT microbatch.rebind_pipeline('leaf')}, user => 'etl');
	ok($r{ok}, "$variant: rebind_pipeline('leaf') succeeds") or diag($r{err});
	%r = run_sql($c2, 'shop', q{SELECT microbatch.rebind_pipeline('par')}, user => 'etl');
	ok($r{ok} || $r{error} =~ /belongs to this cluster already/,
		"$variant: rebind_pipeline('par') succeeds, or was done with leaf's")
	  or diag($r{err});
	is($etl->(q{INSERT INTO m VALUES (7, 1), (8, 2)}), '',
		"$variant: the partitioned source takes inserts after the rebinds");
	for my $p (qw(par leaf))
	{
		for (1 .. 5)
		{
			my $b = $etl->("SELECT microbatch.run_batch('$p')");
			last if $b eq '' || $b =~ /^ERROR/;
		}
	}
	is( $c2->safe_psql(
			'shop', q{
SELECT string_agg(id::text, ',' ORDER BY id) FROM m_log WHERE pipeline = 'par'}),
		'1,2,3,4,5,6,7,8,9',
		"$variant: par processed each row of m once: 1, 2, 9 in the original, 3-8 after the rebinds");
	is( $c2->safe_psql(
			'shop', q{
SELECT string_agg(id::text, ',' ORDER BY id) FROM m_log WHERE pipeline = 'leaf'}),
		'1,2,3,5,7',
		"$variant: leaf processed each row of m_1 once: 1-3 in the original, 5 and 7 after the rebinds");

	#
	# Background workers carry on after the rebind.  Ids 14, 15.
	#
	$etl->(q{SELECT microbatch.resume_pipeline(p) FROM unnest('{shop,audit,meter}'::name[]) p});
	$etl->(q{INSERT INTO events (kind, amount) VALUES ('a', 2048), ('f', 4096)});
	$etl->(q{INSERT INTO readings VALUES (8, 128)});
	ok( poll_until(
			$c2, 'shop', q{
SELECT (SELECT count(*) FROM event_log WHERE id IN (14, 15))
     + (SELECT count(*) FROM audit_log WHERE id IN (14, 15))
     + (SELECT count(*) FROM reading_log WHERE id = 8)},
			'5', 30),
		"$variant: the workers process new rows after the rebind");
	usleep(600_000);    # three naptimes: a duplicate would show by now
	is($c2->safe_psql('shop', $exactly_once_sql->('event_log', 'events')),
		'14|14|14|', "$variant: shop processed every event exactly once, at the end");
	is($c2->safe_psql('shop', $exactly_once_sql->('audit_log', 'events')),
		'14|14|14|', "$variant: audit processed every event exactly once, at the end");
	is($c2->safe_psql('shop', $exactly_once_sql->('reading_log', 'readings')),
		'8|8|8|', "$variant: meter processed every reading exactly once, at the end");
	is($c2->safe_psql('shop', $kind_totals_sql), $c2->safe_psql('shop', $kind_truth_sql),
		"$variant: shop's gold totals equal the ground truth, at the end");
	is($c2->safe_psql('shop', q{SELECT sum(n) || ':' || sum(total) FROM meter_totals}),
		$c2->safe_psql('shop', q{SELECT count(*) || ':' || sum(v) FROM readings}),
		"$variant: meter's gold total equals the ground truth, at the end");
	is( $c2->safe_psql(
			'shop', q{
SELECT string_agg(format('%s:%s', pipeline, state), ',' ORDER BY pipeline)
  FROM microbatch.pipelines}),
		'audit:enabled,leaf:paused,meter:enabled,par:paused,shop:enabled',
		"$variant: the resumed pipelines are enabled at the end");

	$c2->stop;
}

check_restored_cluster('lower', 0);
# 0x200000: the first xid of a pg_xact segment, as pg_resetwal's
# documentation advises; far above the original's few thousand.
check_restored_cluster('higher', 2097152);

# The original is untouched by its copies.
is(etl1(q{SELECT microbatch.run_batch('shop')}), '4',
	'original: shop carries on with its own batch 4');
is( $c1->safe_psql(
		'shop', q{SELECT string_agg(id::text, ',' ORDER BY id) FROM event_log WHERE batch_id = 4}),
	'8,9,10',
	'original: batch 4 took only its own waiting rows');

$c1->stop;

done_testing();
