# Batch workers against hostile pipeline owners and careless DBAs.
#
# A batch worker is a superuser session that runs, one after another, the
# transforms of pipelines of different owners, in a database whose owner can
# ALTER DATABASE ... SET anything.  So:
#
# (1) a transform that points search_path at the owner's schema, whose "="
#     operators try to make the owner a superuser (directly, through the
#     owner's SQL and PL/pgSQL functions, a row security policy on the
#     source, a failing transform), never gets them run by the engine: the
#     owner stays an ordinary role, the engine keeps working;
# (2) nothing a transform leaves in the session (settings changed with
#     set_config(..., false), session advisory locks, prepared statements,
#     sequence state, LISTEN, holdable cursors) reaches the next batch,
#     another owner's, on the same worker;
# (3) database defaults that would break batches (read-only, repeatable or
#     serializable, 1 ms timeouts, a search_path, replica mode,
#     exit_on_error, a role) are overridden in the workers;
# (4) errors outside the transforms (owner NOLOGIN, a cancel) are recorded,
#     counted and alerted like any failure, and the worker carries on: no
#     crash, no restart loop, also when a transform turns exit_on_error on
#     or a cancel finds the worker between batches;
# (5) microbatch.batch_timeout cancels a batch that runs too long, as a
#     failure, frees the worker, and backs off, also when the transform
#     catches the cancel; only a superuser can raise a pipeline's timeout
#     above it;
# (6) a pipeline whose lock an open transaction holds does not pin the
#     worker: other pipelines go on, and it catches up after the commit;
#     the same for an open transaction that paused the pipeline.
#
# One batch worker (microbatch.max_workers = 1) for the whole cluster, so
# that every pipeline here shares it.  (3) comes last: it restarts the
# server.

use strict;
use warnings;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

# Shared polling helpers (test/t/MicrobatchTest.pm); prove puts only the top
# directory in @INC, so look next to this script.
use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $node = PostgreSQL::Test::Cluster->new('worker_isolation');
$node->init;

# Server defaults spelled out, so that a setting leaked from one owner's
# transform into another's shows as a difference from known values.
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '200ms'
microbatch.max_retries = 3
microbatch.max_retry_delay = '2s'
microbatch.max_workers = 1
max_worker_processes = 16
timezone = 'UTC'
datestyle = 'iso, mdy'
work_mem = '4MB'
});
$node->start;

my $db = 'postgres';
my $max_retries = 3;

$node->safe_psql(
	$db, q{
CREATE EXTENSION microbatch;
GRANT CREATE ON SCHEMA public TO PUBLIC;
CREATE ROLE mallory LOGIN;
GRANT CREATE ON DATABASE postgres TO mallory;
CREATE ROLE alice LOGIN;
CREATE ROLE bob LOGIN;
CREATE ROLE dave LOGIN;
CREATE ROLE frank LOGIN;
CREATE ROLE gina LOGIN;
});

ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.workers
           WHERE kind = 'scheduler' AND database = current_database()},
		'1', 30),
	'the database has a scheduler');

# Run SQL as a role (in a superuser's session, so that any role works).
sub as_role
{
	my ($role, $sql, $dbname) = @_;
	return $node->safe_psql($dbname // $db, "SET ROLE $role;\n$sql");
}

# The SQLSTATE of the error that $sql raises as $role, or 'ok'.
sub sqlstate_of
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) =
	  $node->psql($db, "\\set VERBOSITY verbose\nSET ROLE $role;\n$sql");
	return 'ok' if $ret == 0;
	return $err =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : "no SQLSTATE in: $err";
}

# The batch workers seen so far: a restart loop would show as many pids.
my %worker_pids;

sub sample_workers
{
	$worker_pids{$_} = 1 for grep { /^\d+$/ } split /\n/,
	  $node->safe_psql($db,
		q{SELECT pid FROM microbatch.workers WHERE kind = 'batch worker'});
}

# Lines of the server log that say a worker failed a pipeline outside its
# transforms (worker.c logs each one).
sub could_not_run
{
	my ($pipeline) = @_;
	return scalar grep { /microbatch pipeline "\Q$pipeline\E" could not run a batch/ }
	  split /\n/, slurp_file($node->logfile);
}

# The lines of the server log, from byte $offset on, that match $re.
my $crash_re =
  qr/terminated by signal|server process .* was terminated|terminating any other active server processes|PANIC:/;
my $worker_exit_re =
  qr/background worker "microbatch (?:worker|scheduler)" \(PID \d+\) exited with exit code/;

sub log_lines
{
	my ($offset, $re) = @_;
	return grep { /$re/ } split /\n/, slurp_file($node->logfile, $offset);
}
my @lines;

# A source table and a log table of the rows each batch processed, owned by
# $role, with a pipeline over them.
sub make_pipeline
{
	my ($role, $name, $interval, $extra) = @_;
	$extra //= '';
	as_role(
		$role, qq{
CREATE TABLE ${name}_src (id int PRIMARY KEY);
CREATE TABLE ${name}_log (batch_id bigint NOT NULL, id int NOT NULL);
SELECT microbatch.create_pipeline('$name', '${name}_src', '$interval' $extra);
SELECT microbatch.add_transform('$name', 'log', 'bronze', \$\$
    INSERT INTO ${name}_log SELECT microbatch.current_batch_id(), id FROM microbatch.${name}_batch
\$\$);
});
}

# "rows|distinct ids|ids" of a pipeline's log: exactly once is rows = ids.
sub log_summary
{
	my ($name) = @_;
	return $node->safe_psql($db,
		"SELECT count(*), count(DISTINCT id), string_agg(id::text, ',' ORDER BY id) FROM ${name}_log"
	);
}

my $start_time = $node->safe_psql($db, 'SELECT pg_postmaster_start_time()');
sample_workers();

###########################################################################
# (1) search_path hijacking, run many times by the worker
###########################################################################

