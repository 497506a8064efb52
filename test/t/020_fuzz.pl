# Fuzz driver for the SQL API.
#
# Every function, procedure and view of schema microbatch is found by
# introspection (pg_proc, pg_class), not from a list, and called thousands of
# times with hostile arguments chosen by type and by parameter name, as
# several roles (the superuser, the owner of some pipelines, a hostile role,
# two members of the owner, a NOLOGIN role), autocommitted or inside a
# PL/pgSQL exception block, in explicit transactions with savepoints, READ
# ONLY, REPEATABLE READ, SERIALIZABLE and prepared transactions.  First each
# argument position of each entry point gets each hostile value of its type
# once (the systematic part), then random calls run until the time budget is
# spent: first with the background workers off (microbatch.enabled), so that
# the fingerprint of invariant 3 covers the extension's own tables exactly,
# then with them on, when it covers only the system catalog rows.
#
# Checked after every call, in one long-lived psql session:
#  1. errors are clean: no SQLSTATE of class XX, no FATAL or PANIC, no
#     message that looks internal (@internal_patterns), no call that hangs;
#  2. the postmaster never restarts and its log shows no crash;
#  3. a failed call, and any transaction that is rolled back or READ ONLY,
#     changes no row of the extension's tables and no catalog row of the
#     fuzz schemas;
#  4. at the end, the background workers process a fresh pipeline;
#  5. a restricted monitoring view shows a role no row, and passes a leaky
#     function in its WHERE clause no value, of the pipelines it may not see;
#  6. a call leaves the caller's session alone (role, settings, transaction
#     state), makes nobody superuser, and no SQL injection drops fz_canary.
# Each invariant is one test; its violations are listed, deduplicated, with
# the exact SQL that triggered them, in the diag output and in
# tmp_check/fuzz_violations.txt.
#
# Knobs (environment):
#   MB_FUZZ_SEED        seed of the plan (default fixed; "random" picks one)
#   MB_FUZZ_SECONDS     wall-clock budget of the calls (default 120); the
#                       systematic part always runs to its end
#   MB_FUZZ_ITERATIONS  random calls in the plan, at most (default 20000)
#   MB_FUZZ_DUMP        file to write each executed call and its outcome to
#   MB_FUZZ_INJECT      fake violations, to check that the checks can fail:
#                       a comma list of internal, crash, catalog, workers,
#                       leak, session
#
# To run it alone, as the user that runs the servers, from a copy of the tree:
#   make installcheck PROVE_TESTS=test/t/020_fuzz.pl REGRESS= ISOLATION=

use strict;
use warnings;

use Digest::MD5 qw(md5_hex);
use Encode qw(decode encode_utf8);
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# Shared polling helpers (test/t/MicrobatchTest.pm); prove puts only the top
# directory in @INC, so look next to this script.
use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $seed = $ENV{MB_FUZZ_SEED} // 20241202;
$seed = int(time() * 1000) % 2_000_000_000 if $seed eq 'random';
die "MB_FUZZ_SEED must be a number or \"random\"\n" unless $seed =~ /^\d+$/;
my $budget = $ENV{MB_FUZZ_SECONDS} // 120;
my $iterations = $ENV{MB_FUZZ_ITERATIONS} // 20000;
my %inject = map { $_ => 1 } split /,/, ($ENV{MB_FUZZ_INJECT} // '');
my $call_timeout = 30;        # a call that takes longer hangs (invariant 1)
my $restore_every = 40;       # plan items between two restores of the fixture
my $phase1_share = 0.7;       # of the random budget, with workers off

diag("fuzz seed $seed (MB_FUZZ_SEED=$seed replays this run), "
	  . "budget ${budget}s, at most $iterations random calls"
	  . (%inject ? ', injecting ' . join(',', sort keys %inject) : ''));

# ---------------------------------------------------------------------------
# A small deterministic PRNG (xorshift32): Perl's rand() is shared with the
# test modules (port selection), which would make the plan depend on them.

sub rng_new
{
	my ($s) = @_;
	my $x = ($s & 0xFFFFFFFF) || 0x9E3779B9;
	my $rng = \$x;
	rng_next($rng) for 1 .. 16;
	return $rng;
}

sub rng_next
{
	my ($rng) = @_;
	my $x = $$rng;
	$x ^= ($x << 13) & 0xFFFFFFFF;
	$x ^= $x >> 17;
	$x ^= ($x << 5) & 0xFFFFFFFF;
	$$rng = $x;
	return $x;
}

sub rng_below { my ($rng, $n) = @_; return rng_next($rng) % $n; }
sub rng_pick { my ($rng, @l) = @_; return $l[ rng_below($rng, scalar @l) ]; }
sub rng_chance { my ($rng, $p) = @_; return rng_next($rng) / 4294967296 < $p; }

# pick from [weight, value] pairs
sub rng_weighted
{
	my ($rng, @pairs) = @_;
	my $total = 0;
	$total += $_->[0] for @pairs;
	my $r = rng_below($rng, $total);
	for my $p (@pairs)
	{
		return $p->[1] if $r < $p->[0];
		$r -= $p->[0];
	}
	return $pairs[-1][1];
}

# ---------------------------------------------------------------------------
# SQL quoting

sub qlit
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

sub qident
{
	my ($s) = @_;
	return $s if $s =~ /^[a-z_][a-z0-9_]*$/;
	$s =~ s/"/""/g;
	return "\"$s\"";
}

sub qident_always
{
	my ($s) = @_;
	$s =~ s/"/""/g;
	return "\"$s\"";
}

# A dollar quote whose tag does not occur in the text
sub dquote
{
	my ($s) = @_;
	my $n = 0;
	$n++ while index($s, '$fzq' . ($n || '') . '$') >= 0;
	my $tag = '$fzq' . ($n || '') . '$';
	return "$tag$s$tag";
}

# A value spec is undef (NULL), a string (a literal) or a scalar ref (an
# SQL expression, used as is).
sub lit
{
	my ($v, $type, $cast) = @_;
	return $$v if ref $v;
	return $cast ? "NULL::$type" : 'NULL' unless defined $v;
	return qlit($v) . ($cast ? "::$type" : '');
}

sub shorten
{
	my ($s, $max) = @_;
	$max //= 2000;
	return $s if length($s) <= $max;
	return substr($s, 0, $max)
	  . "... [" . length($s) . " characters in all, see the violations file]";
}

# ---------------------------------------------------------------------------
# The cluster

my $node = PostgreSQL::Test::Cluster->new('fuzz');
$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '200ms'
max_worker_processes = 16
max_prepared_transactions = 2
log_error_verbosity = verbose
log_line_prefix = '%m [%p] <%b> '
# go on after a crash, to report them all
restart_after_crash = on
});
$node->start;

my $db = 'postgres';
my $super = $node->safe_psql($db, 'SELECT current_user');
my @roles = ($super, qw(fuzz_owner fuzz_hostile fuzz_member fuzz_noinherit fuzz_nologin));

