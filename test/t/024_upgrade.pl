# ALTER EXTENSION microbatch UPDATE from 0.1.0 through 0.2.0, 0.3.0 and 0.4.0 to 0.5.0,
# under load.
#
# (1) A database created at 0.1.0 gets three pipelines on one staging
#     table, run by the background workers while a loader commits rows:
#     chain (a bronze copy, a silver aggregate of it per batch and a gold
#     step that can be made to sleep; history retention set), quality (a
#     drop expectation and a fail audit) and tail (capped batches, paused
#     before the update, resumed after it); the staging table has a
#     retention setting.
# (2) While rows keep arriving, and a batch of chain is in flight, the
#     extension is updated to the default version, 0.5.0.  Afterwards the
#     pipelines carry on where they were: batch ids contiguous, no failed
#     attempt, every row processed exactly once by each pipeline
#     (quarantined or copied, for quality), the paused pipeline paused until
#     resumed; the 0.2.0 observability works for the batches after the
#     update (microbatch.batch.progress and oldest_row_committed_at,
#     batch_progress, batch_steps, freshness, stat_pipelines), and a batch
#     recorded before the update can be replayed.
# (3) The extension's objects in the upgraded database are those of a fresh
#     0.5.0 install in another database of the same cluster, compared through
#     the catalogs (test/t/extension_objects.sql; pg_dump shows no extension
#     member), with a unified diff on failure; a negative control shows that
#     the comparison sees an extra member, and that a dropped column is not
#     mistaken for a difference.
# (4) The update of a database without pipelines, then a pipeline created
#     after it.
# (5) pg_dump -Fc of the upgraded database restored with pg_restore into a
#     new database: same pipelines, settings and ledger, and the restored
#     pipelines carry on with the next batch ids.

use strict;
use warnings;

use File::Spec;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
# track_commit_timestamp: so that 0.2.0 records the commit time of the
# oldest row of each batch (latencies, freshness lag).
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '200ms'
track_commit_timestamp = on
max_worker_processes = 24
});
$node->start;

my $db = 'shop';
my $tmp = PostgreSQL::Test::Utils::tempdir;
sub q_ { return $node->safe_psql($db, $_[0]); }

# The canonical description of the extension's objects (one line per fact)
my $objects_sql = slurp_file(File::Spec->catfile($FindBin::RealBin, 'extension_objects.sql'));

$node->safe_psql('postgres', "CREATE DATABASE $db");

# --- (1) Pipelines with history under 0.1.0 ------------------------------------

q_(q{CREATE EXTENSION microbatch VERSION '0.1.0'});
is(q_(q{SELECT extversion FROM pg_extension WHERE extname = 'microbatch'}),
	'0.1.0', 'the extension is created at version 0.1.0');

