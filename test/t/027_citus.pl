# Distributed pipelines over Citus: exactly-once per shard, through 2PC.
#
# A coordinator and two workers (later a third) on 127.0.0.1, every node
# with shared_preload_libraries = 'citus,microbatch'.  The staging table
# "events" is hash-distributed (4 shards, 2 per worker); "gold" (count and
# sum per key, an upsert) is distributed and co-located with it, so its
# writes are local shards of the batch's worker; "dim" (the distinct values)
# is a reference table, so every batch that writes it is a distributed
# transaction the worker coordinates.  One distributed pipeline, "clicks",
# owned by the non-superuser etl, runs one shard pipeline per shard on the
# worker that holds it (src/citus.c, docs/scaling.md).
#
# Ground truth is always the staging table itself, read through the
# coordinator once nothing is in flight: gold must equal
# SELECT k, count(*), sum(v) FROM events GROUP BY k key by key (a lost row
# makes a key too small, a row counted twice too large) and dim the distinct
# values of v.
#
#  1. Set-up: microbatch reaches the workers through Citus, the shard
#     pipelines are where the placements are, over the shards (which alone
#     get the tracking column).  create_pipeline() on the distributed (and
#     the reference) table is refused; a role that does not own the table
#     cannot create a distributed pipeline, and nothing of it reaches any
#     worker; nor does a create_distributed_pipeline (or drop) inside a
#     transaction block, which is refused since the nodes' transactions
#     could not follow its rollback.  The workers' schedulers start within
#     seconds of Citus committing CREATE EXTENSION there.
#  2. Concurrent load from several clients at once: single-shard INSERTs,
#     multi-shard transactions (multi-row VALUES over keys of both workers,
#     in BEGIN ... COMMIT, so Citus commits them with 2PC), INSERT ...
#     SELECT, and COPY; most through the coordinator, one client through a
#     worker (Citus routes writes from any node, which then coordinates
#     their 2PC).  Gold and dim exact; no failed batch.
#  3. The 2PC failure, deterministically: the coordinator's local commit of
#     one multi-shard transaction is held after Citus prepared it on both
#     workers.  synchronous_standby_names names a standby that never comes
#     and only that session sets synchronous_commit = on, so its COMMIT
#     waits in SyncRepWaitForLSN(), which runs after Citus' pre-commit
#     callback has sent PREPARE TRANSACTION to the workers and before its
#     post-commit callback sends COMMIT PREPARED (checked: pg_prepared_xacts
#     on both workers).  Worker 2 is then stopped (immediate) and the
#     waiting backend cancelled: its commit is already local, so Citus sends
#     COMMIT PREPARED to worker 1, fails to reach worker 2 and leaves it to
#     2PC recovery, which is off on the coordinator for this phase
#     (citus.recover_2pc_interval = -1).  Worker 2 restarts with the
#     transaction still prepared; while it is, more load flows, worker 2's
#     shard pipelines keep committing batches, and gold and dim have
#     nothing of those rows (they must neither be processed nor skipped).
#     recover_prepared_transactions() on the coordinator commits them, and
#     they then appear in gold once.  Then the undirected variant: worker 2
#     killed (immediate stop) in the middle of concurrent load and started
#     again; once Citus' recovery has finished every prepared transaction,
#     gold is exact again.  While a worker is down, batches of the other
#     worker that write the reference table fail (dim has a placement on
#     every node) and are retried; failures on Citus connections, and only
#     those, are allowed, and every pipeline must be healthy again
#     afterwards.
#  4. A third worker added with citus_add_node while the pipeline runs and
#     clients load: allowed; it gets the extension and no shard.
#     Rebalancing and moving, copying, splitting, redistributing shards are
#     refused with the documented error, from a DO block and from a
#     statement prepared before the pipeline existed too (the check is made
#     when the function is called), and nothing changed: same placements,
#     no rebalance job, the pipelines go on and gold is exact after more
#     load.
#  5. drop_distributed_pipeline removes every shard pipeline and batch view
#     on every worker.
#
#  6. after drop_distributed_pipeline a shard can be moved (its tracking
#     column goes with its last pipeline), as docs/scaling.md says to
#     rebalance.
#
# Needs Citus (citus.so in the server's pkglibdir): without it the test is
# skipped, or fails when MICROBATCH_REQUIRE_CITUS=1 (make test sets it).

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

