# DROP DATABASE, ALTER DATABASE ... RENAME and CREATE DATABASE ... TEMPLATE
# need a database nobody is connected to, so microbatch's utility hook asks
# its scheduler and workers in that database to leave first.  It must do so
# only for a statement that PostgreSQL would let through: otherwise any role
# could stop another database's pipelines at will, just by trying.  So each
# refused attempt below must fail with PostgreSQL's own error and leave the
# processes of x alone (the same pids, in microbatch.workers and in
# pg_stat_activity), attempt after attempt, while x's pipeline goes on; and
# the permitted statements must still work, the processes leaving in time.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $attempts = 10;

my $node = PostgreSQL::Test::Cluster->new('database_rights');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '1s'
max_worker_processes = 16
});
$node->start;

# xowner owns x, without CREATEDB for now; mallory is any other role;
# creator may create databases, but x is not its own.  The pipeline is the
# superuser's.
$node->safe_psql('postgres', q{
	CREATE ROLE xowner LOGIN NOCREATEDB;
	CREATE ROLE mallory LOGIN NOCREATEDB;
	CREATE ROLE creator LOGIN CREATEDB;
	CREATE DATABASE x OWNER xowner;
});
$node->safe_psql('x', q{
	CREATE EXTENSION microbatch;
	CREATE TABLE src (id int);
	CREATE TABLE dst (batch_id bigint, id int);
	SELECT microbatch.create_pipeline('p', 'src', '100 ms');
	SELECT microbatch.add_transform('p', 'copy', 'bronze',
		'INSERT INTO dst SELECT microbatch.current_batch_id(), id FROM microbatch.p_batch');
});

my $next_id = 0;

# A row into x's pipeline, processed by the workers: true if within $bound s.
# This also keeps the worker busy enough not to leave after an idle minute.
sub row_processed
{
	my ($db, $bound, $what) = @_;
	$next_id++;
	$node->safe_psql($db, "INSERT INTO src VALUES ($next_id)");
	return poll_until($node, $db, "SELECT count(*) FROM dst WHERE id = $next_id",
		'1', $bound, $what);
}

# microbatch's processes in database $db, as microbatch.workers and
# pg_stat_activity see them: "kind:pid" for each, in both.
sub processes
{
	my ($db) = @_;
	return $node->safe_psql($db, qq{
		SELECT string_agg(w.kind || ':' || w.pid, ',' ORDER BY w.kind, w.pid)
		  FROM microbatch.workers w
		  JOIN pg_stat_activity a
		    ON a.pid = w.pid AND a.datname = w.database
		   AND a.backend_type = 'microbatch ' || CASE w.kind WHEN 'scheduler' THEN 'scheduler' ELSE 'worker' END
		 WHERE w.database = '$db'});
}

ok(row_processed('x', 30, 'the first row'), 'x: the pipeline runs');
ok(poll_until($node, 'x', q{
	SELECT count(*) FROM microbatch.workers
	 WHERE database = 'x' AND kind = 'batch worker' AND state = 'idle'}, '1', 10),
	'x: a worker is connected');
my $before = processes('x');
like($before, qr/^batch worker:\d+,scheduler:\d+$/,
	'x: one scheduler and one batch worker, in both views');

# Each refused statement: [role, database to connect to, SQL, error].
my @refused = (
	[ 'mallory', 'postgres', 'DROP DATABASE x', qr/must be owner of database x/ ],
	[ 'mallory', 'postgres', 'DROP DATABASE IF EXISTS x WITH (FORCE)', qr/must be owner of database x/ ],
	[ 'mallory', 'postgres', 'ALTER DATABASE x RENAME TO y', qr/must be owner of database x/ ],
	[ 'xowner', 'postgres', 'ALTER DATABASE x RENAME TO y', qr/permission denied to rename database/ ],
	[ 'mallory', 'postgres', 'CREATE DATABASE z TEMPLATE x', qr/permission denied to create database/ ],
	[ 'creator', 'postgres', 'CREATE DATABASE z TEMPLATE x', qr/permission denied to copy database "x"/ ],
	# Refused whoever asks, the superuser too.
	[ 'postgres', 'postgres', "BEGIN;\nDROP DATABASE x;",
	  qr/DROP DATABASE cannot run inside a transaction block/ ],
	[ 'postgres', 'postgres', "BEGIN;\nCREATE DATABASE z TEMPLATE x;",
	  qr/CREATE DATABASE cannot run inside a transaction block/ ],
	[ 'postgres', 'postgres', 'SELECT 1 \; DROP DATABASE x',
	  qr/DROP DATABASE cannot run inside a transaction block/ ],
	[ 'postgres', 'x', 'DROP DATABASE x', qr/cannot drop the currently open database/ ],
	[ 'postgres', 'x', 'ALTER DATABASE x RENAME TO y', qr/current database cannot be renamed/ ],
	[ 'postgres', 'postgres', 'ALTER DATABASE x RENAME TO postgres',
	  qr/database "postgres" already exists/ ],
	[ 'postgres', 'postgres', 'CREATE DATABASE postgres TEMPLATE x',
	  qr/database "postgres" already exists/ ],);

