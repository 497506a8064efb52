# Fan-in without Citus: several ingest servers, one processing server.
#
# Two publishers, pub1 and pub2, each take writes into a table events and
# publish it; the subscriber has one table events, written by two
# subscriptions (one per publisher), which is the source of two pipelines:
# a continuous one (batch_interval 0) and one with an interval.  Each
# pipeline copies its rows to a bronze table and adds them to a gold
# aggregate per publisher (count and sum), so a row lost or processed twice
# shows in both.  The variants of 016 meet in one table:
#   pub1: its events is a plain table, without microbatch_xid;
#   pub2: its events is a pipeline source of its own, so its rows carry
#         pub2's microbatch_xid, which the publication sends.
# The subscriber's transaction ids start at 0x200000 and pub2's at 0x400000
# (pg_resetwal -x): an id of pub2 kept on the subscriber would lie in the
# subscriber's future, beyond every window until its counter got there,
# which is the harmful direction (016 has the publisher behind).
#
# Checked:
#   - the subscriptions exist before the pipelines: create_pipeline refuses
#     a table holding rows with pub2's ids (clear error, SQLSTATE 55000),
#     accepts it once they are given a subscriber id, and gives the table
#     the replica trigger, since subscriptions already write into it;
#   - rows that an apply worker is writing with pub2's ids while
#     create_pipeline runs (its transaction still open) are refused:
#     create_pipeline waits for the writer before it checks the values;
#   - under concurrent load on both publishers (single- and multi-row
#     transactions, savepoints rolled back, COPY, rollbacks, and transactions
#     large enough to be streamed to the subscriber before they commit),
#     with an immediate shutdown (crash) of pub1, a fast restart of pub2 and
#     a crash of the subscriber: once the subscriber holds every row of the
#     publishers (the ground truth), each pipeline has processed each of
#     them exactly once (bronze), gold's count and sum per publisher equal
#     the publisher's, the ledger's rows_in adds up, no batch failed;
#   - every row on the subscriber carries a subscriber transaction id, and
#     none carries one of pub2's;
#   - pub2's own pipeline processes its rows once, unaffected;
#   - a subscription the event triggers did not see (made while they were
#     disabled) leaves its table without the replica trigger: the rows
#     pub2 sends with its ids are refused with a clear error (SQLSTATE
#     23514, hint: refresh_pipeline()), none is applied, and after
#     refresh_pipeline() all are, exactly once;
#   - ALTER SUBSCRIPTION ... ADD PUBLICATION gives the new table the replica
#     trigger at once;
#   - dropping one publisher's subscription leaves events, still written by
#     the other, its replica trigger, also through refresh_pipeline();
#   - negative control: a batch replayed makes the bronze check fail.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

# Shared polling helpers (test/t/MicrobatchTest.pm); prove puts only the top
# directory in @INC, so look next to this script.
use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $sub_xid_base = 2097152;     # 0x200000, the start of a pg_xact segment
my $pub2_xid_base = 4194304;    # 0x400000, the same
my $db = 'postgres';

# Waits for the subscriber to catch up, for the pipelines to drain
my $timeout = 120;

#
# The clusters
#
my %pubs;
for my $name ('pub1', 'pub2')
{
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => 'logical');
	# allows_streaming sets max_connections = 10 and shared_buffers = 1MB.
	# pub2 decodes with little memory, so that its larger transactions are
	# streamed to the subscriber (streaming = on) before they commit.
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'microbatch'
microbatch.enabled = off
max_connections = 30
shared_buffers = 16MB
log_statement = 'none'
logical_decoding_work_mem = '64kB'
});
	if ($name eq 'pub2')
	{
		command_ok([ 'pg_resetwal', '-x', $pub2_xid_base, $node->data_dir ],
			"pub2's transaction ids start at $pub2_xid_base");
	}
	$node->start;
	$pubs{$name} = $node;
}
my ($pub1, $pub2) = @pubs{ 'pub1', 'pub2' };

my $sub = PostgreSQL::Test::Cluster->new('sub');
$sub->init;
$sub->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '200ms'
max_worker_processes = 16
max_logical_replication_workers = 6
log_error_verbosity = verbose
});
command_ok([ 'pg_resetwal', '-x', $sub_xid_base, $sub->data_dir ],
	"the subscriber's transaction ids start at $sub_xid_base");
