# The Prometheus integration of contrib/: the custom queries of
# prometheus-postgres-exporter (contrib/prometheus/microbatch-queries.yaml)
# against a running cluster, and, when Debian's prometheus is installed,
# the alerting rules (contrib/prometheus/microbatch-alerts.yml) over what
# it scrapes.
#
# Three pipelines: "clicks" runs batches, "inverse" fails (a division by
# zero) until it is marked failed, "held" is paused with rows waiting.  Once
# the background workers are idle, the exporter's metrics must equal what
# microbatch.stat_pipelines, microbatch.freshness and microbatch.workers
# show at the same moment, its histograms must be consistent, and it must
# report no error.  Then Prometheus scrapes the exporter: PromQL sees the
# counters and a histogram_quantile, the "pipeline failed" alert fires for
# "inverse" only, every rule evaluates, and every query of the Grafana
# dashboard (contrib/grafana/microbatch-dashboard.json) is valid PromQL;
# promtool checks the rules and runs their unit tests.
#
# Needs /usr/bin/prometheus-postgres-exporter: installed with apt when
# missing and running as root; otherwise the test is skipped, or fails when
# MICROBATCH_REQUIRE_EXPORTER=1.  /usr/bin/prometheus (and promtool) are
# optional; MICROBATCH_REQUIRE_PROMETHEUS=1 makes them required.

use strict;
use warnings;

use File::Spec;
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

use FindBin;
use lib $FindBin::RealBin;
use MicrobatchTest;

my $exporter_bin = $ENV{MICROBATCH_EXPORTER} // '/usr/bin/prometheus-postgres-exporter';
my $prometheus_bin = $ENV{MICROBATCH_PROMETHEUS} // '/usr/bin/prometheus';
my $promtool_bin = $ENV{MICROBATCH_PROMTOOL} // '/usr/bin/promtool';
my $require_exporter = ($ENV{MICROBATCH_REQUIRE_EXPORTER} // '') eq '1';
my $require_prometheus = ($ENV{MICROBATCH_REQUIRE_PROMETHEUS} // '') eq '1';

my $contrib = File::Spec->rel2abs("$FindBin::RealBin/../../contrib/prometheus");
my $queries_file = "$contrib/microbatch-queries.yaml";
my $alerts_file = "$contrib/microbatch-alerts.yml";
my $alerts_test_file = "$contrib/microbatch-alerts.test.yml";

if (!-x $exporter_bin && $> == 0)
{
	note "installing prometheus-postgres-exporter with apt-get";
	local $ENV{DEBIAN_FRONTEND} = 'noninteractive';
	system('apt-get', 'install', '-y', '-q', '--no-install-recommends',
		'prometheus-postgres-exporter');
}
if (!-x $exporter_bin)
{
	my $why = "$exporter_bin not found (apt-get install prometheus-postgres-exporter, as root)";
	if ($require_exporter)
	{
		fail("MICROBATCH_REQUIRE_EXPORTER=1, but $why");
		done_testing();
		exit 1;
	}
	plan skip_all => $why;
}

# Every process this test starts, stopped at the end, on failure too.
my @processes;
END
{
	local $?;
	for my $h (reverse @processes)
	{
		eval { $h->kill_kill(grace => 5) if $h->pumpable; };
	}
}

# Start a command in the background, its output into files of the test's
# log directory.
sub start_process
{
	my ($name, @cmd) = @_;
	my $out = File::Spec->rel2abs("$PostgreSQL::Test::Utils::log_path/023_$name.stdout");
	my $err = File::Spec->rel2abs("$PostgreSQL::Test::Utils::log_path/023_$name.stderr");
	note "starting $name: @cmd";
	my $h = IPC::Run::start(\@cmd, '<', \undef, '>', $out, '2>', $err);
	push @processes, $h;
	return ($h, $out, $err);
}

my $http = HTTP::Tiny->new(timeout => 10);

sub http_get
{
	my ($url) = @_;
	my $res = $http->get($url);
	return $res->{success} ? $res->{content} : undef;
}

# Wait until $url answers 200; its content, or undef after $seconds.
sub wait_http
{
	my ($url, $seconds) = @_;
	my $deadline = time() + $seconds;
	while (1)
	{
		my $content = http_get($url);
		return $content if defined $content;
		return undef if time() > $deadline;
		usleep(200_000);
	}
}

# ---------------------------------------------------------------------------
# The cluster and its pipelines

my $max_retries = 2;
my $node = PostgreSQL::Test::Cluster->new('prometheus');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'microbatch'
microbatch.naptime = '200ms'
microbatch.max_retries = $max_retries
microbatch.max_retry_delay = '1s'
microbatch.max_workers = 3
track_commit_timestamp = on
max_worker_processes = 16
});
$node->start;