# Mallory's trap: "=" on name, int4, int8 and text (and "<>" on text) in her
# schema evil, each of which tries ALTER ROLE mallory SUPERUSER, which works
# only if a superuser runs it, and notes who ran it.  Errors are swallowed
# so that the trap never makes anything fail.
as_role(
	'mallory', q{
CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
CREATE TABLE evil.calls (role name NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
GRANT INSERT ON evil.calls TO PUBLIC;
CREATE FUNCTION evil.grab() RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    BEGIN
        INSERT INTO evil.calls (role) VALUES (current_user);
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    BEGIN
        EXECUTE 'ALTER ROLE mallory SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
END
$f$;
DO $d$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['name', 'int4', 'int8', 'text'] LOOP
        EXECUTE format($s$
            CREATE FUNCTION evil.eq_%1$s(a %1$s, b %1$s) RETURNS boolean
            LANGUAGE plpgsql AS $b$
            BEGIN
                PERFORM evil.grab();
                RETURN a OPERATOR(pg_catalog.=) b;
            END $b$;
            CREATE OPERATOR evil.= (FUNCTION = evil.eq_%1$s, LEFTARG = %1$s, RIGHTARG = %1$s);
        $s$, t);
    END LOOP;
END
$d$;
CREATE FUNCTION evil.ne_text(a text, b text) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM evil.grab();
    RETURN a OPERATOR(pg_catalog.<>) b;
END $f$;
CREATE OPERATOR evil.<> (FUNCTION = evil.ne_text, LEFTARG = text, RIGHTARG = text);

-- the same switch of search_path, from an SQL function and a PL/pgSQL one
CREATE FUNCTION mal_sql() RETURNS text LANGUAGE sql AS $f$
    SELECT pg_catalog.set_config('search_path', 'evil, pg_catalog', false)
$f$;
CREATE FUNCTION mal_plpgsql() RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'evil, pg_catalog', false);
    -- parsed now, under the new path: evil's "=" runs here, as mallory,
    -- which shows that the trap works
    PERFORM 1 WHERE 1 = 1;
    RETURN pg_catalog.current_setting('search_path');
END
$f$;

CREATE TABLE mal_src (id int PRIMARY KEY);
CREATE TABLE mal_log (batch_id bigint NOT NULL, id int NOT NULL);
CREATE TABLE mal_paths (batch_id bigint NOT NULL, layer text NOT NULL, path text NOT NULL);
SELECT microbatch.create_pipeline('mal', 'mal_src', '0');
SELECT microbatch.add_transform('mal', 'direct', 'bronze',
    $$SELECT pg_catalog.set_config('search_path', 'evil, pg_catalog', false)$$);
-- the search_path each later transform starts with
SELECT microbatch.add_transform('mal', 'path', 'bronze', $$
    INSERT INTO mal_paths
    SELECT microbatch.current_batch_id(), 'bronze', pg_catalog.current_setting('search_path')
$$);
SELECT microbatch.add_transform('mal', 'log', 'bronze', $$
    INSERT INTO mal_log SELECT microbatch.current_batch_id(), id FROM microbatch.mal_batch WHERE id = id
$$);
SELECT microbatch.add_transform('mal', 'via_sql', 'silver', $$SELECT mal_sql()$$);
SELECT microbatch.add_transform('mal', 'via_plpgsql', 'silver', $$SELECT mal_plpgsql()$$);
SELECT microbatch.add_transform('mal', 'paths', 'gold', $$
    INSERT INTO mal_paths
    SELECT microbatch.current_batch_id(), 'gold', pg_catalog.current_setting('search_path')
$$);
-- the last word of every batch, right before the engine's own SQL
SELECT microbatch.add_transform('mal', 'tail', 'gold',
    $$SELECT pg_catalog.set_config('search_path', 'evil, pg_catalog', false)$$);

-- A row security policy on the source, applied to the owner too: policy
-- functions run as whoever reads, so every engine read of the batch view
-- must be the owner's.
CREATE FUNCTION mal_policy() RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM evil.grab();
    PERFORM pg_catalog.set_config('search_path', 'evil, pg_catalog', false);
    RETURN true;
END
$f$;
ALTER TABLE mal_src ENABLE ROW LEVEL SECURITY;
ALTER TABLE mal_src FORCE ROW LEVEL SECURITY;
CREATE POLICY mal_all ON mal_src USING (mal_policy());

-- A transform that switches search_path and fails: the engine records the
-- failure, counts it and alerts, all after the switch.
CREATE FUNCTION mal_fail() RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'evil, pg_catalog', false);
    RAISE EXCEPTION 'mallory fails on purpose';
END
$f$;
CREATE TABLE malfail_src (id int PRIMARY KEY);
SELECT microbatch.create_pipeline('malfail', 'malfail_src', '100ms');
SELECT microbatch.add_transform('malfail', 'fail', 'bronze', $$SELECT mal_fail()$$);
});
$node->safe_psql($db, q{INSERT INTO malfail_src VALUES (1)});

# Many batches: one commit at a time into a continuous pipeline.
my $mal_rows = 15;
for my $id (1 .. $mal_rows)
{
	$node->safe_psql($db, "INSERT INTO mal_src VALUES ($id)");
	usleep(150_000);
}
ok( poll_until(
		$node, $db, q{SELECT count(*) FROM mal_log}, "$mal_rows", 30),
	'(1) the hijacking pipeline processed its rows in the background');
sample_workers();

# Mallory, by hand, with the trap on her own search_path: the API must not
# fall into it either.
as_role(
	'mallory', q{
SET search_path = evil, pg_catalog;
SELECT microbatch.run_batch('mal');
SELECT microbatch.rows_waiting('mal');
SELECT count(*) FROM microbatch.pipelines;
SELECT count(*) FROM microbatch.batches;
SELECT count(*) FROM microbatch.transforms;
});
$node->safe_psql($db, "INSERT INTO mal_src VALUES (" . ($mal_rows + 1) . ")");
ok( poll_until(
		$node, $db, q{SELECT count(*) FROM mal_log},
		$mal_rows + 1, 30),
	'(1) a row committed after the manual batch is processed too');
$mal_rows++;
ok( poll_until(
		$node, $db,
		q{SELECT state FROM microbatch.pipelines WHERE pipeline = 'malfail'},
		'failed', 30),
	'(1) the failing hijacker was retried until failed');

my $mal_batches = $node->safe_psql($db,
	q{SELECT count(*) FROM microbatch.batches WHERE pipeline = 'mal' AND status = 'committed'});
note "pipeline mal committed $mal_batches batches";
cmp_ok($mal_batches, '>=', 5, '(1) the hijacking transforms ran in many batches');
is($node->safe_psql($db, q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}),
	'f', '(1) mallory is not a superuser');
is( $node->safe_psql(
		$db,
		q{SELECT count(*) FILTER (WHERE role = 'mallory') > 0,
                 count(*) FILTER (WHERE role <> 'mallory')
            FROM evil.calls}),
	't|0',
	'(1) the trap ran only as mallory, inside her own transform (and it did run)'
) or diag($node->safe_psql($db,
	q{SELECT role, count(*) FROM evil.calls GROUP BY role}));
is(log_summary('mal'), "$mal_rows|$mal_rows|" . join(',', 1 .. $mal_rows),
	'(1) every row processed exactly once');
is( $node->safe_psql(
		$db, qq{SELECT count(DISTINCT batch_id) = $mal_batches, count(*) FILTER (WHERE path LIKE '%evil%')
                 FROM mal_paths WHERE layer = 'bronze'}),
	't|0',
	'(1) a transform after the switch runs with its own search_path')
  or diag($node->safe_psql($db, q{SELECT layer, path, count(*) FROM mal_paths GROUP BY 1, 2}));
is( $node->safe_psql(
		$db, qq{SELECT count(DISTINCT batch_id) = $mal_batches, count(*) FILTER (WHERE path LIKE '%evil%')
                 FROM mal_paths WHERE layer = 'gold'}),
	't|0',
	'(1) ... also after the switches made by the owner\'s functions and policy')
  or diag($node->safe_psql($db, q{SELECT layer, path, count(*) FROM mal_paths GROUP BY 1, 2}));
is( $node->safe_psql(
		$db, q{SELECT state, consecutive_failures FROM microbatch.pipelines WHERE pipeline = 'mal'}),
	'enabled|0',
	'(1) the pipeline is healthy');
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM microbatch.batches WHERE pipeline = 'mal' AND status = 'failed'}),
	'0', '(1) no batch of the hijacker that does not fail failed');
is( $node->safe_psql(
		$db, q{SELECT count(*), bool_and(sqlstate = 'P0001') FROM microbatch.batches
                WHERE pipeline = 'malfail' AND status = 'failed'}),
	"$max_retries|t", '(1) the failing one failed as it should, max_retries times');
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM evil.calls WHERE role <> 'mallory'}),
	'0', '(1) and the trap still ran only as mallory');

# The trap stays armed for what follows: the worker checks mallory's
# pipelines at every naptime, reading her source under her policy.

###########################################################################
# (2) no session state from one owner's batch in the next owner's
###########################################################################