$sub->start;

# Wait until the server log, from $offset, matches $re; true if it did.
sub log_wait
{
	my ($node, $re, $offset, $seconds) = @_;
	my $deadline = time() + $seconds;
	while (1)
	{
		return 1 if slurp_file($node->logfile, $offset) =~ $re;
		return 0 if time() > $deadline;
		usleep(100_000);
	}
}

#
# Publishers: events on both, the sequence giving ids (COPY uses the
# default).  pub2's events, clicks and orders are pipeline sources; gate is
# a table the test uses to hold an applying transaction open.
#
my $events_sql = q{
CREATE SEQUENCE ev_id;
CREATE TABLE events (src text NOT NULL DEFAULT '%s',
                     id bigint NOT NULL DEFAULT nextval('ev_id'),
                     v int NOT NULL,
                     PRIMARY KEY (src, id));
INSERT INTO events (v) SELECT g FROM generate_series(1, 10) g;
};
$pub1->safe_psql($db, sprintf($events_sql, 'pub1') . q{
CREATE PUBLICATION pub1 FOR TABLE events;
});
$pub2->safe_psql(
	$db, sprintf($events_sql, 'pub2') . q{
CREATE EXTENSION microbatch;
CREATE TABLE pub_log (batch_id bigint NOT NULL, id bigint NOT NULL, v int NOT NULL);
SELECT microbatch.create_pipeline('local', 'events');
SELECT microbatch.add_transform('local', 'log', 'bronze', $$
    INSERT INTO pub_log SELECT microbatch.current_batch_id(), id, v FROM microbatch.local_batch
$$);
CREATE TABLE gate (id int PRIMARY KEY);
CREATE PUBLICATION pub2 FOR TABLE events, gate;
CREATE TABLE clicks (id int PRIMARY KEY, v int NOT NULL);
SELECT microbatch.create_pipeline('clicks_local', 'clicks');
INSERT INTO clicks (id, v) SELECT g, g FROM generate_series(1, 5) g;
CREATE PUBLICATION pub2_clicks FOR TABLE clicks;
CREATE TABLE orders (id int PRIMARY KEY, v int NOT NULL);
SELECT microbatch.create_pipeline('orders_local', 'orders');
INSERT INTO orders (id, v) SELECT g, g FROM generate_series(1, 4) g;
CREATE PUBLICATION pub2_orders FOR TABLE orders;
});
is( $pub2->safe_psql(
		$db, qq{
SELECT count(*) FILTER (WHERE microbatch_xid::text::bigint >= $pub2_xid_base)
       || ':' || count(*) FROM events}),
	'10:10', "pub2: its events rows carry pub2's ids");

#
# Subscriber: events with the column pub2 sends, the pipelines' outputs,
# and both subscriptions, before any pipeline.
#
$sub->safe_psql(
	$db, q{
CREATE EXTENSION microbatch;
CREATE TABLE events (src text NOT NULL, id bigint NOT NULL, v int NOT NULL,
                     microbatch_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
                     PRIMARY KEY (src, id));
CREATE TABLE gate (id int PRIMARY KEY);
});
my @pipelines = ('cont', 'intv');
my %interval = (cont => '0', intv => '300ms');
for my $p (@pipelines)
{
	$sub->safe_psql(
		$db, qq{
CREATE TABLE bronze_$p (batch_id bigint NOT NULL, src text NOT NULL, id bigint NOT NULL,
                        v int NOT NULL);
CREATE TABLE gold_$p (src text PRIMARY KEY, n bigint NOT NULL, total bigint NOT NULL);
});
}

# A pipeline on events with its transforms, in one transaction, so that no
# batch runs before it has them.
sub pipeline_sql
{
	my ($p) = @_;
	return qq{
BEGIN;
SELECT microbatch.create_pipeline('$p', 'events', '$interval{$p}');
SELECT microbatch.add_transform('$p', 'bronze', 'bronze', \$\$
    INSERT INTO bronze_$p SELECT microbatch.current_batch_id(), src, id, v
      FROM microbatch.${p}_batch
\$\$);
SELECT microbatch.add_transform('$p', 'gold', 'gold', \$\$
    INSERT INTO gold_$p (src, n, total)
    SELECT src, count(*), sum(v) FROM microbatch.${p}_batch GROUP BY src
    ON CONFLICT (src) DO UPDATE SET n = gold_$p.n + excluded.n, total = gold_$p.total + excluded.total
\$\$);
COMMIT;
};
}