my %error_ok;
my %kept;
for my $attempt (1 .. $attempts)
{
	for my $r (@refused)
	{
		my ($role, $db, $sql, $error) = @$r;
		my ($ret, $out, $err) = $node->psql($db, $sql,
			extra_params => [ '-U', $role ]);
		my $what = "$role: $sql";
		$what =~ s/\n/ /g;
		$error_ok{$what} //= 1;
		if ($ret == 0 || $err !~ $error)
		{
			diag("attempt $attempt of [$what]: exit $ret, stderr: $err");
			$error_ok{$what} = 0;
		}
		# At the first attempts and the last, look whether the processes
		# are still the same (one that was asked to leave takes a moment to
		# go).  A statement that made them leave once need not show it
		# again.
		$kept{$what} //= 1;
		if (($attempt <= 2 || $attempt == $attempts) && $kept{$what})
		{
			usleep(200_000);
			my $now = processes('x');
			if ($now ne $before)
			{
				diag("attempt $attempt of [$what]: processes were $before, now $now");
				$kept{$what} = 0;
				# the next attempts compare with the new ones
				$before = poll_until($node, 'x', q{
					SELECT count(*) FROM microbatch.workers WHERE database = 'x' AND kind = 'scheduler'},
					'1', 15) ? processes('x') : '';
			}
		}
	}
	ok(row_processed('x', 10, "a row after attempt round $attempt"),
		"attempt round $attempt: x's pipeline still processes rows");
}
for my $r (@refused)
{
	my $what = "$r->[0]: $r->[2]";
	$what =~ s/\n/ /g;
	ok($error_ok{$what}, "refused with PostgreSQL's error, $attempts times: $what");
	ok($kept{$what}, "x's scheduler and worker stayed: $what");
}
# Nothing refused made it through.
is($node->safe_psql('postgres', q{
	SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database
	 WHERE datname IN ('x', 'y', 'z')}),
	'x', 'x is still there under its name, and no copy was made');
is(processes('x'), $before, 'x: the same processes at the end');
is($node->safe_psql('x', q{SELECT count(*) || '|' || count(DISTINCT id) FROM dst}),
	"$next_id|$next_id", "x: each row processed once");

###########################################################################
# Permitted statements still work, though workers are connected.
###########################################################################
$node->safe_psql('postgres', 'ALTER ROLE xowner CREATEDB');

# A copy of x by its owner: x's processes leave for the copy, and come back.
ok(row_processed('x', 10, 'a row before the copy'), 'copy: x has a worker connected');
my ($ret, $out, $err) = $node->psql('postgres', 'CREATE DATABASE z TEMPLATE x',
	extra_params => [ '-U', 'xowner' ]);
is($ret, 0, 'copy: CREATE DATABASE z TEMPLATE x by its owner works')
  or diag($err);
ok(row_processed('x', 20, 'a row after the copy'), "copy: x's pipeline runs again");
$node->safe_psql('postgres', 'DROP DATABASE IF EXISTS z');

# PostgreSQL lets a session copy the database it is connected to, if no
# other session is: microbatch's processes must leave for that too.
($ret, $out, $err) = $node->psql('x', 'CREATE DATABASE z TEMPLATE x',
	extra_params => [ '-U', 'xowner' ]);
is($ret, 0, 'copy: CREATE DATABASE z TEMPLATE x by its owner, connected to x, works')
  or diag($err);
ok(row_processed('x', 20, 'a row after the second copy'), "copy: x's pipeline runs again");
$node->safe_psql('postgres', 'DROP DATABASE IF EXISTS z');

# A rename by the owner: the pipelines run again under the new name.
ok(row_processed('x', 10, 'a row before the rename'), 'rename: x has a worker connected');
($ret, $out, $err) = $node->psql('postgres', 'ALTER DATABASE x RENAME TO y',
	extra_params => [ '-U', 'xowner' ]);
is($ret, 0, 'rename: ALTER DATABASE x RENAME TO y by its owner with CREATEDB works')
  or diag($err);
my $db = $ret == 0 ? 'y' : 'x';
ok(poll_until($node, $db, qq{
	SELECT count(*) FROM microbatch.workers WHERE database = '$db' AND kind = 'scheduler'},
	'1', 20), 'rename: a scheduler runs in y');
ok(row_processed($db, 20, 'a row after the rename'), 'rename: the pipeline runs under the new name');

# ALTER DATABASE ... RENAME may run in a transaction block, unlike the
# other two: still permitted there.
($ret, $out, $err) = $node->psql('postgres', "BEGIN;\nALTER DATABASE $db RENAME TO y2;\nCOMMIT;",
	extra_params => [ '-U', 'xowner', '-v', 'ON_ERROR_STOP=1' ]);
is($ret, 0, 'rename: permitted in a transaction block too')
  or diag($err);
$db = 'y2' if $ret == 0;
ok(row_processed($db, 20, 'a row after the second rename'), "rename: the pipeline runs in $db");

# A drop by the owner, while a worker is connected: they leave in time.
is($node->safe_psql('postgres', qq{
	SELECT count(*) > 0 FROM pg_stat_activity
	 WHERE datname = '$db' AND backend_type = 'microbatch worker'}),
	't', 'drop: a worker is connected');
my $dboid = $node->safe_psql('postgres', "SELECT oid FROM pg_database WHERE datname = '$db'");
my $start = time();
($ret, $out, $err) = $node->psql('postgres', "DROP DATABASE $db",
	extra_params => [ '-U', 'xowner' ]);
is($ret, 0, sprintf('drop: DROP DATABASE by its owner works (%.1f s)', time() - $start))
  or diag($err);
sleep(2);
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM pg_stat_activity
	 WHERE datid = $dboid OR backend_type IN ('microbatch scheduler', 'microbatch worker')
	   AND datname IS NULL}),
	'0', 'drop: nothing of ours is left in it');

unlike(
	slurp_file($node->logfile),
	qr/was terminated by signal|terminating any other active server processes|PANIC:/,
	'no server process crashed');

$node->stop;
done_testing();