my $require_citus = ($ENV{MICROBATCH_REQUIRE_CITUS} // '') eq '1';
my $pkglibdir = `pg_config --pkglibdir`;
chomp $pkglibdir;
if (!-f "$pkglibdir/citus.so")
{
	my $why = "Citus is not installed ($pkglibdir/citus.so not found; "
	  . "../shared/vendor/build-citus.sh builds and installs it)";
	if ($require_citus)
	{
		fail("MICROBATCH_REQUIRE_CITUS=1, but $why");
		done_testing();
		exit 1;
	}
	plan skip_all => $why;
}

my $db = 'postgres';
my $t_start = time();

# How long to wait for the pipelines to catch up, or a node to come back.
# Generous: the machine is small and shared.
my $catch_up = 90;

# Keys and values of the load: keys 1 to 64, and a row of key k has a value
# v = k + 100 j (0 <= j < 6).  So no two keys share a value, and the batches
# of two shards never insert the same new row into dim at once: that would
# be a distributed deadlock (each batch holding the row on one placement of
# the reference table, waiting for it on another), which Citus breaks by
# cancelling one batch (docs/scaling.md), a failed batch that is retried.
# The 2PC phase uses keys above 1000 and values above 900, one row each.
my $nkeys = 64;
my $nspread = 6;

# A Citus node: both libraries preloaded, reachable over TCP on 127.0.0.1
# (Citus connects by host and port, as the calling role).  Citus' 2PC
# recovery every 2 s, so that the transactions a killed worker leaves
# prepared are finished within the test; failed batches retried at most a
# second apart, and not marked failed, while a node is down.
sub citus_node
{
	my ($name) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf(
		'postgresql.conf', q{
shared_preload_libraries = 'citus,microbatch'
listen_addresses = '127.0.0.1'
max_prepared_transactions = 20
max_connections = 100
max_worker_processes = 24
citus.recover_2pc_interval = '2s'
microbatch.max_retry_delay = '1s'
microbatch.max_retries = 100
log_statement = 'none'
log_min_messages = warning
# PostgreSQL::Test::Cluster sets none; synchronous replication needs some
wal_level = replica
max_wal_senders = 2
});
	$node->append_conf('pg_hba.conf', "host all all 127.0.0.1/32 trust\n");
	$node->start;
	$node->safe_psql($db, 'CREATE EXTENSION citus');
	return $node;
}

my $coord = citus_node('coordinator');
my $w1 = citus_node('worker1');
my $w2 = citus_node('worker2');
my @workers = ($w1, $w2);

$coord->safe_psql(
	$db, sprintf(
		q{
SELECT citus_set_coordinator_host('127.0.0.1', %d);
SELECT citus_add_node('127.0.0.1', %d);
SELECT citus_add_node('127.0.0.1', %d);
}, $coord->port, $w1->port, $w2->port));
# Citus creates microbatch on the workers, in a distributed transaction
$coord->safe_psql($db, 'CREATE EXTENSION microbatch');
my $t_extension = time();
$coord->safe_psql(
	$db, q{
CREATE ROLE etl LOGIN;
CREATE ROLE mallory LOGIN;
CREATE TABLE events (k int NOT NULL, v int NOT NULL);
SELECT create_distributed_table('events', 'k', shard_count := 4);
CREATE TABLE gold (k int PRIMARY KEY, n bigint NOT NULL, s bigint NOT NULL);
SELECT create_distributed_table('gold', 'k', colocate_with := 'events');
CREATE TABLE dim (v int PRIMARY KEY);
SELECT create_reference_table('dim');
ALTER TABLE events OWNER TO etl;
ALTER TABLE gold OWNER TO etl;
ALTER TABLE dim OWNER TO etl;
GRANT SELECT, INSERT ON events TO mallory;
});
# A shard pipeline's tracking index needs CREATE on the shard's schema (as
# CREATE INDEX does).  Citus does not propagate grants on schema public,
# and refuses them on a worker unless told the change is local.
$_->safe_psql($db,
	'SET citus.enable_ddl_propagation = off; GRANT CREATE ON SCHEMA public TO etl')
  for ($coord, @workers);

# psql as etl, the owner of the tables and of the pipeline
sub etl_psql
{
	my ($node, $sql) = @_;
	return $node->safe_psql($db, $sql, extra_params => [ '-U', 'etl' ]);
}

# psql as $user with verbose errors; returns (exit code, stdout, stderr)
sub psql_verbose
{
	my ($node, $user, $sql) = @_;
	my ($out, $err) = ('', '');
	my $ret = $node->psql(
		$db, "\\set VERBOSITY verbose\n$sql",
		stdout => \$out,
		stderr => \$err,
		extra_params => [ '-U', $user ]);
	return ($ret, $out, $err);
}

#
# 1. Set-up
#
for my $w (@workers)
{
	is( $w->safe_psql(
			$db, q{
SELECT string_agg(extname || ' ' || extversion, ',' ORDER BY extname)
  FROM pg_extension WHERE extname IN ('citus', 'microbatch')}),
		'citus 13.2-1,microbatch 0.5.0',
		$w->name . ': Citus created microbatch there');
}

# Which worker holds each shard, and each key
my %worker_of_port = ($w1->port => $w1, $w2->port => $w2);
my $placements_sql = q{
SELECT string_agg(format('%s@%s', p.shardid, n.nodeport), ',' ORDER BY p.shardid)
  FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid)
 WHERE p.shardid IN (SELECT shardid FROM pg_dist_shard WHERE logicalrelid = 'events'::regclass)};