my %connstr = map { $_ => $pubs{$_}->connstr() . " dbname=$db" } keys %pubs;
$sub->safe_psql($db,
	"CREATE SUBSCRIPTION sub1 CONNECTION '$connstr{pub1}' PUBLICATION pub1 WITH (slot_name = 'fanin_pub1')");
$sub->safe_psql($db,
	"CREATE SUBSCRIPTION sub2 CONNECTION '$connstr{pub2}' PUBLICATION pub2 WITH (slot_name = 'fanin_pub2', streaming = on)");
ok( poll_until(
		$sub, $db,
		q{SELECT count(*) FROM pg_subscription_rel WHERE srsubstate = 'r'},
		'3', $timeout, 'both subscriptions to synchronise'),
	'subscriber: both subscriptions are synchronised');
$pub1->wait_for_catchup('sub1');
$pub2->wait_for_catchup('sub2');

my $replica_triggers_sql = q{
SELECT coalesce(string_agg(tgrelid::regclass::text, ',' ORDER BY tgrelid::regclass::text), '')
  FROM pg_trigger WHERE tgname = 'microbatch_source_replicated' AND tgenabled = 'R'};
is($sub->safe_psql($db, $replica_triggers_sql), '',
	'subscriber: no replica trigger on a table that no pipeline reads');
is( $sub->safe_psql(
		$db, qq{
SELECT string_agg(src || ':' || n_sub || ':' || n_pub2, ',' ORDER BY src) FROM (
  SELECT src, count(*) FILTER (WHERE microbatch_xid::text::bigint BETWEEN $sub_xid_base AND $pub2_xid_base - 1) AS n_sub,
              count(*) FILTER (WHERE microbatch_xid::text::bigint >= $pub2_xid_base) AS n_pub2
    FROM events GROUP BY src) s}),
	'pub1:10:0,pub2:0:10',
	"before any pipeline: pub1's rows got subscriber ids, pub2's kept pub2's");

#
# create_pipeline refuses the rows with pub2's ids, which no window of the
# subscriber would hold; once they have subscriber ids, it accepts.
#
my ($ret, $out, $err) = $sub->psql($db,
	"\\set VERBOSITY verbose\n" . q{SELECT microbatch.create_pipeline('cont', 'events', '0')});
isnt($ret, 0, 'create_pipeline fails on a table holding rows with ids of pub2');
like(
	$err,
	qr/ERROR:  55000: table events has 10 rows whose microbatch_xid is not a committed transaction of this cluster/,
	'create_pipeline: the error counts the rows and says what is wrong (SQLSTATE 55000)');
like($err, qr/HINT:  Give them the current transaction's id with UPDATE \.\.\. SET microbatch_xid = DEFAULT/,
	'create_pipeline: the hint says how to fix them');
is($sub->safe_psql($db, q{SELECT count(*) FROM microbatch.pipelines}),
	'0', 'create_pipeline: no pipeline was made');
$sub->safe_psql($db,
	q{UPDATE events SET microbatch_xid = DEFAULT WHERE microbatch_xid >= pg_current_xact_id()});

#
# Rows an apply worker writes with pub2's ids while create_pipeline runs.
# pub2 commits five events rows and a row of gate in one transaction; a
# session of the subscriber holds gate locked, so the apply worker, which
# has written the events rows, waits.  create_pipeline must wait for the
# apply worker's lock on events before it checks the values: the rows are
# not committed yet, and the constraint it adds is NOT VALID, so it would
# never look at them.  Had it checked first (as up to 0.3.0), those five
# rows would have sat in the subscriber's future: no batch holds them,
# rows_waiting does not count them, refresh_pipeline() does not see them.
# Once gate is released, the apply worker commits, and create_pipeline
# refuses the rows; the test then repairs them as the hint says.
#
my $gate = $sub->background_psql($db);
$gate->query_safe(q{BEGIN; LOCK TABLE gate IN SHARE MODE});
$pub2->safe_psql(
	$db, q{
BEGIN;
INSERT INTO events (v) SELECT 100 + g FROM generate_series(1, 5) g;
INSERT INTO gate VALUES (1);
COMMIT;});
ok( poll_until(
		$sub, $db,
		q{SELECT count(*) FROM pg_locks WHERE relation = 'gate'::regclass AND NOT granted},
		'1', $timeout, 'the apply worker to wait for gate'),
	'race: the apply worker has written the rows and waits for gate');
