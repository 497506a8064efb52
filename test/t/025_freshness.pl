# Freshness, latency and cumulative statistics with commit timestamps on
# and background workers running.
#
# (a) the oldest waiting row is the one whose transaction committed first,
#     not the one with the lowest xid: a transaction that took its xid
#     early and committed late is not the oldest;
# (b) a batch records when its oldest row committed, its latency follows,
#     and stat_pipelines counts it in the latency histogram;
# (c) a batch that waited for the pipeline's lock says how long;
# (d) background batches are counted once each, when they commit;
# (e) after a crash the statistics start again from zero, the ledger
#     keeps the history and counting carries on;
# (f) a DROP and CREATE EXTENSION rolled back keep them;
# (g) the table of statistics has a fixed size.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $node = PostgreSQL::Test::Cluster->new('freshness');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
track_commit_timestamp = on
microbatch.naptime = '200ms'
});
$node->start;

my $db = 'postgres';
sub q_ { return $node->safe_psql($db, $_[0]); }

q_(q{
CREATE EXTENSION microbatch;
CREATE TABLE fr_src (id int NOT NULL);
CREATE TABLE fr_out (batch_id bigint NOT NULL, id int NOT NULL);
SELECT microbatch.create_pipeline('fr', 'fr_src', '200ms');
SELECT microbatch.add_transform('fr', 'copy', 'bronze',
    $$INSERT INTO fr_out SELECT microbatch.current_batch_id(), id FROM microbatch.fr_batch$$);
SELECT microbatch.pause_pipeline('fr');
});

# --- (a) the oldest waiting row, by commit time ---------------------------

my $late = $node->background_psql($db);
my $late_xid = $late->query_safe(
	q{BEGIN; INSERT INTO fr_src VALUES (1); SELECT pg_current_xact_id();});
q_(q{INSERT INTO fr_src VALUES (2)});
my $early_xid = q_(q{SELECT max(microbatch_xid) FROM fr_src});
cmp_ok($late_xid, '<', $early_xid, 'the late transaction has the lower xid');
usleep(300_000);
$late->query_safe(q{COMMIT});
$late->quit;

my $early_commit = q_(qq{SELECT pg_xact_commit_timestamp('$early_xid'::xid8::xid)});
is( q_(q{SELECT rows_waiting, oldest_waiting_xid, oldest_waiting_committed_at
           FROM microbatch.freshness WHERE pipeline = 'fr'}),
	"2|$late_xid|$early_commit",
	'freshness: two rows wait; the lowest xid is the late one, the oldest commit the early one');
is( q_(qq{SELECT lag >= now() - '$early_commit'::timestamptz - interval '1 millisecond'
               AND lag < interval '1 minute', lag_xids > 0
           FROM microbatch.freshness WHERE pipeline = 'fr'}),
	't|t', 'the lag is the age of the oldest commit');

# --- (b) the batch's latency ------------------------------------------------

q_(q{SELECT microbatch.resume_pipeline('fr')});
ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM fr_out}, '2', 30, 'the first batch'),
	'the worker runs the batch');
is( q_(q{SELECT oldest_row_committed_at, latency = finished_at - oldest_row_committed_at,
                latency > interval '250 milliseconds'
           FROM microbatch.batch_progress WHERE pipeline = 'fr' AND batch_id = 1}),
	"$early_commit|t|t",
	'batch 1 records when its oldest row committed; its latency includes the late commit\'s wait');
is( q_(q{SELECT s.latency_count, s.latency_buckets[array_length(s.latency_buckets, 1)],
                s.latency_sum >= extract(epoch FROM b.latency)
           FROM microbatch.stat_pipelines s, microbatch.batch_progress b
          WHERE s.pipeline = 'fr' AND b.pipeline = 'fr' AND b.batch_id = 1}),
	'1|1|t', 'stat_pipelines counts the latency, measured to the commit');
is( q_(q{SELECT rows_waiting, lag, last_batch_latency > interval '0'
           FROM microbatch.freshness WHERE pipeline = 'fr'}),
	'0|00:00:00|t', 'nothing waits after the batch');

# --- (c) the wait for the pipeline's lock -----------------------------------

q_(q{SELECT microbatch.pause_pipeline('fr')});
my $holder = $node->background_psql($db);
$holder->query_safe(q{INSERT INTO fr_src VALUES (3)});
$holder->query_safe(q{BEGIN; SELECT microbatch.run_batch('fr');});
q_(q{INSERT INTO fr_src VALUES (4)});
my $waiter = $node->background_psql($db);
$waiter->query_until(qr/started/, q{\echo started
SELECT microbatch.run_batch('fr');
});
ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM pg_stat_activity
		   WHERE query LIKE 'SELECT microbatch.run_batch%' AND wait_event_type = 'Lock'},
		'1', 30, 'the second run_batch waits'),
	'a second run_batch waits for the pipeline lock');
usleep(500_000);
$holder->query_safe(q{COMMIT});
$holder->quit;
$waiter->quit;
is( q_(q{SELECT batch_id, rows_in, lock_wait > interval '400 milliseconds'
           FROM microbatch.batch_progress WHERE pipeline = 'fr' ORDER BY batch_id DESC LIMIT 1}),
	'3|1|t', 'the batch that waited records its lock wait');