my $placements = $coord->safe_psql($db, $placements_sql);
my %shards_of;    # worker name => [shard ids]
for (split /,/, $placements)
{
	my ($shard, $port) = split /@/;
	push @{ $shards_of{ $worker_of_port{$port}->name } }, $shard;
}
is(join(',', map { scalar @{ $shards_of{ $_->name } // [] } } @workers),
	'2,2', 'the four shards of events are two on each worker');

my %keys_of;      # worker name => [keys]
for my $row (
	split /\n/,
	$coord->safe_psql(
		$db, q{
SELECT k, n.nodeport
  FROM generate_series(1, 1100) k,
       LATERAL (SELECT get_shard_id_for_distribution_column('events', k) AS shardid) s
  JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n USING (groupid)
 WHERE k <= 64 OR k > 1000 ORDER BY k}))
{
	my ($k, $port) = split /\|/, $row;
	push @{ $keys_of{ $worker_of_port{$port}->name } }, $k;
}
my @load_keys = map { [ grep { $_ <= $nkeys } @{ $keys_of{ $_->name } } ] } @workers;
my @twopc_keys = map { [ (grep { $_ > 1000 } @{ $keys_of{ $_->name } })[ 0 .. 3 ] ] } @workers;
ok(@{ $load_keys[0] } > 5 && @{ $load_keys[1] } > 5,
	'load keys on both workers (' . join(' / ', map { scalar @$_ } @load_keys) . ')');

# A session that prepares a shard move before any distributed pipeline
# exists: the refusal must not depend on when the statement was planned.
my $some_shard = $shards_of{ $w1->name }[0];
my ($w1_port, $w2_port) = ($w1->port, $w2->port);
my $early = $coord->background_psql($db, on_error_stop => 0);
$early->query_safe(
	"PREPARE early_move AS SELECT citus_move_shard_placement($some_shard, '127.0.0.1', $w1_port, '127.0.0.1', $w2_port, shard_transfer_mode := 'block_writes')");

# Each node makes its change in a transaction of its own: refused in a
# transaction block, which could roll back the coordinator's part alone.
my ($ret, $out, $err) = psql_verbose($coord, 'etl',
	"BEGIN;\nSELECT microbatch.create_distributed_pipeline('clicks', 'events', '0');\nROLLBACK;");
like($err, qr/ERROR:  25001: distributed pipeline "clicks" cannot be changed inside a transaction block/,
	'create_distributed_pipeline inside a transaction block: refused (25001)');
for my $w (@workers)
{
	is($w->safe_psql($db, q{SELECT count(*) FROM microbatch.pipeline}),
		'0', $w->name . ': nothing was created by the refused call');
}

is( etl_psql($coord,
		q{SELECT microbatch.create_distributed_pipeline('clicks', 'events', '0')}),
	'4', 'create_distributed_pipeline as the owner of events: four shard pipelines');

# On each worker: a shard pipeline per shard it holds, named after it, over
# that shard, owned by etl; the union batch view
my $shard_pipelines_sql = q{
SELECT string_agg(format('%s:%s:%s:%s', distributed_pipeline, pipeline, shard, owner), ','
                  ORDER BY pipeline)
  FROM microbatch.shard_pipelines};
for my $w (@workers)
{
	my @shards = sort @{ $shards_of{ $w->name } };
	is($w->safe_psql($db, $shard_pipelines_sql),
		join(',', map { "clicks:clicks_$_:events_$_:etl" } @shards),
		$w->name . ': one shard pipeline per shard placement it holds');
	is( $w->safe_psql(
			$db, q{
SELECT string_agg(format('%s:%s', pipeline, source), ',' ORDER BY pipeline)
  FROM microbatch.pipelines}),
		join(',', map { "clicks_$_:events_$_" } @shards),
		$w->name . ': they are ordinary pipelines over the shard tables');
	is( $w->safe_psql(
			$db, q{
SELECT c.relkind::text || ':' || pg_get_userbyid(c.relowner) FROM pg_class c
 WHERE c.oid = 'microbatch.clicks_batch'::regclass}),
		'v:etl', $w->name . ': view microbatch.clicks_batch, owned by etl');
	is( $w->safe_psql(
			$db, q{
SELECT string_agg(attrelid::regclass::text, ',' ORDER BY attrelid::regclass::text) FROM pg_attribute
 WHERE attname = 'microbatch_xid' AND attrelid::regclass::text ~ '^events_[0-9]+$'}),
		join(',', map { "events_$_" } sort @{ $shards_of{ $w->name } }),
		$w->name . ': its shards of events have the tracking column');
}
is( $coord->safe_psql(
		$db, q{SELECT string_agg(format('%s:%s:%s', pipeline, source, owner), ',') FROM microbatch.distributed_pipelines}),
	'clicks:events:etl', 'coordinator: microbatch.distributed_pipelines lists it');
is( $coord->safe_psql(
		$db, q{
SELECT count(*) FROM information_schema.columns
 WHERE table_name = 'events' AND column_name = 'microbatch_xid'}),
	'0', 'coordinator: the distributed table has no tracking column (only the shards do)');

is( etl_psql(
		$coord, q{
SELECT microbatch.add_distributed_transform('clicks', 'gold', 'gold', $$
    INSERT INTO gold AS g (k, n, s)
    SELECT k, count(*), sum(v) FROM microbatch.clicks_batch
     WHERE k % 1 = 0 AND format('%s', k) NOT LIKE '%%d'  -- % signs reach the workers as written
     GROUP BY k
    ON CONFLICT (k) DO UPDATE SET n = g.n + excluded.n, s = g.s + excluded.s
$$);
SELECT microbatch.add_distributed_transform('clicks', 'dim', 'silver', $$
    INSERT INTO dim (v) SELECT DISTINCT v FROM microbatch.clicks_batch
    ON CONFLICT (v) DO NOTHING
$$);}),
	"4\n4", 'add_distributed_transform: gold (co-located) and dim (reference table) on every shard pipeline');
for my $w (@workers)
{
	is( $w->safe_psql(
			$db, q{SELECT count(*) || ':' || count(DISTINCT pipeline) FROM microbatch.transforms}),
		'4:2', $w->name . ': each of its shard pipelines has both transforms');
}

# create_pipeline on a table Citus manages is refused
($ret, $out, $err) = psql_verbose($coord, 'etl',
	q{SELECT microbatch.create_pipeline('plain', 'events')});
like(
	$err,
	qr/ERROR:  0A000: table "events" is a distributed table\n(?:.*\n)*HINT:  .*microbatch\.create_distributed_pipeline\(\)/,
	'create_pipeline on the distributed table: refused (0A000), the hint names create_distributed_pipeline');
($ret, $out, $err) = psql_verbose($coord, 'etl',
	q{SELECT microbatch.create_pipeline('plain', 'dim')});
like($err, qr/ERROR:  0A000: table "dim" is a Citus reference or local table/,
	'create_pipeline on the reference table: refused (0A000)');

# A role that does not own the table (it may read and insert into it)
($ret, $out, $err) = psql_verbose($coord, 'mallory',
	q{SELECT microbatch.create_distributed_pipeline('evil', 'events', '0')});
like($err, qr/ERROR:  42501: must be owner of table events/,
	'create_distributed_pipeline by a role that does not own the table: refused (42501)');
is( $coord->safe_psql(
		$db, q{SELECT string_agg(pipeline_name, ',') FROM microbatch.distributed_pipeline}),
	'clicks', 'coordinator: no distributed pipeline "evil"');
for my $w (@workers)
{
	is( $w->safe_psql(
			$db, q{
SELECT (SELECT count(*) FROM microbatch.pipeline WHERE pipeline_name::text LIKE 'evil%')
    || ':' || (SELECT count(*) FROM microbatch.shard_pipeline WHERE distributed_pipeline = 'evil')
    || ':' || (SELECT count(*) FROM pg_class WHERE relname LIKE 'evil%')}),
		'0:0:0', $w->name . ': nothing of "evil" was created there');
}
($ret, $out, $err) = psql_verbose($coord, 'etl',
	"BEGIN;\nSELECT microbatch.drop_distributed_pipeline('clicks');\nROLLBACK;");
like($err, qr/ERROR:  25001: distributed pipeline "clicks" cannot be changed inside a transaction block/,
	'drop_distributed_pipeline inside a transaction block: refused (25001)');
for my $w (@workers)
{
	is($w->safe_psql($db, q{SELECT count(*) FROM microbatch.shard_pipelines}),
		'2', $w->name . ': its shard pipelines are still there');
}

#
# Load and checks
#

# Loader scripts: rounds of a single-shard INSERT, a multi-shard
# transaction over keys of both workers, an INSERT ... SELECT and a COPY.
sub load_script
{
	my ($seed, $rounds) = @_;
	srand($seed);
	# a key on worker $_[0] + 1, and a row of it, "(k, v)"
	my $key = sub { my $ks = $load_keys[ $_[0] ]; $ks->[ int(rand(@$ks)) ] };
	my $row = sub { my $k = $key->($_[0]); ($k, $k + 100 * int(rand($nspread))) };
	my $sql = '';
	for my $r (1 .. $rounds)
	{
		my $w = $r % 2;
		$sql .= sprintf("INSERT INTO events (k, v) VALUES (%d, %d);\n", $row->($w));
		$sql .= sprintf(
			"BEGIN;\nINSERT INTO events (k, v) VALUES (%d, %d), (%d, %d), (%d, %d);\n"
			  . "INSERT INTO events (k, v) VALUES (%d, %d), (%d, %d);\nCOMMIT;\n",
			$row->(0), $row->(1), $row->($w), $row->(1), $row->(0));
		$sql .= sprintf(
			"INSERT INTO events (k, v) SELECT k, k + 100 * ((i * %d) %% %d) FROM "
			  . "(SELECT i, 1 + (i * %d + %d) %% %d AS k FROM generate_series(1, 12) i) s;\n",
			1 + int(rand(97)), $nspread, 1 + int(rand(97)), $r, $nkeys);
		$sql .= "COPY events (k, v) FROM STDIN;\n";
		$sql .= sprintf("%d\t%d\n", $row->($_ % 2)) for 1 .. 8;
		$sql .= "\\.\n";
		$sql .= "SELECT pg_sleep(0.01);\n" if $r % 4 == 0;
	}
	return $sql;
}

my $loader_seq = 0;

# Start $n concurrent loader clients (psql, as etl) of $rounds rounds each,
# connected to the nodes of @via in turn (by default the coordinator; a
# worker routes writes too, and coordinates their 2PC itself)
sub start_loaders
{
	my ($n, $rounds, $on_error_stop, @via) = @_;
	@via = ($coord) unless @via;
	my @runs;
	for my $c (1 .. $n)
	{
		my $node = $via[ ($c - 1) % @via ];
		$loader_seq++;
		my $file = $PostgreSQL::Test::Utils::tmp_check . "/027_load_$loader_seq.sql";
		append_to_file($file, load_script($loader_seq, $rounds));
		# output into files: nobody pumps these pipes while they run
		my %run = (out => "$file.out", err => "$file.err");
		$run{h} = IPC::Run::start(
			[
				'psql', '-X', '-q', '-v', "ON_ERROR_STOP=$on_error_stop",
				'-d', $node->connstr($db) . ' user=etl',
				'-f', $file
			],
			'>', $run{out}, '2>', $run{err},
			IPC::Run::timeout(150));
		push @runs, \%run;
	}
	return \@runs;
}

# Wait for loaders; returns (clients that exited 0, their stderr)
sub finish_loaders
{
	my ($runs) = @_;
	my ($ok, $err) = (0, '');
	for my $run (@$runs)
	{
		my $clean = eval { $run->{h}->finish };
		$ok++ if $clean;
		$err .= slurp_file($run->{err});
		$err .= "loader: $@" if $@;
	}
	return ($ok, $err);
}

# Gold and its ground truth, key by key, as text
my $truth_sql = q{
SELECT coalesce(string_agg(format('%s:%s:%s', k, n, s), ',' ORDER BY k), '')
  FROM (SELECT k, count(*) AS n, sum(v) AS s FROM events GROUP BY k) e};
my $gold_sql = q{
SELECT coalesce(string_agg(format('%s:%s:%s', k, n, s), ',' ORDER BY k), '') FROM gold};
my $values_sql = q{
SELECT coalesce(string_agg(v::text, ',' ORDER BY v), '') FROM (SELECT DISTINCT v FROM events) e};
my $dim_sql = q{SELECT coalesce(string_agg(v::text, ',' ORDER BY v), '') FROM dim};
my $totals_sql = q{
SELECT (SELECT count(*) || ':' || sum(v) FROM events) || ' ' || (SELECT sum(n) || ':' || sum(s) FROM gold)};

# Every shard pipeline of the workers: name:state:consecutive failures
my $health_sql = q{
SELECT string_agg(format('%s:%s:%s', p.pipeline, p.state, p.consecutive_failures), ',' ORDER BY p.pipeline)
  FROM microbatch.shard_pipelines s JOIN microbatch.pipelines p USING (pipeline)};
sub expected_health
{
	my ($w) = @_;
	return join(',', map { "clicks_$_:enabled:0" } sort @{ $shards_of{ $w->name } });
}

# Committed batches of a worker's shard pipelines
sub batches_of
{
	my ($w) = @_;
	return $w->safe_psql($db,
		q{SELECT count(*) FROM microbatch.batches b JOIN microbatch.shard_pipelines s USING (pipeline) WHERE b.status = 'committed'});
}

# Wait until every node has no prepared transaction and gold equals the
# ground truth; then, a little later (a batch processed twice would show),
# check gold, dim, the totals, and that every shard pipeline is healthy.
sub check_exact
{
	my ($what) = @_;
	for my $node ($coord, @workers)
	{
		poll_until_tolerant($node, $db, q{SELECT count(*) FROM pg_prepared_xacts},
			'0', $catch_up, $node->name . ': no prepared transaction left');
	}
	poll_until($coord, $db,
		"SELECT ($truth_sql) = ($gold_sql) AND ($values_sql) = ($dim_sql)",
		't', $catch_up, "$what: gold and dim to catch up");
	usleep(1_500_000);
	my $truth = $coord->safe_psql($db, $truth_sql);
	is($coord->safe_psql($db, $gold_sql), $truth,
		"$what: gold holds count and sum of every key of events, exactly");
	is($coord->safe_psql($db, $dim_sql), $coord->safe_psql($db, $values_sql),
		"$what: dim holds the distinct values of events, exactly");
	my ($events, $gold) = split / /, $coord->safe_psql($db, $totals_sql);
	is($gold, $events, "$what: totals (rows:sum) of gold equal those of events ($events)");
	for my $w (@workers)
	{
		is($w->safe_psql($db, $health_sql), expected_health($w),
			"$what: " . $w->name . ': every shard pipeline enabled, no failure in a row');
		is( $w->safe_psql(
				$db, q{SELECT coalesce(sum(rows_waiting), 0) FROM microbatch.pipelines}),
			'0', "$what: " . $w->name . ': no row waiting');
	}
}

# Failed batches of a worker's shard pipelines: "total:others", others
# being those that did not fail on a Citus connection (a node down, or a
# connection that broke when it went down)
sub failed_batches
{
	my ($w) = @_;
	return $w->safe_psql(
		$db, q{
SELECT count(*) || ':' || count(*) FILTER (WHERE NOT (b.sqlstate ~ '^(XX000|08)' AND
           b.error ~ '(connection|SSL SYSCALL|socket|server closed)'))
  FROM microbatch.batches b JOIN microbatch.shard_pipelines s USING (pipeline)
 WHERE b.status = 'failed'});
}

# The failed batches of a worker, for the log
sub note_failed_batches
{
	my ($w) = @_;
	note $w->name . ": failed batches:\n" . $w->safe_psql(
		$db, q{
SELECT string_agg(format('%s #%s.%s %s %s %s', b.pipeline, b.batch_id, b.attempt, b.sqlstate, b.error, b.error_detail), E'\n'
                  ORDER BY b.started_at)
  FROM microbatch.batches b JOIN microbatch.shard_pipelines s USING (pipeline)
 WHERE b.status = 'failed'});
}

#
# 2. Concurrent load, every kind of write
#
# The workers' schedulers: started when Citus commits CREATE EXTENSION
# there, with COMMIT PREPARED.  (Had that commit not woken the launcher,
# it would retry a database whose scheduler had found no extension, as at
# the workers' start, only 10 naptimes later: 50 s.)
my $scheduler_sql = q{SELECT count(*) FROM microbatch.workers WHERE kind = 'scheduler' AND database = current_database()};
for my $w (@workers)
{
	ok(poll_until($w, $db, $scheduler_sql, '1', 120),
		$w->name . ': a microbatch scheduler runs in the database');
}
my $scheduler_after = time() - $t_extension;
cmp_ok($scheduler_after, '<', 15,
	sprintf('the workers\' schedulers started promptly after CREATE EXTENSION (%.1f s)', $scheduler_after));

my $loaders = start_loaders(4, 50, 1, $coord, $coord, $coord, $w1);
my ($clean, $load_err) = finish_loaders($loaders);
is($clean, 4, 'load: the four clients (three through the coordinator, one through worker 1) committed every statement')
  or diag($load_err);
note 'load: ' . $coord->safe_psql($db, q{SELECT count(*) FROM events}) . ' rows';
check_exact('after concurrent load');
for my $w (@workers)
{
	is( $w->safe_psql(
			$db, q{
SELECT count(*) FROM microbatch.batches b JOIN microbatch.shard_pipelines s USING (pipeline)
 WHERE b.status = 'failed'}),
		'0', $w->name . ': no failed batch');
	cmp_ok(batches_of($w), '>', 2, $w->name . ': its shard pipelines committed batches during the load');
}

#
# 3a. A multi-shard transaction committed on the coordinator, prepared on
# worker 2 while worker 2 is down, committed there by 2PC recovery later.
#
$coord->safe_psql(
	$db, q{
ALTER SYSTEM SET citus.recover_2pc_interval = -1;
ALTER SYSTEM SET synchronous_standby_names = 'nonexistent';
ALTER SYSTEM SET synchronous_commit = local;
SELECT pg_reload_conf();
});
ok( poll_until(
		$coord, $db,
		q{SELECT current_setting('citus.recover_2pc_interval') || ' ' || current_setting('synchronous_standby_names')},
		'-1 nonexistent', 10),
	'coordinator: no automatic 2PC recovery, a synchronous standby that never comes');

my @twopc_rows;    # [key, v] of the held transaction, by worker
my $v = 900;
for my $i (0, 1)
{
	push @{ $twopc_rows[$i] }, [ $_, ++$v ] for @{ $twopc_keys[$i] };
}
my $held_sql = "SET synchronous_commit = on;\nBEGIN;\nINSERT INTO events (k, v) VALUES "
  . join(', ', map { "($_->[0], $_->[1])" } map { @$_ } @twopc_rows) . ";\nCOMMIT;\n";
my $held_file = $PostgreSQL::Test::Utils::tmp_check . '/027_held.sql';
append_to_file($held_file, $held_sql);
my %held;
$held{h} = IPC::Run::start(
	[ 'psql', '-X', '-d', $coord->connstr($db) . ' user=etl', '-f', $held_file ],
	'>', "$held_file.out", '2>', "$held_file.err",
	IPC::Run::timeout(120));
ok( poll_until(
		$coord, $db,
		q{SELECT count(*) FROM pg_stat_activity WHERE usename = 'etl' AND wait_event = 'SyncRep'},
		'1', 30),
	'held transaction: its COMMIT waits for the synchronous standby on the coordinator');
for my $w (@workers)
{
	is( $w->safe_psql(
			$db, q{SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'citus\_0\_%'}),
		'1', $w->name . ': it is prepared there (PREPARE TRANSACTION from the coordinator)');
}
my $held_gid = $w2->safe_psql($db, q{SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'citus\_0\_%'});
my $twopc_all = join(',', map { $_->[0] } map { @$_ } @twopc_rows);
my $twopc_w1 = join(',', map { $_->[0] } @{ $twopc_rows[0] });
my $twopc_w2 = join(',', map { $_->[0] } @{ $twopc_rows[1] });
is($coord->safe_psql($db, "SELECT count(*) FROM events WHERE k IN ($twopc_all)"),
	'0', 'held transaction: none of its rows is visible yet');

my $w2_batches_before = batches_of($w2);
$w2->stop('immediate');
$coord->safe_psql($db,
	q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE usename = 'etl' AND wait_event = 'SyncRep'});
ok(eval { $held{h}->finish }, 'held transaction: its session ends once the wait is cancelled');
$held{err} = slurp_file("$held_file.err");
note "held transaction, stderr:\n$held{err}";
like($held{err}, qr/canceling wait for synchronous replication due to user request/,
	'held transaction: the commit was already local when the wait was cancelled');
like($held{err}, qr/failed to commit transaction on 127\.0\.0\.1:$w2_port/,
	'held transaction: Citus could not send COMMIT PREPARED to worker 2');
is($w1->safe_psql($db, q{SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'citus\_0\_%'}),
	'0', 'worker1: COMMIT PREPARED arrived');

$w2->start;
# (the transactions of worker 1's batches that write dim are prepared on
# worker 2 too, for a moment: look for this one)
my $held_sql_w2 = "SELECT count(*) FROM pg_prepared_xacts WHERE gid = '$held_gid'";
is($w2->safe_psql($db, $held_sql_w2), '1', 'worker2: restarted with the transaction still prepared');
is($coord->safe_psql($db, "SELECT count(*) FROM events WHERE k IN ($twopc_w1)"),
	scalar @{ $twopc_rows[0] }, 'held transaction: its rows on worker 1 are committed');
is($coord->safe_psql($db, "SELECT count(*) FROM events WHERE k IN ($twopc_w2)"),
	'0', 'held transaction: its rows on worker 2 are not');

# Load while the transaction is prepared on worker 2; meanwhile, gold and
# dim never show its rows there
$loaders = start_loaders(2, 30, 1);
my $pending_sql = "SELECT (SELECT count(*) FROM gold WHERE k IN ($twopc_w2)) + (SELECT count(*) FROM dim WHERE v IN ("
  . join(',', map { $_->[1] } @{ $twopc_rows[1] }) . "))";
my ($samples, $seen, @loaded) = (0, 0);
for (1 .. 12)
{
	usleep(250_000);
	$seen += $coord->safe_psql($db, $pending_sql);
	push @loaded, $coord->safe_psql($db, 'SELECT count(*) FROM events');
	$samples++;
}
is($seen, 0, "while it is prepared and clients load: none of its rows on worker 2 in gold or dim ($samples samples)");
cmp_ok($loaded[-1], '>', $loaded[0], 'the clients were loading meanwhile');
($clean, $load_err) = finish_loaders($loaders);
is($clean, 2, 'load while the transaction is prepared on worker 2: every statement committed')
  or diag($load_err);
ok( poll_until(
		$coord, $db, "SELECT ($truth_sql) = ($gold_sql) AND ($values_sql) = ($dim_sql)",
		't', $catch_up, 'gold to catch up with the load'),
	'while it is prepared: gold and dim catch up with everything committed');
cmp_ok(batches_of($w2), '>', $w2_batches_before,
	"worker2: its shard pipelines committed batches while it was prepared");
is($w2->safe_psql($db, $held_sql_w2), '1', 'worker2: the transaction is still prepared');
is( $coord->safe_psql(
		$db, "SELECT count(*) || ':' || coalesce(sum(n), 0) FROM gold WHERE k IN ($twopc_w2)"),
	'0:0', 'while it is prepared: gold has none of its rows on worker 2');
is( $coord->safe_psql(
		$db, 'SELECT count(*) FROM dim WHERE v IN (' . join(',', map { $_->[1] } @{ $twopc_rows[1] }) . ')'),
	'0', 'while it is prepared: nor has dim');
is( $coord->safe_psql(
		$db, "SELECT string_agg(format('%s:%s:%s', k, n, s), ',' ORDER BY k) FROM gold WHERE k IN ($twopc_w1)"),
	join(',', map { "$_->[0]:1:$_->[1]" } sort { $a->[0] <=> $b->[0] } @{ $twopc_rows[0] }),
	'its rows on worker 1 are in gold, once');

is($coord->safe_psql($db, q{SELECT recover_prepared_transactions()}),
	'1', 'recover_prepared_transactions() on the coordinator commits it on worker 2');
is($w2->safe_psql($db, $held_sql_w2), '0', 'worker2: the transaction is prepared no more');
ok( poll_until(
		$coord, $db,
		"SELECT count(*) FROM gold WHERE k IN ($twopc_w2)",
		scalar @{ $twopc_rows[1] }, $catch_up),
	'after recovery: its rows on worker 2 reach gold');
check_exact('after 2PC recovery');
is( $coord->safe_psql(
		$db, "SELECT string_agg(format('%s:%s:%s', k, n, s), ',' ORDER BY k) FROM gold WHERE k IN ($twopc_all)"),
	join(',', map { "$_->[0]:1:$_->[1]" } sort { $a->[0] <=> $b->[0] } map { @$_ } @twopc_rows),
	'after recovery: every row of the held transaction is in gold exactly once');
note_failed_batches($_) for @workers;
for my $w (@workers)
{
	my $failed = failed_batches($w);
	is($failed =~ s/^\d+://r, '0',
		$w->name . ": every failed batch ($failed) failed on a Citus connection, for want of the node that was down");
}

$coord->safe_psql(
	$db, q{
ALTER SYSTEM RESET citus.recover_2pc_interval;
ALTER SYSTEM RESET synchronous_standby_names;
ALTER SYSTEM RESET synchronous_commit;
SELECT pg_reload_conf();
});

#
# 3b. Worker 2 killed in the middle of concurrent load, and started again
#
$loaders = start_loaders(4, 60, 0);
usleep(1_500_000);
$w2->stop('immediate');
usleep(1_000_000);
$w2->start;
($clean, $load_err) = finish_loaders($loaders);
is($clean, 4, 'load through the crash of worker 2: the clients ran to their end');
my $load_errors = () = $load_err =~ /ERROR:/g;
cmp_ok($load_errors, '>', 0,
	"load through the crash of worker 2: the crash hit the load ($load_errors statements failed)");
check_exact('after worker 2 was killed during load');
note_failed_batches($_) for @workers;
for my $w (@workers)
{
	my $failed = failed_batches($w);
	is($failed =~ s/^\d+://r, '0',
		$w->name . ": every failed batch ($failed) failed on a Citus connection, for want of the node that was down");
}

#
# 4. A third worker, added while the pipeline runs
#
my $w3 = citus_node('worker3');
$loaders = start_loaders(2, 40, 1);
usleep(500_000);
my $w3_node = $coord->safe_psql($db, sprintf(q{SELECT citus_add_node('127.0.0.1', %d)}, $w3->port));
like($w3_node, qr/^\d+$/, 'citus_add_node while the pipeline runs and clients load: allowed');
is( $w3->safe_psql(
		$db, q{SELECT extversion FROM pg_extension WHERE extname = 'microbatch'}),
	'0.5.0', 'worker3: Citus created microbatch there');
is($w3->safe_psql($db, q{SELECT count(*) FROM microbatch.shard_pipelines}),
	'0', 'worker3: no shard pipeline (it holds no shard)');

my $w3_port = $w3->port;
my @refused = (
	[ 'citus_rebalance_start', q{SELECT citus_rebalance_start()} ],
	[ 'rebalance_table_shards', q{SELECT rebalance_table_shards('events')} ],
	[
		'citus_move_shard_placement',
		"SELECT citus_move_shard_placement($some_shard, '127.0.0.1', $w1_port, '127.0.0.1', $w3_port, shard_transfer_mode := 'block_writes')"
	],
	[
		'citus_copy_shard_placement',
		"SELECT citus_copy_shard_placement($some_shard, '127.0.0.1', $w1_port, '127.0.0.1', $w3_port)"
	],
	[ 'citus_drain_node', "SELECT citus_drain_node('127.0.0.1', $w1_port)" ],
	[
		'citus_split_shard_by_split_points',
		"SELECT citus_split_shard_by_split_points($some_shard, ARRAY['-1'], ARRAY[2, 2])"
	],
	[ 'isolate_tenant_to_new_shard', q{SELECT isolate_tenant_to_new_shard('events', 5)} ],
	[ 'alter_distributed_table', q{SELECT alter_distributed_table('events', shard_count := 8)} ],
	[ 'undistribute_table', q{SELECT undistribute_table('events')} ],
	[
		'citus_move_shard_placement',
		"DO \$\$ BEGIN PERFORM citus_move_shard_placement($some_shard, '127.0.0.1', $w1_port, '127.0.0.1', $w3_port); END \$\$",
		'from a DO block'
	],);
for my $r (@refused)
{
	my ($fn, $sql, $how) = @$r;
	($ret, $out, $err) = psql_verbose($coord, 'postgres', $sql);
	like($err,
		qr/ERROR:  0A000: \Q$fn\E\(\) cannot run while this database has distributed pipelines/,
		"$fn() refused" . ($how ? " $how" : ''));
}
$early->query("EXECUTE early_move");
like($early->{stderr},
	qr/ERROR:  citus_move_shard_placement\(\) cannot run while this database has distributed pipelines/,
	'citus_move_shard_placement() refused in a statement prepared before the distributed pipeline existed');
$early->quit;
($clean, $load_err) = finish_loaders($loaders);
is($clean, 2, 'load while the node was added: every statement committed')
  or diag($load_err);
is($coord->safe_psql($db, $placements_sql), $placements, 'placements of events unchanged');
is( $coord->safe_psql(
		$db, q{SELECT count(*) FROM pg_dist_background_job}),
	'0', 'no rebalance job was created');
is( $w3->safe_psql(
		$db, q{SELECT count(*) FROM pg_class WHERE relname ~ '^(events|gold)_[0-9]+$'}),
	'0', 'worker3: no shard of events or gold');
my %before = map { $_->name => batches_of($_) } @workers;
$loaders = start_loaders(2, 20, 1, $coord, $w2);
($clean, $load_err) = finish_loaders($loaders);
is($clean, 2, 'more load after the refusals: every statement committed')
  or diag($load_err);
check_exact('after adding a node');
for my $w (@workers)
{
	cmp_ok(batches_of($w), '>', $before{ $w->name },
		$w->name . ': its shard pipelines carried on');
}

#
# 5. drop_distributed_pipeline
#
is(etl_psql($coord, q{SELECT microbatch.drop_distributed_pipeline('clicks')}),
	'4', 'drop_distributed_pipeline: four shard pipelines dropped');
is($coord->safe_psql($db, q{SELECT count(*) FROM microbatch.distributed_pipelines}),
	'0', 'coordinator: no distributed pipeline left');
for my $w (@workers, $w3)
{
	is( $w->safe_psql(
			$db, q{
SELECT (SELECT count(*) FROM microbatch.shard_pipelines) || ':' ||
       (SELECT count(*) FROM microbatch.pipelines) || ':' ||
       (SELECT count(*) FROM pg_class WHERE relnamespace = 'microbatch'::regnamespace AND relname LIKE 'clicks%')}),
		'0:0:0', $w->name . ': no shard pipeline, pipeline or batch view left');
}

# docs/scaling.md: to rebalance, drop the distributed pipeline, move the
# shards, create it again.  The shards lose their tracking column with their
# last pipeline (the shell table has none, and Citus moves a shard by the
# shell's columns).
($ret, $out, $err) = psql_verbose($coord, 'postgres',
	"SELECT replicate_reference_tables('block_writes');\n"
	  . "SELECT citus_move_shard_placement($some_shard, '127.0.0.1', $w1_port, '127.0.0.1', $w3_port, shard_transfer_mode := 'block_writes')");
is($err, '', 'after drop_distributed_pipeline, a shard can be moved (the documented way to rebalance)');

note sprintf('027_citus: %.0f s', time() - $t_start);

$w3->stop;
$w2->stop;
$w1->stop;
$coord->stop;

done_testing();