my $creator = $sub->background_psql($db, on_error_stop => 0);
$creator->query_until(qr/creating/,
	"\\set VERBOSITY verbose\n\\echo creating\n" . pipeline_sql('cont') . "\\echo created\n");
# (or has already given up, if it does not wait)
my $creator_waits = 0;
my $deadline = time() + $timeout;
while (time() < $deadline)
{
	$creator->{run}->pump_nb;
	last if $creator->{stdout} =~ /created/;
	$creator_waits = $sub->safe_psql(
		$db, q{
SELECT count(*) FROM pg_stat_activity
 WHERE wait_event_type = 'Lock' AND query LIKE '%create_pipeline%' AND pid <> pg_backend_pid()});
	last if $creator_waits;
	usleep(50_000);
}
note 'race: create_pipeline ' . ($creator_waits ? 'waits for the apply worker' : 'did not wait');
$gate->query_safe(q{COMMIT});
$gate->quit;
$creator->query_until(qr/created/, '') unless $creator->{stdout} =~ /created/;
$creator->quit;
my $create_err = $creator->{stderr};
my $created = $sub->safe_psql($db, q{SELECT count(*) FROM microbatch.pipelines WHERE pipeline = 'cont'});
my $in_flight_sql = q{SELECT count(*) FROM events WHERE microbatch_xid >= pg_current_xact_id()};
my $in_flight = $sub->safe_psql($db, $in_flight_sql);
note "race: create_pipeline "
  . ($created ? 'succeeded' : "failed: $create_err")
  . "; $in_flight rows of events carry ids beyond the subscriber's";
if ($created)
{
	ok( poll_until(
			$sub, $db,
			q{SELECT count(*) > 0 AND bool_and(status = 'committed') FROM microbatch.batches WHERE pipeline = 'cont'},
			't', $timeout, 'the first batch of cont'),
		'race: cont runs its first batch');
	poll_until($sub, $db,
		q{SELECT rows_waiting FROM microbatch.pipelines WHERE pipeline = 'cont'},
		'0', $timeout, 'cont to have nothing waiting');
}
ok($creator_waits, 'race: create_pipeline waits for the apply worker');
ok( !$created && $create_err =~ /ERROR:  55000: table events has \d+ rows? whose microbatch_xid is not a committed transaction of this cluster/,
	'race: rows applied with ids of pub2 while create_pipeline runs are refused'
) or diag("create_pipeline " . ($created ? 'succeeded' : "failed: $create_err")
	  . "; rows of events with ids beyond the subscriber's: $in_flight; rows cont did not process: "
	  . $sub->safe_psql($db, q{
SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM bronze_cont b WHERE (b.src, b.id) = (e.src, e.id))})
	  . "; cont's rows_waiting: "
	  . ($created ? $sub->safe_psql($db, q{SELECT rows_waiting FROM microbatch.pipelines WHERE pipeline = 'cont'}) : '-'));

# However that went, the documented repair gives every row a subscriber id.
$sub->safe_psql($db,
	q{UPDATE events SET microbatch_xid = DEFAULT WHERE microbatch_xid >= pg_current_xact_id()});
$sub->safe_psql($db, pipeline_sql('cont')) unless $created;
$sub->safe_psql($db, pipeline_sql('intv'));
is($sub->safe_psql($db, $replica_triggers_sql), 'events',
	'create_pipeline gives a table that subscriptions already write into the replica trigger');
ok( poll_until(
		$sub, $db,
		q{SELECT count(*) FROM microbatch.workers WHERE kind = 'scheduler' AND database = current_database()},
		'1', $timeout),
	'subscriber: the database has a scheduler');