q_(q{
CREATE SEQUENCE event_ids;
CREATE TABLE events (id bigint PRIMARY KEY, amount bigint NOT NULL);
CREATE TABLE loader_ctl (stop boolean NOT NULL);
INSERT INTO loader_ctl VALUES (false);

-- chain: bronze copies the batch, replayably (the batch's earlier output is
-- deleted by the same statement); silver aggregates the bronze rows of the
-- batch, per batch id.
CREATE TABLE chain_bronze (batch_id bigint NOT NULL, id bigint NOT NULL, amount bigint NOT NULL);
CREATE TABLE chain_silver (batch_id bigint PRIMARY KEY, n bigint NOT NULL, total bigint NOT NULL);
SELECT microbatch.create_pipeline('chain', 'events', interval '100 ms');
SELECT microbatch.add_transform('chain', 'to_bronze', 'bronze', $$
    WITH earlier AS (DELETE FROM chain_bronze WHERE batch_id = microbatch.current_batch_id())
    INSERT INTO chain_bronze (batch_id, id, amount)
    SELECT microbatch.current_batch_id(), id, amount FROM microbatch.chain_batch
$$);
SELECT microbatch.add_transform('chain', 'to_silver', 'silver', $$
    INSERT INTO chain_silver (batch_id, n, total)
    SELECT microbatch.current_batch_id(), count(*), coalesce(sum(amount), 0)
      FROM chain_bronze WHERE batch_id = microbatch.current_batch_id()
    ON CONFLICT (batch_id) DO UPDATE SET n = excluded.n, total = excluded.total
$$);
-- gold: a step that sleeps as long as chain_delay says, to hold a batch
-- in flight across the update
CREATE TABLE chain_delay (seconds float8 NOT NULL);
INSERT INTO chain_delay VALUES (0);
SELECT microbatch.add_transform('chain', 'pause_point', 'gold',
    $$SELECT pg_sleep(seconds) FROM chain_delay$$);
SELECT microbatch.set_history_retention('chain', interval '7 days');

-- quality: rows with a negative amount are quarantined, the others copied;
-- an audit fails any batch that would copy an id twice.
CREATE TABLE checked (batch_id bigint NOT NULL, id bigint NOT NULL, amount bigint NOT NULL);
SELECT microbatch.create_pipeline('quality', 'events', interval '100 ms');
SELECT microbatch.add_expectation('quality', 'positive', 'amount > 0', 'drop');
SELECT microbatch.add_transform('quality', 'keep', 'bronze', $$
    INSERT INTO checked (batch_id, id, amount)
    SELECT microbatch.current_batch_id(), id, amount FROM microbatch.quality_batch
$$);
SELECT microbatch.audit_unique('quality', 'bronze', 'checked', ARRAY['id']::name[],
                               'batch_id', 'fail', 'checked_once');

-- tail: capped batches, paused across the update
CREATE TABLE tail (batch_id bigint NOT NULL, id bigint NOT NULL, amount bigint NOT NULL);
SELECT microbatch.create_pipeline('tail', 'events', interval '100 ms', max_batch_rows => 25);
SELECT microbatch.add_transform('tail', 'copy', 'bronze', $$
    INSERT INTO tail (batch_id, id, amount)
    SELECT microbatch.current_batch_id(), id, amount FROM microbatch.tail_batch
$$);

-- a staging retention long enough never to remove a row here
SELECT microbatch.set_retention('events', interval '1 day');
});

ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.workers
           WHERE kind = 'scheduler' AND database = current_database()},
		'1', 30),
	'the database has a scheduler');

# The loader: 3 rows per transaction, every 7th amount negative, until
# loader_ctl says stop.  It runs until after the update.
my $loader_sql = q{
DO $$
BEGIN
    LOOP
        EXIT WHEN (SELECT stop FROM loader_ctl);
        INSERT INTO events (id, amount)
        SELECT n, CASE WHEN n % 7 = 0 THEN -n ELSE n END
          FROM (SELECT nextval('event_ids') AS n FROM generate_series(1, 3)) s;
        COMMIT;
        PERFORM pg_sleep(0.02);
    END LOOP;
END
$$;
};
my ($loader_out, $loader_err) = ('', '');
my $loader = IPC::Run::start(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-c', $loader_sql ],
	'>', \$loader_out, '2>', \$loader_err,
	IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));

ok( poll_until(
		$node, $db, q{
SELECT bool_and(n >= 5) FROM (
    SELECT count(b.*) AS n FROM microbatch.pipeline p
      LEFT JOIN microbatch.batch b ON b.pipeline_id = p.pipeline_id AND b.status = 'committed'
     GROUP BY p.pipeline_id) s}, 't', 60,
		'five committed batches of every pipeline'),
	'the workers run batches of every pipeline under 0.1.0 while rows arrive');

# Pause tail, and let rows accumulate for it
q_(q{SELECT microbatch.pause_pipeline('tail')});
ok( poll_until(
		$node, $db, q{
SELECT p.state = 'paused' AND p.next_run_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM microbatch.workers w WHERE w.pipeline = 'tail')
  FROM microbatch.pipelines p WHERE p.pipeline = 'tail'}, 't', 30,
		'tail to be paused with no batch running'),
	'tail is paused');
my $tail_ledger_at_pause = q_(q{
SELECT count(*) FROM microbatch.batch b JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE p.pipeline_name = 'tail'});
my $tail_rows_at_pause = q_(q{SELECT count(*) FROM tail});
my $events_at_pause = q_(q{SELECT count(*) FROM events});
ok( poll_until(
		$node, $db,
		qq{SELECT count(*) > $events_at_pause + 100 FROM events}, 't', 30,
		'rows to arrive after the pause'),
	'rows keep arriving while tail is paused');

# --- (2) The update, while rows keep arriving ----------------------------------

# A batch of chain is in flight when the update starts: the update waits
# for it (ALTER TABLE microbatch.batch), and the batches of the other
# pipelines that start meanwhile wait for the update.
q_(q{UPDATE chain_delay SET seconds = 2});
ok( poll_until(
		$node, $db, q{
SELECT count(*) > 0 FROM microbatch.workers w JOIN pg_stat_activity a USING (pid)
 WHERE w.pipeline = 'chain' AND w.batch_id IS NOT NULL AND a.wait_event = 'PgSleep'},
		't', 30, 'a batch of chain in its gold step'),
	'a batch of chain is in flight');
