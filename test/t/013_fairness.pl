# No database and no owner can keep the others from running.
#
# microbatch.max_workers batch workers serve the whole cluster.  While
# another database waits for a worker, a database keeps at most its share
# of them, and idle workers of other databases give their slot up when the
# cluster has none left; within a database, the next pipeline started is
# one of the owner with the fewest batches running.  And a worker whose
# scheduler went leaves once idle, rather than waiting out its idle minute.
#
# The busy pipelines never run out of work: max_batch_rows = 1 over rows
# committed one per transaction makes each batch take one row, and each
# batch sleeps, so these pipelines alone would keep every worker busy for
# minutes.  The latency bounds below are several times what the fair
# scheduler needs, and far below what the unfair one took (forever, or a
# minute, or a naptime of 30 s).  Each part has a cluster of its own.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $rounds = 5;

sub new_node
{
	my ($name, $conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'microbatch'
max_worker_processes = 16
$conf
});
	$node->start;
	return $node;
}

# $n pipelines slow_1.. in $db, each with $rows rows committed one per
# transaction and a transform that sleeps $sleep s per batch (of one row).
# Transforms come last: a pipeline without them runs nothing, so all of
# them start together.  With $role, the tables and pipelines are its own.
sub add_slow_pipelines
{
	my ($node, $db, $n, $rows, $sleep, $role) = @_;
	my $set_role = defined $role ? "SET ROLE $role;" : '';
	for my $i (1 .. $n)
	{
		$node->safe_psql($db, qq{
			$set_role
			CREATE TABLE slow_src_$i (id int);
			SELECT microbatch.create_pipeline('slow_$i', 'slow_src_$i', '100 ms', 1);
		});
		$node->safe_psql($db, qq{
			$set_role
			DO \$\$
			BEGIN
				FOR i IN 1..$rows LOOP
					INSERT INTO slow_src_$i VALUES (i);
					COMMIT;
				END LOOP;
			END \$\$;
		});
	}
	for my $i (1 .. $n)
	{
		$node->safe_psql($db, qq{
			$set_role
			SELECT microbatch.add_transform('slow_$i', 'sleep', 'bronze',
				'SELECT pg_sleep($sleep)');
		});
	}
}

# Committed batches of the slow pipelines of $db so far.
sub slow_batches
{
	my ($node, $db) = @_;
	return $node->safe_psql($db, q{
		SELECT count(*) FROM microbatch.batches
		 WHERE pipeline LIKE 'slow\_%' AND status = 'committed' AND rows_in > 0});
}

# Rounds of rows for the fast pipeline (table fast_dst, one row per source
# row, with its batch), each of which must be processed within $bound s.
# A round that fails ends the rounds: the others would fail the same way.
sub fast_rounds
{
	my ($node, $db, $role, $bound, $what) = @_;
	my $set_role = defined $role ? "SET ROLE $role;" : '';
	my $max = 0;
	my $done = 0;
	for my $round (1 .. $rounds)
	{
		my $start = time();
		$node->safe_psql($db, qq{
			$set_role
			INSERT INTO fast_src SELECT $round * 10 + g FROM generate_series(1, 3) g});
		my $ok = poll_until($node, $db,
			"SELECT count(*) FROM fast_dst WHERE id / 10 = $round", '3', $bound,
			"$what, round $round");
		my $elapsed = time() - $start;
		$max = $elapsed if $elapsed > $max;
		ok($ok, sprintf("%s, round %d: processed in %.1f s (bound %d s)",
				$what, $round, $elapsed, $bound));
		last unless $ok;
		$done++;
	}
	note sprintf("%s: slowest round %.1f s", $what, $max);
	return $done;
}

# The fast pipeline: its rows copied with the batch that took them.
sub add_fast_pipeline
{
	my ($node, $db, $role, $interval) = @_;
	my $set_role = defined $role ? "SET ROLE $role;" : '';
	$node->safe_psql($db, qq{
		$set_role
		CREATE TABLE fast_src (id int);
		CREATE TABLE fast_dst (batch_id bigint, id int);
		SELECT microbatch.create_pipeline('fast', 'fast_src', '$interval');
		SELECT microbatch.add_transform('fast', 'copy', 'bronze',
			'INSERT INTO fast_dst SELECT microbatch.current_batch_id(), id FROM microbatch.fast_batch');
	});
}