# Alice's transform changes settings for the session, takes a session
# advisory lock, uses a sequence and tries to prepare a statement; it notes
# what it sees itself, which shows that the changes took effect there.
as_role(
	'alice', q{
CREATE TABLE a_src (id int PRIMARY KEY);
CREATE TABLE a_log (batch_id bigint, pid int, tz text, datestyle text, work_mem text,
                    dro text, tenant text, locks bigint, prepared text, timeouts text,
                    tried text);
CREATE SEQUENCE a_seq;
CREATE FUNCTION a_dirty(b bigint) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    prepared text;
    tried text;
BEGIN
    PERFORM pg_catalog.set_config('TimeZone', 'Pacific/Kiritimati', false);
    PERFORM pg_catalog.set_config('DateStyle', 'SQL, DMY', false);
    PERFORM pg_catalog.set_config('work_mem', '64kB', false);
    PERFORM pg_catalog.set_config('default_transaction_read_only', 'on', false);
    PERFORM pg_catalog.set_config('myapp.tenant', 'alice', false);
    PERFORM pg_catalog.set_config('statement_timeout', '1ms', false);
    PERFORM pg_catalog.set_config('lock_timeout', '1ms', false);
    PERFORM pg_catalog.pg_advisory_lock(42);
    PERFORM pg_catalog.nextval('a_seq');
    BEGIN
        EXECUTE pg_catalog.format('PREPARE a_leak_%s AS SELECT 1', b);
        prepared := 'prepared';
    EXCEPTION WHEN OTHERS THEN
        prepared := SQLERRM;
    END;
    -- session state a security-restricted operation should refuse anyway
    BEGIN
        EXECUTE 'LISTEN alice_channel';
        tried := 'listening';
    EXCEPTION WHEN OTHERS THEN
        tried := SQLERRM;
    END;
    BEGIN
        EXECUTE 'DECLARE alice_cursor CURSOR WITH HOLD FOR SELECT 1';
        tried := tried || '; cursor declared';
    EXCEPTION WHEN OTHERS THEN
        tried := tried || '; ' || SQLERRM;
    END;
    INSERT INTO a_log VALUES (b, pg_catalog.pg_backend_pid(),
        current_setting('TimeZone'), current_setting('DateStyle'),
        current_setting('work_mem'), current_setting('default_transaction_read_only'),
        current_setting('myapp.tenant', true),
        (SELECT count(*) FROM pg_catalog.pg_locks
          WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()
            AND classid = 0 AND objid = 42 AND objsubid = 1),
        prepared,
        current_setting('statement_timeout') || ' ' || current_setting('lock_timeout'),
        tried);
END
$f$;
SELECT microbatch.create_pipeline('a', 'a_src', '0');
SELECT microbatch.add_transform('a', 'dirty', 'bronze',
    $$SELECT a_dirty(microbatch.current_batch_id())$$);
});

# Bob's transform notes what it finds.  The advisory lock is looked up in
# pg_locks: pg_try_advisory_lock() would succeed in the process holding it.
as_role(
	'bob', q{
CREATE TABLE b_src (id int PRIMARY KEY);
CREATE TABLE b_seen (batch_id bigint, pid int, tz text, datestyle text, work_mem text,
                     dro text, ro text, tenant text, locks bigint, prepared bigint,
                     lastval text, timeouts text, listening bigint, cursors bigint);
CREATE FUNCTION b_check(b bigint) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    lv text;
BEGIN
    BEGIN
        PERFORM pg_catalog.lastval();
        lv := 'defined';
    EXCEPTION WHEN OTHERS THEN
        lv := SQLSTATE;
    END;
    INSERT INTO b_seen VALUES (b, pg_catalog.pg_backend_pid(),
        current_setting('TimeZone'), current_setting('DateStyle'),
        current_setting('work_mem'), current_setting('default_transaction_read_only'),
        current_setting('transaction_read_only'),
        current_setting('myapp.tenant', true),
        (SELECT count(*) FROM pg_catalog.pg_locks
          WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()
            AND classid = 0 AND objid = 42 AND objsubid = 1),
        (SELECT count(*) FROM pg_catalog.pg_prepared_statements),
        lv,
        current_setting('statement_timeout') || ' ' || current_setting('lock_timeout'),
        (SELECT count(*) FROM pg_catalog.pg_listening_channels()),
        (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable));
END
$f$;
SELECT microbatch.create_pipeline('b', 'b_src', '0');
SELECT microbatch.add_transform('b', 'check', 'bronze',
    $$SELECT b_check(microbatch.current_batch_id())$$);
});

# Alice, then Bob, in turns, each waiting for the other's batch.
my $rounds = 4;
for my $round (1 .. $rounds)
{
	$node->safe_psql($db, "INSERT INTO a_src VALUES ($round)");
	ok(poll_until($node, $db, q{SELECT count(*) FROM a_log}, "$round", 30),
		"(2) round $round: alice's batch ran");
	if ($round == 1)
	{
		# between batches the lock is still the worker's: say so, the
		# promise is only about the next batch
		note 'advisory lock 42 held after alice\'s batch by: '
		  . $node->safe_psql($db,
			q{SELECT coalesce(string_agg(a.backend_type || ' ' || l.pid, ', '), 'nobody')
                FROM pg_locks l LEFT JOIN pg_stat_activity a USING (pid)
               WHERE l.locktype = 'advisory' AND l.classid = 0 AND l.objid = 42
                 AND l.objsubid = 1});
	}
	$node->safe_psql($db, "INSERT INTO b_src VALUES ($round)");
	ok(poll_until($node, $db, q{SELECT count(*) FROM b_seen}, "$round", 30),
		"(2) round $round: bob's batch ran");
}
sample_workers();

note "alice saw:\n", $node->safe_psql($db, q{SELECT * FROM a_log ORDER BY batch_id});
note "bob saw:\n", $node->safe_psql($db, q{SELECT * FROM b_seen ORDER BY batch_id});

is( $node->safe_psql(
		$db, q{SELECT bool_and(tz = 'Pacific/Kiritimati' AND datestyle = 'SQL, DMY'
                          AND work_mem = '64kB' AND dro = 'on' AND tenant = 'alice'
                          AND locks = 1 AND timeouts = '1ms 1ms')
                 FROM a_log}),
	't',
	'(2) inside alice\'s transform her settings and lock took effect');
is( $node->safe_psql(
		$db, q{SELECT count(DISTINCT pid) FROM (SELECT pid FROM a_log UNION ALL SELECT pid FROM b_seen) p}),
	'1',
	'(2) both owners\' batches ran on the same worker process');
is( $node->safe_psql(
		$db, q{SELECT string_agg(DISTINCT format('%s|%s|%s|%s|%s', tz, datestyle, work_mem, dro, ro), ',')
                 FROM b_seen}),
	'UTC|ISO, MDY|4MB|off|off',
	'(2) bob always sees the server\'s TimeZone, DateStyle, work_mem, read-write');
is( $node->safe_psql(
		$db, q{SELECT string_agg(DISTINCT timeouts, ',') FROM b_seen}),
	'0 0', '(2) bob has no statement_timeout nor lock_timeout of alice\'s');
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM b_seen WHERE coalesce(tenant, '') <> ''}),
	'0',
	'(2) a custom setting of alice\'s is not set for bob');
is($node->safe_psql($db, q{SELECT sum(locks) FROM b_seen}),
	'0', '(2) alice\'s session advisory lock is not held in bob\'s batches');
is($node->safe_psql($db, q{SELECT sum(prepared) FROM b_seen}),
	'0', '(2) no prepared statement of alice\'s exists in bob\'s batches');
note 'alice\'s PREPARE: ',
  $node->safe_psql($db, q{SELECT DISTINCT prepared FROM a_log});
note 'alice\'s LISTEN and DECLARE ... WITH HOLD: ',
  $node->safe_psql($db, q{SELECT DISTINCT tried FROM a_log});
is($node->safe_psql($db, q{SELECT sum(listening) + sum(cursors) FROM b_seen}),
	'0', '(2) no LISTEN and no holdable cursor of alice\'s in bob\'s batches');