#
# Load on both publishers, with restarts of each server
#
my $scripts = PostgreSQL::Test::Utils::tempdir;
PostgreSQL::Test::Utils::append_to_file("$scripts/single.sql", q{
\set v random(1, 1000)
INSERT INTO events (v) VALUES (:v);
});
PostgreSQL::Test::Utils::append_to_file("$scripts/multi.sql", q{
\set v random(1, 1000)
\set n random(2, 8)
BEGIN;
INSERT INTO events (v) SELECT :v + g FROM generate_series(1, :n) g;
INSERT INTO events (v) VALUES (-:v);
COMMIT;
});
PostgreSQL::Test::Utils::append_to_file("$scripts/savepoint.sql", q{
\set v random(1, 1000)
BEGIN;
INSERT INTO events (v) VALUES (:v);
SAVEPOINT s;
INSERT INTO events (v) SELECT -g FROM generate_series(1, 3) g;
ROLLBACK TO SAVEPOINT s;
INSERT INTO events (v) VALUES (:v + 1);
COMMIT;
BEGIN;
INSERT INTO events (v) VALUES (999999);
ROLLBACK;
});

sub start_load
{
	my ($node, $seconds) = @_;
	my %run = (out => '', err => '', node => $node->name);
	$run{h} = IPC::Run::start(
		[
			'pgbench', '-n', '-c', '2', '-j', '1', '-R', '40', '-T', $seconds,
			'-f', "$scripts/single.sql\@5", '-f', "$scripts/multi.sql\@3",
			'-f', "$scripts/savepoint.sql\@2",
			'-h', $node->host, '-p', $node->port, $db
		],
		'>', \$run{out}, '2>', \$run{err});
	return \%run;
}