# Names that exercise quoting and length limits in the fixture
my $weird_pipeline = q{we'ird "p";x};
my $long_pipeline = 'p_' . ('l' x 55);                   # 57 bytes: the longest
my $uni_pipeline = "p_\x{fc}n\x{ef}";                     # p_ünï
my $weird_table = q{public."Weird 'Tab"";name"};
my $long_table = 'public.fz_' . ('t' x 53);               # a 63-byte name

sub batch_view { return 'microbatch.' . qident($_[0] . '_batch'); }

sub copy_transform
{
	my ($pipeline) = @_;
	return 'INSERT INTO public.fz_sink SELECT microbatch.current_batch_id(), id, v FROM '
	  . batch_view($pipeline);
}

# The pipelines every restore brings back, with their owners and transforms
my @base = (
	{
		name => 'p_super', owner => $super, source => 'fuzz_other.fz_other',
		interval => '1 s', max => undef,
		transforms => [ [ 't_copy', 'bronze', copy_transform('p_super') ] ]
	},
	{
		name => 'p_owner', owner => 'fuzz_owner', source => 'public.fz_plain',
		interval => '500 ms', max => 2,
		transforms => [
			[ 't_copy', 'bronze', copy_transform('p_owner') ],
			[ 't_gold', 'gold', 'SELECT count(*) FROM ' . batch_view('p_owner') ]
		]
	},
	{
		name => 'p_parted', owner => 'fuzz_owner', source => 'public.fz_parted',
		interval => '0', max => undef,
		transforms => [ [ 't_copy', 'silver', copy_transform('p_parted') ] ]
	},
	{
		name => 'p_fail', owner => 'fuzz_owner', source => 'public.fz_plain',
		interval => '2 s', max => undef,
		transforms => [ [ 't_div', 'silver',
			'SELECT 1 / (id - id) FROM ' . batch_view('p_fail') ] ]
	},
	{
		name => 'p_hostile', owner => 'fuzz_hostile', source => 'fz_evil.t',
		interval => '1 s', max => undef,
		transforms => [
			[ 't_copy', 'bronze', copy_transform('p_hostile') ],
			[ 't_evil', 'gold', 'SELECT fz_evil.f() FROM ' . batch_view('p_hostile') ]
		]
	},
	{
		name => $weird_pipeline, owner => $super, source => 'public.fz_plain',
		interval => '1 s', max => undef,
		transforms => [ [ 't_copy', 'gold', copy_transform($weird_pipeline) ] ]
	},
	{
		name => $long_pipeline, owner => 'fuzz_owner', source => $weird_table,
		interval => '1 s', max => 1,
		transforms => [ [ 't_copy', 'bronze', copy_transform($long_pipeline) ] ]
	},
	{
		name => $uni_pipeline, owner => 'fuzz_member', source => 'public.fz_parted',
		interval => '1 s', max => undef,
		transforms => [ [ 't_copy', 'bronze', copy_transform($uni_pipeline) ] ]
	});
my %base_of_role = (
	$super => 'p_super',
	fuzz_owner => 'p_owner',
	fuzz_member => 'p_owner',
	fuzz_noinherit => 'p_owner',
	fuzz_nologin => 'p_owner',
	fuzz_hostile => 'p_hostile');
my %table_of_role = (
	$super => 'fuzz_other.fz_other',
	fuzz_owner => 'public.fz_plain',
	fuzz_member => 'public.fz_parted',
	fuzz_noinherit => 'public.fz_plain',
	fuzz_nologin => 'public.fz_plain',
	fuzz_hostile => 'fz_evil.t');

# Roles, schemas and tables of all kinds; helper functions: fz_try() runs a
# statement in an exception block and returns its error, fz_leak() and
# fz_boom() are leaky functions for the views' WHERE clauses, fz_restore()
# brings the base pipelines back.  The hostile role owns fz_evil.t, whose row
# security policy calls fz_evil.f(): every read of that source by microbatch
# runs it as the hostile role, in the reader's session, and it tries to
# change that session and to become superuser.
my $setup = <<"EOSQL";
CREATE EXTENSION microbatch;
CREATE ROLE fuzz_owner LOGIN;
CREATE ROLE fuzz_hostile LOGIN;
CREATE ROLE fuzz_nologin NOLOGIN;
CREATE ROLE fuzz_member LOGIN IN ROLE fuzz_owner;
CREATE ROLE fuzz_noinherit LOGIN NOINHERIT IN ROLE fuzz_owner;
-- since PostgreSQL 15 only the owner of schema public may create in it;
-- create_pipeline creates an index as the table's owner
GRANT CREATE ON SCHEMA public TO fuzz_owner;
CREATE SCHEMA fuzz_other;
GRANT USAGE ON SCHEMA fuzz_other TO fuzz_owner, fuzz_hostile;
CREATE SCHEMA fz_evil AUTHORIZATION fuzz_hostile;
GRANT USAGE ON SCHEMA fz_evil TO PUBLIC;
CREATE SEQUENCE public.fz_ids;
GRANT USAGE ON SEQUENCE public.fz_ids TO PUBLIC;
CREATE TABLE public.fz_plain (id int PRIMARY KEY, v text);
ALTER TABLE public.fz_plain OWNER TO fuzz_owner;
GRANT SELECT ON public.fz_plain TO fuzz_hostile;
CREATE TABLE public.fz_parted (id int, v text) PARTITION BY RANGE (id);
CREATE TABLE public.fz_parted_p1 PARTITION OF public.fz_parted FOR VALUES FROM (0) TO (1000000000);
ALTER TABLE public.fz_parted OWNER TO fuzz_owner;
ALTER TABLE public.fz_parted_p1 OWNER TO fuzz_owner;
CREATE TABLE fuzz_other.fz_other (id int, v text);
GRANT SELECT ON fuzz_other.fz_other TO fuzz_owner;
CREATE TABLE $weird_table (id int, v text);
ALTER TABLE $weird_table OWNER TO fuzz_owner;
CREATE TABLE $long_table (id int, v text);
ALTER TABLE $long_table OWNER TO fuzz_owner;
CREATE UNLOGGED TABLE public.fz_unlogged (id int, v text);
ALTER TABLE public.fz_unlogged OWNER TO fuzz_owner;
CREATE TABLE public.fz_badcol (id int, v text, microbatch_xid int);
ALTER TABLE public.fz_badcol OWNER TO fuzz_owner;
CREATE TABLE public.fz_secret (id int, v text);
CREATE VIEW public.fz_view AS SELECT id, v FROM public.fz_plain;
CREATE MATERIALIZED VIEW public.fz_matview AS SELECT 1 AS id, 'x'::text AS v;
CREATE SEQUENCE public.fz_seq;
CREATE TABLE public.fz_sink (batch_id bigint, id int, v text);
GRANT SELECT, INSERT, UPDATE, DELETE ON public.fz_sink TO PUBLIC;
CREATE TABLE public.fz_canary (id int);
-- a relation in the way of the batch view of a pipeline named fz_clash
CREATE TABLE microbatch.fz_clash_batch (x int);

SET ROLE fuzz_hostile;
CREATE TABLE fz_evil.t (id int, v text);
CREATE FUNCTION fz_evil.f() RETURNS boolean LANGUAGE plpgsql AS \$f\$
BEGIN
	PERFORM set_config('application_name', 'fz_evil', false);
	PERFORM set_config('search_path', 'fz_evil, public', false);
	BEGIN
		-- works only outside a security-restricted operation
		PERFORM set_config('role', '$super', false);
		EXECUTE 'ALTER ROLE fuzz_hostile SUPERUSER';
	EXCEPTION WHEN OTHERS THEN
		NULL;
	END;
	RETURN true;
END
\$f\$;
ALTER TABLE fz_evil.t ENABLE ROW LEVEL SECURITY;
ALTER TABLE fz_evil.t FORCE ROW LEVEL SECURITY;
CREATE POLICY fz_evil_p ON fz_evil.t USING (fz_evil.f());
RESET ROLE;

CREATE FUNCTION public.fz_try(q text) RETURNS text LANGUAGE plpgsql AS \$f\$
DECLARE
	st text; m text; d text; h text; c text;
BEGIN
	EXECUTE q;
	RETURN 'FZOK';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT,
		d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT, c = PG_EXCEPTION_CONTEXT;
	RETURN 'FZERR ' || json_build_object('sqlstate', st, 'message', m,
		'detail', d, 'hint', h, 'context', c)::text;
END
\$f\$;

CREATE FUNCTION public.fz_leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS \$f\$
BEGIN
	RAISE NOTICE 'FZLEAK %', md5(coalesce(\$1, '<null>'));
	RETURN true;
END
\$f\$;

CREATE FUNCTION public.fz_boom(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS \$f\$
BEGIN
	RAISE EXCEPTION 'FZBOOM %', md5(coalesce(\$1, '<null>'));
END
\$f\$;

-- the checkpointer's pid, which only the superuser may see in
-- pg_stat_activity: a crash restart starts a new one
CREATE FUNCTION public.fz_checkpointer() RETURNS int LANGUAGE sql SECURITY DEFINER
	SET search_path = pg_catalog AS
\$f\$SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'\$f\$;

CREATE FUNCTION public.fz_restore(spec jsonb, max_extra int) RETURNS text LANGUAGE plpgsql AS \$f\$
DECLARE
	p jsonb; t jsonb; r record; tr record; src text; st text; m text;
	errs jsonb := '[]';
BEGIN
	-- base names held by another owner go, and so do surplus pipelines
	FOR r IN SELECT x.pipeline, x.owner::text AS owner, b.value->>'owner' AS want
			   FROM microbatch.pipelines x
			   LEFT JOIN jsonb_array_elements(spec) b ON b.value->>'name' = x.pipeline::text
			  ORDER BY x.pipeline
	LOOP
		IF (r.want IS NOT NULL AND r.want <> r.owner)
		   OR (r.want IS NULL AND (SELECT count(*) FROM microbatch.pipelines)
				 > max_extra + jsonb_array_length(spec)) THEN
			BEGIN
				PERFORM microbatch.drop_pipeline(r.pipeline);
			EXCEPTION WHEN OTHERS THEN
				GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT;
				errs := errs || jsonb_build_object('step', 'drop ' || r.pipeline, 'sqlstate', st, 'message', m);
			END;
		END IF;
	END LOOP;
	FOR p IN SELECT value FROM jsonb_array_elements(spec) LOOP
		BEGIN
			PERFORM set_config('role', p->>'owner', true);
			IF NOT EXISTS (SELECT 1 FROM microbatch.pipelines WHERE pipeline = (p->>'name')::name) THEN
				PERFORM microbatch.create_pipeline((p->>'name')::name, (p->>'source')::regclass,
					(p->>'interval')::interval, (p->>'max')::bigint);
			END IF;
			FOR t IN SELECT value FROM jsonb_array_elements(p->'transforms') LOOP
				IF NOT EXISTS (SELECT 1 FROM microbatch.transforms
								WHERE pipeline = (p->>'name')::name AND transform = (t->>0)::name) THEN
					PERFORM microbatch.add_transform((p->>'name')::name, (t->>0)::name, t->>1, t->>2);
				END IF;
			END LOOP;
			-- the transforms the fuzz added go when they pile up
			IF (SELECT count(*) FROM microbatch.transforms WHERE pipeline = (p->>'name')::name) > 6 THEN
				FOR tr IN SELECT x.transform FROM microbatch.transforms x
						   WHERE x.pipeline = (p->>'name')::name
							 AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p->'transforms') b
											  WHERE b.value->>0 = x.transform::text)
						   ORDER BY x.transform
				LOOP
					PERFORM microbatch.remove_transform((p->>'name')::name, tr.transform);
				END LOOP;
			END IF;
			PERFORM set_config('role', 'none', true);
			PERFORM microbatch.alter_pipeline((p->>'name')::name, (p->>'interval')::interval,
				coalesce((p->>'max')::bigint, 0));
			PERFORM microbatch.resume_pipeline((p->>'name')::name);
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT;
			errs := errs || jsonb_build_object('step', 'create ' || (p->>'name'), 'sqlstate', st, 'message', m);
		END;
		BEGIN
			PERFORM microbatch.run_batch((p->>'name')::name);
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT;
			errs := errs || jsonb_build_object('step', 'run ' || (p->>'name'), 'sqlstate', st, 'message', m);
		END;
	END LOOP;
	-- rows for the next batches
	FOR src IN SELECT DISTINCT value->>'source' FROM jsonb_array_elements(spec) ORDER BY 1 LOOP
		BEGIN
			EXECUTE format('INSERT INTO %s (id, v) SELECT nextval(''public.fz_ids''), ''r'' FROM generate_series(1, 3)', src);
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT;
			errs := errs || jsonb_build_object('step', 'insert ' || src, 'sqlstate', st, 'message', m);
		END;
	END LOOP;
	RETURN errs::text;
END
\$f\$;
EOSQL
$node->safe_psql($db, $setup);

my $spec_json = JSON::PP->new->canonical->ascii->encode(
	[
		map {
			{
				name => $_->{name}, owner => $_->{owner}, source => $_->{source},
				interval => $_->{interval}, max => $_->{max},
				transforms => $_->{transforms}
			}
		} @base
	]);
my $restore_sql = 'SELECT public.fz_restore(' . qlit($spec_json) . '::jsonb, 12)';

my $restore_errors = $node->safe_psql($db, $restore_sql);
is( $node->safe_psql(
		$db, encode_utf8('SELECT count(*) FROM microbatch.pipelines WHERE pipeline = ANY (ARRAY['
		  . join(', ', map { qlit($_->{name}) } @base) . ']::name[])')),
	scalar(@base),
	'the fixture has its base pipelines')
  or diag("fz_restore: $restore_errors");

# ---------------------------------------------------------------------------
# Introspection: the entry points, the extension's tables and views

# safe_psql's output is UTF-8 bytes; run_script's is decoded already
my $json = JSON::PP->new->utf8->canonical;
my $jchars = JSON::PP->new->canonical;
my $fns = $json->decode(
	$node->safe_psql(
		$db, q{
SELECT coalesce(json_agg(f ORDER BY f.name, f.identity), '[]')
  FROM (SELECT p.proname AS name,
               pg_get_function_identity_arguments(p.oid) AS identity,
               p.prokind AS kind, p.proretset AS retset,
               p.pronargdefaults AS ndefaults, p.provariadic <> 0 AS variadic,
               ARRAY(SELECT format_type(t.t, NULL)
                       FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY t(t, n)
                      ORDER BY t.n) AS argtypes,
               ARRAY(SELECT ty.typtype
                       FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY t(t, n)
                       JOIN pg_type ty ON ty.oid = t.t ORDER BY t.n) AS argtyptypes,
               -- names of the input arguments, from proargnames and proargmodes
               -- (1-based, over proallargtypes when there are OUT arguments)
               ARRAY(SELECT coalesce(p.proargnames[i], '')
                       FROM generate_series(1, coalesce(array_length(p.proallargtypes, 1),
                                                        p.pronargs)) i
                      WHERE p.proargmodes IS NULL OR p.proargmodes[i] IN ('i', 'b', 'v')
                      ORDER BY i) AS argnames
          FROM pg_proc p
         WHERE p.pronamespace = 'microbatch'::regnamespace
           AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
           AND NOT EXISTS (
                 SELECT 1 FROM pg_aggregate a
                  WHERE p.oid IN (a.aggtransfn, a.aggfinalfn, a.aggcombinefn,
                                  a.aggserialfn, a.aggdeserialfn, a.aggmtransfn,
                                  a.aggminvtransfn, a.aggmfinalfn))) f}));