is( $node->safe_psql(
		$db, q{SELECT string_agg(DISTINCT lastval, ',') FROM b_seen}),
	'55000',
	'(2) lastval() is not defined in bob\'s batches (alice\'s nextval is gone)');
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM microbatch.batches
                WHERE pipeline IN ('a', 'b') AND status = 'failed'}),
	'0', '(2) no batch of either failed');
is(could_not_run('a') + could_not_run('b'),
	0, '(2) nor failed outside its transforms');

###########################################################################
# (4) errors outside the transforms: recorded, counted, alerted; no crash
###########################################################################

my $log_offset_4 = -s $node->logfile;
make_pipeline('dave', 'nolog', '100ms');
$node->safe_psql($db, q{INSERT INTO nolog_src VALUES (1)});
ok(poll_until($node, $db, q{SELECT count(*) FROM nolog_log}, '1', 30),
	'(4a) the pipeline runs while its owner may log in');
my $nolog_id = $node->safe_psql($db,
	q{SELECT pipeline_id FROM microbatch.pipeline WHERE pipeline_name = 'nolog'});

# Listen for alerts from here on.  psql prints the notifications it got
# after each command it runs.
my $listener = $node->background_psql($db);
$listener->query_safe('LISTEN microbatch_alerts');
my $listener_output = '';

sub alerts
{
	$listener_output .= $listener->query_safe('SELECT 1') . "\n";
	my @alerts;
	while ($listener_output =~
		/Asynchronous notification "microbatch_alerts" with payload "(.*)" received from server process/g
	  )
	{
		push @alerts, decode_json($1);
	}
	return @alerts;
}

# The DBA takes LOGIN away from the owner while rows wait.
$node->safe_psql(
	$db, q{
ALTER ROLE dave NOLOGIN;
INSERT INTO nolog_src VALUES (2), (3);
});
ok( poll_until(
		$node, $db,
		q{SELECT state FROM microbatch.pipelines WHERE pipeline = 'nolog'},
		'failed', 30),
	'(4a) with its owner NOLOGIN, the pipeline ends up failed');
sample_workers();
my $nolog_failed = $node->safe_psql(
	$db, q{
SELECT count(*), max(attempt), count(DISTINCT batch_id),
       bool_and(sqlstate = '28000'), bool_and(error LIKE '%not permitted to log in%')
  FROM microbatch.batches WHERE pipeline = 'nolog' AND status = 'failed'});
is($nolog_failed, "$max_retries|$max_retries|1|t|t",
	'(4a) max_retries failed ledger rows, attempts 1.., SQLSTATE 28000, the reason')
  or diag($node->safe_psql($db,
	q{SELECT batch_id, attempt, status, sqlstate, error FROM microbatch.batches WHERE pipeline = 'nolog'}));
is( $node->safe_psql(
		$db, q{SELECT consecutive_failures, last_error LIKE '%not permitted to log in%'
                 FROM microbatch.pipelines WHERE pipeline = 'nolog'}),
	"$max_retries|t",
	'(4a) the failures are counted, with the last error');
is(log_summary('nolog'), '1|1|1', '(4a) nothing was processed as the NOLOGIN owner');

my @failed_alerts;
my $deadline = time() + 10;
while (time() < $deadline)
{
	@failed_alerts =
	  grep { $_->{event} eq 'failed' && $_->{pipeline_id} == $nolog_id } alerts();
	last if @failed_alerts;
	usleep(200_000);
}
is(scalar(@failed_alerts), 1, '(4a) one "failed" alert for the pipeline');
if (@failed_alerts)
{
	is($failed_alerts[0]{sqlstate}, '28000', '(4a) the alert has SQLSTATE 28000');
	is($failed_alerts[0]{consecutive_failures},
		$max_retries, '(4a) the alert has the failure count');
}

# Failed is failed: no more attempts, so no more log lines.
usleep(2_500_000);
is(could_not_run('nolog'), $max_retries,
	'(4a) one "could not run a batch" line per attempt, and none while failed');
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM microbatch.batches WHERE pipeline = 'nolog' AND status = 'failed'}),
	$max_retries, '(4a) no attempt while failed');

$node->safe_psql(
	$db, q{
ALTER ROLE dave LOGIN;
SELECT microbatch.resume_pipeline('nolog');
});
ok(poll_until($node, $db, q{SELECT count(*) FROM nolog_log}, '3', 30),
	'(4a) after LOGIN and resume_pipeline the waiting rows are processed');
usleep(500_000);    # a double processing would show by now
is(log_summary('nolog'), '3|3|1,2,3', '(4a) every row exactly once');
is( $node->safe_psql(
		$db, q{SELECT state, consecutive_failures, rows_waiting
                 FROM microbatch.pipelines WHERE pipeline = 'nolog'}),
	'enabled|0|0', '(4a) the pipeline is healthy again');

# (4b) A cancel in the middle of a long transform.  The nap is switched off
# afterwards through a table, so that the retry can commit.
make_pipeline('dave', 'nap', '100ms');
as_role(
	'dave', q{
CREATE TABLE nap_ctl (nap boolean NOT NULL);
INSERT INTO nap_ctl VALUES (true);
SELECT microbatch.add_transform('nap', 'nap', 'gold',
    $$SELECT pg_catalog.pg_sleep(CASE WHEN nap THEN 60 ELSE 0 END) FROM nap_ctl$$);
});
$node->safe_psql($db, q{INSERT INTO nap_src VALUES (1)});
my $sleeping_sql = q{
SELECT w.pid FROM microbatch.workers w JOIN pg_stat_activity a USING (pid)
 WHERE w.kind = 'batch worker' AND a.wait_event = 'PgSleep'};
my $sleeping = '';
$deadline = time() + 30;
while (time() < $deadline)
{
	$sleeping = $node->safe_psql($db, $sleeping_sql);
	last if $sleeping =~ /^\d+$/;
	usleep(100_000);
}
ok($sleeping =~ /^\d+$/, '(4b) the worker is asleep in the transform');
sample_workers();

# The sleeping statement has read the switch already; the retry will not.
$node->safe_psql($db, q{UPDATE nap_ctl SET nap = false});
is($node->safe_psql($db, "SELECT pg_cancel_backend($sleeping)"),
	't', '(4b) pg_cancel_backend() sent to the worker');
ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.batches
           WHERE pipeline = 'nap' AND status = 'failed' AND sqlstate = '57014'},
		'1', 15),
	'(4b) the cancel is recorded as a failed batch, SQLSTATE 57014');
is( $node->safe_psql(
		$db, q{SELECT consecutive_failures FROM microbatch.pipelines WHERE pipeline = 'nap'}),
	'1', '(4b) and counted');
ok(poll_until($node, $db, q{SELECT count(*) FROM nap_log}, '1', 30),
	'(4b) the retry commits');
usleep(500_000);
is(log_summary('nap'), '1|1|1', '(4b) the row exactly once');
sample_workers();
my $worker_now = $node->safe_psql($db,
	q{SELECT pid FROM microbatch.workers WHERE kind = 'batch worker'});
ok($worker_now =~ /^\d+$/, '(4b) a worker carries on');
note $worker_now eq $sleeping
  ? "(4b) the cancelled worker $sleeping carried on"
  : "(4b) worker $sleeping was replaced by $worker_now";
is(could_not_run('nap'), 1, '(4b) the cancel is in the log once');
$listener->quit;

# (4c) Neither failure crashed anything or made workers come and go.
@lines = log_lines($log_offset_4, $crash_re);
is(scalar(@lines), 0, '(4c) no server process crashed') or diag(join("\n", @lines));
@lines = log_lines($log_offset_4, $worker_exit_re);
is(scalar(@lines), 0, '(4c) no scheduler or batch worker exited with an error')
  or diag(join("\n", @lines));
