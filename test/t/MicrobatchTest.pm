# Helpers shared by the TAP tests in this directory.
#
# The background-worker tests wait for the workers by polling a query with a
# timeout of their own.  PostgreSQL::Test::Cluster's poll_query_until() does
# not do: its timeout is the global PG_TEST_TIMEOUT_DEFAULT (180 s), while
# some of these waits are assertions about how soon something happens, and
# it always treats query errors as "not yet".
#
# prove runs from the top directory with only that directory in @INC, so a
# test loads this module with
#
#	use FindBin;
#	use lib $FindBin::RealBin;
#	use MicrobatchTest;

package MicrobatchTest;

use strict;
use warnings;

use Exporter 'import';
use Test::More;
use Time::HiRes qw(usleep time);

our @EXPORT = qw(poll_until poll_until_tolerant);

# poll_until($node, $db, $sql, $expected, $seconds [, $what])
#
# Run $sql in $db with safe_psql until it prints $expected; true if it did
# within $seconds.  A failing query dies, as with safe_psql.  On timeout,
# diag() shows $what (default: the query) and the last output.
sub poll_until
{
	my ($node, $db, $sql, $expected, $seconds, $what) = @_;
	return _poll($node, $db, $sql, $expected, $seconds, $what, 0);
}

# poll_until_tolerant($node, $db, $sql, $expected, $seconds [, $what])
#
# The same, but a failing query counts as "not yet": for waits across a
# restart or crash recovery, when connections are refused for a while.
sub poll_until_tolerant
{
	my ($node, $db, $sql, $expected, $seconds, $what) = @_;
	return _poll($node, $db, $sql, $expected, $seconds, $what, 1);
}

# The loop behind both.  The query runs at least once, and once more after
# the deadline has passed, so a wait never fails without looking at the
# state after its last sleep.
sub _poll
{
	my ($node, $db, $sql, $expected, $seconds, $what, $tolerant) = @_;
	my $deadline = time() + $seconds;
	my ($out, $err) = ('', '');

	while (1)
	{
		if ($tolerant)
		{
			my $ret;
			($ret, $out, $err) = $node->psql($db, $sql);
			return 1 if $ret == 0 && $out eq $expected;
		}
		else
		{
			$out = $node->safe_psql($db, $sql);
			return 1 if $out eq $expected;
		}
		last if time() > $deadline;
		usleep(100_000);
	}

	$what //= "[$sql]";
	diag("timed out after ${seconds}s waiting for $what\n"
		  . "query: $sql\nexpected: $expected\nlast output: $out"
		  . ($tolerant ? "\nlast stderr: $err" : ''));
	return 0;
}

1;