# Wait for a pgbench run to end; true if it exited with status 0.
sub finish_load
{
	my ($run, $seconds) = @_;
	my $deadline = time() + $seconds;
	while ($run->{h}->pumpable)
	{
		if (time() > $deadline)
		{
			$run->{h}->kill_kill;
			diag "pgbench on $run->{node} did not finish within ${seconds}s";
			return 0;
		}
		$run->{h}->pump_nb;
		usleep(50_000);
	}
	my $clean = $run->{h}->finish;
	my ($n) = $run->{out} =~ /number of transactions actually processed: (\d+)/;
	note "pgbench on $run->{node}: "
	  . ($clean ? 'exited cleanly' : 'ended by the restart')
	  . ', ' . ($n // '?') . ' transactions';
	return $clean;
}

# COPY of $n rows, in one transaction
sub copy_rows
{
	my ($node, $n, $base) = @_;
	$node->safe_psql($db,
		"COPY events (v) FROM stdin;\n"
		  . join('', map { ($base + $_) . "\n" } 1 .. $n) . "\\.\n");
}

my $run1 = start_load($pub1, 24);
my $run2 = start_load($pub2, 24);
usleep(2_000_000);
copy_rows($pub1, 1000, 10_000);
copy_rows($pub2, 2000, 20_000);    # streamed: more than 64kB decoded
$pub2->safe_psql($db,
	q{INSERT INTO events (v) SELECT g % 1000 FROM generate_series(1, 3000) g});
usleep(2_000_000);

$pub1->stop('immediate');
finish_load($run1, 60);
$pub1->start;
$run1 = start_load($pub1, 16);
usleep(3_000_000);

$pub2->restart;
finish_load($run2, 60);
$run2 = start_load($pub2, 12);
usleep(3_000_000);

$sub->stop('immediate');
usleep(1_000_000);
$sub->start;
usleep(2_000_000);
copy_rows($pub1, 500, 30_000);

ok(finish_load($run1, 60), 'pub1: the load after its crash runs to its end')
  or diag("pgbench stderr:\n$run1->{err}");
ok(finish_load($run2, 60), 'pub2: the load after its restart runs to its end')
  or diag("pgbench stderr:\n$run2->{err}");
like(slurp_file($pub1->logfile), qr/database system was not properly shut down; automatic recovery in progress/,
	'pub1 went through crash recovery');
like(slurp_file($sub->logfile), qr/database system was not properly shut down; automatic recovery in progress/,
	'the subscriber went through crash recovery');
# After every restart: a single row and a multi-row transaction on each
for my $node ($pub1, $pub2)
{
	$node->safe_psql($db, q{INSERT INTO events (v) VALUES (4242)});
	$node->safe_psql($db,
		q{BEGIN; INSERT INTO events (v) SELECT g FROM generate_series(1, 50) g; COMMIT;});
}

#
# The ground truth: what each publisher has
#
my %truth;
my ($total_rows, $total_pub2) = (0, 0);
for my $name ('pub1', 'pub2')
{
	my ($n, $sum, $md5) = split /\|/,
	  $pubs{$name}->safe_psql(
		$db, q{
SELECT count(*) || '|' || coalesce(sum(v), 0) || '|' || md5(coalesce(string_agg(id::text, ',' ORDER BY id), ''))
  FROM events});
	$truth{$name} = { n => $n, sum => $sum, md5 => $md5 };
	$total_rows += $n;
	note "$name: $n rows, sum(v) $sum";
}
cmp_ok($pub2->safe_psql($db, q{SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = 'fanin_pub2'}),
	'>', 0, 'pub2 streamed large transactions to the subscriber before they committed');
cmp_ok($truth{pub1}{n}, '>', 1500, 'pub1 took its load');
cmp_ok($truth{pub2}{n}, '>', 5000, 'pub2 took its load');

my $per_src_sql = sub {
	my ($table, $extra) = @_;
	$extra //= '';
	return qq{
SELECT string_agg(line, ',' ORDER BY src) FROM (
  SELECT src, src || ':' || count(*) || '|' || $extra coalesce(sum(v), 0) || '|' ||
              md5(coalesce(string_agg(id::text, ',' ORDER BY id), '')) AS line
    FROM $table GROUP BY src) s};
};
my $expected = join(',',
	map { "$_:$truth{$_}{n}|$truth{$_}{sum}|$truth{$_}{md5}" } 'pub1', 'pub2');
ok( poll_until_tolerant(
		$sub, $db, $per_src_sql->('events'), $expected, $timeout,
		'the subscriber to hold every row of both publishers'),
	'subscriber: events holds exactly the rows of both publishers');

for my $p (@pipelines)
{
	poll_until($sub, $db, "SELECT count(*) FROM bronze_$p", $total_rows, $timeout,
		"$p to process $total_rows rows");
}
usleep(1_000_000);    # long enough for a duplicate to show

my $expected_bronze = join(',',
	map { "$_:$truth{$_}{n}|$truth{$_}{n}|$truth{$_}{sum}|$truth{$_}{md5}" } 'pub1', 'pub2');
my $expected_gold = join(',', map { "$_:$truth{$_}{n}|$truth{$_}{sum}" } 'pub1', 'pub2');
for my $p (@pipelines)
{
	is($sub->safe_psql($db, $per_src_sql->("bronze_$p", q{count(DISTINCT id) || '|' ||})),
		$expected_bronze,
		"$p: bronze has every row of each publisher exactly once");
	is( $sub->safe_psql(
			$db, qq{SELECT string_agg(src || ':' || n || '|' || total, ',' ORDER BY src) FROM gold_$p}),
		$expected_gold,
		"$p: gold's count and sum per publisher equal the publisher's");
	is( $sub->safe_psql(
			$db, qq{
SELECT coalesce(sum(rows_in), 0) FROM microbatch.batches WHERE pipeline = '$p' AND status = 'committed'}),
		$total_rows, "$p: the ledger's rows_in add up to the rows processed");
}
cmp_ok(
	$sub->safe_psql(
		$db, q{SELECT count(*) FROM microbatch.batches WHERE pipeline = 'cont' AND status = 'committed'}),
	'>', 10, 'cont ran many batches');
is( $sub->safe_psql(
		$db, q{
SELECT string_agg(format('%s:%s:%s', pipeline, state, consecutive_failures), ',' ORDER BY pipeline)
  FROM microbatch.pipelines}),
	'cont:enabled:0,intv:enabled:0', 'no subscriber pipeline failed');
is($sub->safe_psql($db, q{SELECT count(*) FROM microbatch.batches WHERE status <> 'committed'}),
	'0', 'no batch failed on the subscriber');

#
# Tracking values: the subscriber's own ids, none of pub2's
#
is( $sub->safe_psql(
		$db, qq{
SELECT count(*) FROM events
 WHERE microbatch_xid::text::bigint < $sub_xid_base OR microbatch_xid >= pg_current_xact_id()}),
	'0', 'every row on the subscriber carries an id of a subscriber transaction');
is( $pub2->safe_psql(
		$db, qq{SELECT count(*) FROM events WHERE microbatch_xid::text::bigint < $pub2_xid_base}),
	'0', "pub2: every row of its events carries one of pub2's ids");
is( $sub->safe_psql(
		$db, qq{SELECT count(*) FROM events WHERE microbatch_xid::text::bigint >= $pub2_xid_base}),
	'0', "so no row on the subscriber carries one of pub2's ids");
cmp_ok(
	$sub->safe_psql(
		$db, q{SELECT count(DISTINCT microbatch_xid) FROM events WHERE src = 'pub2'}),
	'>', 100, "pub2's rows were applied by many subscriber transactions");

# pub2's own pipeline, run by hand, processes its rows once
my $batches = 0;
while ($pub2->safe_psql($db, q{SELECT microbatch.run_batch('local') IS NOT NULL}) eq 't')
{
	last if ++$batches > 100;
}
is( $pub2->safe_psql(
		$db, q{
SELECT count(*) || '|' || count(DISTINCT id) || '|' ||
       (SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM pub_log l WHERE l.id = e.id))
  FROM pub_log}),
	"$truth{pub2}{n}|$truth{pub2}{n}|0",
	"pub2: its own pipeline processed each of its rows once");