q_(q{UPDATE chain_delay SET seconds = 0});
# A trigger of the replica trigger's name on a table that feeds no
# pipeline (a partitioned one, whose partition has a clone of it) is
# somebody else's: the update leaves it, and does not fail on the clone
q_(q{
CREATE TABLE not_a_source (id int) PARTITION BY RANGE (id);
CREATE TABLE not_a_source_1 PARTITION OF not_a_source FOR VALUES FROM (0) TO (10);
CREATE TRIGGER microbatch_source_replicated BEFORE INSERT ON not_a_source
    FOR EACH ROW EXECUTE FUNCTION microbatch.source_replicated();
});
my $t_before = q_(q{SELECT clock_timestamp()});
q_(q{ALTER EXTENSION microbatch UPDATE});
my $t_after = q_(q{SELECT clock_timestamp()});
note("ALTER EXTENSION UPDATE ran between $t_before and $t_after");
is( q_(qq{
SELECT count(*) FROM microbatch.batch b JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE p.pipeline_name = 'chain' AND b.status = 'committed'
   AND b.started_at < '$t_before' AND b.finished_at > '$t_before'}),
	'1', 'the batch of chain in flight when the update started committed');
is(q_(q{SELECT extversion FROM pg_extension WHERE extname = 'microbatch'}),
	'0.5.0', 'ALTER EXTENSION UPDATE goes to the default version, 0.5.0');
is( q_(q{SELECT string_agg(tgrelid::regclass::text, ',' ORDER BY tgrelid::regclass::text) FROM pg_trigger
           WHERE tgname = 'microbatch_source_replicated'}),
	'not_a_source,not_a_source_1',
	'the update drops the replica trigger from the source tables no subscription writes into, and only from those');
q_(q{DROP TABLE not_a_source});

# Batches of chain and quality that started after the update committed
my $post_sql = qq{
SELECT bool_and(n >= 5) FROM (
    SELECT count(b.*) AS n FROM microbatch.pipeline p
      LEFT JOIN microbatch.batch b ON b.pipeline_id = p.pipeline_id AND b.status = 'committed'
                                  AND b.started_at > '$t_after'
     WHERE p.pipeline_name IN ('chain', 'quality')
     GROUP BY p.pipeline_id) s};
ok(poll_until($node, $db, $post_sql, 't', 60, 'five batches of chain and quality after the update'),
	'chain and quality run batches after the update, while rows arrive');

# tail stayed paused through the update and those batches
is( q_(q{SELECT state || ':' || (rows_waiting > 0) FROM microbatch.pipelines WHERE pipeline = 'tail'}),
	'paused:true', 'tail is still paused after the update, with rows waiting');
is( q_(q{
SELECT count(*) FROM microbatch.batch b JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE p.pipeline_name = 'tail'}),
	$tail_ledger_at_pause, 'no batch of tail ran while it was paused');
is(q_(q{SELECT count(*) FROM tail}), $tail_rows_at_pause, 'tail copied no row while paused');
is( q_(q{SELECT state || ':' || (rows_waiting > 0) || ':' || (lag_xids > 0)
           FROM microbatch.freshness WHERE pipeline = 'tail'}),
	'paused:true:true', 'microbatch.freshness shows the paused pipeline falling behind');

q_(q{SELECT microbatch.resume_pipeline('tail')});
ok( poll_until(
		$node, $db, qq{
SELECT count(*) > 0 FROM microbatch.batch b JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE p.pipeline_name = 'tail' AND b.status = 'committed' AND b.started_at > '$t_after'},
		't', 30, 'a batch of tail after the resume'),
	'tail runs again once resumed');

# Rows after the update and the resume, then the loader stops
my $events_resumed = q_(q{SELECT count(*) FROM events});
ok( poll_until(
		$node, $db, qq{SELECT count(*) > $events_resumed + 100 FROM events}, 't', 30,
		'more rows from the loader'),
	'the loader keeps committing rows after the update');
