# Sources fed by logical replication.
#
# Rows applied by a subscription (the initial copy and the streamed
# changes) are written by the subscriber's apply and table synchronisation
# workers, in replica mode.  A row trigger fired only in replica mode,
# microbatch_source_replicated, gives them the id of the applying
# transaction, so the subscriber's pipelines process each of them exactly
# once, whatever microbatch_xid they had on the publisher, and wakes the
# subscriber's continuous pipelines when the applying transaction commits.
#
# Two variants, in one publication:
#   events1: the publisher's table has no microbatch_xid column; the
#            subscriber's gets one from its pipelines;
#   events2: the publisher's table is itself a pipeline source, so its rows
#            carry microbatch_xid values of the publisher, which are
#            replicated like any column.  The subscriber's xids are moved
#            far above the publisher's (pg_resetwal -x), so that a
#            publisher's id kept as it is would fall behind every window of
#            the subscriber's pipelines after their first.
# On the subscriber, each table has a continuous pipeline (batch_interval 0)
# and one with an interval.  The subscription is created with copy_data
# after some rows exist on the publisher.  Then single-row and multi-row
# transactions, a transaction over both tables, and UPDATEs (applied as new
# row versions, so processed again as new rows) are streamed.  Checked:
#   - every row version is processed exactly once by every pipeline;
#   - applied rows carry subscriber transaction ids, never publisher ones;
#   - with microbatch.naptime = 60s, a continuous pipeline processes an
#     applied commit within about a second: only the commit wake-up can
#     explain that.  Also for a subscription with two_phase = true, whose
#     apply worker applies a prepared transaction with PREPARE TRANSACTION
#     and, later, COMMIT PREPARED.

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

# How long a continuous pipeline may take to process an applied commit,
# counted from the publisher's commit (replication latency included).
my $prompt_seconds = 1.5;

my $sub_xid_base = 2097152;    # 0x200000, the start of a pg_xact segment

my $pub = PostgreSQL::Test::Cluster->new('publisher');
$pub->init(allows_streaming => 'logical');
$pub->append_conf('postgresql.conf',
	"shared_preload_libraries = 'microbatch'\nmicrobatch.enabled = off\nmax_prepared_transactions = 4\n");
$pub->start;

my $sub = PostgreSQL::Test::Cluster->new('subscriber');
$sub->init;
$sub->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '60s'
max_worker_processes = 16
max_logical_replication_workers = 6
max_prepared_transactions = 4
});
command_ok([ 'pg_resetwal', '-x', $sub_xid_base, $sub->data_dir ],
	"the subscriber's transaction ids start at $sub_xid_base");
$sub->start;

my $db = 'postgres';

#
# Publisher: events1 plain, events2 a pipeline source of its own.
#
$pub->safe_psql(
	$db, q{
CREATE EXTENSION microbatch;
CREATE TABLE events1 (id int PRIMARY KEY, v int NOT NULL);
CREATE TABLE events2 (id int PRIMARY KEY, v int NOT NULL);
CREATE TABLE pub_log (batch_id bigint NOT NULL, id int NOT NULL, v int NOT NULL);
SELECT microbatch.create_pipeline('pub2', 'events2');
SELECT microbatch.add_transform('pub2', 'log', 'bronze', $$
    INSERT INTO pub_log SELECT microbatch.current_batch_id(), id, v FROM microbatch.pub2_batch
$$);
CREATE PUBLICATION pub FOR TABLE events1, events2;
});
is( $pub->safe_psql(
		$db, q{
SELECT string_agg(format('%s:%s', table_name, column_name), ',' ORDER BY table_name, ordinal_position)
  FROM information_schema.columns WHERE table_name IN ('events1', 'events2')}),
	'events1:id,events1:v,events2:id,events2:v,events2:microbatch_xid',
	'publisher: events2 has a microbatch_xid column, events1 none');

# Every row version written on the publisher, per table: "id:v"
my %versions = (events1 => [], events2 => []);

# Insert rows on the publisher in one transaction: [table, id, v], ...
sub pub_insert
{
	my @rows = @_;
	my $sql = "BEGIN;\n";
	for my $r (@rows)
	{
		my ($table, $id, $v) = @$r;
		$sql .= "INSERT INTO $table (id, v) VALUES ($id, $v);\n";
		push @{ $versions{$table} }, "$id:$v";
	}
	$pub->safe_psql($db, $sql . "COMMIT;");
}

# Rows before the subscription exists: a multi-row insert and single ones
$pub->safe_psql($db,
	q{INSERT INTO events1 (id, v) SELECT i, i * 10 FROM generate_series(1, 5) i});