is($node->safe_psql($db, 'SELECT pg_postmaster_start_time()'),
	$start_time, '(4c) the postmaster was not restarted');
note 'batch worker pids seen so far: ', join(' ', sort keys %worker_pids);
cmp_ok(scalar(keys %worker_pids), '<=', 2,
	'(4c) one batch worker all along (two at most), not a restart loop');

# (4d) exit_on_error is a user setting: a transform can turn it on for
# itself and then fail, which ends its worker (PostgreSQL makes the error
# FATAL).  The error is still the batch's, recorded and counted, so that the
# pipeline ends failed after max_retries instead of ending a worker, with
# nothing recorded, again and again forever.
my $log_offset_4d = -s $node->logfile;
as_role(
	'dave', q{
CREATE TABLE boom_src (id int PRIMARY KEY);
CREATE FUNCTION boom() RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM pg_catalog.set_config('exit_on_error', 'on', true);
    RAISE EXCEPTION 'dave fails on purpose';
END
$f$;
SELECT microbatch.create_pipeline('boom', 'boom_src', '100ms');
SELECT microbatch.add_transform('boom', 'boom', 'bronze', $$SELECT boom()$$);
});
$node->safe_psql($db, q{INSERT INTO boom_src VALUES (1)});
ok( poll_until(
		$node, $db,
		q{SELECT state FROM microbatch.pipelines WHERE pipeline = 'boom'},
		'failed', 12),
	'(4d) a transform failing under exit_on_error is retried until failed');
is( $node->safe_psql(
		$db, q{SELECT count(*), bool_and(sqlstate = 'P0001') FROM microbatch.batches
                WHERE pipeline = 'boom' AND status = 'failed'}),
	"$max_retries|t", '(4d) its failures are recorded');
$node->safe_psql($db, q{SELECT microbatch.pause_pipeline('boom')});
@lines = log_lines($log_offset_4d, $worker_exit_re);
is(scalar(@lines), $max_retries, '(4d) a worker exited for each failure recorded, no more, no fewer')
  or diag(join("\n", @lines[0 .. ($#lines < 2 ? $#lines : 2)]));
sample_workers();

# (4e) A cancel that finds the worker between batches: there is nothing to
# cancel, and the worker stays (one that lands in a batch fails that batch).
my $idle = '';
$deadline = time() + 10;
while (time() < $deadline)
{
	$idle = $node->safe_psql($db,
		q{SELECT pid FROM microbatch.workers WHERE kind = 'batch worker' AND state = 'idle'});
	last if $idle =~ /^\d+$/;
	usleep(50_000);
}
ok($idle =~ /^\d+$/, '(4e) the worker is idle');
$node->safe_psql($db, "SELECT pg_cancel_backend($idle)");
usleep(1_000_000);
is( $node->safe_psql(
		$db, "SELECT count(*) FROM microbatch.workers WHERE pid = $idle"),
	'1', '(4e) the worker is still there after a cancel between batches');
$node->safe_psql($db, q{INSERT INTO nolog_src VALUES (4)});
ok(poll_until($node, $db, q{SELECT count(*) FROM nolog_log}, '4', 30),
	'(4e) and batches go on');

###########################################################################
# (5) microbatch.batch_timeout
###########################################################################

make_pipeline('frank', 'slowpoke', '100ms', q{, batch_timeout => '500ms'});
as_role(
	'frank', q{
SELECT microbatch.add_transform('slowpoke', 'nap', 'gold',
    $$SELECT pg_catalog.pg_sleep(30) FROM microbatch.slowpoke_batch$$);
});
make_pipeline('bob', 'quick', '100ms');
is( $node->safe_psql(
		$db, q{SELECT batch_timeout FROM microbatch.pipelines WHERE pipeline = 'slowpoke'}),
	'00:00:00.5', '(5) the pipeline has its batch_timeout');

my $t0 = time();
$node->safe_psql($db, q{INSERT INTO slowpoke_src VALUES (1)});
ok( poll_until(
		$node, $db,
		q{SELECT count(*) > 0 FROM microbatch.batches WHERE pipeline = 'slowpoke' AND status = 'failed'},
		't', 30),
	'(5) the batch that sleeps 30 s fails');
my $first_failure = time() - $t0;
note sprintf('(5) first failure %.1f s after the insert', $first_failure);
cmp_ok($first_failure, '<', 6, '(5) ... within a few seconds');
like(
	$node->safe_psql(
		$db, q{SELECT sqlstate || ' ' || error || ' ' || extract(epoch FROM duration)
                 FROM microbatch.batches WHERE pipeline = 'slowpoke' AND status = 'failed'
                 ORDER BY attempt LIMIT 1}),
	qr/^57014 batch of pipeline "slowpoke" ran longer than its batch_timeout of 500 ms (0\.[4-9]|[12]\.)/,
	'(5) SQLSTATE 57014, a message naming batch_timeout, after about 500 ms');

# Between its retries the single worker is free for others.
$node->safe_psql($db, q{INSERT INTO quick_src VALUES (1)});
ok(poll_until($node, $db, q{SELECT count(*) FROM quick_log}, '1', 5),
	'(5) another pipeline runs on the same single worker meanwhile');

ok( poll_until(
		$node, $db,
		q{SELECT state FROM microbatch.pipelines WHERE pipeline = 'slowpoke'},
		'failed', 30),
	'(5) after max_retries timeouts the pipeline is failed');
my @gaps = split /\n/, $node->safe_psql(
	$db, q{
SELECT extract(epoch FROM started_at - lag(finished_at) OVER (ORDER BY attempt))
  FROM microbatch.batches
 WHERE pipeline = 'slowpoke' AND status = 'failed'
 ORDER BY attempt OFFSET 1});
note "(5) gaps between timed-out attempts (s): @gaps";
cmp_ok(scalar(@gaps), '>=', 2, '(5) two retries to compare');
cmp_ok($gaps[0] // 0, '>=', 0.45, '(5) the first retry waits the backoff');
cmp_ok($gaps[1] // 0, '>', $gaps[0] // 0, '(5) the second retry waits longer');
is( $node->safe_psql(
		$db, q{SELECT count(*), bool_and(sqlstate = '57014') FROM microbatch.batches
                WHERE pipeline = 'slowpoke' AND status = 'failed'}),
	"$max_retries|t", '(5) every attempt timed out');

# Who may set what.  microbatch.batch_timeout is 1h here.
is( sqlstate_of(
		'frank', q{SELECT microbatch.alter_pipeline('slowpoke', batch_timeout => '2 hours')}),
	'42501',
	'(5) the owner cannot raise batch_timeout above microbatch.batch_timeout');
is( sqlstate_of(
		'frank',
		q{SELECT microbatch.create_pipeline('slowpoke2', 'slowpoke_src', batch_timeout => '2 hours')}),
	'42501',
	'(5) nor create a pipeline with one');
is( sqlstate_of(
		'frank', q{SELECT microbatch.alter_pipeline('slowpoke', batch_timeout => '10 min')}),
	'ok', '(5) the owner can set one below it');
$node->safe_psql($db,
	q{SELECT microbatch.alter_pipeline('slowpoke', batch_timeout => '2 hours')});
is( $node->safe_psql(
		$db, q{SELECT batch_timeout FROM microbatch.pipelines WHERE pipeline = 'slowpoke'}),
	'02:00:00', '(5) a superuser can raise it');
is( sqlstate_of(
		'frank', q{SELECT microbatch.alter_pipeline('slowpoke', batch_timeout => '0')}),
	'ok', '(5) the owner can return it to the default with 0');
is( $node->safe_psql(
		$db, q{SELECT batch_timeout IS NULL FROM microbatch.pipelines WHERE pipeline = 'slowpoke'}),
	't', '(5) 0 means microbatch.batch_timeout again');

# With no timeout of its own, the server's applies: lowered with a reload.
$node->safe_psql($db, q{ALTER SYSTEM SET microbatch.batch_timeout = '800ms'});
$node->reload;
ok(poll_until($node, $db, q{SHOW microbatch.batch_timeout}, '800ms', 10),
	'(5) microbatch.batch_timeout lowered');
is( sqlstate_of(
		'frank', q{SELECT microbatch.alter_pipeline('slowpoke', batch_timeout => '1s')}),
	'42501', '(5) the owner cannot go above the lowered limit');
usleep(500_000);    # the scheduler had its reload too
$node->safe_psql($db, q{SELECT microbatch.resume_pipeline('slowpoke')});
ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.batches
           WHERE pipeline = 'slowpoke' AND status = 'failed'
             AND error LIKE '%batch_timeout of 800 ms%'},
		'1', 15),
	'(5) the server\'s batch_timeout cancels the pipeline without one');
$node->safe_psql(
	$db, q{
SELECT microbatch.pause_pipeline('slowpoke');
ALTER SYSTEM RESET microbatch.batch_timeout;
});
$node->reload;
is(log_summary('slowpoke'), '0|0|', '(5) no timed-out batch left anything');

# (5b) A transform that catches the cancel and carries on: the timeout must
# end the batch all the same, or an owner keeps the shared worker as long as
# he likes.  The loop gives up by itself after 8 s, to bound this test.
as_role(
	'frank', q{
CREATE TABLE stubborn_src (id int PRIMARY KEY);
CREATE TABLE stubborn_caught (at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION stubborn() RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    FOR i IN 1 .. 16 LOOP
        BEGIN
            PERFORM pg_catalog.pg_sleep(0.5);
        EXCEPTION WHEN query_canceled THEN
            INSERT INTO stubborn_caught DEFAULT VALUES;
        END;
    END LOOP;
END
$f$;
SELECT microbatch.create_pipeline('stubborn', 'stubborn_src', '100ms', batch_timeout => '500ms');
SELECT microbatch.add_transform('stubborn', 'stubborn', 'bronze', $$SELECT stubborn()$$);
});
$node->safe_psql($db, q{INSERT INTO stubborn_src VALUES (1)});
ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.workers WHERE pipeline = 'stubborn'},
		'1', 10),
	'(5b) the stubborn batch runs');
$node->safe_psql($db, q{INSERT INTO quick_src VALUES (2)});
ok(poll_until($node, $db, q{SELECT count(*) FROM quick_log}, '2', 5),
	'(5b) another pipeline runs on the single worker within seconds');
ok( poll_until(
		$node, $db,
		q{SELECT count(*) > 0 FROM microbatch.batches
           WHERE pipeline = 'stubborn' AND status = 'failed' AND sqlstate = '57014'},
		't', 5),
	'(5b) the stubborn batch fails with 57014');
$node->safe_psql($db, q{SELECT microbatch.pause_pipeline('stubborn')});
ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.workers WHERE pipeline = 'stubborn'},
		'0', 15),
	'(5b) the stubborn batch is over');
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM microbatch.batches WHERE pipeline = 'stubborn' AND status = 'committed'}),
	'0', '(5b) a batch that outlived its timeout did not commit')
  or diag($node->safe_psql($db,
	q{SELECT batch_id, attempt, status, sqlstate, duration FROM microbatch.batches WHERE pipeline = 'stubborn'}));