q_(q{UPDATE loader_ctl SET stop = true});
ok($loader->finish, 'the loader ends without error') or diag("loader stderr: $loader_err");
$loader = undef;
# Its one session committed rows before and after the update (the rows are
# never updated: xmin is the inserting transaction)
is( q_(qq{
SELECT count(*) FILTER (WHERE pg_xact_commit_timestamp(xmin) < '$t_before') > 0
       AND count(*) FILTER (WHERE pg_xact_commit_timestamp(xmin) > '$t_after') > 0
  FROM events}),
	't', 'the loader committed rows both before and after the update');
note(q_(qq{
SELECT string_agg(format('%s: %s batches before the update, %s across it, %s after it',
                         pipeline_name, pre, across, post), E'\n' ORDER BY pipeline_name)
  FROM (SELECT p.pipeline_name,
               count(*) FILTER (WHERE b.finished_at < '$t_before') AS pre,
               count(*) FILTER (WHERE b.finished_at >= '$t_before' AND b.started_at <= '$t_after') AS across,
               count(*) FILTER (WHERE b.started_at > '$t_after') AS post
          FROM microbatch.pipeline p JOIN microbatch.batch b USING (pipeline_id)
         GROUP BY p.pipeline_name) s}));
my ($n_rows, $sum_rows) = split /\|/, q_(q{SELECT count(*), sum(amount) FROM events});
cmp_ok($n_rows, '>', 100, "the loader committed $n_rows rows");

ok( poll_until(
		$node, $db, q{
SELECT string_agg(pipeline || ':' || rows_waiting, ',' ORDER BY pipeline) FROM microbatch.pipelines},
		'chain:0,quality:0,tail:0', 60, 'every pipeline to catch up'),
	'every pipeline processes every row');

# Batch ids: contiguous from 1, none twice, no failed attempt, and batches
# on both sides of the update
my $ledger_sql = qq{
SELECT p.pipeline_name,
       count(*) FILTER (WHERE b.status = 'committed') =
           count(DISTINCT b.batch_id) FILTER (WHERE b.status = 'committed')
       AND min(b.batch_id) FILTER (WHERE b.status = 'committed') = 1
       AND max(b.batch_id) FILTER (WHERE b.status = 'committed')
           = count(*) FILTER (WHERE b.status = 'committed'),
       count(*) FILTER (WHERE b.status <> 'committed'),
       count(*) FILTER (WHERE b.finished_at < '$t_before') >= 5,
       count(*) FILTER (WHERE b.started_at > '$t_after') >= 1,
       sum(b.rows_in) FILTER (WHERE b.status = 'committed') = (SELECT count(*) FROM events),
       coalesce(sum(b.rows_dropped) FILTER (WHERE b.status = 'committed'), 0)
  FROM microbatch.pipeline p JOIN microbatch.batch b USING (pipeline_id)
 GROUP BY p.pipeline_name ORDER BY p.pipeline_name};
my $n_dropped = q_(q{SELECT count(*) FROM events WHERE amount <= 0});
is( q_($ledger_sql),
	"chain|t|0|t|t|t|0\nquality|t|0|t|t|t|$n_dropped\ntail|t|0|t|t|t|0",
	'per pipeline: batch ids 1..n without gap or repeat, no failed attempt, batches before and after the update, every row in exactly one window');

# --- a batch recorded under 0.1.0 replays under 0.2.0 --------------------------

my ($replay_rows, $silver_before) = split /\|/, q_(qq{
SELECT b.rows_in, s.n || ':' || s.total
  FROM microbatch.batch b JOIN microbatch.pipeline p USING (pipeline_id)
  JOIN chain_silver s ON s.batch_id = b.batch_id
 WHERE p.pipeline_name = 'chain' AND b.batch_id = 2 AND b.status = 'committed'
   AND b.finished_at < '$t_before' AND b.progress IS NULL});
is(q_(q{SELECT microbatch.replay_batch('chain', 2)}),
	$replay_rows, 'replay_batch of batch 2, recorded before the update, replays its rows');
is( q_(q{
SELECT b.replays || ':' || (b.last_replayed_at > b.finished_at)
  FROM microbatch.batch b JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE p.pipeline_name = 'chain' AND b.batch_id = 2 AND b.status = 'committed'}),
	'1:true', 'the ledger counts the replay');
is(q_(q{SELECT n || ':' || total FROM chain_silver WHERE batch_id = 2}),
	$silver_before, 'the replayed batch rewrote the same silver row');

# --- exactly once ----------------------------------------------------------------

my $once_sql = q{
SELECT count(*)
  FROM events e
  FULL JOIN (SELECT id, count(*) AS n, min(amount) AS amount FROM %s GROUP BY id) t USING (id)
 WHERE e.id IS NULL OR t.n IS DISTINCT FROM 1 OR t.amount IS DISTINCT FROM e.amount};