# The fast pipeline arrives in $db, with its first rows, in one transaction,
# while the busy pipelines hold the workers: its first batch needs one of
# them.  True if those rows are processed within $bound s.
sub fast_pipeline_arrives
{
	my ($node, $db, $interval, $bound, $what) = @_;
	my $start = time();
	$node->safe_psql($db, qq{
		CREATE TABLE fast_src (id int);
		CREATE TABLE fast_dst (batch_id bigint, id int);
		BEGIN;
		SELECT microbatch.create_pipeline('fast', 'fast_src', '$interval');
		SELECT microbatch.add_transform('fast', 'copy', 'bronze',
			'INSERT INTO fast_dst SELECT microbatch.current_batch_id(), id FROM microbatch.fast_batch');
		INSERT INTO fast_src VALUES (1), (2), (3);
		COMMIT;
	});
	my $ok = poll_until($node, $db, 'SELECT count(*) FROM fast_dst', '3', $bound,
		"the first rows of $db");
	ok($ok, sprintf('%s (first batch in %.1f s, bound %d s)', $what, time() - $start, $bound));
	return $ok;
}

sub no_crash
{
	my ($node, $what) = @_;
	unlike(
		slurp_file($node->logfile),
		qr/was terminated by signal|terminating any other active server processes|PANIC:/,
		"$what: no server process crashed");
}

###########################################################################
# 1. Database a would keep both workers busy forever; database b still gets
# its batches run, within a bounded time, round after round.
###########################################################################
{
	my $node = new_node('fair_databases', q{
microbatch.max_workers = 2
microbatch.naptime = '1s'
});
	for my $db ('a', 'b')
	{
		$node->safe_psql('postgres', "CREATE DATABASE $db");
		$node->safe_psql($db, 'CREATE EXTENSION microbatch');
	}
	ok(poll_until($node, 'b', q{
		SELECT count(*) FROM microbatch.workers
		 WHERE kind = 'scheduler' AND database IN ('a', 'b')}, '2', 30),
		'databases: a and b have their schedulers');

	add_slow_pipelines($node, 'a', 4, 40, 2);
	ok(poll_until($node, 'a', q{
		SELECT count(*) FROM microbatch.workers
		 WHERE kind = 'batch worker' AND database = 'a' AND state = 'running'}, '2', 30),
		'databases: a keeps both workers busy');

	# A slow batch of a ends every second or so.
	my $a_before = slow_batches($node, 'a');
	my $first = fast_pipeline_arrives($node, 'b', '0', 15,
		'databases: b gets a worker from busy a');
	my $done = $first ? fast_rounds($node, 'b', undef, 10, 'databases: b while a is busy') : 0;
	is($done, $rounds, "databases: every round of b's rows processed in time");

	# a was not starved meanwhile, and gets b's idle worker back
	my $want = $a_before + 2;
	ok(poll_until($node, 'a', qq{
		SELECT count(*) >= $want FROM microbatch.batches
		 WHERE pipeline LIKE 'slow\\_%' AND status = 'committed' AND rows_in > 0}, 't', 20),
		"databases: a's batches kept running");
	ok(poll_until($node, 'a', q{
		SELECT count(*) FROM microbatch.workers
		 WHERE kind = 'batch worker' AND database = 'a' AND state = 'running'}, '2', 20),
		"databases: a gets b's idle worker back while its rows wait");
	isnt($node->safe_psql('a', q{
		SELECT sum(rows_waiting) FROM microbatch.pipelines WHERE pipeline LIKE 'slow\_%'}),
		'0', 'databases: a still has rows waiting, so it wanted the workers all along');
	is($node->safe_psql('b', q{SELECT count(*) = count(DISTINCT id) FROM fast_dst}),
		't', "databases: none of b's rows processed twice");
	cmp_ok($node->safe_psql('b', q{
		SELECT count(*) FROM microbatch.workers WHERE kind = 'batch worker'}),
		'<=', 2, 'databases: never more than max_workers batch workers');
	no_crash($node, 'databases');
	$node->stop;
}