note '(5b) cancels caught by the stubborn transform: ',
  $node->safe_psql($db, q{SELECT count(*) FROM stubborn_caught});

# (5c) A transform that catches the cancel once and then ends, before its
# worker would be terminated: the batch fails all the same, and commits
# nothing of what the transform wrote.
as_role(
	'frank', q{
CREATE TABLE sly_src (id int PRIMARY KEY);
CREATE TABLE sly_log (id int);
CREATE FUNCTION sly() RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO sly_log SELECT id FROM microbatch.sly_batch;
    BEGIN
        PERFORM pg_catalog.pg_sleep(5);
    EXCEPTION WHEN query_canceled THEN
        NULL;
    END;
END
$f$;
SELECT microbatch.create_pipeline('sly', 'sly_src', '100ms', batch_timeout => '300ms');
SELECT microbatch.add_transform('sly', 'sly', 'bronze', $$SELECT sly()$$);
});
$node->safe_psql($db, q{INSERT INTO sly_src VALUES (1)});
ok( poll_until(
		$node, $db,
		q{SELECT count(*) > 0 FROM microbatch.batches
           WHERE pipeline = 'sly' AND status = 'failed' AND sqlstate = '57014'
             AND error LIKE '%ran longer than its batch_timeout of 300 ms'},
		't', 10),
	'(5c) a batch whose transform caught the cancel fails with 57014');
$node->safe_psql($db, q{SELECT microbatch.pause_pipeline('sly')});
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM microbatch.batches WHERE pipeline = 'sly' AND status = 'committed'}),
	'0', '(5c) it did not commit');
is($node->safe_psql($db, q{SELECT count(*) FROM sly_log}),
	'0', '(5c) nor did what its transform wrote');

###########################################################################
# (6) a pipeline locked by an open transaction does not pin the worker
###########################################################################

make_pipeline('gina', 'held', '100ms');
make_pipeline('gina', 'other', '100ms');
$node->safe_psql($db, q{INSERT INTO held_src VALUES (1)});
ok(poll_until($node, $db, q{SELECT count(*) FROM held_log}, '1', 30),
	'(6) the pipeline runs');

# The owner runs a batch by hand and leaves the transaction open, with the
# pipeline's lock.
my $holder = $node->background_psql($db);
$holder->query_safe('SET ROLE gina');
$holder->query_safe('BEGIN');
$holder->query_safe(q{SELECT microbatch.run_batch('held')});
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM pg_locks l JOIN microbatch.pipeline p ON l.classid = p.pipeline_id
                WHERE p.pipeline_name = 'held' AND l.locktype = 'advisory' AND l.objsubid = 19778
                  AND l.granted}),
	'1', '(6) the open transaction holds the pipeline lock');

$node->safe_psql($db, q{INSERT INTO held_src VALUES (2)});
for my $id (1 .. 3)
{
	$node->safe_psql($db, "INSERT INTO other_src VALUES ($id)");
	ok(poll_until($node, $db, q{SELECT count(*) FROM other_log}, "$id", 5),
		"(6) row $id of another pipeline is processed while the lock is held");
}
is(log_summary('held'), '1|1|1', '(6) the locked pipeline waits');
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM pg_stat_activity
                WHERE backend_type = 'microbatch worker' AND wait_event_type = 'Lock'}),
	'0', '(6) no worker waits for a lock');
is( $node->safe_psql(
		$db, q{SELECT consecutive_failures FROM microbatch.pipelines WHERE pipeline = 'held'}),
	'0', '(6) being skipped is not a failure');
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM microbatch.batches WHERE pipeline = 'held' AND status = 'failed'}),
	'0', '(6) no failed attempt recorded');

$holder->query_safe('COMMIT');
ok(poll_until($node, $db, q{SELECT count(*) FROM held_log}, '2', 10),
	'(6) after the commit the worker processes the pipeline\'s new row');
usleep(500_000);
is(log_summary('held'), '2|2|1,2', '(6) each row exactly once');
$holder->quit;