is(q_(sprintf($once_sql, 'chain_bronze')), '0', 'chain: every row in bronze exactly once');
is(q_(q{SELECT count(*) || '|' || sum(amount) FROM chain_bronze}),
	"$n_rows|$sum_rows", 'chain: bronze count and sum equal the source');
is(q_(q{SELECT sum(n) || '|' || sum(total) FROM chain_silver}),
	"$n_rows|$sum_rows", 'chain: silver count and sum equal the source');
is( q_(q{
SELECT count(*)
  FROM (SELECT b.batch_id, b.rows_in FROM microbatch.batch b
          JOIN microbatch.pipeline p USING (pipeline_id)
         WHERE p.pipeline_name = 'chain' AND b.status = 'committed') l
  FULL JOIN chain_silver s USING (batch_id)
 WHERE l.rows_in IS DISTINCT FROM s.n}),
	'0', 'chain: one silver row per batch, with the batch\'s rows_in');

is( q_(sprintf($once_sql,
		q{(SELECT id, amount FROM checked
           UNION ALL
           SELECT (row_data->>'id')::bigint, (row_data->>'amount')::bigint
             FROM microbatch.quarantine WHERE pipeline = 'quality') u})),
	'0', 'quality: every row copied or quarantined, exactly once');
is( q_(q{
SELECT (SELECT count(*) || '|' || coalesce(sum(amount), 0) FROM checked WHERE amount <= 0)
       || '|' ||
       (SELECT count(*) FROM microbatch.quarantine
         WHERE pipeline = 'quality' AND (row_data->>'amount')::bigint > 0)}),
	'0|0|0', 'quality: exactly the negative rows were quarantined');
is(q_(q{SELECT count(*) || '|' || sum(amount) FROM checked}),
	q_(q{SELECT count(*) || '|' || sum(amount) FROM events WHERE amount > 0}),
	'quality: the count and sum of the copied rows are those of the positive rows');

is(q_(sprintf($once_sql, 'tail')), '0', 'tail: every row exactly once');
is(q_(q{SELECT count(*) || '|' || sum(amount) FROM tail}),
	"$n_rows|$sum_rows", 'tail: count and sum equal the source');
is( q_(q{
SELECT max(b.rows_in) <= 25 FROM microbatch.batch b JOIN microbatch.pipeline p USING (pipeline_id)
 WHERE p.pipeline_name = 'tail'}),
	't', 'tail: batches stay within max_batch_rows');

# --- 0.2.0 observability on the upgraded database ------------------------------

is( q_(qq{
SELECT count(*) FILTER (WHERE b.progress IS NULL OR NOT b.progress ? 'steps'
                               OR NOT b.progress ? 'lock_wait_us'
                               OR b.oldest_row_committed_at IS NULL),
       count(*) > 0
  FROM microbatch.batch b
 WHERE b.status = 'committed' AND b.started_at > '$t_after'}),
	'0|t', 'every batch after the update records its progress and its oldest row\'s commit time');
is( q_(qq{
SELECT count(*) FROM microbatch.batch b
 WHERE b.finished_at < '$t_before' AND b.progress IS NOT NULL}),
	'0', 'batches from before the update have no progress');
is( q_(qq{
SELECT string_agg(pipeline || ':' || ok, ',' ORDER BY pipeline) FROM (
SELECT p.pipeline_name AS pipeline, bool_and(b.progress->'steps' \@> s.steps)::text AS ok
  FROM (VALUES ('chain', '[{"kind": "transform", "name": "to_bronze", "layer": "bronze"},
                          {"kind": "transform", "name": "to_silver", "layer": "silver"}]'::jsonb),
               ('quality', '[{"kind": "expectations"},
                            {"kind": "transform", "name": "keep"},
                            {"kind": "audit", "name": "checked_once"}]'::jsonb),
               ('tail', '[{"kind": "transform", "name": "copy"}]'::jsonb)) s(pipeline, steps)
  JOIN microbatch.pipeline p ON p.pipeline_name = s.pipeline
  JOIN microbatch.batch b ON b.pipeline_id = p.pipeline_id
 WHERE b.status = 'committed' AND b.started_at > '$t_after'
 GROUP BY p.pipeline_name) r}),
	'chain:true,quality:true,tail:true',
	'the progress of the batches after the update lists their expectations, transforms and audits');