# Arguments of pseudo-types other than the polymorphic ones cannot be given
# from SQL.
my @entry_points;
for my $fn (@$fns)
{
	my $callable = 1;
	for my $i (0 .. $#{ $fn->{argtypes} })
	{
		$callable = 0
		  if $fn->{argtyptypes}[$i] eq 'p' && $fn->{argtypes}[$i] !~ /^any/;
	}
	if ($callable) { push @entry_points, $fn; }
	else { note "skipping $fn->{name}($fn->{identity}): pseudo-type arguments"; }
}
note 'entry points: '
  . join(', ', map { "$_->{name}($_->{identity})" } @entry_points);
cmp_ok(scalar(@entry_points), '>=', 1, 'introspection finds entry points');

my @ext_tables = split /\n/, $node->safe_psql(
	$db, q{
SELECT c.oid::regclass::text FROM pg_class c
 WHERE c.relnamespace = 'microbatch'::regnamespace AND c.relkind IN ('r', 'p')
 ORDER BY 1});
my @ext_seqs = split /\n/, $node->safe_psql(
	$db, q{
SELECT c.oid::regclass::text FROM pg_class c
 WHERE c.relnamespace = 'microbatch'::regnamespace AND c.relkind = 'S' ORDER BY 1});
my @ext_constraints = split /\n/, $node->safe_psql(
	$db, q{
SELECT conname FROM pg_constraint WHERE connamespace = 'microbatch'::regnamespace
UNION SELECT c.relname FROM pg_class c
 WHERE c.relnamespace = 'microbatch'::regnamespace AND c.relkind = 'i' ORDER BY 1});

# Views with their columns, and whether they restrict rows by role
my $views = $json->decode(
	$node->safe_psql(
		$db, q{
SELECT coalesce(json_agg(v ORDER BY v.name), '[]')
  FROM (SELECT c.oid::regclass::text AS name,
               ARRAY(SELECT a.attname::text FROM pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                      ORDER BY a.attnum) AS columns,
               pg_get_viewdef(c.oid) ~ 'pg_has_role' AS restricted
          FROM pg_class c
         WHERE c.relnamespace = 'microbatch'::regnamespace AND c.relkind IN ('v', 'm')) v}));
note encode_utf8('views: ' . join(', ', map { $_->{name} } @$views));

# A view whose rows are restricted by role can be checked for leaks if it has
# a pipeline column and the pipelines view tells each pipeline's owner.
my ($pipelines_view) =
  grep { $_->{name} eq 'microbatch.pipelines' } @$views;
my $can_check_leaks = $pipelines_view
  && (grep { $_ eq 'owner' } @{ $pipelines_view->{columns} })
  && (grep { $_ eq 'pipeline' } @{ $pipelines_view->{columns} });
diag('no microbatch.pipelines view with pipeline and owner columns: '
	  . 'leaks are not checked')
  unless $can_check_leaks;

# ---------------------------------------------------------------------------
# Hostile values, by kind of argument

my $canary_drop = q{'); DROP TABLE public.fz_canary; --};
my @name_pool = (
	undef, '', ' ', (map { $_->{name} } @base),
	'nonexistent', 'P_OWNER', '"p_owner"', 'p_owner ', ' p_owner',
	'x' x 57, 'x' x 58, 'x' x 63, 'x' x 64,
	("\x{e9}" x 31) . 'x',      # 63 bytes
	"\x{e9}" x 32,              # 64 bytes, cut in the middle of a character
	('y' x 56) . "\x{e9}",      # 58 bytes, crossing the 57-byte limit
	'a' x 10000,
	q{a'b}, q{a"b}, $canary_drop, q{"; DROP TABLE public.fz_canary; --},
	'x; DROP TABLE public.fz_canary', 'back\\slash', '\\',
	"e\x{301}", "\x{202e}rtl\x{202c}", "\x{1f4a9}", "\x{200b}",
	"new\nline", "tab\tx", '%', '_', 'microbatch', 'pg_catalog', 'pipeline',
	'batch', 'p_owner_batch', 'public.fz_plain', '$1', '$$', '--', '/*', ';',
	'NULL', 'pg_temp', 'fz_new_0', 'fz_clash');
my @transform_name_pool = (qw(t_copy t_gold t_div t_evil fz_t0), @name_pool);
my @layer_pool = (
	undef, '', 'gold', 'GOLD', 'Gold', ' gold', 'gold ', 'bronze', 'silver',
	'platinum', 'gold;', q{gold'}, 'gol', 'goldd', 'a' x 10000, "\x{1f4a9}",
	"g\x{301}old", "gold\n", 'gold\\', $canary_drop, 'NULL');
my @command_pool = (
	undef,
	(map { copy_transform($_->{name}) } @base),
	'SELECT count(*) FROM ' . batch_view('p_owner'),
	'SELECT 1', 'VALUES (1)', 'TABLE ' . batch_view('p_owner'),
	'WITH x AS (SELECT * FROM ' . batch_view('p_owner') . ') SELECT count(*) FROM x',
	'UPDATE public.fz_sink SET v = v WHERE false',
	'DELETE FROM public.fz_sink WHERE batch_id = -1',
	'MERGE INTO public.fz_sink s USING ' . batch_view('p_owner') . ' b ON s.id = b.id '
	  . 'WHEN MATCHED THEN UPDATE SET v = b.v '
	  . 'WHEN NOT MATCHED THEN INSERT VALUES (microbatch.current_batch_id(), b.id, b.v)',
	q{INSERT INTO public.fz_sink VALUES (microbatch.current_batch_id(), 0, 'x') RETURNING *},
	'SELECT * FROM public.fz_plain FOR UPDATE',
	# invalid
	'', ' ', ';', '-- a comment', '/* a comment */', 'SELEC 1', 'SELECT',
	'SELECT * FROM nonexistent_table', 'SELECT nonexistent_col FROM ' . batch_view('p_owner'),
	'SELECT $1', 'SELECT 1; SELECT 2', 'SELECT 1;;', 'SELECT 1;',
	'INSERT INTO public.fz_sink SELECT 1; DROP TABLE public.fz_canary',
	$canary_drop, q{SELECT 'unterminated}, q{SELECT "unterminated},
	'SELECT 1 -- ' . ('x' x 10000), 'SELECT ' . join('+', (1) x 3000),
	"SELECT '\x{1f4a9}' AS \"\x{202e}\"",
	# utility statements and DDL
	'CREATE TABLE public.fz_x (a int)', 'DROP TABLE public.fz_canary',
	'TRUNCATE public.fz_sink', 'VACUUM', 'ANALYZE public.fz_sink',
	'COPY public.fz_sink TO STDOUT', 'SET search_path = fz_evil', 'RESET ALL',
	'BEGIN', 'COMMIT', 'ROLLBACK', 'SAVEPOINT s', 'LISTEN fz', 'NOTIFY fz',
	'PREPARE fzp AS SELECT 1', 'EXECUTE fzp',
	'DO $$BEGIN DROP TABLE public.fz_canary; END$$', 'CALL public.fz_nothing()',
	'EXPLAIN SELECT 1', 'EXPLAIN ANALYZE DELETE FROM public.fz_canary',
	'SELECT 1 INTO public.fz_into', 'CREATE TEMP TABLE fz_t AS SELECT 1',
	'GRANT ALL ON public.fz_canary TO PUBLIC', 'ALTER ROLE fuzz_hostile SUPERUSER',
	"SET ROLE $super", "SET SESSION AUTHORIZATION $super", 'LOCK TABLE public.fz_sink',
	'CHECKPOINT', 'DISCARD ALL', 'REFRESH MATERIALIZED VIEW public.fz_matview',
	'CREATE INDEX ON public.fz_sink (id)', q{COMMENT ON TABLE public.fz_sink IS 'x'},
	q{LOAD 'microbatch'}, 'SHOW ALL',
	# sleeps and settings
	'SELECT pg_sleep(0.01)',
	'SELECT pg_sleep(0.05) FROM ' . batch_view('p_owner') . ' LIMIT 1',
	q{SELECT set_config('search_path', 'fz_evil, public', false)},
	q{SELECT set_config('application_name', 'fz_leaked', false)},
	q{SELECT set_config('statement_timeout', '77s', false)},
	q{SELECT set_config('work_mem', '64kB', false)},
	qq{SELECT set_config('role', '$super', false)},
	qq{SELECT set_config('session_authorization', '$super', false)},
	q{SELECT set_config('microbatch.enabled', 'on', false)},
	q{SELECT set_config('microbatch.nonexistent', 'x', false)},
	q{SELECT set_config('default_transaction_read_only', 'on', false)},
	q{SELECT set_config('search_path', '', true)},
	q{SELECT set_config('transaction_isolation', 'serializable', false)},
	# microbatch itself, nested
	q{SELECT microbatch.run_batch('p_owner')}, q{SELECT microbatch.run_batch('p_super')},
	q{SELECT microbatch.replay_batch('p_owner', 1)},
	q{SELECT microbatch.create_pipeline('fz_nested', 'public.fz_plain')},
	q{SELECT microbatch.drop_pipeline('p_super')},
	q{SELECT microbatch.add_transform('p_owner', 'fz_nested', 'gold', 'SELECT 1')},
	q{SELECT microbatch.remove_transform('p_owner', 't_copy')},
	q{SELECT microbatch.pause_pipeline('p_owner')},
	q{SELECT microbatch.alter_pipeline('p_owner', '0')},
	q{SELECT microbatch.refresh_pipeline('p_owner')},
	q{SELECT microbatch.rows_waiting('p_owner')}, 'SELECT microbatch.current_batch_id()',
	q{SELECT * FROM microbatch.preview_batch('p_owner')},
	q{SELECT microbatch.reset_pipeline('p_owner')},
	q{SELECT microbatch.replace_transform('p_owner', 't_copy', 'SELECT 1')},
	q{SELECT microbatch.start_replay('p_owner', 1, 2)},
	q{SELECT microbatch.set_retention('public.fz_plain', '0')},
	q{SELECT microbatch.retention_now('public.fz_plain')},
	q{SELECT microbatch.trim_history('p_owner')},
	q{CALL microbatch.replay('p_owner', 1, 2)},
	'SELECT * FROM microbatch.retention', 'SELECT * FROM microbatch.replay_progress',
	'SELECT microbatch.batch_contains(1, pg_current_xact_id())',
	'SELECT * FROM microbatch.pipelines', 'SELECT * FROM microbatch.workers',
	'SELECT microbatch.extension_created()', 'SELECT microbatch.source_changed()',
	'SELECT microbatch.next_run_at(1)',
	# the catalog, other roles' data, the hostile function
	(map { "SELECT * FROM $_" } @ext_tables),
	(map { "DELETE FROM $_" } @ext_tables),
	'SELECT * FROM ' . batch_view('p_super'), 'SELECT * FROM public.fz_secret',
	'SELECT fz_evil.f()', 'SELECT txid_current()', 'SELECT pg_advisory_xact_lock(1)',
	q{SELECT pg_notify('microbatch_alerts', 'fz')}, 'SELECT 1/0',
	'SELECT 1 / (id - id) FROM ' . batch_view('p_owner'),
	'SELECT count(*) FROM generate_series(1, 200000)');
my @text_pool = (
	undef, '', 'x', 'gold', 'a' x 10000, q{a'b}, $canary_drop, "\x{1f4a9}",
	'now', 'beginning', 'all', 'latest', 'NULL', 'true', '-1', '0', "e\x{301}",
	'back\\slash', "new\nline", 'SELECT 1');
my @regclass_pool = (
	undef, '0', '1', '1259', '4294967295', '99999999', 'pg_class',
	'pg_catalog.pg_authid', 'pg_toast.pg_toast_2618', @ext_tables, @ext_seqs,
	(map { $_->{name} } @$views), 'public.fz_plain', 'public.fz_parted',
	'public.fz_parted_p1', 'fuzz_other.fz_other', 'public.fz_view', 'public.fz_seq',
	'public.fz_matview', 'public.fz_unlogged', 'public.fz_badcol', 'public.fz_secret',
	'fz_evil.t', $weird_table, $long_table, 'pg_temp.fz_temp', 'public.fz_sink',
	'public.fz_canary', 'information_schema.sql_features', 'nonexistent_table',
	'public.fz_plain_microbatch_xid_idx', 'fz_plain');
my @interval_pool = (
	undef, '0', '-1 s', '1 mon -30 days', '1 mon -31 days', '-1 mon 31 days',
	'300000 years', '0.5 ms', '1 microsecond', '-1 microsecond', '-0',
	'1 day -86400 s', '2147483647 days', '-2147483648 days', '2147483647 months',
	'1000000 hours', '100 ms', '1 s', 'P1Y2M', '178000000 years', '@ 1 hour ago', 'gold');
my @bigint_pool = (
	undef, 0, 1, 2, 3, -1, 100, 2147483647, 2147483648, 4294967296,
	'9223372036854775807', '-9223372036854775808');
my @int_pool = (undef, 0, 1, 2, 3, 4, 5, 6, 7, 8, -1, 1000, 2147483647, '-2147483648');
my @smallint_pool = (undef, 0, -1, 32767, '-32768');
my @xid8_pool = (
	undef, '0', '1', '3', '1000', '4294967295', '4294967296',
	'18446744073709551615', \'pg_current_xact_id()',
	\'pg_snapshot_xmax(pg_current_snapshot())');
my @role_pool = (
	undef, @roles, '0', '99999999', 'pg_monitor', 'pg_database_owner',
	'pg_read_all_data', 'public', 'nonexistent_role');
my @oid_pool = (undef, 0, 1, 1259, 4294967295, 99999999);
my @bool_pool = (undef, 'true', 'false');
my @timestamptz_pool = (
	undef, 'now', 'infinity', '-infinity', 'epoch', '294276-12-31 23:59:59+00',
	'4713-01-01 BC');
my @json_pool = (undef, '{}', '[]', 'null', '{"a": [1, 2]}', '"x"');
my @array_pool = (undef, '{}', '{NULL}', '{a,b}', '{1,2}');
my @numeric_pool = (undef, 0, -1, 'NaN', '1e308', '-1e-308');
my @any_pool = (\'1', \q{'x'::text}, \'NULL::integer', \q{'{}'::int[]});

# What an argument is, from its name and type
sub arg_kind
{
	my ($fn, $i) = @_;
	my $type = $fn->{argtypes}[$i];
	my $name = $fn->{argnames}[$i] // '';
	my $texty = $type =~ /^(name|text|character varying)$/;
	return 'pipeline' if $texty && $name =~ /pipeline/;
	return 'transform' if $texty && $name =~ /transform/;
	return 'layer' if $name =~ /layer/;
	return 'command' if $texty && $name =~ /command|sql|query|statement/;
	return 'role' if $type eq 'regrole' || ($texty && $name =~ /role|owner|user/);
	return 'regclass' if $type eq 'regclass';
	return 'interval' if $type eq 'interval';
	return 'batch_id' if $type =~ /int/ && $name =~ /batch/;
	return 'rows' if $type =~ /int/ && $name =~ /rows|max|limit/;
	return 'id' if $type =~ /int|oid/ && $name =~ /id$/;
	return 'xid8' if $type eq 'xid8';
	return 'name' if $type eq 'name';
	return 'text' if $texty;
	return $type;
}

sub hostile_values
{
	my ($fn, $i) = @_;
	my $kind = arg_kind($fn, $i);
	my $type = $fn->{argtypes}[$i];
	my %pools = (
		pipeline => \@name_pool,
		transform => \@transform_name_pool,
		layer => \@layer_pool,
		command => \@command_pool,
		role => \@role_pool,
		regclass => \@regclass_pool,
		interval => \@interval_pool,
		batch_id => \@bigint_pool,
		rows => \@bigint_pool,
		xid8 => \@xid8_pool,
		name => \@name_pool,
		text => \@text_pool,
		bigint => \@bigint_pool,
		integer => \@int_pool,
		smallint => \@smallint_pool,
		oid => \@oid_pool,
		boolean => \@bool_pool,
		'timestamp with time zone' => \@timestamptz_pool,
		json => \@json_pool,
		jsonb => \@json_pool,
		numeric => \@numeric_pool);
	return @{ $pools{$kind} } if $pools{$kind};
	return @int_pool if $kind eq 'id' && $type =~ /int/;
	return @oid_pool if $kind eq 'id';
	return @array_pool if $type =~ /\[\]$/;
	return @any_pool if $type =~ /^any/;
	return (undef);
}

# A valid value for an argument, for the role calling
sub baseline_value
{
	my ($fn, $i, $role, $k) = @_;
	my $kind = arg_kind($fn, $i);
	return $fn->{name} =~ /^create/ ? 'fz_new_' . ($k % 6) : $base_of_role{$role}
	  if $kind eq 'pipeline';
	return $fn->{name} =~ /^add/ ? "fz_t$k" : 't_copy' if $kind eq 'transform';
	return 'gold' if $kind eq 'layer';
	return copy_transform($base_of_role{$role}) if $kind eq 'command';
	return $role if $kind eq 'role';
	return $table_of_role{$role} if $kind eq 'regclass';
	return '1 s' if $kind eq 'interval';
	return 1 if $kind eq 'batch_id' || $kind eq 'id';
	return 5 if $kind eq 'rows';
	return '1' if $kind eq 'xid8';
	return 'true' if $kind eq 'boolean';
	return 'x' if $kind eq 'name' || $kind eq 'text';
	return \'1' if $fn->{argtypes}[$i] =~ /^any/;
	return undef;
}

# ---------------------------------------------------------------------------
# Plan items.  An item is a list of statements (body) run after "SET ROLE",
# plus what invariant 3 expects of it: "always" (the transaction is rolled
# back or read-only, so nothing may change) or the statements whose failure
# means the call failed (then nothing may change).

my @modes = qw(plain block sp_rollback_to sp_release txn_rollback readonly
  rr_commit rr_rollback serializable prepared_commit prepared_rollback
  block_in_txn);
my @mode_weights = (
	[ 30, 'plain' ], [ 20, 'block' ], [ 8, 'sp_rollback_to' ], [ 8, 'sp_release' ],
	[ 5, 'txn_rollback' ], [ 8, 'readonly' ], [ 5, 'rr_commit' ],
	[ 3, 'rr_rollback' ], [ 3, 'serializable' ], [ 4, 'prepared_commit' ],
	[ 3, 'prepared_rollback' ], [ 3, 'block_in_txn' ]);
my @role_weights = (
	[ 30, $super ], [ 25, 'fuzz_owner' ], [ 25, 'fuzz_hostile' ],
	[ 7, 'fuzz_member' ], [ 7, 'fuzz_noinherit' ], [ 6, 'fuzz_nologin' ]);

sub wrap_mode
{
	my ($item) = @_;
	my $sql = $item->{sql};
	my $try = 'SELECT public.fz_try(' . dquote($sql) . ')';
	my $gid = q{'fz_gid'};
	my %m = (
		plain => [ [$sql], 0, [0], 0, 0 ],
		block => [ [$try], 0, [0], 0, 1 ],
		sp_rollback_to => [
			[ 'BEGIN', 'SAVEPOINT fz', $sql, 'ROLLBACK TO SAVEPOINT fz', 'COMMIT' ],
			2, [], 1, 0 ],
		sp_release => [
			[ 'BEGIN', 'SAVEPOINT fz', $sql, 'RELEASE SAVEPOINT fz', 'COMMIT' ],
			2, [2], 0, 0 ],
		txn_rollback => [ [ 'BEGIN', $sql, 'ROLLBACK' ], 1, [], 1, 0 ],
		readonly => [ [ 'BEGIN READ ONLY', $sql, 'COMMIT' ], 1, [], 1, 0 ],
		rr_commit => [
			[ 'BEGIN ISOLATION LEVEL REPEATABLE READ', 'SELECT 1', $sql, 'COMMIT' ],
			2, [ 1, 2 ], 0, 0 ],
		rr_rollback => [
			[ 'BEGIN ISOLATION LEVEL REPEATABLE READ', $sql, 'ROLLBACK' ],
			1, [], 1, 0 ],
		serializable => [
			[ 'BEGIN ISOLATION LEVEL SERIALIZABLE', $sql, 'COMMIT' ],
			1, [1], 0, 0 ],
		prepared_commit => [
			[ 'BEGIN', $sql, "PREPARE TRANSACTION $gid", "COMMIT PREPARED $gid" ],
			1, [ 1, 2, 3 ], 0, 0 ],
		prepared_rollback => [
			[ 'BEGIN', $sql, "PREPARE TRANSACTION $gid", "ROLLBACK PREPARED $gid" ],
			1, [], 1, 0 ],
		block_in_txn => [ [ 'BEGIN', $try, 'COMMIT' ], 1, [1], 0, 1 ]);
	my ($body, $call, $abort, $always, $tried) = @{ $m{ $item->{mode} } };
	my @pre = $item->{role} eq $super ? () : ('SET ROLE ' . qident_always($item->{role}));
	my $shift = scalar @pre;
	$item->{body} = [ @pre, @$body ];
	$item->{call_seg} = $call + $shift;
	$item->{abort_segs} = [ map { $_ + $shift } @$abort ];
	$item->{always} = $always;
	$item->{tried} = $tried;
	return $item;
}

sub call_sql
{
	my ($fn, $args, $named) = @_;
	my @parts;
	for my $i (0 .. $#$args)
	{
		next unless defined $args->[$i];
		my $e = $args->[$i];
		$e = "VARIADIC $e" if $fn->{variadic} && $i == $#{ $fn->{argtypes} } && !$named;
		push @parts,
		  $named && $fn->{argnames}[$i] ne ''
		  ? qident_always($fn->{argnames}[$i]) . " => $e"
		  : $e;
	}
	my $call = 'microbatch.' . qident($fn->{name}) . '(' . join(', ', @parts) . ')';
	return "CALL $call" if $fn->{kind} eq 'p';
	return "SELECT * FROM $call" if $fn->{retset};
	return "SELECT $call OVER ()" if $fn->{kind} eq 'w';
	return "SELECT $call";
}

sub call_item
{
	my ($fn, $values, $style, $role, $mode, $cast) = @_;
	my $nargs = scalar @{ $fn->{argtypes} };
	my $first_default = $nargs - $fn->{ndefaults};
	my $named = $style eq 'named' && !grep { $_ eq '' } @{ $fn->{argnames} };
	# 'OMIT' leaves a defaulted argument out in named notation; otherwise it
	# stands for the baseline value
	my @vals = map {
		(!ref $values->[$_] && ($values->[$_] // '') eq 'OMIT'
			  && !($named && $_ >= $first_default))
		  ? baseline_value($fn, $_, $role, 0)
		  : $values->[$_]
	} 0 .. $nargs - 1;
	my @exprs = map { lit($vals[$_], $fn->{argtypes}[$_], $cast) } 0 .. $nargs - 1;
	if ($named)
	{
		# named notation, leaving out some defaulted arguments
		for my $i ($first_default .. $nargs - 1)
		{
			$exprs[$i] = undef if !ref $vals[$i] && ($vals[$i] // '') eq 'OMIT';
		}
	}
	elsif ($style =~ /^omit(\d+)$/)
	{
		# positional, without the last $1 defaulted arguments
		my $omit = $1 > $fn->{ndefaults} ? $fn->{ndefaults} : $1;
		$#exprs = $nargs - 1 - $omit;
	}
	return wrap_mode(
		{
			kind => 'call', label => $fn->{name}, role => $role, mode => $mode,
			sql => call_sql($fn, \@exprs, $named ? 1 : 0)
		});
}

my @where_templates = (
	'public.fz_leak(%c::text)', 'public.fz_leak(%c::text) OR true',
	'NOT public.fz_leak(%c::text)', 'public.fz_boom(%c::text)',
	q{%c::text LIKE '%%'}, '%c IS NULL OR public.fz_leak(%c::text)',
	'public.fz_leak(%c::text) AND 1 / 0 = 1',
	'(SELECT count(*) FROM ' . ($ext_tables[0] // 'microbatch.pipeline') . ') >= 0',
	q{EXISTS (SELECT 1 FROM pg_stats WHERE schemaname = 'microbatch')},
	'%c::text = ANY (SELECT pipeline::text FROM microbatch.pipelines)',
	'microbatch.rows_waiting(%c::text::name) IS NULL OR public.fz_leak(%c::text)',
	q{%c::text ~ '('}, 'true ORDER BY public.fz_leak(%c::text)',
	q{%c::text IN ('p_super', 'p_owner', 'p_hostile')});

sub view_item
{
	my ($view, $where, $col, $role, $mode, $check_as) = @_;
	my $has_pipeline = grep { $_ eq 'pipeline' } @{ $view->{columns} };
	(my $cond = $where) =~ s/%c/qident($col)/ge;
	$cond =~ s/%%/%/g;
	my $select = $has_pipeline ? q{'FZROW ' || md5(pipeline::text), *} : '*';
	my $item = wrap_mode(
		{
			kind => 'view', label => $view->{name}, role => $role, mode => $mode,
			sql => "SELECT $select FROM $view->{name} WHERE $cond"
		});
	# what the role may not see, computed as superuser just before: the
	# pipelines it may not see, and the values (6 characters or more, so
	# that states or small numbers shared with visible rows do not count)
	# found only in their rows
	$check_as //= $role;
	if ($can_check_leaks && $view->{restricted} && $has_pipeline && $check_as ne $super)
	{
		$item->{leak_role} = $check_as;
		$item->{helper} = <<"EOSQL";
WITH r AS (
	SELECT pg_has_role(@{[qlit($check_as)]}, p.owner, 'USAGE') AS vis,
	       x.pipeline::text AS pl, to_jsonb(x) AS j
	  FROM $view->{name} x JOIN microbatch.pipelines p ON p.pipeline = x.pipeline),
v AS (SELECT r.vis, e.value AS val FROM r, jsonb_each_text(r.j) e WHERE length(e.value) >= 6)
SELECT json_build_object(
	'pipes', (SELECT coalesce(json_agg(DISTINCT md5(pl)), '[]') FROM r WHERE NOT vis),
	'pipevals', (SELECT coalesce(json_agg(DISTINCT md5(pl)), '[]') FROM r a
	          WHERE NOT a.vis AND NOT EXISTS (SELECT 1 FROM r b, jsonb_each_text(b.j) e
	                                           WHERE b.vis AND e.value = a.pl)),
	'vals', (SELECT coalesce(json_agg(DISTINCT md5(val)), '[]') FROM v a
	          WHERE NOT a.vis AND NOT EXISTS (SELECT 1 FROM v b WHERE b.vis AND b.val = a.val)))
EOSQL
	}
	return $item;
}

my $restore_item = {
	kind => 'restore', label => 'fz_restore', role => $super, mode => 'plain',
	body => [$restore_sql], call_seg => 0, abort_segs => [], always => 0,
	tried => 0, sql => $restore_sql
};

my @view_modes = qw(plain block readonly);

# Valid arguments for the role, but for $except: with named notation, the
# arguments that have defaults are left out (their defaults are valid, even
# for parameters this file knows nothing about); without names, the
# baseline values are given.
sub baseline_call
{
	my ($fn, $role, $k, $except, $v) = @_;
	my $nargs = scalar @{ $fn->{argtypes} };
	my $first_default = $nargs - $fn->{ndefaults};
	my $named = !grep { $_ eq '' } @{ $fn->{argnames} };
	my @values = map {
		  defined $except && $_ == $except ? $v
		: $named && $_ >= $first_default ? 'OMIT'
		: baseline_value($fn, $_, $role, $k)
	} 0 .. $nargs - 1;
	return (\@values, $named ? 'named' : 'positional');
}

# The systematic part: each argument position of each entry point with each
# hostile value of its kind, the other arguments valid for the role; each
# entry point as each role and in each mode; each view with each hostile
# WHERE clause and as each role.
sub systematic_plan
{
	my ($rng) = @_;
	my @plan;
	my $k = 0;
	for my $fn (@entry_points)
	{
		my $nargs = scalar @{ $fn->{argtypes} };
		for my $i (0 .. $nargs - 1)
		{
			for my $v (hostile_values($fn, $i))
			{
				my $role = rng_weighted($rng, @role_weights);
				push @plan,
				  call_item($fn, baseline_call($fn, $role, $k, $i, $v), $role,
					rng_weighted($rng, @mode_weights), 1);
				$k++;
			}
		}
		for my $role (@roles)
		{
			push @plan,
			  call_item($fn, baseline_call($fn, $role, $k), $role, rng_pick($rng, @modes), 1);
			$k++;
		}
		for my $mode (@modes)
		{
			my $role = rng_weighted($rng, @role_weights);
			push @plan, call_item($fn, baseline_call($fn, $role, $k), $role, $mode, 1);
			$k++;
		}
		# all NULL; only the arguments without defaults; untyped literals
		push @plan, call_item($fn, [ (undef) x $nargs ], 'positional',
			rng_weighted($rng, @role_weights), 'plain', 1);
		push @plan, call_item($fn, [ map { baseline_value($fn, $_, $super, $k) } 0 .. $nargs - 1 ],
			"omit$fn->{ndefaults}", $super, 'plain', 1);
		push @plan, call_item($fn, [ map { baseline_value($fn, $_, 'fuzz_owner', $k) } 0 .. $nargs - 1 ],
			'positional', 'fuzz_owner', 'block', 0);
	}
	for my $view (@$views)
	{
		my @cols = @{ $view->{columns} };
		my $c = 0;
		for my $where (@where_templates)
		{
			push @plan,
			  view_item($view, $where, $cols[ $c++ % @cols ],
				rng_weighted($rng, @role_weights), rng_pick($rng, @view_modes));
		}
		for my $role (@roles)
		{
			push @plan,
			  view_item($view, $where_templates[0], $cols[ $c++ % @cols ], $role, 'plain');
		}
		# every column of a restricted view through the leaky function
		next unless $view->{restricted};
		my @others = grep { $_ ne $super } @roles;
		for my $col (@cols)
		{
			push @plan,
			  view_item($view, $where_templates[0], $col, $others[ $c++ % @others ], 'plain');
		}
	}
	return @plan;
}

sub random_item
{
	my ($rng) = @_;
	if (rng_chance($rng, 0.12))
	{
		my $view = rng_pick($rng, @$views);
		return view_item($view, rng_pick($rng, @where_templates),
			rng_pick($rng, @{ $view->{columns} }), rng_weighted($rng, @role_weights),
			rng_pick($rng, @view_modes));
	}
	my $fn = rng_pick($rng, @entry_points);
	my $nargs = scalar @{ $fn->{argtypes} };
	my $role = rng_weighted($rng, @role_weights);
	my $k = rng_below($rng, 1000);
	my @values = map {
		rng_chance($rng, 0.65)
		  ? rng_pick($rng, hostile_values($fn, $_))
		  : baseline_value($fn, $_, $role, $k)
	} 0 .. $nargs - 1;
	my $style = rng_weighted($rng,
		[ 70, 'positional' ], [ 15, 'named' ], [ 15, 'omit' . rng_below($rng, $nargs + 1) ]);
	if ($style eq 'named')
	{
		for my $i ($nargs - $fn->{ndefaults} .. $nargs - 1)
		{
			$values[$i] = 'OMIT' if rng_chance($rng, 0.4);
		}
	}
	return call_item($fn, \@values, $style, $role, rng_weighted($rng, @mode_weights),
		!rng_chance($rng, 0.1));
}

# Restores between the items, and the fake violations of MB_FUZZ_INJECT
sub with_restores
{
	my (@items) = @_;
	my @out;
	for my $i (0 .. $#items)
	{
		push @out, $restore_item if $i % $restore_every == 0;
		push @out, $items[$i];
	}
	return @out;
}

my @injected;
push @injected,
  wrap_mode(
	{
		kind => 'call', label => 'INJECTED internal', role => $super, mode => 'plain',
		sql => q{DO $$BEGIN RAISE EXCEPTION 'cache lookup failed for relation 1' USING ERRCODE = 'XX000'; END$$}
	}) if $inject{internal};
push @injected,
  wrap_mode(
	{
		kind => 'call', label => 'INJECTED catalog', role => $super, mode => 'plain',
		sql => 'ALTER TABLE public.fz_sink ADD COLUMN fz_injected int; SELECT 1/0'
	}) if $inject{catalog};
push @injected,
  wrap_mode(
	{
		kind => 'call', label => 'INJECTED session', role => 'fuzz_owner', mode => 'plain',
		sql => q{SELECT set_config('application_name', 'fz_injected', false)}
	}) if $inject{session};
push @injected,
  view_item($pipelines_view, 'true', 'pipeline', $super, 'plain', 'fuzz_hostile')
  if $inject{leak} && $pipelines_view;
push @injected,
  { kind => 'crash', label => 'INJECTED crash', role => $super, mode => 'plain',
	sql => 'SELECT 1', body => ['SELECT 1'], call_seg => 0, abort_segs => [],
	always => 0, tried => 0 } if $inject{crash};

my $rng1 = rng_new($seed);
my $rng2 = rng_new($seed ^ 0x5bd1e995);
my @systematic = systematic_plan($rng1);
my @phase1 = with_restores(@injected, @systematic,
	map { random_item($rng1) } 1 .. $iterations);
my @phase2 = with_restores(map { random_item($rng2) } 1 .. int($iterations / 2));
my $nsystematic = scalar(@injected) + scalar(@systematic);
my $plan_digest = md5_hex(encode_utf8(join("\n",
	map { "$_->{role}|$_->{mode}|" . join(';', @{ $_->{body} }) } @phase1, @phase2)));
diag('plan: ' . scalar(@systematic) . ' systematic items, then random ones; '
	  . "plan digest $plan_digest");

# ---------------------------------------------------------------------------
# The fingerprint of invariant 3, as superuser: every row of every table of
# schema microbatch, and the catalog rows of the relations of the extension's
# and the fuzz's schemas (stable columns only: statistics and vacuum change
# the others).  One md5 per part, so that a report says what changed.

my $nsp = q{(SELECT oid FROM pg_namespace
   WHERE nspname IN ('microbatch', 'public', 'fuzz_other', 'fz_evil'))};
my @catalog_parts = (
	qq{SELECT 'pg_class', (c.oid, c.relname, c.relnamespace, c.relkind, c.relowner,
	   c.relacl, c.reloptions, c.relpersistence, c.relispartition,
	   c.relrowsecurity)::text FROM pg_class c WHERE c.relnamespace IN $nsp},
	qq{SELECT 'viewdef', c.oid || ':' || pg_get_viewdef(c.oid) FROM pg_class c
	   WHERE c.relnamespace IN $nsp AND c.relkind = 'v'},
	qq{SELECT 'pg_attribute', (a.attrelid, a.attname, a.atttypid, a.attnum,
	   a.attnotnull, a.atthasdef, a.attisdropped, a.attacl)::text
	   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
	   WHERE c.relnamespace IN $nsp AND a.attnum > 0},
	qq{SELECT 'pg_attrdef', d.adrelid || ':' || d.adnum || ':' || pg_get_expr(d.adbin, d.adrelid)
	   FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid WHERE c.relnamespace IN $nsp},
	qq{SELECT 'pg_trigger', (t.tgrelid, t.tgname, t.tgfoid, t.tgtype, t.tgenabled)::text
	   FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace IN $nsp},
	qq{SELECT 'pg_constraint', c.conrelid || ':' || c.conname || ':' || pg_get_constraintdef(c.oid)
	   FROM pg_constraint c WHERE c.connamespace IN $nsp},
	qq{SELECT 'pg_index', (i.indexrelid, i.indrelid, i.indkey, i.indisunique)::text
	   FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace IN $nsp},
	qq{SELECT 'pg_policy', p.polrelid || ':' || p.polname || ':' || coalesce(pg_get_expr(p.polqual, p.polrelid), '')
	   FROM pg_policy p},
	q{SELECT 'pg_roles', (r.rolname, r.rolsuper, r.rolinherit, r.rolcanlogin,
	   r.rolcreaterole, r.rolbypassrls)::text FROM pg_roles r},
	q{SELECT 'pg_auth_members', (m.roleid, m.member, m.admin_option)::text FROM pg_auth_members m});
my @table_parts = map { "SELECT " . qlit($_) . ", t::text FROM $_ t" } @ext_tables;

sub fingerprint_sql
{
	my (@parts) = @_;
	return 'SELECT string_agg(part || \'=\' || h, \',\' ORDER BY part) FROM '
	  . '(SELECT part, md5(string_agg(x, E\'\\n\' ORDER BY x)) AS h FROM ('
	  . join("\nUNION ALL ", map { "SELECT * FROM ($_) s(part, x)" } @parts)
	  . ') u GROUP BY part) f';
}

# With background workers on, batches change the extension's tables at any
# time: only the system catalog rows are compared then.
my $fp_exact_sql = fingerprint_sql(@table_parts, @catalog_parts);
my $fp_catalog_sql = fingerprint_sql(@catalog_parts);

# The caller's session, checked after each call as the calling role
my $state_sql = q{SELECT json_build_object(
	'current_user', current_user, 'session_user', session_user,
	'search_path', current_setting('search_path'),
	'application_name', current_setting('application_name'),
	'statement_timeout', current_setting('statement_timeout'),
	'lock_timeout', current_setting('lock_timeout'),
	'work_mem', current_setting('work_mem'),
	'DateStyle', current_setting('DateStyle'), 'TimeZone', current_setting('TimeZone'),
	'jit', current_setting('jit'),
	'default_transaction_read_only', current_setting('default_transaction_read_only'),
	'default_transaction_isolation', current_setting('default_transaction_isolation'),
	'in_transaction', now() <> statement_timestamp(),
	'superusers', (SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolsuper),
	'canary', to_regclass('public.fz_canary') IS NOT NULL,
	'postmaster_start', pg_postmaster_start_time()::text,
	-- a crash restart keeps the start time but starts a new checkpointer
	'checkpointer', public.fz_checkpointer(),
	'prepared', (SELECT string_agg(gid, ',') FROM pg_prepared_xacts))};
my @state_settings = qw(search_path application_name statement_timeout
  lock_timeout work_mem DateStyle TimeZone jit default_transaction_read_only
  default_transaction_isolation superusers);

# Back to the superuser and known settings.  The fuzz session's own errors
# are read by psql, so it keeps them out of the server log.
my $reset_sql = q{RESET ROLE; RESET ALL; SET log_statement = 'none';
SET application_name = 'fz_session';
SET statement_timeout = '10s'; SET lock_timeout = '3s';
SET log_min_messages = 'fatal'; SET log_min_error_statement = 'panic'};

# ---------------------------------------------------------------------------
# Invariant violations, deduplicated, with the exact SQL of one example

my %viol;                  # invariant => key => record
my @inv_names = (
	undef,
	'errors are clean (no SQLSTATE XX, no internal-looking message, no hang)',
	'the postmaster never restarts and the log shows no crash',
	'failed calls and rolled-back or read-only transactions change no catalog row',
	'background workers process a fresh pipeline at the end',
	'restricted views leak no row and no value to a role',
	'calls leave the caller\'s session, roles and other objects alone');

sub item_sql
{
	my ($item) = @_;
	return join(";\n", @{ $item->{body} }) . ';';
}

sub violation
{
	my ($inv, $item, $what, $extra) = @_;
	(my $key = "$item->{label}|$what") =~ s/\d+/N/g;
	$key =~ s/"[^"]*"/"..."/g;
	my $sql = $item ? item_sql($item) : '';
	my $v = $viol{$inv}{$key} //= {
		what => $what, count => 0, label => $item->{label}, sql => $sql,
		role => $item->{role}, mode => $item->{mode}, extra => $extra
	};
	$v->{count}++;
	# keep the most telling example: as the superuser if any, then the
	# shortest
	my $rank = sub { (($_[0] // '') eq $super ? 0 : 1e9) + length($_[1]) };
	if ($rank->($item->{role}, $sql) < $rank->($v->{role}, $v->{sql}))
	{
		@$v{qw(sql role mode extra)} = ($sql, $item->{role}, $item->{mode}, $extra);
	}
	return;
}

# Messages that give away an internal error, whatever their SQLSTATE.  A
# pattern may have an exception: a function of the message and of the SQL
# that triggered it, true when the message is what the user asked for.
my $ext_rel_re = join '|', map { my $n = $_; $n =~ s/^microbatch\.//; quotemeta($n) } @ext_tables;
my $ext_con_re = join '|', map { quotemeta } @ext_constraints;
my @internal_patterns = (
	[ 'cache lookup failed', qr/cache lookup failed/i ],
	[ 'SPI', qr/\bSPI_\w+|\bSPI\b/ ],
	[ 'unexpected', qr/unexpected/i ],
	[ 'unrecognized', qr/unrecognized/i,
		sub { $_[0] =~ /unrecognized configuration parameter/ } ],
	[ 'could not find', qr/could not find/i ],
	[ 'could not open relation', qr/could not open relation/i ],
	[ 'invalid memory alloc', qr/invalid memory alloc/i ],
	[ 'variable not found in subplan', qr/variable not found in subplan/i ],
	[ 'negative bitmapset', qr/negative bitmapset/i ],
	[ 'tuple concurrently updated', qr/tuple concurrently (updated|deleted)/i ],
	[ 'stack depth', qr/stack depth limit exceeded/i ],
	[ 'resource leak', qr/reference leak|refcount leak|file leak|still active|not closed|was not released/i ],
	[ 'wrong (tuple|number|type)', qr/wrong (tuple|number of|type)/i,
		sub { $_[0] =~ /wrong number of parameters for prepared statement/ } ],
	[ 'no relation entry', qr/no relation entry|plan should not reference|unrecognized node/i ],
	[ 'improper/invalid internal state', qr/improper (call|use)|should not happen|not supported yet/i ],
	# a relation looked up by OID that the caller did not give
	[ 'relation with OID', qr/relation with OID (\d+) does not exist/,
		sub { my ($m, $sql) = @_; $m =~ /relation with OID (\d+)/; $sql =~ /\b$1\b/ } ],
	(   $ext_rel_re
		? (
			[ 'constraint of the extension\'s tables',
				qr/(null value in column|violates).* of relation "($ext_rel_re)"/ ],
			[ 'constraint of the extension\'s tables',
				qr/violates (unique|check|not-null|exclusion|foreign key) constraint "($ext_con_re)"/ ]
		  )
		: ()));

sub internal_problem
{
	my ($r, $sql) = @_;
	return "SQLSTATE $r->{sqlstate} (class XX: internal error)"
	  if ($r->{sqlstate} // '') =~ /^XX/;
	return "a $r->{level} report" if $r->{level} =~ /^(FATAL|PANIC)$/;
	my $text = join("\n", grep { defined } $r->{message}, $r->{detail}, $r->{hint});
	for my $p (@internal_patterns)
	{
		my ($name, $re, $unless) = @$p;
		next unless $text =~ $re;
		next if $unless && $unless->($text, $sql);
		return "message looks internal ($name)";
	}
	return;
}

# ---------------------------------------------------------------------------
# psql output: the reports of the server (VERBOSITY verbose), split into
# level, SQLSTATE, message, detail and hint.

sub parse_reports
{
	my ($text) = @_;
	my @reports;
	my $cur;
	my $field;
	for my $line (split /\n/, $text)
	{
		if ($line =~
			/^(?:psql:[^:]*:\d+: )?(ERROR|WARNING|NOTICE|INFO|LOG|FATAL|PANIC|DEBUG\d?):  (?:([0-9A-Z]{5}): )?(.*)$/
		  )
		{
			$cur = { level => $1, sqlstate => $2, message => $3 };
			$field = 'message';
			push @reports, $cur;
		}
		elsif ($line =~ /^(?:psql:[^:]*:\d+: )?(server closed the connection unexpectedly|connection to server was lost|no connection to the server)/)
		{
			push @reports, { level => 'LOST', message => $1 };
			$cur = undef;
		}
		elsif ($cur && $line =~ /^(DETAIL|HINT|CONTEXT|LOCATION|QUERY|STATEMENT|LINE \d+):  ?(.*)$/)
		{
			$field = lc $1;
			$field = 'line' if $field =~ /^line/;
			$cur->{$field} = defined $cur->{$field} ? "$cur->{$field}\n$2" : $2;
		}
		elsif ($cur && $field)
		{
			$cur->{$field} .= "\n$line";
		}
	}
	return @reports;
}

# ---------------------------------------------------------------------------
# The fuzz session: one psql, fed statements with markers echoed to stdout
# and stderr after each, so that each statement's output can be told apart.

my $psql_bin = $node->installed_command('psql');
my $sess;
my %baseline_state;
my $postmaster_start;
my $last_fp;
my $fp_sql = $fp_exact_sql;

sub run_script
{
	my ($s, @stmts) = @_;
	my $n = ++$s->{seq};
	$s->{out} = '';
	$s->{err} = '';
	for my $i (0 .. $#stmts)
	{
		my $st = $stmts[$i];
		$st .= ';' unless $st =~ /^\\/ || $st =~ /;\s*$/;
		$s->{in} .= encode_utf8($st) . "\n\\r\n\\echo FZMARK $n $i\n\\warn FZMARK $n $i\n";
	}
	my $last = $#stmts;
	my $done = qr/^FZMARK $n $last\n/m;
	$s->{timer}->start($call_timeout);
	my $lost;
	eval {
		until ($s->{out} =~ $done && $s->{err} =~ $done)
		{
			die "psql exited\n" unless $s->{h}->pumpable;
			die "timed out after ${call_timeout}s\n" if $s->{timer}->is_expired;
			$s->{h}->pump;
		}
		1;
	} or $lost = $@ || "unknown\n";
	# characters from here on; invalid UTF-8 would become U+FFFD
	my @out = map { decode('UTF-8', $_) } split /^FZMARK $n \d+\n/m, $s->{out}, -1;
	my @err = map { decode('UTF-8', $_) } split /^FZMARK $n \d+\n/m, $s->{err}, -1;
	return {
		out => \@out, err => \@err, lost => $lost,
		rawerr => decode('UTF-8', $s->{err})
	};
}

sub session_open
{
	my $s = { in => '', out => '', err => '', seq => 0 };
	$s->{timer} = IPC::Run::timer($call_timeout);
	$s->{h} = IPC::Run::start(
		[ $psql_bin, '-XAtq', '-v', 'ON_ERROR_STOP=0', '-d', $node->connstr($db), '-f', '-' ],
		'<', \$s->{in}, '>', \$s->{out}, '2>', \$s->{err}, $s->{timer});
	my $r = run_script($s, '\set VERBOSITY verbose', 'SELECT pg_backend_pid()',
		$reset_sql, 'CREATE TEMP TABLE IF NOT EXISTS fz_temp (id int, v text)', $state_sql);
	die "could not start the fuzz session: $r->{lost}$r->{rawerr}" if $r->{lost};
	($s->{pid}) = $r->{out}[1] =~ /(\d+)/;
	my $state = eval { $jchars->decode($r->{out}[4]) }
	  or die "could not read the session state: $r->{out}[4] $r->{err}[4]";
	%baseline_state = %$state;
	return $s;
}

sub session_close
{
	my ($s) = @_;
	eval { $s->{h}->kill_kill; 1 };
	return;
}

sub compute_fp
{
	my $r = run_script($sess, $fp_sql);
	return undef if $r->{lost};
	(my $fp = $r->{out}[0]) =~ s/\n+$//;
	return $fp;
}

sub fp_diff
{
	my ($a, $b) = @_;
	my %a = map { split /=/, $_, 2 } split /,/, $a // '';
	my %b = map { split /=/, $_, 2 } split /,/, $b // '';
	my %all = (%a, %b);
	return join(', ', grep { ($a{$_} // '') ne ($b{$_} // '') } sort keys %all);
}

# The server log, read as it grows
my $log_offset = 0;
my $log_partial = '';
my %worker_exits;

sub new_log_lines
{
	my $size = -s $node->logfile // 0;
	return () if $size <= $log_offset;
	my $chunk = slurp_file($node->logfile, $log_offset);
	$log_offset += length($chunk);
	my @lines = split /\n/, $log_partial . $chunk, -1;
	$log_partial = pop @lines;
	return map { decode('UTF-8', $_) } @lines;
}

my @crash_patterns = (
	qr/terminated by signal/, qr/server process .* was terminated/,
	qr/was terminated by exception/, qr/\bPANIC:/, qr/TRAP:/,
	qr/terminating any other active server processes/,
	qr/all server processes terminated; reinitializing/);

sub scan_log
{
	my ($item) = @_;
	my @lines = new_log_lines();
	for my $j (0 .. $#lines)
	{
		my $line = $lines[$j];
		if (grep { $line =~ $_ } @crash_patterns)
		{
			violation(2, $item, "server log: " . ($line =~ s/^.*?<[^>]*> //r));
			next;
		}
		$worker_exits{$1}++
		  if $line =~ /background worker "([^"]+)" \(PID \d+\) exited with exit code 1/;
		# errors of background processes; the fuzz session's own are read by psql
		next
		  unless $line =~ /\[\d+\] <([^>]*)> (ERROR|WARNING|FATAL|PANIC):  ([0-9A-Z]{5}): (.*)$/;
		my ($type, $level, $sqlstate, $msg) = ($1, $2, $3, $4);
		next if $type eq 'client backend';
		my $problem = internal_problem(
			{ level => $level, sqlstate => $sqlstate, message => $msg }, '');
		next unless $problem;
		# the lines of that process around it, and the call that ran last
		my ($pid) = $line =~ /\[(\d+)\]/;
		my @around = grep { /\[$pid\]/ && !/ LOCATION:  / }
		  @lines[ ($j > 3 ? $j - 3 : 0) .. ($j + 3 > $#lines ? $#lines : $j + 3) ];
		violation(1, { %$item, label => "background process: $type" },
			"$level $sqlstate: $msg: $problem",
			"server log:\n" . join("\n", map { s/^.*?<[^>]*> //r } @around)
			  . "\nthe fuzz call that ran last is below");
	}
	return;
}

# After psql lost its connection or a call hung: report, wait for the
# server, and start again with a new session.
my $server_gone = 0;

sub recover_session
{
	my ($item, $lost) = @_;
	my $pid = $sess->{pid};
	session_close($sess);
	# psql dies with a broken pipe when the server is down: eval
	if ($lost =~ /timed out/)
	{
		violation(1, $item, "the call did not return within ${call_timeout}s");
		eval { $node->psql($db, "SELECT pg_cancel_backend($pid)") } if $pid;
		usleep(1_000_000);
		eval { $node->psql($db, "SELECT pg_terminate_backend($pid)") } if $pid;
	}
	my $deadline = time() + 90;
	my ($ret, $start) = (1, '');
	while (time() < $deadline)
	{
		($ret, $start) = eval {
			$node->psql($db, q{SELECT pg_postmaster_start_time()::text || ' '
				|| coalesce((SELECT pid FROM pg_stat_activity
				              WHERE backend_type = 'checkpointer')::text, '')});
		};
		last if defined $ret && $ret == 0;
		$ret = 1;
		usleep(200_000);
	}
	if ($ret != 0)
	{
		violation(2, $item, 'the server did not come back within 90s');
		$server_gone = 1;
		return;
	}
	my ($start_time, $checkpointer) = $start =~ /^(.*) (\d*)$/;
	my $old_checkpointer = $baseline_state{checkpointer} // '';
	if ($start_time ne $postmaster_start)
	{
		violation(2, $item, 'the postmaster restarted');
		$postmaster_start = $start_time;
	}
	elsif ($checkpointer ne $old_checkpointer)
	{
		violation(2, $item, 'the server restarted after a crash (new checkpointer)');
	}
	elsif ($lost !~ /timed out/)
	{
		violation(6, $item, 'the session was disconnected: ' . ($lost =~ s/\n//r));
	}
	$sess = session_open();
	$last_fp = compute_fp();
	scan_log($item);
	return;
}

# ---------------------------------------------------------------------------
# One item: its statements, then the session state as the calling role, the
# reset, and the fingerprint, in one round trip.

my %outcomes;              # label => ok/error counts, for the summary
my $dump_fh;
if ($ENV{MB_FUZZ_DUMP})
{
	open($dump_fh, '>:encoding(UTF-8)', $ENV{MB_FUZZ_DUMP})
	  or die "cannot write $ENV{MB_FUZZ_DUMP}: $!";
	print $dump_fh "seed $seed plan $plan_digest\n";
}
my $executed = 0;

sub execute_item
{
	my ($item, $phase) = @_;
	$executed++;
	if ($item->{kind} eq 'crash')
	{
		# injected: the backend of the fuzz session dies by a signal
		kill 'SEGV', $sess->{pid};
		usleep(200_000);
	}

	my @pre;
	if ($item->{helper})
	{
		@pre = ($item->{helper}, $reset_sql);
	}
	my @body = @{ $item->{body} };
	my $r = run_script($sess, @pre, @body, $state_sql, $reset_sql, $fp_sql);
	if ($r->{lost})
	{
		recover_session($item, $r->{lost});
		print $dump_fh "$executed $phase $item->{role} $item->{mode} $item->{label} LOST\n"
		  . item_sql($item) . "\n" if $dump_fh;
		return;
	}
	my $npre = scalar @pre;
	my $nbody = scalar @body;
	my ($state_out, $fp_out) = ($r->{out}[ $npre + $nbody ], $r->{out}[ $npre + $nbody + 2 ]);
	my $state_err = $r->{err}[ $npre + $nbody ];

	# invariant 1, on everything the body reported
	my $failed = 0;
	my @seg_reports;
	for my $i (0 .. $nbody - 1)
	{
		my @reports = parse_reports($r->{err}[ $npre + $i ] // '');
		if ($item->{tried} && $i == $item->{call_seg}
			&& ($r->{out}[ $npre + $i ] // '') =~ /^FZERR (.*)$/m)
		{
			my $e = eval { $jchars->decode($1) } // { message => $1 };
			push @reports, { level => 'ERROR', %$e, caught => 1 };
		}
		$seg_reports[$i] = \@reports;
		for my $rep (@reports)
		{
			next unless $rep->{level} =~ /^(ERROR|WARNING|FATAL|PANIC)$/;
			my $problem = internal_problem($rep, item_sql($item));
			violation(1, $item,
				"$rep->{level} " . ($rep->{sqlstate} // '?') . ": "
				  . ($rep->{message} // '') . ": $problem",
				join("\n", map { "$_: $rep->{$_}" } grep { defined $rep->{$_} }
					qw(detail hint context)))
			  if $problem;
		}
	}
	if ($item->{kind} eq 'restore' && ($r->{out}[$npre] // '') =~ /^(\[.*\])$/m)
	{
		my $errs = eval { $jchars->decode($1) } // [];
		for my $e (@$errs)
		{
			my $problem = internal_problem({ level => 'ERROR', %$e }, '');
			violation(1, $item, "restore step $e->{step}: $e->{sqlstate}: $e->{message}: $problem")
			  if $problem;
		}
	}
	for my $i (@{ $item->{abort_segs} })
	{
		$failed = 1 if grep { $_->{level} eq 'ERROR' } @{ $seg_reports[$i] };
	}
	my $call_reports = $seg_reports[ $item->{call_seg} ];
	my ($err) = grep { $_->{level} eq 'ERROR' } @$call_reports;
	my $outcome = $err
	  ? 'error ' . ($err->{sqlstate} // '?') . ' ' . substr(($err->{message} // '') =~ s/\n/ /gr, 0, 200)
	  : 'ok';
	$outcomes{ $item->{label} }{ $err ? 'error' : 'ok' }++;
	print $dump_fh "$executed $phase $item->{role} $item->{mode} $item->{label} $outcome\n"
	  . item_sql($item) . "\n" if $dump_fh;

	# invariant 5: hidden rows and values, as computed by the helper
	if ($item->{helper})
	{
		my $hidden = eval { $jchars->decode($r->{out}[0]) };
		if ($hidden)
		{
			my %pipes = map { $_ => 1 } @{ $hidden->{pipes} };
			# a hidden pipeline's name is a hidden value, unless a visible
			# row holds it too (a transform may be named like a pipeline)
			my %vals = map { $_ => 1 } @{ $hidden->{pipevals} }, @{ $hidden->{vals} };
			my $out = $r->{out}[ $npre + $item->{call_seg} ] // '';
			my $errtext = $r->{err}[ $npre + $item->{call_seg} ] // '';
			my @rows = $out =~ /^FZROW ([0-9a-f]{32})/mg;
			my @leaks = ($errtext =~ /FZ(?:LEAK|BOOM) ([0-9a-f]{32})/g,
				$out =~ /FZBOOM ([0-9a-f]{32})/g);
			violation(5, $item, "$item->{label} returns rows of pipelines that $item->{leak_role} may not see")
			  if grep { $pipes{$_} } @rows;
			violation(5, $item, "a function in the WHERE clause of $item->{label} sees values of rows that $item->{leak_role} may not see")
			  if grep { $vals{$_} } @leaks;
		}
		else
		{
			note encode_utf8("leak helper failed for $item->{label}: $r->{err}[0]");
		}
	}

	# invariants 6 and 2: the session after the call
	my $state = eval { $jchars->decode($state_out // '') };
	my $repair = 0;
	if (!$state)
	{
		my ($rep) = parse_reports($state_err // '');
		violation(6, $item, 'the session is unusable after the call: '
			  . ($rep ? ($rep->{sqlstate} // '') . ' ' . $rep->{message} : ($state_err // '')));
		$repair = 1;
	}
	else
	{
		violation(6, $item, "current_user is $state->{current_user} after the call, not $item->{role}")
		  if $state->{current_user} ne $item->{role} && $item->{kind} ne 'restore';
		violation(6, $item, "session_user is $state->{session_user} after the call")
		  if $state->{session_user} ne $baseline_state{session_user};
		for my $k (@state_settings)
		{
			next if ($state->{$k} // '') eq ($baseline_state{$k} // '');
			$repair = 1;
			# the restore runs user code as other roles on purpose: the same
			# leaks show up on the calls that it makes
			next if $item->{kind} eq 'restore' && $k ne 'superusers';
			violation(6, $item, "the call changed the caller's $k",
				"from \"" . ($baseline_state{$k} // '') . "\" to \"" . ($state->{$k} // '') . "\"");
		}
		if ($state->{in_transaction})
		{
			violation(6, $item, 'the session is left inside a transaction block');
			$repair = 1;
		}
		if (!$state->{canary})
		{
			violation(6, $item, 'public.fz_canary was dropped (SQL injection?)');
			$repair = 1;
		}
		if ($state->{postmaster_start} ne $postmaster_start)
		{
			violation(2, $item, 'the postmaster restarted');
			$postmaster_start = $state->{postmaster_start};
		}
		if (($state->{checkpointer} // 0) != ($baseline_state{checkpointer} // 0))
		{
			violation(2, $item, 'the server restarted after a crash (new checkpointer)');
			$baseline_state{checkpointer} = $state->{checkpointer};
		}
		$repair = 1 if defined $state->{prepared};
	}
	if ($repair)
	{
		# put things back: roll back, drop prepared transactions, demote
		# unexpected superusers, recreate the canary
		my %keep = map { $_ => 1 } split /,/, $baseline_state{superusers};
		my @demote = grep { !$keep{$_} } split /,/, ($state ? $state->{superusers} // '' : '');
		my @prepared = split /,/, ($state ? $state->{prepared} // '' : '');
		run_script($sess, 'ROLLBACK', $reset_sql,
			(map { 'ROLLBACK PREPARED ' . qlit($_) } @prepared),
			(map { 'ALTER ROLE ' . qident_always($_) . ' NOSUPERUSER' } @demote),
			'CREATE TABLE IF NOT EXISTS public.fz_canary (id int)');
	}

	# invariant 3, on the fingerprint taken before any repair
	my $fp;
	if (defined $fp_out && $fp_out =~ /=/)
	{
		($fp = $fp_out) =~ s/\n+$//;
	}
	else
	{
		$fp = compute_fp();
	}
	if (defined $last_fp && defined $fp && $fp ne $last_fp
		&& $item->{kind} ne 'restore'
		&& ($item->{always} || $failed))
	{
		my $why = $item->{always}
		  ? "the transaction ($item->{mode}) was rolled back or read-only"
		  : 'the call failed';
		my $errmsg = $err ? ($err->{sqlstate} // '') . ' ' . ($err->{message} // '') : '';
		violation(3, $item, "$why but these changed: " . fp_diff($last_fp, $fp),
			$errmsg ? "the error: $errmsg" : undef);
	}
	$last_fp = $repair ? compute_fp() : $fp;

	# a backfill a committed call started goes on in the background: the
	# next item's changes are its own only once it has ended
	if (item_sql($item) =~ /start_replay/)
	{
		poll_until_tolerant($node, $db,
			'SELECT count(*) FROM microbatch.replay_progress_slots()', '0', 60,
			'the backfills started by the fuzz');
		$last_fp = compute_fp();
	}

	scan_log($item);
	return;
}

# ---------------------------------------------------------------------------
# Phase 1: background workers off, so that only the calls change the
# catalog.  The scheduler keeps running: it is woken by the calls.

$postmaster_start = $node->safe_psql($db, 'SELECT pg_postmaster_start_time()::text');
ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.workers WHERE kind = 'scheduler' AND database = current_database()},
		'1', 30),
	'the database has a scheduler');
$node->safe_psql($db, q{ALTER SYSTEM SET microbatch.enabled = off; SELECT pg_reload_conf()});
ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.workers WHERE kind = 'batch worker' AND state = 'running'},
		'0', 30),
	'no batch runs in the background with microbatch.enabled off');
usleep(500_000);
scan_log({ label => 'setup', role => $super, mode => 'plain', body => ['-- setup'] });

$sess = session_open();
$last_fp = compute_fp();

my $t0 = time();
my $deadline1 = $t0 + $budget * $phase1_share;
my $deadline2 = $t0 + $budget;
my $done1 = 0;
for my $i (0 .. $#phase1)
{
	last if $server_gone;
	# the systematic items always run, the random ones while time is left
	last if $i >= $nsystematic + int($nsystematic / $restore_every) + 1 && time() > $deadline1;
	execute_item($phase1[$i], 1);
	$done1++;
}
my $t1 = time();
diag(sprintf('phase 1 (workers off): %d items in %.0fs', $done1, $t1 - $t0));

# Phase 2: background workers on; they run whatever the fuzz left, with the
# transforms it added.
$node->safe_psql($db, q{ALTER SYSTEM SET microbatch.enabled = on; SELECT pg_reload_conf()})
  unless $server_gone;
$fp_sql = $fp_catalog_sql;
$last_fp = compute_fp() unless $server_gone;
my $done2 = 0;
$deadline2 = time() + 10 if $deadline2 < time() + 10;
for my $item (@phase2)
{
	last if $server_gone || time() > $deadline2;
	execute_item($item, 2);
	$done2++;
}
diag(sprintf('phase 2 (workers on): %d items in %.0fs', $done2, time() - $t1));
session_close($sess) unless $server_gone;

# ---------------------------------------------------------------------------
# Invariant 4: a fresh pipeline of the superuser still gets processed

my $workers_ok = 0;
if (!$server_gone)
{
	my ($ret, $out, $err) = $node->psql(
		$db, q{
SET statement_timeout = '20s';
CREATE TABLE public.fz_final (id int, v text);
CREATE TABLE public.fz_final_out (batch_id bigint, id int);
SELECT microbatch.create_pipeline('fz_final', 'public.fz_final', '100 ms');
SELECT microbatch.add_transform('fz_final', 'copy', 'bronze',
	'INSERT INTO public.fz_final_out SELECT microbatch.current_batch_id(), id FROM microbatch.fz_final_batch');
INSERT INTO public.fz_final SELECT g, 'x' FROM generate_series(1, 5) g;
}, on_error_stop => 1);
	if ($ret != 0)
	{
		violation(4, { label => 'final pipeline', role => $super, mode => 'plain', body => ['fz_final'] },
			"could not create the final pipeline: $err");
	}
	else
	{
		$node->safe_psql($db, q{SELECT microbatch.pause_pipeline('fz_final')})
		  if $inject{workers};
		$workers_ok = poll_until($node, $db, 'SELECT count(*) FROM public.fz_final_out', '5', 30,
			'the final pipeline to process its 5 rows');
		violation(4, { label => 'final pipeline', role => $super, mode => 'plain', body => ['fz_final'] },
			'5 rows inserted into a fresh pipeline were not processed within 30s: '
			  . $node->safe_psql($db, q{SELECT state || ' ' || coalesce(last_error, '')
			       FROM microbatch.pipelines WHERE pipeline = 'fz_final'}))
		  unless $workers_ok;
	}
}
else
{
	violation(4, { label => 'final pipeline', role => $super, mode => 'plain', body => [''] },
		'the server is gone');
}

# Invariant 2, once more over the whole run
my $final_item = { label => 'end of run', role => $super, mode => 'plain', body => ['-- end of run'] };
scan_log($final_item);
if (!$server_gone)
{
	my $start = $node->safe_psql($db, 'SELECT pg_postmaster_start_time()::text');
	violation(2, $final_item, 'the postmaster start time changed during the run')
	  if $start ne $postmaster_start;
}

# ---------------------------------------------------------------------------
# Report

my $report_file = "$PostgreSQL::Test::Utils::tmp_check/fuzz_violations.txt";
open(my $rf, '>:encoding(UTF-8)', $report_file) or die "cannot write $report_file: $!";
print $rf "seed $seed, plan digest $plan_digest\n";
for my $inv (1 .. 6)
{
	my @list = sort { $a->{label} cmp $b->{label} || $a->{what} cmp $b->{what} }
	  values %{ $viol{$inv} // {} };
	my $text = '';
	my $shown = 0;
	for my $v (@list)
	{
		my $entry = "- [$v->{label}] $v->{what} (x$v->{count})\n"
		  . "  as $v->{role}, mode $v->{mode}:\n";
		$entry .= "  $v->{extra}\n" =~ s/\n(?!$)/\n  /gr if $v->{extra};
		print $rf $entry . "  $v->{sql}\n" =~ s/\n(?!$)/\n    /gr;
		$text .= $entry . ("  " . shorten($v->{sql}) . "\n") =~ s/\n(?!$)/\n    /gr
		  if $shown++ < 25;
	}
	$text .= '... and ' . (@list - 25) . " more in $report_file\n" if @list > 25;
	print $rf "invariant $inv: " . scalar(@list) . " violation(s)\n";
	ok(!@list, "invariant $inv: $inv_names[$inv]")
	  or diag(encode_utf8("invariant $inv, " . scalar(@list) . " distinct violation(s):\n$text"));
}
close $rf;

my $summary = join(', ',
	map { "$_ " . ($outcomes{$_}{ok} // 0) . '/' . ($outcomes{$_}{error} // 0) }
	  sort keys %outcomes);
note encode_utf8("calls ok/failed by entry point: $summary");
note 'background workers that exited with code 1: '
  . join(', ', map { "$_ x$worker_exits{$_}" } sort keys %worker_exits)
  if %worker_exits;
diag("fuzz: $executed items executed; violations in $report_file");
close $dump_fh if $dump_fh;

$node->stop('immediate') unless $server_gone;
done_testing();