# (6b) The same with an open transaction that paused the pipeline: pause
# takes no pipeline lock, but it changes the pipeline's row, which the end
# of every batch of the pipeline changes too.
my $pauser = $node->background_psql($db);
$pauser->query_safe('SET ROLE gina');
$pauser->query_safe('BEGIN');
$pauser->query_safe(q{SELECT microbatch.pause_pipeline('held')});
$node->safe_psql($db, q{INSERT INTO held_src VALUES (3)});
usleep(500_000);    # time for the worker to take the pipeline up
for my $id (4 .. 5)
{
	$node->safe_psql($db, "INSERT INTO other_src VALUES ($id)");
	ok(poll_until($node, $db, q{SELECT count(*) FROM other_log}, "$id", 5),
		"(6b) row $id of another pipeline is processed while the pause is open");
}
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM pg_stat_activity
                WHERE backend_type = 'microbatch worker' AND wait_event_type = 'Lock'}),
	'0', '(6b) no worker waits for a lock')
  or diag($node->safe_psql($db,
	q{SELECT pid, wait_event_type, wait_event, query, now() - query_start
        FROM pg_stat_activity WHERE backend_type = 'microbatch worker'}));
$pauser->query_safe('ROLLBACK');
$pauser->quit;
ok(poll_until($node, $db, q{SELECT count(*) FROM held_log}, '3', 10),
	'(6b) after the rollback the pipeline\'s new row is processed');
usleep(500_000);
is(log_summary('held'), '3|3|1,2,3', '(6b) each row exactly once');
sample_workers();

###########################################################################
# (7) a batch_timeout near its upper limit, which the worker's own timer
# must not turn into an instant termination
###########################################################################

make_pipeline('gina', 'patient', '100ms');
$node->safe_psql($db,
	q{SELECT microbatch.alter_pipeline('patient', batch_timeout => '2147483000 ms')});
$node->safe_psql($db, q{INSERT INTO patient_src VALUES (1)});
ok(poll_until($node, $db, q{SELECT count(*) FROM patient_log}, '1', 10),
	'(7) a batch with the longest batch_timeout commits');
is( $node->safe_psql(
		$db, q{SELECT count(*) FROM microbatch.batches WHERE pipeline = 'patient' AND status = 'failed'}),
	'0', '(7) and does not fail');
$node->safe_psql($db, q{SELECT microbatch.pause_pipeline('patient')});

###########################################################################
# (8) workers that cannot even connect, or that are killed in the middle
# of a batch: each time a failure recorded and counted, and the pipeline
# ends failed instead of a new worker every second forever
###########################################################################

my $db8 = 'noconnect';
$node->safe_psql($db, "CREATE DATABASE $db8");
$node->safe_psql(
	$db8, q{
CREATE EXTENSION microbatch;
CREATE TABLE stuck_src (id int);
CREATE TABLE stuck_log (id int);
SELECT microbatch.create_pipeline('stuck', 'stuck_src', '100ms');
SELECT microbatch.add_transform('stuck', 'wait', 'bronze',
    'INSERT INTO stuck_log SELECT id FROM microbatch.stuck_batch WHERE pg_advisory_xact_lock(8888) IS NOT NULL');
});
my $gate = $node->background_psql($db8);
$gate->query_safe('SELECT pg_advisory_lock(8888)');
$node->safe_psql($db8, q{INSERT INTO stuck_src VALUES (1)});
ok( poll_until(
		$node, $db, qq{SELECT count(*) FROM pg_stat_activity
                      WHERE datname = '$db8' AND backend_type = 'microbatch worker'
                        AND wait_event_type = 'Lock'}, '1', 30),
	'(8) the batch waits for the gate');
my $log_offset_8 = -s $node->logfile;
$node->safe_psql($db, qq{ALTER DATABASE $db8 ALLOW_CONNECTIONS false});
$node->safe_psql($db, qq{SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE datname = '$db8' AND backend_type = 'microbatch worker'});
# the database takes no new connection: ask through the gate's session
my $state8 = '';
for (1 .. 300)
{
	$state8 = $gate->query_safe(q{SELECT state FROM microbatch.pipelines WHERE pipeline = 'stuck'});
	last if $state8 eq 'failed';
	usleep(100_000);
}
is($state8, 'failed', '(8) the pipeline ends failed');
is( $gate->query_safe(q{SELECT count(*) FROM microbatch.batches WHERE pipeline = 'stuck' AND status = 'failed'}),
	$max_retries, '(8) each failure is in the ledger');
like( $gate->query_safe(q{SELECT string_agg(DISTINCT sqlstate, ',') FROM microbatch.batches WHERE pipeline = 'stuck'}),
	qr/^(57000,57P01|57P01,57000)$/,
	'(8) the killed batch and the workers that could not connect');
@lines = log_lines($log_offset_8, $worker_exit_re);
cmp_ok(scalar(@lines), '<=', $max_retries + 1, '(8) no worker started after the pipeline failed');
$gate->quit;
$node->safe_psql($db, qq{ALTER DATABASE $db8 ALLOW_CONNECTIONS true});

###########################################################################
# (3) database defaults that would break batches
###########################################################################

# Its own database, so that only these sessions need the defaults undone.
my $db3 = 'dbdefaults';
$node->safe_psql($db, "CREATE DATABASE $db3");
$node->safe_psql(
	$db3, q{
CREATE EXTENSION microbatch;
GRANT CREATE ON SCHEMA public TO PUBLIC;
CREATE ROLE carol LOGIN;
});

