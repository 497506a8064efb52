# Wake-ups follow the source they are for.
#
# A transaction that writes into a source wakes the continuous pipelines
# (batch_interval 0) of that source's hierarchy when it commits, and only
# those: a commit into one source must not make every continuous pipeline of
# the database run an empty batch.  Rows written straight into a partition
# wake the pipeline on the partitioned table too.  The naptime is a minute,
# so only a wake-up can explain a batch within seconds.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $node = PostgreSQL::Test::Cluster->new('wakeups');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '60s'
max_worker_processes = 16
});
$node->start;

my $db = 'postgres';
$node->safe_psql(
	$db, q{
CREATE EXTENSION microbatch;
CREATE TABLE busy (id int);
CREATE TABLE quiet (id int);
CREATE TABLE busy_out (id int);
CREATE TABLE quiet_out (id int);
SELECT microbatch.create_pipeline('busy', 'busy', '0');
SELECT microbatch.add_transform('busy', 'copy', 'bronze',
    'INSERT INTO busy_out SELECT id FROM microbatch.busy_batch');
SELECT microbatch.create_pipeline('quiet', 'quiet', '0');
SELECT microbatch.add_transform('quiet', 'copy', 'bronze',
    'INSERT INTO quiet_out SELECT id FROM microbatch.quiet_batch');
CREATE TABLE parted (day int, id int) PARTITION BY RANGE (day);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (1) TO (2);
CREATE TABLE parted_out (id int);
SELECT microbatch.create_pipeline('parted', 'parted', '0');
SELECT microbatch.add_transform('parted', 'copy', 'bronze',
    'INSERT INTO parted_out SELECT id FROM microbatch.parted_batch');
});

ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.workers WHERE kind = 'scheduler'},
		'1', 30),
	'the database has a scheduler');

# A worker flushes its statistics after a batch, at most once a second, so
# a batch of the busy pipeline a second and more after the others flushes
# what they counted.
sub flush_worker_stats
{
	my ($id) = @_;
	sleep(2);
	$node->safe_psql($db, "INSERT INTO busy VALUES ($id)");
	poll_until($node, $db, "SELECT count(*) FROM busy_out WHERE id = $id", '1', 10);
}

# the first batches, which found nothing, are counted before we look
flush_worker_stats(1000);
flush_worker_stats(1001);

# Each window count scans the source's tracking index: how often the quiet
# pipeline looked at its source.
sub quiet_scans
{
	return $node->safe_psql($db, q{
		SELECT pg_stat_clear_snapshot();
		SELECT coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'quiet'});
}
my $before = quiet_scans();

for my $i (1 .. 20)
{
	$node->safe_psql($db, "INSERT INTO busy VALUES ($i)");
}
ok(poll_until($node, $db, q{SELECT count(*) FROM busy_out WHERE id <= 20}, '20', 10),
	'the busy pipeline processes its rows at once');

flush_worker_stats(1002);
is(quiet_scans(), $before,
	'commits into another source did not make the quiet pipeline look at its source');

$node->safe_psql($db, q{INSERT INTO quiet VALUES (1)});
ok(poll_until($node, $db, q{SELECT count(*) FROM quiet_out}, '1', 10),
	'a commit into its own source wakes it');

# Straight into a partition: the partition's trigger wakes the pipeline on
# the partitioned table.
my $start = time();
$node->safe_psql($db, q{INSERT INTO parted_1 VALUES (1, 1)});
ok(poll_until($node, $db, q{SELECT count(*) FROM parted_out}, '1', 10),
	'a row inserted into a partition is processed at once');
cmp_ok(time() - $start, '<', 10, 'well before the naptime');

# And into a partition created after the pipeline.
$node->safe_psql($db,
	q{CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (2) TO (3)});
# the scheduler learns about the new table at its next catalog read, which
# a pipeline change brings forward
$node->safe_psql($db, q{SELECT microbatch.alter_pipeline('parted', batch_interval => '0')});
$node->safe_psql($db, q{INSERT INTO parted_2 VALUES (2, 2)});
ok(poll_until($node, $db, q{SELECT count(*) FROM parted_out}, '2', 10),
	'so is one inserted into a new partition');