push @{ $versions{events1} }, map { "$_:" . $_ * 10 } 1 .. 5;
$pub->safe_psql($db,
	q{INSERT INTO events2 (id, v) SELECT i, i * 10 FROM generate_series(1, 3) i});
push @{ $versions{events2} }, map { "$_:" . $_ * 10 } 1 .. 3;
is($pub->safe_psql($db, q{SELECT microbatch.run_batch('pub2')}),
	'1', 'publisher: its own pipeline processes events2');
pub_insert([ 'events2', 4, 40 ]);
pub_insert([ 'events2', 5, 50 ]);

#
# Subscriber: the same tables, events2 with its microbatch_xid column, and
# two pipelines on each.
#
$sub->safe_psql(
	$db, q{
CREATE EXTENSION microbatch;
CREATE TABLE events1 (id int PRIMARY KEY, v int NOT NULL);
CREATE TABLE events2 (id int PRIMARY KEY, v int NOT NULL,
                      microbatch_xid xid8 NOT NULL DEFAULT pg_current_xact_id());
});
my %pipelines = (
	cont1 => [ 'events1', '0' ],
	int1 => [ 'events1', '300ms' ],
	cont2 => [ 'events2', '0' ],
	int2 => [ 'events2', '300ms' ],);
for my $p (sort keys %pipelines)
{
	my ($table, $interval) = @{ $pipelines{$p} };
	$sub->safe_psql(
		$db, qq{
CREATE TABLE ${p}_log (batch_id bigint NOT NULL, id int NOT NULL, v int NOT NULL);
SELECT microbatch.create_pipeline('$p', '$table', '$interval');
SELECT microbatch.add_transform('$p', 'log', 'bronze', \$\$
    INSERT INTO ${p}_log SELECT microbatch.current_batch_id(), id, v FROM microbatch.${p}_batch
\$\$);
});
}
ok( poll_until(
		$sub, $db,
		q{SELECT count(*) FROM microbatch.workers WHERE kind = 'scheduler' AND database = current_database()},
		'1', 30),
	'subscriber: the database has a scheduler');

# "count|distinct|versions" of a pipeline's log, as "id:v" sorted
my $log_sql = sub {
	my ($p) = @_;
	return qq{
SELECT count(*) || '|' || count(DISTINCT (id, v)) || '|' ||
       coalesce(string_agg(id || ':' || v, ',' ORDER BY id, v), '')
  FROM ${p}_log};
};
my $expected_log = sub {
	my ($table) = @_;
	my @v = sort {
		my @x = split /:/, $a;
		my @y = split /:/, $b;
		$x[0] <=> $y[0] || $x[1] <=> $y[1]
	} @{ $versions{$table} };
	my $n = scalar @v;
	return "$n|$n|" . join(',', @v);
};

# Wait until every pipeline's log holds exactly the versions written so
# far; then a little longer, so that a duplicate would show.
sub check_all_processed
{
	my ($what, $timeout) = @_;
	for my $p (sort keys %pipelines)
	{
		my $table = $pipelines{$p}[0];
		my $expected = $expected_log->($table);
		my ($n) = split /\|/, $expected;
		poll_until($sub, $db, "SELECT count(*) FROM ${p}_log", $n, $timeout,
			"$p to log $n row versions");
	}
	usleep(700_000);
	for my $p (sort keys %pipelines)
	{
		my $table = $pipelines{$p}[0];
		is($sub->safe_psql($db, $log_sql->($p)),
			$expected_log->($table),
			"$what: $p ($table) processed every row version exactly once");
	}
}

#
# The subscription, with the initial copy
#
my $connstr = $pub->connstr() . " dbname=$db";
# The replica trigger, which makes COPY insert row by row, is only on the
# tables a subscription writes into: CREATE SUBSCRIPTION adds it to them
my $replica_triggers_sql = q{
SELECT coalesce(string_agg(tgrelid::regclass::text, ',' ORDER BY tgrelid::regclass::text), '') FROM pg_trigger
 WHERE tgname = 'microbatch_source_replicated' AND tgenabled = 'R'};
is($sub->safe_psql($db, $replica_triggers_sql), '',
	'subscriber: no replica trigger before the subscription');
$sub->safe_psql($db,
	"CREATE SUBSCRIPTION sub CONNECTION '$connstr' PUBLICATION pub WITH (copy_data = true)");
is($sub->safe_psql($db, $replica_triggers_sql), 'events1,events2',
	'subscriber: CREATE SUBSCRIPTION gives the tables it writes into the replica trigger');
