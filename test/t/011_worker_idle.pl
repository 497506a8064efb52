# Idle pipelines cost next to nothing: a pipeline whose last batch found
# nothing runs again only when an insert into a source commits (or after a
# naptime), and such an insert is still processed within its interval.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $pipelines = 10;

my $node = PostgreSQL::Test::Cluster->new('worker_idle');
$node->init;
# A naptime far longer than the test: only commits can wake the pipelines.
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '60s'
});
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION microbatch');
for my $i (1 .. $pipelines)
{
	$node->safe_psql('postgres', qq{
		CREATE TABLE src_$i (id int);
		CREATE TABLE dst_$i (id int);
		SELECT microbatch.create_pipeline('p$i', 'src_$i', '100 ms');
		SELECT microbatch.add_transform('p$i', 'copy', 'bronze',
			'INSERT INTO dst_$i SELECT id FROM microbatch.p${i}_batch');
		INSERT INTO src_$i VALUES ($i);
	});
}
my $all = join(' + ', map { "(SELECT count(*) FROM dst_$_)" } 1 .. $pipelines);
ok($node->poll_query_until('postgres', "SELECT $all = $pipelines"),
	'every pipeline processed its first row');

# Transactions committed in this database while the pipelines are idle.
# At 100 ms, ten pipelines polled blindly would commit about 300 in 3 s.
sub commits
{
	return $node->safe_psql('postgres', q{
		SELECT pg_stat_force_next_flush();
		SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()});
}
sleep(2);
my $before = commits();
sleep(3);
my $after = commits();
cmp_ok($after - $before, '<', 30,
	'idle pipelines run no batches while nothing is inserted');

# An insert wakes them, long before the naptime.
$node->safe_psql('postgres', 'INSERT INTO src_3 VALUES (33)');
ok( $node->poll_query_until('postgres',
		'SELECT count(*) = 2 FROM dst_3', 't'),
	'a committed insert is processed without waiting for a naptime');

# Commits into the source of a paused pipeline are counted, but wake the
# scheduler only while a continuous pipeline waits for one: 300 of them must
# not cost the scheduler 300 wake-ups.  (Its voluntary context switches
# count how often it slept and woke; linux only.)
SKIP:
{
	my $scheduler = $node->safe_psql('postgres', q{
		SELECT pid FROM microbatch.workers
		 WHERE kind = 'scheduler' AND database = current_database()});
	skip 'no /proc/<pid>/status here', 2
	  unless -r "/proc/$scheduler/status";

	# The idle pipelines would run at their next interval after any commit.
	$node->safe_psql('postgres', qq{SELECT microbatch.pause_pipeline('p$_')})
	  for 1 .. $pipelines;
	$node->safe_psql('postgres', q{
		CREATE TABLE src_paused (id int);
		CREATE TABLE dst_paused (id int);
		SELECT microbatch.create_pipeline('paused', 'src_paused', '0');
		SELECT microbatch.add_transform('paused', 'copy', 'bronze',
			'INSERT INTO dst_paused SELECT id FROM microbatch.paused_batch');
		SELECT microbatch.pause_pipeline('paused');
	});
	sleep(1);
	my $switches = sub {
		return (slurp_file("/proc/$scheduler/status") =~
			  /^voluntary_ctxt_switches:\s+(\d+)/m)[0];
	};
	my $switches_before = $switches->();
	$node->safe_psql('postgres', q{
		DO $$
		BEGIN
			FOR i IN 1..300 LOOP
				INSERT INTO src_paused VALUES (i);
				COMMIT;
			END LOOP;
		END $$;
	});
	my $wakeups = $switches->() - $switches_before;
	note "scheduler wake-ups during 300 commits: $wakeups";
	cmp_ok($wakeups, '<', 30,
		'commits into sources with no continuous pipeline waiting do not wake the scheduler');

	$node->safe_psql('postgres', q{SELECT microbatch.resume_pipeline('paused')});
	ok( $node->poll_query_until('postgres',
			'SELECT count(*) = 300 FROM dst_paused', 't'),
		'once resumed, the pipeline processes the rows those commits left');
}

# A continuous pipeline without transforms runs no batch: its rows wait for
# a transform, not for the next commit or a naptime.
$node->safe_psql('postgres', q{
	CREATE TABLE src_bare (id int);
	CREATE TABLE dst_bare (id int);
	SELECT microbatch.create_pipeline('bare', 'src_bare', '0');
	INSERT INTO src_bare VALUES (1);
});
sleep(1);
$before = commits();
sleep(2);
$after = commits();
cmp_ok($after - $before, '<', 30,
	'a continuous pipeline without transforms does not run batch after batch');
$node->safe_psql('postgres', q{
	SELECT microbatch.add_transform('bare', 'copy', 'bronze',
		'INSERT INTO dst_bare SELECT id FROM microbatch.bare_batch');
	INSERT INTO src_bare VALUES (2);
});
ok( $node->poll_query_until('postgres',
		'SELECT count(*) = 2 FROM dst_bare', 't'),
	'once it has a transform, it processes the rows that waited');

$node->stop;
done_testing();