#
# A subscription the event triggers did not see: made while microbatch's
# ddl_command_end trigger was disabled, it writes into clicks, a pipeline
# source without the replica trigger.  pub2 sends its ids, which the
# constraint refuses; refresh_pipeline() adds the trigger.
#
$sub->safe_psql(
	$db, q{
CREATE TABLE clicks (id int PRIMARY KEY, v int NOT NULL,
                     microbatch_xid xid8 NOT NULL DEFAULT pg_current_xact_id());
CREATE TABLE clicks_log (batch_id bigint NOT NULL, id int NOT NULL, v int NOT NULL);
BEGIN;
SELECT microbatch.create_pipeline('clicks', 'clicks', '0');
SELECT microbatch.add_transform('clicks', 'log', 'bronze', $$
    INSERT INTO clicks_log SELECT microbatch.current_batch_id(), id, v FROM microbatch.clicks_batch
$$);
COMMIT;
});
my $log_offset = -s $sub->logfile;
$sub->safe_psql(
	$db, qq{
ALTER EVENT TRIGGER microbatch_ddl_end DISABLE;
CREATE SUBSCRIPTION sub2_clicks CONNECTION '$connstr{pub2}' PUBLICATION pub2_clicks
    WITH (slot_name = 'fanin_pub2_clicks');
ALTER EVENT TRIGGER microbatch_ddl_end ENABLE ALWAYS;
});
is($sub->safe_psql($db, $replica_triggers_sql), 'events',
	'a subscription made with the event triggers disabled gives clicks no replica trigger');
ok( log_wait(
		$sub,
		qr/ERROR:  23514: microbatch_xid of a replicated row of table "clicks" must be the id of the transaction applying it\n.*DETAIL:  The row has \d+, from the publisher; this transaction is \d+\.\n.*HINT:  Run microbatch\.refresh_pipeline\(\)/,
		$log_offset, $timeout),
	'the rows pub2 sends with its ids are refused with a clear error (SQLSTATE 23514, hint: refresh_pipeline)');
$pub2->safe_psql($db, q{INSERT INTO clicks (id, v) VALUES (6, 6), (7, 7)});
usleep(1_000_000);
is($sub->safe_psql($db, q{SELECT count(*) FROM clicks}),
	'0', 'no row of clicks was applied meanwhile');
is( $sub->safe_psql(
		$db, q{SELECT state || ':' || consecutive_failures FROM microbatch.pipelines WHERE pipeline = 'clicks'}),
	'enabled:0', 'the pipeline on clicks does not fail meanwhile');
$sub->safe_psql($db, q{SELECT microbatch.refresh_pipeline('clicks')});
is($sub->safe_psql($db, $replica_triggers_sql), 'clicks,events',
	'refresh_pipeline gives clicks the replica trigger');
$pub2->safe_psql($db, q{INSERT INTO clicks (id, v) VALUES (8, 8)});
ok( poll_until(
		$sub, $db, q{SELECT count(*) FROM clicks_log}, '8', $timeout,
		'clicks to be processed'),
	'after refresh_pipeline, clicks is synchronised and its rows processed');