cmp_ok(q_(q{SELECT total_lock_wait_time FROM microbatch.stat_pipelines WHERE pipeline = 'fr'}),
	'>', 400, 'stat_pipelines adds the lock wait up');

# --- (d) background batches are counted once ------------------------------

q_(q{SELECT microbatch.resume_pipeline('fr')});
for my $i (1 .. 20)
{
	q_(qq{INSERT INTO fr_src SELECT g FROM generate_series(100 * $i, 100 * $i + 9) g});
	usleep(50_000);
}
ok( poll_until(
		$node, $db,
		q{SELECT rows_waiting FROM microbatch.freshness WHERE pipeline = 'fr'},
		'0', 60, 'all rows processed'),
	'the worker catches up');
is( q_(q{SELECT s.batches = (SELECT count(*) FROM microbatch.batches
                              WHERE pipeline = 'fr' AND status = 'committed'),
                s.rows_in = (SELECT count(*) FROM fr_src),
                s.rows_written = (SELECT count(*) FROM fr_out),
                s.failures,
                s.duration_buckets[array_length(s.duration_buckets, 1)] = s.batches
           FROM microbatch.stat_pipelines s WHERE s.pipeline = 'fr'}),
	't|t|t|0|t', 'every committed batch counted once, with its rows');
is( q_(q{SELECT count(*) FILTER (WHERE b.progress IS NULL OR b.oldest_row_committed_at IS NULL)
           FROM microbatch.batch b WHERE b.status = 'committed'}),
	'0', 'every background batch has its progress and oldest commit');

# --- (e) a crash: statistics start again, history stays ---------------------

# Background batches commit asynchronously (microbatch.synchronous_commit),
# so the last one may be lost in the crash and run again after it.
my $before = q_(q{SELECT count(*) FROM microbatch.batches WHERE pipeline = 'fr' AND status = 'committed'});
my $crashed_at = q_(q{SELECT now()});
$node->stop('immediate');
$node->start;
is( q_(qq{SELECT count(*) FROM microbatch.stat_pipelines WHERE stats_reset < '$crashed_at'}),
	'0', 'no statistics from before the crash');
cmp_ok(q_(q{SELECT count(*) FROM microbatch.batches WHERE pipeline = 'fr' AND status = 'committed'}),
	'>=', $before - 1, 'the ledger keeps the history (but for a batch lost uncommitted)');
q_(q{INSERT INTO fr_src VALUES (5000)});
ok( poll_until(
		$node, $db,
		q{SELECT (SELECT count(*) FROM fr_out) = (SELECT count(*) FROM fr_src)},
		't', 60, 'the rows after the crash'),
	'the rows committed around the crash are processed');
is( q_(qq{SELECT s.batches = (SELECT count(*) FROM microbatch.batches
                               WHERE pipeline = 'fr' AND status = 'committed'
                                 AND finished_at > '$crashed_at')
           FROM microbatch.stat_pipelines s WHERE s.pipeline = 'fr'}),
	't', 'counting carries on after the crash: the batches since');
is( q_(q{SELECT count(DISTINCT id) = count(*) FROM fr_out}), 't',
	'no row processed twice');


# --- (f) DROP and CREATE EXTENSION rolled back keep the statistics ---------

my $stats_before = q_(q{SELECT batches FROM microbatch.stat_pipelines WHERE pipeline = 'fr'});
q_(q{BEGIN; DROP EXTENSION microbatch CASCADE; CREATE EXTENSION microbatch; ROLLBACK;});
is(q_(q{SELECT batches FROM microbatch.stat_pipelines WHERE pipeline = 'fr'}),
	$stats_before, 'a rolled-back CREATE EXTENSION leaves the statistics');

# --- (g) the statistics table is fixed: a full one counts no more ----------

# Shared memory beyond it is the lock table's to grow into.
$node->append_conf('postgresql.conf', "microbatch.max_pipelines = 16\nmicrobatch.enabled = off\n");
$node->restart;
q_(q{
DO $$
BEGIN
    FOR i IN 1..24 LOOP
        EXECUTE format('CREATE TABLE many_%s (v int)', i);
        PERFORM microbatch.create_pipeline('many_' || i, ('many_' || i)::regclass);
        PERFORM microbatch.add_transform('many_' || i, 'look', 'bronze',
            format('SELECT * FROM microbatch.many_%s_batch', i));
        EXECUTE format('INSERT INTO many_%s VALUES (1)', i);
    END LOOP;
END $$;
});
for my $i (1 .. 24)
{
	q_(qq{SELECT microbatch.run_batch('many_$i')});
}
is( q_(q{SELECT count(*) FROM microbatch.batches WHERE pipeline LIKE 'many_%' AND status = 'committed'}),
	'24', 'every pipeline runs its batch');
cmp_ok(q_(q{SELECT count(*) FROM microbatch.pipeline_stats()}),
	'<=', 16, 'no more pipelines are counted than microbatch.max_pipelines');

$node->stop;
done_testing();