my $db = 'postgres';
sub q_ { return $node->safe_psql($db, $_[0]); }

q_(q{
CREATE EXTENSION microbatch;

CREATE TABLE clicks (id int PRIMARY KEY, v int NOT NULL);
CREATE TABLE clicks_gold (batch_id bigint NOT NULL, n bigint NOT NULL, total bigint NOT NULL);
SELECT microbatch.create_pipeline('clicks', 'clicks', '100ms');
SELECT microbatch.add_transform('clicks', 'load', 'gold', $$
    INSERT INTO clicks_gold
    SELECT microbatch.current_batch_id(), count(*), sum(v) FROM microbatch.clicks_batch
$$);

CREATE TABLE readings (id int PRIMARY KEY, v int NOT NULL);
CREATE TABLE readings_gold (id int NOT NULL, inverse numeric NOT NULL);
SELECT microbatch.create_pipeline('inverse', 'readings', '100ms');
SELECT microbatch.add_transform('inverse', 'inverse', 'gold', $$
    INSERT INTO readings_gold SELECT id, 1.0 / v FROM microbatch.inverse_batch
$$);

CREATE TABLE held (id int PRIMARY KEY);
SELECT microbatch.create_pipeline('held', 'held', '100ms');
SELECT microbatch.add_transform('held', 'noop', 'gold', $$SELECT count(*) FROM microbatch.held_batch$$);
SELECT microbatch.pause_pipeline('held');
});

ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.workers
           WHERE kind = 'scheduler' AND database = current_database()},
		'1', 30),
	'the database has a scheduler');

# clicks: 5 transactions of 10 rows, each processed before the next commits
for my $i (1 .. 5)
{
	my ($lo, $hi) = (($i - 1) * 10 + 1, $i * 10);
	q_(qq{INSERT INTO clicks SELECT g, g FROM generate_series($lo, $hi) g});
	ok( poll_until(
			$node, $db, q{SELECT coalesce(sum(n), 0) FROM clicks_gold},
			$hi, 30),
		"clicks: rows 1 to $hi processed");
}

# inverse: a good batch, then a zero that fails it until it is marked failed
q_(q{INSERT INTO readings VALUES (1, 2)});
ok(poll_until($node, $db, q{SELECT count(*) FROM readings_gold}, '1', 30),
	'inverse: the good row is processed');
q_(q{INSERT INTO readings VALUES (2, 0), (3, 4)});
ok( poll_until(
		$node, $db,
		q{SELECT state FROM microbatch.pipelines WHERE pipeline = 'inverse'},
		'failed', 60),
	'inverse: marked failed after repeated failures');

# held: paused, three rows waiting
q_(q{INSERT INTO held VALUES (1), (2), (3)});

ok( poll_until(
		$node, $db,
		q{SELECT count(*) FROM microbatch.workers WHERE state NOT IN ('idle', 'scheduling', 'exited')},
		'0', 30),
	'no batch worker is running a batch');

# ---------------------------------------------------------------------------
# The exporter