usleep(700_000);
is( $sub->safe_psql(
		$db, qq{
SELECT count(*) || '|' || count(DISTINCT id) || '|' || string_agg(id::text, ',' ORDER BY id) || '|' ||
       count(*) FILTER (WHERE c.microbatch_xid::text::bigint BETWEEN $sub_xid_base AND $pub2_xid_base - 1)
  FROM clicks_log l JOIN clicks c USING (id)}),
	'8|8|1,2,3,4,5,6,7,8|8',
	'clicks: every row processed exactly once, with subscriber ids');

#
# ALTER SUBSCRIPTION ... ADD PUBLICATION: a new table of pub2, orders,
# joins sub2; the event trigger gives it the replica trigger at once.
#
$sub->safe_psql(
	$db, q{
CREATE TABLE orders (id int PRIMARY KEY, v int NOT NULL,
                     microbatch_xid xid8 NOT NULL DEFAULT pg_current_xact_id());
CREATE TABLE orders_log (batch_id bigint NOT NULL, id int NOT NULL, v int NOT NULL);
BEGIN;
SELECT microbatch.create_pipeline('orders', 'orders', '0');
SELECT microbatch.add_transform('orders', 'log', 'bronze', $$
    INSERT INTO orders_log SELECT microbatch.current_batch_id(), id, v FROM microbatch.orders_batch
$$);
COMMIT;
ALTER SUBSCRIPTION sub2 ADD PUBLICATION pub2_orders;
});
is($sub->safe_psql($db, $replica_triggers_sql), 'clicks,events,orders',
	'ALTER SUBSCRIPTION ... ADD PUBLICATION gives the new table the replica trigger');
$pub2->safe_psql($db, q{INSERT INTO orders (id, v) VALUES (5, 5), (6, 6)});
ok( poll_until(
		$sub, $db, q{SELECT count(*) FROM orders_log}, '6', $timeout,
		'orders to be processed'),
	'orders is synchronised and its rows processed');
usleep(700_000);
is( $sub->safe_psql(
		$db, qq{
SELECT count(*) || '|' || count(DISTINCT id) || '|' ||
       count(*) FILTER (WHERE o.microbatch_xid::text::bigint BETWEEN $sub_xid_base AND $pub2_xid_base - 1)
  FROM orders_log l JOIN orders o USING (id)}),
	'6|6|6', 'orders: every row processed exactly once, with subscriber ids');

#
# One publisher leaves: events, still written by sub2, keeps its trigger,
# also through refresh_pipeline(), and pub2's rows keep being processed.
#
$sub->safe_psql($db, q{DROP SUBSCRIPTION sub1});
$sub->safe_psql($db, q{SELECT microbatch.refresh_pipeline('cont')});
is($sub->safe_psql($db, $replica_triggers_sql), 'clicks,events,orders',
	'after DROP SUBSCRIPTION of one publisher, refresh_pipeline keeps the trigger the other needs');
$pub2->safe_psql($db, q{INSERT INTO events (v) VALUES (77), (78)});
my $n_pub2 = $truth{pub2}{n} + 2;
for my $p (@pipelines)
{
	ok( poll_until(
			$sub, $db,
			qq{SELECT count(*) || '|' || count(DISTINCT id) FROM bronze_$p WHERE src = 'pub2'},
			"$n_pub2|$n_pub2", $timeout, "$p to process pub2's last rows"),
		"$p: pub2's rows after pub1 left are processed once");
}
is( $sub->safe_psql(
		$db, qq{
SELECT count(*) FROM events
 WHERE microbatch_xid::text::bigint < $sub_xid_base OR microbatch_xid >= pg_current_xact_id()}),
	'0', 'at the end: every row on the subscriber carries an id of a subscriber transaction');

# Negative control: a batch processed twice breaks the bronze check
$sub->safe_psql($db, q{SELECT microbatch.pause_pipeline('intv')});
$sub->safe_psql(
	$db, q{
SELECT microbatch.replay_batch('intv', max(batch_id)) FROM microbatch.batches
 WHERE pipeline = 'intv' AND status = 'committed' AND rows_in > 0});
isnt($sub->safe_psql($db, $per_src_sql->('bronze_intv', q{count(DISTINCT id) || '|' ||})),
	$sub->safe_psql($db, $per_src_sql->('events', q{count(*) || '|' ||})),
	'the bronze check detects a batch processed twice');

$sub->stop;
$pub1->stop;
$pub2->stop;

done_testing();