ok( $sub->poll_query_until(
		$db, q{SELECT count(*) = 2 FROM pg_subscription_rel WHERE srsubstate = 'r'}),
	'subscriber: both tables are synchronised');
$pub->wait_for_catchup('sub');
is($sub->safe_psql($db, q{SELECT (SELECT count(*) FROM events1) || ':' || (SELECT count(*) FROM events2)}),
	'5:5', 'subscriber: the initial copy brought every row');
check_all_processed('initial copy', 10);

# Applied rows carry subscriber ids, not the publisher's
my $foreign_ids_sql = q{
SELECT (SELECT count(*) FROM events1 WHERE microbatch_xid::text::bigint < %1$s)
    || ':' || (SELECT count(*) FROM events2 WHERE microbatch_xid::text::bigint < %1$s)
    || ':' || (SELECT count(*) FROM events1, events2 WHERE events1.microbatch_xid >= pg_current_xact_id()
                                                        OR events2.microbatch_xid >= pg_current_xact_id())};
$foreign_ids_sql =~ s/%1\$s/$sub_xid_base/g;
is($sub->safe_psql($db, $foreign_ids_sql), '0:0:0',
	'initial copy: rows carry ids of subscriber transactions');

#
# Streamed inserts: single rows, one table at a time.  Each must be
# processed by the continuous pipeline within about a second of its
# commit on the publisher; the naptime is a minute.
#
sub wait_quick
{
	my ($sql, $expected, $timeout) = @_;
	my $start = time();
	while (1)
	{
		return time() - $start if $sub->safe_psql($db, $sql) eq $expected;
		return undef if time() - $start > $timeout;
		usleep(20_000);
	}
}

is($sub->safe_psql($db, q{SHOW microbatch.naptime}), '1min', 'subscriber: naptime is one minute');
my $id = 100;
for my $round (1 .. 3)
{
	for my $table ('events1', 'events2')
	{
		my $cont = $table eq 'events1' ? 'cont1' : 'cont2';
		$id++;
		usleep(400_000);    # let the pipelines go idle, waiting for commits
		my $t0 = time();
		pub_insert([ $table, $id, $id ]);
		my $done = defined wait_quick("SELECT count(*) FROM ${cont}_log WHERE id = $id", '1', 10);
		my $took = time() - $t0;
		ok($done && $took <= $prompt_seconds,
			"streamed insert $id into $table: $cont processes it within ${prompt_seconds}s of the publisher's commit ("
			  . ($done ? sprintf('%.2fs', $took) : 'not within 10s') . ')');
	}
}
check_all_processed('single-row transactions', 10);

#
# Multi-row transactions, one over both tables; a large one
#
pub_insert([ 'events1', 201, 1 ], [ 'events1', 202, 2 ], [ 'events2', 201, 3 ],
	[ 'events1', 203, 4 ], [ 'events2', 202, 5 ], [ 'events2', 203, 6 ]);
my $t0 = time();
$pub->safe_psql(
	$db, q{
BEGIN;
INSERT INTO events1 (id, v) SELECT i, -i FROM generate_series(1000, 1199) i;
INSERT INTO events2 (id, v) SELECT i, -i FROM generate_series(1000, 1149) i;
COMMIT;});
push @{ $versions{events1} }, map { "$_:-$_" } 1000 .. 1199;
push @{ $versions{events2} }, map { "$_:-$_" } 1000 .. 1149;
my $elapsed = wait_quick(
	q{SELECT (SELECT count(*) FROM cont1_log WHERE id >= 1000) || ':' ||
	         (SELECT count(*) FROM cont2_log WHERE id >= 1000)}, '200:150', 10);
ok(defined $elapsed && time() - $t0 <= $prompt_seconds + 1,
	'a large transaction over both tables is processed promptly by both continuous pipelines ('
	  . (defined $elapsed ? sprintf('%.2fs', time() - $t0) : 'timeout') . ')');
check_all_processed('multi-row transactions', 10);
is( $sub->safe_psql(
		$db, q{
SELECT count(DISTINCT batch_id) FROM cont1_log WHERE id >= 1000}),
	'1', 'the large transaction is one batch of cont1');