is( q_(qq{
SELECT count(*) FILTER (WHERE v.batch_id IS NULL OR v.rows_in IS DISTINCT FROM b.rows_in
                               OR v.duration IS NULL OR v.latency IS NULL),
       count(DISTINCT p.pipeline_name)
  FROM microbatch.batch b JOIN microbatch.pipeline p USING (pipeline_id)
  LEFT JOIN microbatch.batch_progress v
         ON v.pipeline = p.pipeline_name AND v.batch_id = b.batch_id AND v.attempt = b.attempt
 WHERE b.status = 'committed' AND b.started_at > '$t_after'}),
	'0|3', 'microbatch.batch_progress shows every batch after the update, with durations and latencies');
is( q_(qq{
SELECT string_agg(DISTINCT s.pipeline || ':' || s.kind || ':' || coalesce(s.name, '-'), ','
                  ORDER BY s.pipeline || ':' || s.kind || ':' || coalesce(s.name, '-'))
  FROM microbatch.batch_steps s
 WHERE s.status = 'committed' AND s.kind IN ('transform', 'audit')
   AND (s.pipeline, s.batch_id) IN (
        SELECT p.pipeline_name, b.batch_id FROM microbatch.batch b
          JOIN microbatch.pipeline p USING (pipeline_id)
         WHERE b.started_at > '$t_after')}),
	'chain:transform:pause_point,chain:transform:to_bronze,chain:transform:to_silver,quality:audit:checked_once,quality:transform:keep,tail:transform:copy',
	'microbatch.batch_steps shows the steps of the batches after the update');
is( q_(q{
SELECT string_agg(pipeline || ':' || state || ':' || rows_waiting || ':' || lag || ':' || lag_xids
                  || ':' || (last_batch_at IS NOT NULL), ',' ORDER BY pipeline)
  FROM microbatch.freshness}),
	'chain:enabled:0:00:00:00:0:true,quality:enabled:0:00:00:00:0:true,tail:enabled:0:00:00:00:0:true',
	'microbatch.freshness shows every pipeline caught up');
is( q_(q{
SELECT string_agg(pipeline || ':' || (batches > 0) || ':' || failures, ',' ORDER BY pipeline)
  FROM microbatch.stat_pipelines}),
	'chain:true:0,quality:true:0,tail:true:0',
	'microbatch.stat_pipelines has the batches of every pipeline');
is( q_(q{
SELECT string_agg(pipeline || ':' || coalesce(history_retention::text, '-'), ',' ORDER BY pipeline)
  FROM microbatch.pipelines}),
	'chain:7 days,quality:-,tail:-', 'the history retention setting survived the update');
is(q_(q{SELECT source || ':' || retain FROM microbatch.retention}),
	'events:1 day', 'the staging retention setting survived the update');

# --- (3) The objects of the upgraded extension are those of a fresh install ----

# Run the description in two databases; true if equal, else diag() a diff
sub diff_objects
{
	my ($db_a, $db_b, $out_a, $out_b) = @_;
	$out_a //= $node->safe_psql($db_a, $objects_sql);
	$out_b //= $node->safe_psql($db_b, $objects_sql);
	return ('', $out_a, $out_b) if $out_a eq $out_b;
	my ($file_a, $file_b) = ("$tmp/objects_$db_a.txt", "$tmp/objects_$db_b.txt");
	open(my $fa, '>', $file_a) or die "$file_a: $!";
	print $fa "$out_a\n";
	close $fa;
	open(my $fb, '>', $file_b) or die "$file_b: $!";
	print $fb "$out_b\n";
	close $fb;
	my ($diff, $diff_err) = ('', '');
	IPC::Run::run([ 'diff', '-u', $file_a, $file_b ], '>', \$diff, '2>', \$diff_err);
	return ($diff . $diff_err, $out_a, $out_b);
}

sub compare_objects
{
	my ($db_a, $db_b, $what) = @_;
	my ($diff, $out_a, $out_b) = diff_objects($db_a, $db_b);
	ok($diff eq '', $what) or diag("extension objects differ:\n$diff");
	return $out_b;
}

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION microbatch');
is($node->safe_psql('fresh', q{SELECT extversion FROM pg_extension WHERE extname = 'microbatch'}),
	'0.5.0', 'a fresh install is at version 0.5.0');
my $fresh_objects = compare_objects($db, 'fresh',
	'the objects of the upgraded extension are those of a fresh 0.5.0 install');