# A pipeline with an interval and a backlog larger than max_batch_rows
# runs its batches back to back until it has caught up, not one cap per
# interval: 30 rows in 10 transactions, a cap of 3 rows, an interval of a
# minute.  One cap per interval would take ten minutes.
$node->safe_psql(
	$db, q{
CREATE TABLE capped (id int);
CREATE TABLE capped_out (id int);
SELECT microbatch.create_pipeline('capped', 'capped', '60s', max_batch_rows => 3);
SELECT microbatch.pause_pipeline('capped');
SELECT microbatch.add_transform('capped', 'copy', 'bronze',
    'INSERT INTO capped_out SELECT id FROM microbatch.capped_batch');
});
$node->safe_psql($db, "INSERT INTO capped SELECT g FROM generate_series($_ * 3 + 1, $_ * 3 + 3) g")
  for 0 .. 9;
$node->safe_psql($db, q{SELECT microbatch.resume_pipeline('capped')});
ok(poll_until($node, $db, q{SELECT count(*) FROM capped_out}, '30', 20),
	'a capped pipeline with an interval catches up at once');
is( $node->safe_psql(
		$db, q{SELECT count(*), max(rows_in) FROM microbatch.batches
                WHERE pipeline = 'capped' AND status = 'committed'}),
	'10|3', 'in batches of the cap');

# A stream of commits into a continuous pipeline's source makes batches
# microbatch.coalesce_delay apart at least (50 ms here), not one per commit,
# and the scheduler is not woken by every commit while it waits for that
# delay: about 2,000 commits over two seconds or more.
$node->append_conf('postgresql.conf', "microbatch.coalesce_delay = '50ms'");
$node->reload;
$node->safe_psql(
	$db, q{
CREATE TABLE stream (id int);
CREATE TABLE stream_out (id int);
SELECT microbatch.create_pipeline('stream', 'stream', '0');
SELECT microbatch.add_transform('stream', 'copy', 'bronze',
    'INSERT INTO stream_out SELECT id FROM microbatch.stream_batch');
});
my $scheduler_pid = $node->safe_psql($db,
	q{SELECT pid FROM microbatch.workers WHERE kind = 'scheduler'});
sub wakeups
{
	open(my $fh, '<', "/proc/$scheduler_pid/status") or return undef;
	my ($n) = map { /^voluntary_ctxt_switches:\s+(\d+)/ ? $1 : () } <$fh>;
	close $fh;
	return $n;
}
my $wakeups_before = wakeups();
$node->safe_psql(
	$db, q{
DO $$
BEGIN
    FOR i IN 1..2000 LOOP
        INSERT INTO stream VALUES (i);
        COMMIT;
        PERFORM pg_sleep(0.001);
    END LOOP;
END $$;
});
ok(poll_until($node, $db, q{SELECT count(*) FROM stream_out}, '2000', 20),
	'a stream of commits is processed');
my ($batches, $min_gap_ms, $seconds) = split /\|/, $node->safe_psql(
	$db, q{
SELECT count(*), min(gap), extract(epoch FROM max(started_at) - min(started_at))
  FROM (SELECT started_at, extract(epoch FROM started_at - lag(started_at) OVER (ORDER BY batch_id)) * 1000 AS gap
          FROM microbatch.batches WHERE pipeline = 'stream' AND status = 'committed') b});
note("stream: $batches batches over $seconds s, shortest gap $min_gap_ms ms");
cmp_ok($batches, '<=', 2 + $seconds / 0.05 * 1.2,
	'batches of a continuous pipeline are coalesced');
cmp_ok($min_gap_ms, '>=', 40, 'and start coalesce_delay apart at least');
my $wakeups = wakeups();
SKIP:
{
	skip 'no /proc', 1 unless defined $wakeups && defined $wakeups_before;
	cmp_ok($wakeups - $wakeups_before, '<', 8 * $batches + 50,
		'the scheduler is not woken by every commit while it waits');
	note('scheduler wake-ups: ' . ($wakeups - $wakeups_before));
}

is($node->safe_psql($db, q{SELECT count(*) FROM microbatch.batches WHERE status = 'failed'}),
	'0', 'no batch failed');

$node->stop;
done_testing();