#
# UPDATEs: applied as new row versions, processed as new rows
#
$pub->safe_psql(
	$db, q{
BEGIN;
UPDATE events1 SET v = v + 1000 WHERE id IN (1, 2, 101);
UPDATE events2 SET v = v + 1000, microbatch_xid = DEFAULT WHERE id IN (1, 2, 102);
COMMIT;});
push @{ $versions{events1} }, '1:1010', '2:1020', '101:1101';
push @{ $versions{events2} }, '1:1010', '2:1020', '102:1102';
$pub->safe_psql($db, q{UPDATE events2 SET v = v + 1, microbatch_xid = DEFAULT WHERE id = 3});
push @{ $versions{events2} }, '3:31';
$pub->safe_psql($db, q{UPDATE events1 SET v = v + 1 WHERE id = 3});
push @{ $versions{events1} }, '3:31';
check_all_processed('UPDATEs', 10);

# Interval pipelines are woken too: nothing else would run them within
# seconds of an idle spell, with a naptime of a minute.
usleep(1_000_000);
$t0 = time();
pub_insert([ 'events1', 301, 301 ], [ 'events2', 301, 301 ]);
$elapsed = wait_quick(
	q{SELECT (SELECT count(*) FROM int1_log WHERE id = 301) + (SELECT count(*) FROM int2_log WHERE id = 301)},
	'2', 10);
ok(defined $elapsed && time() - $t0 <= $prompt_seconds + 1,
	'pipelines with an interval process an applied commit after an idle spell within seconds ('
	  . (defined $elapsed ? sprintf('%.2fs', time() - $t0) : 'timeout') . ')');
check_all_processed('at the end', 10);

is($sub->safe_psql($db, $foreign_ids_sql), '0:0:0',
	'at the end: every row carries the id of a subscriber transaction');
is( $sub->safe_psql(
		$db, q{
SELECT count(*) FROM events2 s
 WHERE s.microbatch_xid::text::bigint < } . $sub_xid_base),
	'0', 'events2 on the subscriber kept none of the publisher\'s ids');
is( $sub->safe_psql(
		$db, q{
SELECT string_agg(format('%s:%s:%s', pipeline, state, consecutive_failures), ',' ORDER BY pipeline)
  FROM microbatch.pipelines}),
	'cont1:enabled:0,cont2:enabled:0,int1:enabled:0,int2:enabled:0',
	'no subscriber pipeline failed');
is( $sub->safe_psql(
		$db, q{SELECT count(*) FROM microbatch.batches WHERE status = 'failed'}),
	'0', 'no failed batch on the subscriber');