# The description is not vacuous: it covers what the update changes
my @landmarks = (
	"extension microbatch: version 0.5.0,",
	"extension microbatch: configuration table microbatch.batch, condition ''",
	"relation microbatch.batch: column 022 progress jsonb",
	"relation microbatch.batch: column 023 oldest_row_committed_at timestamp with time zone",
	"relation microbatch.batch_progress: kind v, persistence p, access method , owner extension owner, options {security_barrier=true}",
	"relation microbatch.freshness: grant SELECT to PUBLIC by extension owner",
	"function microbatch.stat_reset(name): definition CREATE OR REPLACE FUNCTION",
	"initial privileges of view microbatch.stat_pipelines: type e:",
	"event trigger microbatch_ddl_start: on ddl_command_start",
	"schema microbatch: owner extension owner",
	"member operator class microbatch.xid8_minmax_ops for access method brin",
	"function microbatch.set_tracking_index(regclass,text)",);
for my $landmark (@landmarks)
{
	ok(index($fresh_objects, $landmark) >= 0, "the description has: $landmark");
}

# Negative controls, in the fresh database, rolled back: one more member is
# a difference; a column added and dropped again (a hole in attnum) is not.
my $probe_objects = $node->safe_psql('fresh', qq{
BEGIN;
CREATE FUNCTION microbatch.upgrade_probe() RETURNS integer LANGUAGE sql AS 'SELECT 1';
ALTER EXTENSION microbatch ADD FUNCTION microbatch.upgrade_probe();
$objects_sql
ROLLBACK;
});
my ($probe_diff) = diff_objects('fresh', 'fresh_probe', $fresh_objects, $probe_objects);
like($probe_diff, qr/^\+member function microbatch\.upgrade_probe\(\): is a member$/m,
	'negative control: the comparison reports a function added to the extension');
my $hole_objects = $node->safe_psql('fresh', qq{
BEGIN;
ALTER TABLE microbatch.check_result ADD COLUMN upgrade_probe integer;
ALTER TABLE microbatch.check_result DROP COLUMN upgrade_probe;
$objects_sql
ROLLBACK;
});
my ($hole_diff) = diff_objects('fresh', 'fresh_hole', $fresh_objects, $hole_objects);
is($hole_diff, '', 'negative control: a dropped column is not a difference');
is($node->safe_psql('fresh', $objects_sql), $fresh_objects,
	'the negative controls left the fresh database as it was');

# --- (4) The update of a database without pipelines ----------------------------

$node->safe_psql('postgres', 'CREATE DATABASE empty');
$node->safe_psql('empty', q{CREATE EXTENSION microbatch VERSION '0.1.0'});
$node->safe_psql('empty', q{ALTER EXTENSION microbatch UPDATE});
is($node->safe_psql('empty', q{SELECT extversion FROM pg_extension WHERE extname = 'microbatch'}),
	'0.5.0', 'a database without pipelines is updated to 0.5.0');
compare_objects('empty', 'fresh',
	'the objects of the extension updated without pipelines are those of a fresh install');
is( $node->safe_psql(
		'empty', q{
SELECT (SELECT count(*) FROM microbatch.pipelines) || ':' ||
       (SELECT count(*) FROM microbatch.batch_progress) || ':' ||
       (SELECT count(*) FROM microbatch.freshness) || ':' ||
       (SELECT count(*) FROM microbatch.stat_pipelines)}),
	'0:0:0:0', 'its views are empty');
$node->safe_psql(
	'empty', q{
CREATE TABLE e (id int PRIMARY KEY);
CREATE TABLE e_copy (batch_id bigint NOT NULL, id int NOT NULL);
SELECT microbatch.create_pipeline('p', 'e', interval '100 ms');
SELECT microbatch.add_transform('p', 'copy', 'bronze',
    $$INSERT INTO e_copy SELECT microbatch.current_batch_id(), id FROM microbatch.p_batch$$);
INSERT INTO e SELECT generate_series(1, 10);
});
ok( poll_until(
		$node, 'empty',
		q{SELECT count(*) || ':' || count(DISTINCT id) FROM e_copy}, '10:10', 30,
		'the rows of a pipeline created after the update'),
	'a pipeline created after the update runs on the workers');
is( $node->safe_psql(
		'empty',
		q{SELECT string_agg(batch_id || ':' || rows_in || ':' || (progress IS NOT NULL), ',') FROM microbatch.batch}),
	'1:10:true', 'and records its progress');

# --- (5) pg_dump -Fc of the upgraded database, pg_restore into a new one --------