# The exporter's role is the one its documentation recommends: pg_monitor,
# with no privilege on the pipelines or their tables (the pipelines belong
# to the superuser)
q_(q{CREATE ROLE prometheus LOGIN IN ROLE pg_monitor});
my $user = 'prometheus';
is( $node->safe_psql($db, q{SELECT count(*) FROM microbatch.batch_progress},
		extra_params => [ '-U', 'prometheus' ]),
	'0', 'the exporter\'s role sees no batch of the pipelines');
my $exporter_port = PostgreSQL::Test::Cluster::get_free_port();
my $dsn = sprintf('host=%s port=%d user=%s dbname=%s sslmode=disable',
	$node->host, $node->port, $user, $db);
my ($exporter, $exporter_out, $exporter_err);
{
	local $ENV{DATA_SOURCE_NAME} = $dsn;
	($exporter, $exporter_out, $exporter_err) = start_process(
		'exporter', $exporter_bin,
		"--web.listen-address=127.0.0.1:$exporter_port",
		"--extend.query-path=$queries_file",
		'--disable-default-metrics',
		'--disable-settings-metrics',
		'--no-collector.database',
		'--no-collector.bgwriter',
		'--log.level=info');
}
my $metrics_url = "http://127.0.0.1:$exporter_port/metrics";
ok(defined wait_http($metrics_url, 30), 'the exporter serves /metrics')
  or diag(slurp_file($exporter_err));