#
# A two-phase subscription: the apply worker prepares the transaction, and
# commits it when the publisher does COMMIT PREPARED.  That commit, too,
# must wake the continuous pipeline.
#
$pub->safe_psql(
	$db, q{
CREATE TABLE events3 (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO events3 VALUES (1, 1);
CREATE PUBLICATION pub3 FOR TABLE events3;
});
$sub->safe_psql(
	$db, q{
CREATE TABLE events3 (id int PRIMARY KEY, v int NOT NULL);
CREATE TABLE cont3_log (batch_id bigint NOT NULL, id int NOT NULL, v int NOT NULL);
SELECT microbatch.create_pipeline('cont3', 'events3', '0');
SELECT microbatch.add_transform('cont3', 'log', 'bronze', $$
    INSERT INTO cont3_log SELECT microbatch.current_batch_id(), id, v FROM microbatch.cont3_batch
$$);
});
$sub->safe_psql($db,
	"CREATE SUBSCRIPTION sub3 CONNECTION '$connstr' PUBLICATION pub3 WITH (copy_data = true, two_phase = true)");
ok( $sub->poll_query_until(
		$db, q{
SELECT (SELECT srsubstate FROM pg_subscription_rel WHERE srrelid = 'events3'::regclass) = 'r'
   AND (SELECT subtwophasestate FROM pg_subscription WHERE subname = 'sub3') = 'e'}),
	'two-phase subscription: synchronised, two-phase enabled');
ok(poll_until($sub, $db, q{SELECT count(*) FROM cont3_log}, '1', 10),
	'two-phase subscription: the initial copy is processed');
usleep(400_000);
$t0 = time();
$pub->safe_psql($db, q{INSERT INTO events3 VALUES (2, 2)});
$elapsed = wait_quick(q{SELECT count(*) FROM cont3_log WHERE id = 2}, '1', 10);
ok(defined $elapsed && time() - $t0 <= $prompt_seconds,
	'two-phase subscription: a plain commit is processed promptly ('
	  . (defined $elapsed ? sprintf('%.2fs', time() - $t0) : 'timeout') . ')');
$pub->safe_psql($db, q{BEGIN; INSERT INTO events3 VALUES (3, 3), (4, 4); PREPARE TRANSACTION 'mb_2pc';});
ok( poll_until(
		$sub, $db, q{SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'pg_gid_%'},
		'1', 10),
	'two-phase subscription: the transaction is prepared on the subscriber');
usleep(400_000);
is($sub->safe_psql($db, q{SELECT count(*) FROM cont3_log WHERE id >= 3}), '0',
	'two-phase subscription: nothing of the prepared transaction is processed');
$t0 = time();
$pub->safe_psql($db, q{COMMIT PREPARED 'mb_2pc'});
ok(defined wait_quick(q{SELECT count(*) FROM events3 WHERE id >= 3}, '2', 10),
	'two-phase subscription: COMMIT PREPARED is applied');
my $applied = time() - $t0;
$elapsed = wait_quick(q{SELECT count(*) FROM cont3_log WHERE id >= 3}, '2', 10);
ok(defined $elapsed && time() - $t0 <= $prompt_seconds,
	'two-phase subscription: rows committed by COMMIT PREPARED are processed promptly ('
	  . sprintf('applied after %.2fs, ', $applied)
	  . (defined $elapsed ? sprintf('processed after %.2fs', time() - $t0) : 'not processed within 10s more') . ')');
# Whether prompt or not, nothing is lost: a plain commit wakes the pipeline
# anyway, and its next batch takes the rows of the prepared transaction too.
$pub->safe_psql($db, q{INSERT INTO events3 VALUES (5, 5)});
ok( poll_until(
		$sub, $db, q{SELECT count(*) || ':' || count(DISTINCT id) FROM cont3_log},
		'5:5', 10),
	'two-phase subscription: every row processed exactly once');

# The publisher's own pipeline is unaffected by the subscription.
is($pub->safe_psql($db, q{SELECT microbatch.run_batch('pub2')}),
	'2', 'publisher: its pipeline runs its next batch');
# (A version replaced before the publisher's next batch is not seen by it.)
is( $pub->safe_psql(
		$db, q{
SELECT count(*) - count(DISTINCT (id, v)),
       (SELECT count(*) FROM events2 e
         WHERE (SELECT count(*) FROM pub_log l WHERE (l.id, l.v) = (e.id, e.v)) <> 1)
  FROM pub_log}),
	'0|0',
	'publisher: its pipeline processed every current row of events2 once');

#
# The replica trigger follows the tables a subscription writes into: a
# source attached as a partition of a subscribed partitioned table gets it;
# ALTER SUBSCRIPTION does not wait for a source table's writers, and leaves
# that table (with a warning) to refresh_pipeline().
#
$pub->safe_psql($db, q{
CREATE TABLE routed (id int, v int) PARTITION BY RANGE (id);
CREATE TABLE routed_1 PARTITION OF routed FOR VALUES FROM (0) TO (100);
CREATE TABLE locked (id int, v int);
ALTER PUBLICATION pub ADD TABLE routed, locked;
});
$sub->safe_psql($db, q{
CREATE TABLE routed (id int, v int, microbatch_xid xid8 NOT NULL DEFAULT pg_current_xact_id())
    PARTITION BY RANGE (id);
CREATE TABLE routed_1 (id int, v int);
CREATE TABLE locked (id int, v int);
CREATE TABLE side_log (id int);
SELECT microbatch.create_pipeline('routed', 'routed_1');
SELECT microbatch.create_pipeline('locked', 'locked');
});
my $writer = $sub->background_psql($db);
$writer->query_safe(q{BEGIN; INSERT INTO locked VALUES (0, 0)});
my ($stdout, $stderr) = ('', '');
$sub->psql($db, q{SET lock_timeout = '10s'; ALTER SUBSCRIPTION sub REFRESH PUBLICATION WITH (copy_data = false)},
	stdout => \$stdout, stderr => \$stderr, on_error_stop => 1);
like($stderr, qr/WARNING:  could not give table "locked" the trigger "microbatch_source_replicated" now/,
	'ALTER SUBSCRIPTION does not wait for the writer of a source table, and says so');
$writer->query_safe(q{COMMIT});
$writer->quit;
$sub->safe_psql($db, q{SELECT microbatch.refresh_pipeline('locked')});
$sub->safe_psql($db, q{ALTER TABLE routed ATTACH PARTITION routed_1 FOR VALUES FROM (0) TO (100)});
is($sub->safe_psql($db, $replica_triggers_sql), 'events1,events2,events3,locked,routed_1',
	'refresh_pipeline and ATTACH PARTITION under a subscribed table add the replica trigger');

$sub->stop;
$pub->stop;

done_testing();