###########################################################################
# 1b. The same with a single worker: a's share of it is none while b waits
# (1 / 2 databases), so a's worker, once its batch ends, makes way for b.
###########################################################################
{
	my $node = new_node('fair_single', q{
microbatch.max_workers = 1
microbatch.naptime = '1s'
});
	for my $db ('a', 'b')
	{
		$node->safe_psql('postgres', "CREATE DATABASE $db");
		$node->safe_psql($db, 'CREATE EXTENSION microbatch');
	}
	add_slow_pipelines($node, 'a', 2, 40, 1);
	ok(poll_until($node, 'a', q{
		SELECT count(*) FROM microbatch.workers
		 WHERE kind = 'batch worker' AND database = 'a' AND state = 'running'}, '1', 30),
		'single worker: a keeps it busy');
	my $first = fast_pipeline_arrives($node, 'b', '0', 15,
		'single worker: b gets the worker from busy a');
	my $done = $first ? fast_rounds($node, 'b', undef, 15, 'single worker: b while a is busy') : 0;
	is($done, $rounds, "single worker: every round of b's rows processed in time");
	no_crash($node, 'single worker');
	$node->stop;
}

###########################################################################
# 2. With a single worker, the idle one of database a gives its slot to
# database b, which waits: b's batch runs within seconds, not after a's
# worker's minute idle.
###########################################################################
{
	my $node = new_node('fair_idle', q{
microbatch.max_workers = 1
microbatch.naptime = '1s'
});
	for my $db ('a', 'b')
	{
		$node->safe_psql('postgres', "CREATE DATABASE $db");
		$node->safe_psql($db, 'CREATE EXTENSION microbatch');
	}
	add_fast_pipeline($node, 'a', undef, '100 ms');
	$node->safe_psql('a', 'INSERT INTO fast_src VALUES (1)');
	ok(poll_until($node, 'a', 'SELECT count(*) FROM fast_dst', '1', 30),
		"idle: a's batch ran");
	ok(poll_until($node, 'a', q{
		SELECT count(*) FROM microbatch.workers
		 WHERE kind = 'batch worker' AND database = 'a' AND state = 'idle'}, '1', 10),
		"idle: a's worker is idle, holding the only slot");
	my $a_worker = $node->safe_psql('a', q{
		SELECT pid FROM microbatch.workers WHERE kind = 'batch worker' AND database = 'a'});
	ok(poll_until($node, 'b', q{
		SELECT count(*) FROM microbatch.workers
		 WHERE kind = 'scheduler' AND database = 'b'}, '1', 30),
		'idle: b has its scheduler');

	fast_pipeline_arrives($node, 'b', '100 ms', 10,
		"idle: b's batch runs at once, not after a's worker's idle minute");
	is($node->safe_psql('postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE pid = $a_worker"),
		'0', "idle: a's idle worker left to make room");

	# And a gets it back the same way when its rows come.
	my $start = time();
	$node->safe_psql('a', 'INSERT INTO fast_src VALUES (2)');
	my $ok = poll_until($node, 'a', 'SELECT count(*) FROM fast_dst', '2', 10, "a's second row");
	ok($ok, sprintf("idle: then a's new row is processed in %.1f s (bound 10 s)",
			time() - $start));

	# Both databases idle now, with one worker between them.  Their idle
	# pipelines still look for rows every naptime (1 s), which must not
	# hand the worker back and forth, a new process each time: idle
	# pipelines are to cost next to nothing.
	my %seen;
	my $watch_end = time() + 5;
	while (time() < $watch_end)
	{
		$seen{$_} = 1 for split /,/, $node->safe_psql('a', q{
			SELECT string_agg(pid || ' in ' || database, ',') FROM microbatch.workers
			 WHERE kind = 'batch worker'});
		usleep(100_000);
	}
	note 'idle: batch workers seen in 5 s: ' . join(', ', sort keys %seen);
	cmp_ok(scalar(keys %seen), '<=', 2,
		'idle: two idle databases do not pass the worker back and forth at every naptime');
	no_crash($node, 'idle');
	$node->stop;
}

###########################################################################
# 3. Within a database, owners take turns: owner ox has 4 slow pipelines
# that would keep both workers busy for minutes, owner oy one fast
# pipeline, which still gets its rows processed within a bounded time.
# oy's pipeline is continuous: after each batch it waits for a commit (or
# a naptime, 30 s here), so a scheduler that took the most overdue
# pipeline first would leave it behind ox's until the naptime passed.
###########################################################################
{
	my $node = new_node('fair_owners', q{
microbatch.max_workers = 2
microbatch.naptime = '30s'
});
	$node->safe_psql('postgres', q{
		CREATE DATABASE d;
		CREATE ROLE ox LOGIN;
		CREATE ROLE oy LOGIN;
	});
	$node->safe_psql('d', q{
		CREATE EXTENSION microbatch;
		GRANT CREATE ON SCHEMA public TO ox, oy;
	});
	add_fast_pipeline($node, 'd', 'oy', '0');
	add_slow_pipelines($node, 'd', 4, 60, 1, 'ox');
	ok(poll_until($node, 'd', q{
		SELECT count(*) FROM microbatch.workers
		 WHERE kind = 'batch worker' AND state = 'running' AND pipeline LIKE 'slow\_%'}, '2', 30),
		"owners: ox's pipelines keep both workers busy");

	my $before = slow_batches($node, 'd');
	my $done = fast_rounds($node, 'd', 'oy', 8, "owners: oy's rows while ox's run");
	is($done, $rounds, "owners: every round of oy's rows processed in time");
	cmp_ok(slow_batches($node, 'd') - $before, '>=', 2, "owners: ox's batches kept running");
	is($node->safe_psql('d', q{SELECT count(*) = count(DISTINCT id) FROM fast_dst}),
		't', "owners: none of oy's rows processed twice");
	no_crash($node, 'owners');
	$node->stop;
}

###########################################################################
# 4. A worker whose scheduler exits leaves once idle (a new scheduler
# would not know what it was doing), instead of waiting out its idle
# minute; the launcher starts a new scheduler, and batches go on, each row
# processed exactly once.  Once with an idle worker, once with a worker in
# the middle of a batch, which finishes it first.
###########################################################################
{
	my $node = new_node('fair_orphans', q{
microbatch.max_workers = 2
microbatch.naptime = '1s'
});
	$node->safe_psql('postgres', 'CREATE DATABASE d');
	$node->safe_psql('d', q{
		CREATE EXTENSION microbatch;
		CREATE TABLE log (pipeline text, batch_id bigint, id int);
		CREATE TABLE src (id int);
		SELECT microbatch.create_pipeline('p', 'src', '100 ms');
		SELECT microbatch.add_transform('p', 'log', 'bronze',
			$$INSERT INTO log SELECT 'p', microbatch.current_batch_id(), id FROM microbatch.p_batch$$);
		CREATE TABLE slow_src (id int);
		SELECT microbatch.create_pipeline('slow', 'slow_src', '100 ms');
		SELECT microbatch.add_transform('slow', 'log', 'bronze',
			$$INSERT INTO log SELECT 'slow', microbatch.current_batch_id(), id FROM microbatch.slow_batch$$);
		SELECT microbatch.add_transform('slow', 'sleep', 'silver',
			'SELECT pg_sleep(3)');
	});

	my $scheduler_sql = q{
		SELECT pid FROM microbatch.workers WHERE kind = 'scheduler' AND database = 'd'};
	my $gone = sub {
		my ($pids) = @_;
		return qq{SELECT count(*) FROM pg_stat_activity WHERE pid IN ($pids)};
	};

	# The idle worker.
	$node->safe_psql('d', 'INSERT INTO src VALUES (1)');
	ok(poll_until($node, 'd', q{SELECT count(*) FROM log WHERE pipeline = 'p'}, '1', 30),
		'orphans: the first row is processed');
	# (Both pipelines ran a first, empty batch when created: there may be
	# two idle workers.)
	ok(poll_until($node, 'd', q{
		SELECT count(*) > 0 AND count(*) FILTER (WHERE state <> 'idle') = 0
		  FROM microbatch.workers WHERE kind = 'batch worker'}, 't', 10),
		'orphans: its worker is idle');
	my $workers = $node->safe_psql('d', q{
		SELECT string_agg(pid::text, ',') FROM microbatch.workers WHERE kind = 'batch worker'});
	my $scheduler = $node->safe_psql('d', $scheduler_sql);
	$node->safe_psql('d', "SELECT pg_terminate_backend($scheduler)");
	my $start = time();
	my $ok = poll_until($node, 'd', $gone->($workers), '0', 5, 'the idle workers to leave');
	ok($ok, sprintf('orphans: the idle workers left %.1f s after their scheduler (bound 5 s, idle exit 60 s)',
			time() - $start));
	ok(poll_until($node, 'd', qq{
		SELECT count(*) FROM microbatch.workers
		 WHERE kind = 'scheduler' AND database = 'd' AND pid <> $scheduler}, '1', 15),
		'orphans: the launcher started a new scheduler');
	$node->safe_psql('d', 'INSERT INTO src VALUES (2), (3)');
	ok(poll_until($node, 'd', q{SELECT count(*) FROM log WHERE pipeline = 'p'}, '3', 15),
		'orphans: batches go on under the new scheduler');
	is($node->safe_psql('d', qq{
		SELECT count(*) FROM microbatch.workers WHERE pid IN ($workers)}),
		'0', 'orphans: not on the old workers');

	# A worker in the middle of a batch: it finishes the batch, then leaves.
	$node->safe_psql('d', 'INSERT INTO slow_src VALUES (1)');
	ok(poll_until($node, 'd', q{
		SELECT count(*) FROM microbatch.workers
		 WHERE kind = 'batch worker' AND state = 'running' AND pipeline = 'slow'}, '1', 15),
		'orphans: a worker runs a slow batch');
	my $worker = $node->safe_psql('d', q{
		SELECT pid FROM microbatch.workers WHERE kind = 'batch worker' AND pipeline = 'slow'});
	$scheduler = $node->safe_psql('d', $scheduler_sql);
	$node->safe_psql('d', "SELECT pg_terminate_backend($scheduler)");
	ok(poll_until($node, 'd', q{SELECT count(*) FROM log WHERE pipeline = 'slow'}, '1', 15),
		'orphans: the running batch still commits');
	$start = time();
	$ok = poll_until($node, 'd', $gone->($worker), '0', 5, 'the busy worker to leave');
	ok($ok, sprintf('orphans: then its worker left, %.1f s after the batch (bound 5 s)',
			time() - $start));
	ok(poll_until($node, 'd', qq{
		SELECT count(*) FROM microbatch.workers
		 WHERE kind = 'scheduler' AND database = 'd' AND pid <> $scheduler}, '1', 15),
		'orphans: a new scheduler again');
	$node->safe_psql('d', q{
		INSERT INTO slow_src VALUES (2);
		INSERT INTO src VALUES (4);
	});
	ok(poll_until($node, 'd', 'SELECT count(*) FROM log', '6', 20),
		'orphans: both pipelines go on');

	# Give a batch done twice a chance to show.
	sleep(1);
	is($node->safe_psql('d', q{
		SELECT string_agg(pipeline || ':' || n || '/' || ids, ',' ORDER BY pipeline)
		  FROM (SELECT pipeline, count(*) AS n, count(DISTINCT id) AS ids
		          FROM log GROUP BY pipeline) s}),
		'p:4/4,slow:2/2', 'orphans: every row processed exactly once');
	is($node->safe_psql('d', q{
		SELECT count(*) FROM log l
		  LEFT JOIN microbatch.batches b
		    ON b.pipeline = l.pipeline AND b.batch_id = l.batch_id AND b.status = 'committed'
		 WHERE b.batch_id IS NULL}),
		'0', 'orphans: each logged row belongs to a committed batch');
	no_crash($node, 'orphans');
	$node->stop;
}

done_testing();