# Parsed exposition text: name => [{labels => {...}, value => v}, ...]
sub parse_metrics
{
	my ($text) = @_;
	my %metrics;
	for my $line (split /\n/, $text)
	{
		next if $line =~ /^#/ || $line !~ /\S/;
		next unless $line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
		my ($name, $labels, $value) = ($1, $2 // '', $3);
		my %labels;
		while ($labels =~ /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)
		{
			$labels{$1} = $2;
		}
		push @{ $metrics{$name} }, { labels => \%labels, value => $value };
	}
	return \%metrics;
}

# The value of the one sample of $name whose labels include %want; undef if
# there is none, or more than one.
sub sample
{
	my ($metrics, $name, %want) = @_;
	my @hits = grep {
		my $l = $_->{labels};
		!grep { !defined $l->{$_} || $l->{$_} ne $want{$_} } keys %want
	} @{ $metrics->{$name} // [] };
	return undef unless @hits == 1;
	return $hits[0]{value};
}

# The views, read as text, before and after a scrape: the scrape is compared
# with them once both readings agree.
my $views_sql = q{
SELECT 'stat', pipeline::text, batches::text, failures::text, rows_in::text,
       rows_written::text, rows_dropped::text, total_time::text,
       array_to_string(duration_bounds, ','), array_to_string(duration_buckets, ','),
       latency_count::text, latency_sum::text, array_to_string(latency_buckets, ',')
  FROM microbatch.stat_pipelines
UNION ALL
SELECT 'fresh', pipeline::text, rows_waiting::text, lag_xids::text, state::text,
       extract(epoch FROM lag)::text, (last_batch_at IS NULL)::text,
       NULL, NULL, NULL, NULL, NULL, NULL
  FROM microbatch.freshness
UNION ALL
SELECT 'workers', kind::text, state::text, count(*)::text,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM microbatch.workers WHERE database = current_database() GROUP BY kind, state
 ORDER BY 1, 2, 3};
# Without the lag, which moves with the clock
sub stable_part
{
	my ($views) = @_;
	return join("\n", map { my @f = split /\|/, $_, -1; $f[5] = '' if $f[0] eq 'fresh'; join('|', @f) }
		split /\n/, $views);
}

my ($metrics, $text, $views);
for my $try (1 .. 20)
{
	my $before = q_($views_sql);
	$text = http_get($metrics_url) // '';
	$views = q_($views_sql);
	$metrics = parse_metrics($text);
	last if stable_part($before) eq stable_part($views);
	note "views changed during the scrape, again";
	usleep(300_000);
}

my (%stat, %fresh, %workers);
for my $row (split /\n/, $views)
{
	my @f = split /\|/, $row, -1;
	my $kind = shift @f;
	if ($kind eq 'stat')
	{
		my %r;
		@r{qw(pipeline batches failures rows_in rows_written rows_dropped total_time
			  duration_bounds duration_buckets latency_count latency_sum latency_buckets)} = @f;
		$stat{ $r{pipeline} } = \%r;
	}
	elsif ($kind eq 'fresh')
	{
		my %r;
		@r{qw(pipeline rows_waiting lag_xids state lag never)} = @f;
		$fresh{ $r{pipeline} } = \%r;
	}
	else
	{
		$workers{"$f[0]|$f[1]"} = $f[2];
	}
}
note "views:\n$views";

is(sample($metrics, 'pg_up'), '1', 'pg_up is 1');
is(sample($metrics, 'pg_exporter_last_scrape_error'), '0', 'no scrape error');
is(sample($metrics, 'pg_exporter_user_queries_load_error', filename => $queries_file),
	'0', 'the queries file loaded');
unlike($text, qr/Unknown metric from microbatch/,
	'every column of the queries is described in the file');

is_deeply([ sort keys %stat ], [qw(clicks inverse)],
	'stat_pipelines has the two pipelines that ran batches');
is_deeply([ sort keys %fresh ], [qw(clicks held inverse)],
	'freshness has the three pipelines');
cmp_ok($stat{clicks}{batches}, '>=', 5, 'clicks committed at least 5 batches');
is($stat{clicks}{rows_in}, 50, 'clicks read 50 rows');
cmp_ok($stat{inverse}{failures}, '>=', $max_retries,
	"inverse failed at least max_retries ($max_retries) times");

my %same = (datname => $db);
for my $p (sort keys %stat)
{
	my $s = $stat{$p};
	for my $c (qw(batches failures rows_in rows_written rows_dropped))
	{
		is(sample($metrics, "microbatch_pipeline_${c}_total", %same, pipeline => $p),
			$s->{$c}, "$p: microbatch_pipeline_${c}_total equals stat_pipelines.$c");
	}

	# The duration histogram: the view's buckets, +Inf = _count = batches + failures
	my $h = 'microbatch_pipeline_batch_duration_seconds';
	my @bounds = split /,/, $s->{duration_bounds};
	my @counts = split /,/, $s->{duration_buckets};
	my @got = map { sample($metrics, "${h}_bucket", %same, pipeline => $p, le => $_) // 'missing' }
	  @bounds;
	is(join(',', @got), join(',', @counts), "$p: ${h}_bucket equals duration_buckets");
	my $attempts = $s->{batches} + $s->{failures};
	is(sample($metrics, "${h}_bucket", %same, pipeline => $p, le => '+Inf'),
		$attempts, "$p: ${h}_bucket{le=\"+Inf\"} = batches + failures");
	is(sample($metrics, "${h}_count", %same, pipeline => $p),
		$attempts, "$p: ${h}_count = batches + failures");
	ok(abs(sample($metrics, "${h}_sum", %same, pipeline => $p) - $s->{total_time} / 1000) < 1e-6,
		"$p: ${h}_sum = total_time in seconds");
	my @sorted = sort { $a <=> $b } @got;
	is("@got", "@sorted", "$p: duration buckets are cumulative");
	cmp_ok($got[-1], '<=', $attempts, "$p: the last finite bucket is at most the count");

	# The latency histogram: +Inf = _count = latency_count
	$h = 'microbatch_pipeline_latency_seconds';
	is(sample($metrics, "${h}_bucket", %same, pipeline => $p, le => '+Inf'),
		$s->{latency_count}, "$p: ${h}_bucket{le=\"+Inf\"} = latency_count");
	is(sample($metrics, "${h}_count", %same, pipeline => $p),
		$s->{latency_count}, "$p: ${h}_count = latency_count");
	ok(abs(sample($metrics, "${h}_sum", %same, pipeline => $p) - $s->{latency_sum}) < 1e-6,
		"$p: ${h}_sum = latency_sum");
	my @latency_buckets = split /,/, $s->{latency_buckets};
	is(scalar(grep { $_->{labels}{pipeline} eq $p } @{ $metrics->{"${h}_bucket"} // [] }),
		scalar(@latency_buckets) + 1,
		"$p: one latency bucket per bound, and +Inf");
}
is($stat{clicks}{latency_count}, $stat{clicks}{batches},
	'with track_commit_timestamp on, every committed batch of clicks has a latency');

for my $p (sort keys %fresh)
{
	my $f = $fresh{$p};
	is(sample($metrics, 'microbatch_pipeline_rows_waiting', %same, pipeline => $p),
		$f->{rows_waiting}, "$p: microbatch_pipeline_rows_waiting equals freshness.rows_waiting");
	is(sample($metrics, 'microbatch_pipeline_lag_xids', %same, pipeline => $p),
		$f->{lag_xids}, "$p: microbatch_pipeline_lag_xids equals freshness.lag_xids");
	for my $state (qw(enabled paused failed))
	{
		is(sample($metrics, "microbatch_pipeline_state_$state", %same, pipeline => $p),
			$f->{state} eq $state ? '1' : '0',
			"$p: microbatch_pipeline_state_$state matches state $f->{state}");
	}
	my $lag = sample($metrics, 'microbatch_pipeline_lag_seconds', %same, pipeline => $p);
	ok(defined $lag && $lag ne 'NaN' && abs($lag - $f->{lag}) < 5,
		"$p: microbatch_pipeline_lag_seconds ($lag) is freshness.lag ($f->{lag}), give or take");
	my $age = sample($metrics, 'microbatch_pipeline_last_batch_age_seconds', %same, pipeline => $p);
	if ($f->{never} eq 'true')
	{
		is($age, 'NaN', "$p: no batch yet, microbatch_pipeline_last_batch_age_seconds is NaN");
	}
	else
	{
		ok(defined $age && $age ne 'NaN' && $age >= 0,
			"$p: microbatch_pipeline_last_batch_age_seconds is an age ($age)");
	}
}
is($fresh{clicks}{rows_waiting}, '0', 'clicks: nothing waits');
is(sample($metrics, 'microbatch_pipeline_lag_seconds', %same, pipeline => 'clicks'),
	'0', 'clicks: lag 0');
is($fresh{inverse}{rows_waiting}, '2', 'inverse: the two rows of the failed batch wait');
is($fresh{held}{rows_waiting}, '3', 'held: three rows wait');
cmp_ok(sample($metrics, 'microbatch_pipeline_lag_seconds', %same, pipeline => 'held'),
	'>', 0, 'held: a lag');
cmp_ok(sample($metrics, 'microbatch_pipeline_consecutive_failures', %same, pipeline => 'inverse'),
	'>=', $max_retries, 'inverse: consecutive failures');
is(sample($metrics, 'microbatch_pipeline_consecutive_failures', %same, pipeline => 'clicks'),
	'0', 'clicks: no consecutive failure');

is(sample($metrics, 'microbatch_workers_schedulers', %same), '1', 'one scheduler');
is(sample($metrics, 'microbatch_workers_max', %same), '3', 'microbatch_workers_max is microbatch.max_workers');
is(sample($metrics, 'microbatch_workers_busy', %same), '0', 'no busy worker');
is(sample($metrics, 'microbatch_workers_idle', %same), $workers{'batch worker|idle'} // 0,
	'idle workers as in microbatch.workers');
for my $m (qw(starting cluster_busy cluster_workers))
{
	ok(defined sample($metrics, "microbatch_workers_$m", %same), "microbatch_workers_$m is there");
}
is(sample($metrics, 'microbatch_workers_cluster_busy', %same), '0', 'no busy worker in the cluster');

# ---------------------------------------------------------------------------
# Prometheus, its queries and the alerting rules

SKIP:
{
	if (!-x $prometheus_bin || !-x $promtool_bin)
	{
		fail("MICROBATCH_REQUIRE_PROMETHEUS=1, but $prometheus_bin or $promtool_bin is missing")
		  if $require_prometheus;
		skip "$prometheus_bin or $promtool_bin not installed (apt-get install prometheus)", 1;
	}

	my ($ok, $out, $err);
	$ok = IPC::Run::run([ $promtool_bin, 'check', 'rules', $alerts_file ], '>', \$out, '2>', \$err);
	ok($ok, 'promtool check rules accepts the alerting rules') or diag("$out\n$err");
	$ok = IPC::Run::run([ $promtool_bin, 'test', 'rules', $alerts_test_file ], '>', \$out, '2>', \$err);
	ok($ok, 'promtool test rules passes the unit tests of the rules') or diag("$out\n$err");

	# The rules, with every "for:" at 0s so that alerts fire at once
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $rules = slurp_file($alerts_file);
	my $n = ($rules =~ s/^(\s*)for:\s*\S+/${1}for: 0s/mg);
	cmp_ok($n, '>=', 1, "rules with their for: set to 0s ($n)");
	open my $fh, '>', "$dir/rules.yml" or die $!;
	print $fh $rules;
	close $fh;

	my $prom_port = PostgreSQL::Test::Cluster::get_free_port();
	open $fh, '>', "$dir/prometheus.yml" or die $!;
	print $fh <<"EOC";
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $dir/rules.yml
scrape_configs:
  - job_name: microbatch
    static_configs:
      - targets: ['127.0.0.1:$exporter_port']
EOC
	close $fh;

	my ($prom, $prom_out, $prom_err) = start_process(
		'prometheus', $prometheus_bin,
		"--config.file=$dir/prometheus.yml",
		"--storage.tsdb.path=$dir/data",
		"--web.listen-address=127.0.0.1:$prom_port",
		'--log.level=warn');
	my $api = "http://127.0.0.1:$prom_port";
	ok(defined wait_http("$api/-/ready", 60), 'prometheus is ready')
	  or diag(slurp_file($prom_err));

	# A PromQL instant query: its result vector, [] on error
	my $promql = sub {
		my ($query) = @_;
		my $content = http_get("$api/api/v1/query?" . $http->www_form_urlencode({ query => $query }));
		return [] unless defined $content;
		my $res = eval { decode_json($content) };
		return [] unless $res && $res->{status} eq 'success';
		return $res->{data}{result};
	};
	# Wait until $query returns something; its result
	my $promql_wait = sub {
		my ($query, $seconds) = @_;
		my $deadline = time() + $seconds;
		while (1)
		{
			my $r = $promql->($query);
			return $r if @$r || time() > $deadline;
			usleep(250_000);
		}
	};

	my $r = $promql_wait->(qq{microbatch_pipeline_batches_total{pipeline="clicks"}}, 60);
	is(scalar(@$r), 1, 'PromQL: one series for the batches of clicks');
	my $batches_now = q_(q{SELECT batches FROM microbatch.stat_pipelines WHERE pipeline = 'clicks'});
	is($r->[0]{value}[1], $batches_now, 'PromQL: microbatch_pipeline_batches_total of clicks equals the view')
	  if @$r;
	is($r->[0]{metric}{datname}, $db, 'the series has the datname label') if @$r;

	$r = $promql_wait->(
		q{histogram_quantile(0.99, sum by (le) (microbatch_pipeline_batch_duration_seconds_bucket{pipeline="clicks"}))},
		30);
	my $p99 = @$r ? $r->[0]{value}[1] : 'none';
	ok($p99 =~ /^[0-9.e+-]+$/ && $p99 > 0 && $p99 <= 60,
		"PromQL: histogram_quantile of the batch durations of clicks is a duration ($p99 s)");

	$r = $promql_wait->(q{microbatch_pipeline_state_failed == 1}, 30);
	is(join(',', map { $_->{metric}{pipeline} } @$r), 'inverse', 'PromQL: inverse is the failed pipeline');

	# The alert fires for inverse, and for no other pipeline
	my @failed_alerts;
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		my $content = http_get("$api/api/v1/alerts");
		my $res = defined $content ? eval { decode_json($content) } : undef;
		@failed_alerts = grep { $_->{labels}{alertname} eq 'MicrobatchPipelineFailed' }
		  @{ $res ? $res->{data}{alerts} : [] };
		last if grep { $_->{state} eq 'firing' } @failed_alerts;
		usleep(250_000);
	}
	is( join(',', map { "$_->{labels}{pipeline}:$_->{state}" } @failed_alerts),
		'inverse:firing',
		'the MicrobatchPipelineFailed alert fires for inverse only');
	if (@failed_alerts)
	{
		is($failed_alerts[0]{labels}{datname}, $db, 'the alert names the database');
		is($failed_alerts[0]{labels}{severity}, 'critical', 'the alert is critical');
		like($failed_alerts[0]{annotations}{description},
			qr/resume_pipeline\('inverse'\)/, 'the alert says how to resume');
	}

	# The queries of the Grafana dashboard, its variables replaced: all valid
	# PromQL, and those of the instant panels (the stats and the state table)
	# return something
	# (after a few scrapes: increase() and rate() need two samples)
	$promql_wait->(q{count_over_time(microbatch_pipeline_batches_total{pipeline="clicks"}[1m]) >= 3}, 30);
	my $dashboard = decode_json(slurp_file(
		File::Spec->rel2abs("$FindBin::RealBin/../../contrib/grafana/microbatch-dashboard.json")));
	my (@bad, @empty, $nqueries);
	for my $panel (@{ $dashboard->{panels} })
	{
		for my $t (@{ $panel->{targets} // [] })
		{
			my $expr = $t->{expr};
			$expr =~ s/\$__rate_interval/5s/g;
			$expr =~ s/\$(instance|datname|pipeline)\b/.*/g;
			$nqueries++;
			my $content = http_get("$api/api/v1/query?" . $http->www_form_urlencode({ query => $expr }));
			my $res = defined $content ? eval { decode_json($content) } : undef;
			if (!$res || $res->{status} ne 'success')
			{
				push @bad, "$panel->{title}: $t->{expr}";
			}
			elsif ($t->{instant} && !@{ $res->{data}{result} })
			{
				push @empty, "$panel->{title}: $t->{expr}";
			}
		}
	}
	cmp_ok($nqueries, '>=', 20, "the dashboard has queries ($nqueries)");
	is(join("\n", @bad), '', 'every query of the dashboard is valid PromQL');
	is(join("\n", @empty), '', 'every instant query of the dashboard returns data');

	# Every rule evaluated without error
	my $content = http_get("$api/api/v1/rules") // '{}';
	my $res = eval { decode_json($content) } // {};
	my @rules = map { @{ $_->{rules} } } @{ $res->{data}{groups} // [] };
	is(scalar(@rules), scalar(() = $rules =~ /^\s*- alert:/mg), 'prometheus loaded every rule');
	is(join(',', map { "$_->{name}: $_->{lastError}" } grep { ($_->{health} // '') ne 'ok' } @rules),
		'', 'every rule evaluates without error');

	$prom->kill_kill(grace => 5);
	unlike(slurp_file($prom_err), qr/level=error/, 'prometheus logged no error');
}

# ---------------------------------------------------------------------------
# The exporter's log, once it is stopped

$exporter->kill_kill(grace => 5);
my $exporter_log = slurp_file($exporter_err) . slurp_file($exporter_out);
note "exporter log:\n$exporter_log";
unlike($exporter_log, qr/level=error/, 'the exporter logged no error');
unlike($exporter_log, qr/err=.*microbatch|Missing column|Unparseable|Error running query/,
	'the exporter logged no error about the microbatch queries');

$node->stop;

done_testing();