# The workers connect as the bootstrap superuser: its settings in the
# database count too.
my $bootstrap = $node->safe_psql($db, q{SELECT rolname FROM pg_roles WHERE oid = 10});
my $before_restart_log = -s $node->logfile;
{
	# This test's own sessions undo the defaults, which would make them fail
	# too: the workers have no such help.
	local $ENV{PGOPTIONS} =
	    '-c statement_timeout=0 -c lock_timeout=0 '
	  . '-c default_transaction_read_only=off '
	  . '-c default_transaction_isolation=read\ committed '
	  . '-c session_replication_role=origin -c exit_on_error=off -c role=none';

	# Transforms that take longer than 1 ms, and a target with a trigger,
	# which does not fire in replica mode.
	my $make3 = sub {
		my ($name) = @_;
		as_role(
			'carol', qq{
CREATE TABLE public.${name}_src (id int PRIMARY KEY);
CREATE TABLE public.${name}_log (batch_id bigint NOT NULL, id int NOT NULL,
                                 via_trigger boolean NOT NULL DEFAULT false);
CREATE FUNCTION public.${name}_mark() RETURNS trigger LANGUAGE plpgsql AS \$f\$
BEGIN
    NEW.via_trigger := true;
    RETURN NEW;
END
\$f\$;
CREATE TRIGGER mark BEFORE INSERT ON public.${name}_log
    FOR EACH ROW EXECUTE FUNCTION public.${name}_mark();
SELECT microbatch.create_pipeline('$name', 'public.${name}_src', '100ms');
SELECT microbatch.add_transform('$name', 'log', 'bronze', \$\$
    INSERT INTO public.${name}_log (batch_id, id)
    SELECT microbatch.current_batch_id(), id FROM microbatch.${name}_batch
\$\$);
SELECT microbatch.add_transform('$name', 'nap', 'gold', \$\$SELECT pg_catalog.pg_sleep(0.02)\$\$);
}, $db3);
	};
	my $summary3 = sub {
		my ($name) = @_;
		return $node->safe_psql($db3,
			"SELECT count(*), count(DISTINCT id), string_agg(id::text, ',' ORDER BY id), bool_and(via_trigger) FROM public.${name}_log"
		);
	};

	$make3->('before');
	$node->safe_psql($db3, q{INSERT INTO public.before_src VALUES (1)});
	ok( poll_until(
			$node, $db3, q{SELECT count(*) FROM public.before_log}, '1', 30),
		'(3) a pipeline runs before the database defaults change');

	$node->safe_psql(
		$db3, qq{
ALTER DATABASE $db3 SET default_transaction_isolation = 'repeatable read';
ALTER DATABASE $db3 SET default_transaction_read_only = on;
ALTER DATABASE $db3 SET statement_timeout = '1ms';
ALTER DATABASE $db3 SET lock_timeout = '1ms';
ALTER DATABASE $db3 SET search_path = 'evil';
ALTER DATABASE $db3 SET session_replication_role = 'replica';
ALTER DATABASE $db3 SET exit_on_error = on;
ALTER ROLE $bootstrap IN DATABASE $db3 SET default_transaction_isolation = 'serializable';
});

	# Every scheduler and worker connects again, with the new defaults.
	$node->restart;
	my $after_restart_log = -s $node->logfile;
	ok( poll_until(
			$node, $db3,
			q{SELECT count(*) FROM microbatch.workers
               WHERE kind = 'scheduler' AND database = current_database()},
			'1', 30),
		'(3) the database has a scheduler again');
	is( $node->safe_psql(
			$db, qq{SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
                     WHERE d.datname = '$db3' AND array_length(s.setconfig, 1) = CASE s.setrole WHEN 0 THEN 7 ELSE 1 END}),
		'2', '(3) the database has the seven defaults, its bootstrap superuser one');

	$node->safe_psql($db3, q{INSERT INTO public.before_src VALUES (2), (3)});
	$make3->('after');
	$node->safe_psql($db3, q{INSERT INTO public.after_src VALUES (1)});
	$node->safe_psql($db3, q{INSERT INTO public.before_src VALUES (4)});

	# A lock held on a target for a second: the batch waits, lock_timeout
	# does not fail it.
	ok( poll_until(
			$node, $db3, q{SELECT count(*) FROM public.after_log}, '1', 30),
		'(3) a pipeline created after the change runs');
	my $locker = $node->background_psql($db3);
	$locker->query_safe('BEGIN');
	$locker->query_safe('LOCK TABLE public.after_log IN SHARE MODE');
	$node->safe_psql($db3, q{INSERT INTO public.after_src VALUES (2)});
	ok( poll_until(
			$node, $db3,
			q{SELECT count(*) > 0 FROM pg_stat_activity
               WHERE backend_type = 'microbatch worker' AND wait_event_type = 'Lock'
                 AND datname = current_database()},
			't', 10),
		'(3) a worker waits for the lock');
	usleep(1_000_000);
	$locker->query_safe('COMMIT');
	$locker->quit;
	$node->safe_psql($db3, q{INSERT INTO public.after_src VALUES (3)});

	ok( poll_until(
			$node, $db3, q{SELECT count(*) FROM public.before_log}, '4', 30),
		'(3) the pipeline created before the change processes its rows');
	ok( poll_until(
			$node, $db3, q{SELECT count(*) FROM public.after_log}, '3', 30),
		'(3) the pipeline created after the change processes its rows');
	usleep(500_000);
	is($summary3->('before'), '4|4|1,2,3,4|t',
		'(3) before: every row exactly once, triggers fired');
	is($summary3->('after'), '3|3|1,2,3|t',
		'(3) after: every row exactly once, triggers fired');
	is( $node->safe_psql(
			$db3, q{SELECT count(*) FROM microbatch.batches
                     WHERE pipeline IN ('before', 'after') AND status = 'failed'}),
		'0', '(3) no batch failed')
	  or diag($node->safe_psql($db3,
		q{SELECT pipeline, batch_id, attempt, sqlstate, error FROM microbatch.batches WHERE status = 'failed'}));
	is(scalar(grep { /could not run a batch/ } split /\n/,
			slurp_file($node->logfile, $before_restart_log)),
		0, '(3) no worker error in the log');

	# exit_on_error on: a failing batch is still a failed batch, recorded
	# and counted, not the end of the worker.
	as_role(
		'carol', q{
CREATE TABLE public.broken_src (id int PRIMARY KEY);
CREATE TABLE public.broken_log (id int NOT NULL, x int NOT NULL);
SELECT microbatch.create_pipeline('broken', 'public.broken_src', '100ms');
SELECT microbatch.add_transform('broken', 'log', 'bronze', $$
    INSERT INTO public.broken_log SELECT id, 1 / (id - id) FROM microbatch.broken_batch
$$);
}, $db3);
	$node->safe_psql($db3, q{INSERT INTO public.broken_src VALUES (1)});
	ok( poll_until(
			$node, $db3,
			q{SELECT state FROM microbatch.pipelines WHERE pipeline = 'broken'},
			'failed', 12),
		'(3) with exit_on_error on, a failing pipeline is retried until failed');
	is( $node->safe_psql(
			$db3, q{SELECT count(*), bool_and(sqlstate = '22012') FROM microbatch.batches
                     WHERE pipeline = 'broken' AND status = 'failed'}),
		"$max_retries|t", '(3) its failures are recorded');
	$node->safe_psql($db3, q{SELECT microbatch.pause_pipeline('broken')});
	@lines = log_lines($after_restart_log, $worker_exit_re);
	is(scalar(@lines), 0, '(3) no scheduler or worker exited')
	  or diag(join("\n", @lines[0 .. ($#lines < 2 ? $#lines : 2)]));

	# Restore the defaults.
	$node->safe_psql($db3, qq{ALTER DATABASE $db3 RESET ALL});
	$node->safe_psql($db3, qq{ALTER ROLE $bootstrap IN DATABASE $db3 RESET ALL});

	# (3b) A role for every session of the database: the workers' sessions
	# too would start with SET ROLE carol, who may not read the catalog.
	$node->safe_psql($db3, qq{ALTER DATABASE $db3 SET role = 'carol'});
	$node->restart;
	my $after_restart_3b = -s $node->logfile;
	$node->safe_psql($db3, q{INSERT INTO public.before_src VALUES (5)});
	ok( poll_until(
			$node, $db3, q{SELECT count(*) FROM public.before_log}, '5', 10),
		'(3b) with a database default role, rows are still processed');
	@lines = log_lines($after_restart_3b, $worker_exit_re);
	is(scalar(@lines), 0, '(3b) no scheduler or worker exited')
	  or diag(join("\n", @lines[0 .. ($#lines < 2 ? $#lines : 2)]));
	$node->safe_psql($db3, qq{ALTER DATABASE $db3 RESET ALL});

	# (3c) The same with session_authorization, which PostgreSQL lets the
	# database's owner set for it: the workers' sessions too would become
	# carol's.
	{
		local $ENV{PGOPTIONS} = "$ENV{PGOPTIONS} -c session_authorization=$bootstrap";
		$node->safe_psql($db3, qq{ALTER DATABASE $db3 SET session_authorization = 'carol'});
		$node->restart;
		my $after_restart_3c = -s $node->logfile;
		$node->safe_psql($db3, q{INSERT INTO public.before_src VALUES (6)});
		ok( poll_until(
				$node, $db3, q{SELECT count(*) FROM public.before_log}, '6', 10),
			'(3c) with a database default session_authorization, rows are still processed');
		@lines = log_lines($after_restart_3c, $worker_exit_re);
		is(scalar(@lines), 0, '(3c) no scheduler or worker exited')
		  or diag(join("\n", @lines[0 .. ($#lines < 2 ? $#lines : 2)]));
		$node->safe_psql($db3, qq{ALTER DATABASE $db3 RESET ALL});
	}
}
is($node->safe_psql($db3, q{SHOW statement_timeout}),
	'0', '(3) the database defaults are restored');

###########################################################################
# Whole run: no crash, workers did not come and go
###########################################################################

@lines = log_lines(0, $crash_re);
is(scalar(@lines), 0, 'no server process crashed') or diag(join("\n", @lines));
is($node->safe_psql($db, q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}),
	'f', 'mallory is still not a superuser');

$node->stop;

done_testing();