# Everything is processed and nothing arrives, so no batch runs in either
# database while they are compared.  The restore is one transaction: the
# restored database's scheduler sees the pipelines only with their ledger
# and their source rows.
my $dump = "$tmp/shop.dump";
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr($db) ],
	'pg_dump -Fc of the upgraded database');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
my ($restore_out, $restore_err) = ('', '');
IPC::Run::run(
	[
		'pg_restore', '--single-transaction', '--exit-on-error',
		'-d', $node->connstr('restored'), $dump
	],
	'>', \$restore_out, '2>', \$restore_err);
is($restore_err, '', 'pg_restore prints no error or warning');
is($node->safe_psql('restored', q{SELECT extversion FROM pg_extension WHERE extname = 'microbatch'}),
	'0.5.0', 'the restored database has the extension at 0.5.0');

my %dump_queries = (
	pipelines => q{
SELECT pipeline, source, owner, batch_interval, max_batch_rows, batch_timeout,
       history_retention, state, last_batch_id, last_batch_at, rows_waiting, created_at
  FROM microbatch.pipelines ORDER BY pipeline},
	batch_counts => q{
SELECT pipeline, count(*), count(*) FILTER (WHERE status = 'committed'), max(batch_id),
       sum(rows_in), sum(replays)
  FROM microbatch.batches GROUP BY pipeline ORDER BY pipeline},
	ledger => q{
SELECT pipeline_id, batch_id, attempt, status, lower_snapshot, upper_snapshot, xid_from, xid_to,
       rows_in, rows_digest, rows_dropped, transform_versions, started_at, finished_at,
       replays, last_replayed_at, progress, oldest_row_committed_at
  FROM microbatch.batch ORDER BY pipeline_id, batch_id, attempt},
	transforms => q{SELECT * FROM microbatch.transforms ORDER BY pipeline, run_order},
	quality => q{
SELECT 'e', pipeline, expectation, predicate, on_violation FROM microbatch.expectations
UNION ALL
SELECT 'a', pipeline, audit, query, on_failure FROM microbatch.audits ORDER BY 1, 2, 3},
	retention => q{SELECT source, retain, rows_removed FROM microbatch.retention},
	targets => q{
SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM chain_bronze),
       (SELECT count(*) FROM chain_silver), (SELECT count(*) FROM checked),
       (SELECT count(*) FROM tail), (SELECT count(*) FROM microbatch.quarantine)},);
for my $what (sort keys %dump_queries)
{
	is($node->safe_psql('restored', $dump_queries{$what}),
		q_($dump_queries{$what}), "restored $what match the upgraded database");
}
compare_objects('restored', 'fresh',
	'the objects of the extension in the restored database are those of a fresh install');

# The restored pipelines carry on: new rows, the next batch ids
my %last_batch = map { split /\|/ } split /\n/, q_(q{
SELECT pipeline, last_batch_id FROM microbatch.pipelines ORDER BY pipeline});
$node->safe_psql('restored', q{
INSERT INTO events (id, amount)
SELECT n, n FROM (SELECT nextval('event_ids') AS n FROM generate_series(1, 5)) s});
ok( poll_until(
		$node, 'restored', q{
SELECT (SELECT count(*) FROM chain_bronze) = (SELECT count(*) FROM events)
   AND (SELECT count(*) FROM tail) = (SELECT count(*) FROM events)
   AND (SELECT count(*) FROM checked) + (SELECT count(*) FROM microbatch.quarantine)
       = (SELECT count(*) FROM events)}, 't', 30,
		'the restored pipelines to process the new rows'),
	'the restored pipelines process new rows');
my $last_values = join(', ', map { "('$_', $last_batch{$_})" } sort keys %last_batch);
is( $node->safe_psql(
		'restored', qq{
SELECT string_agg(p.pipeline_name || ':' || b.batch_id || ':' || b.rows_in || ':' || (b.progress IS NOT NULL),
                  ',' ORDER BY p.pipeline_name, b.batch_id)
  FROM (VALUES $last_values) l(pipeline, last_batch_id)
  JOIN microbatch.pipeline p ON p.pipeline_name = l.pipeline
  JOIN microbatch.batch b ON b.pipeline_id = p.pipeline_id AND b.batch_id > l.last_batch_id}),
	join(',', map { "$_:" . ($last_batch{$_} + 1) . ":5:true" } sort keys %last_batch),
	'each restored pipeline took the 5 new rows in its next batch id, recording its progress');

$node->stop;

done_testing();
