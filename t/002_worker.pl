# The cdp background worker: it waits quietly until cdp is installed in
# cdp.database, ingests cdp.inbox, is woken by a commit long before its
# naptime, applies a configuration reload, comes back after being terminated
# and after a crash, and loses no inbox message on the way.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('worker');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'cdp'
cdp.database = 'postgres'
cdp.inbox_naptime = '100ms'
restart_after_crash = on
});
$node->start;

# cdp.status() is a function of the extension: read it from a second
# database, so that cdp can be missing from the worker's.
$node->safe_psql('postgres', 'CREATE DATABASE probe');
$node->safe_psql('probe', 'CREATE EXTENSION cdp');

sub worker
{
	my ($field) = @_;
	return $node->safe_psql('probe', "SELECT cdp.status()->'workers'->0->>'$field'");
}

sub log_count
{
	my ($re) = @_;
	my $log = slurp_file($node->logfile);
	my $n = () = $log =~ /$re/g;
	return $n;
}

# COPY NDJSON lines into cdp.inbox the way the documentation says.
sub copy_inbox
{
	my (@lines) = @_;
	$node->safe_psql('postgres',
		    "COPY cdp.inbox (payload) FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02');\n"
		  . join("\n", @lines)
		  . "\n\\.\n");
}

sub track
{
	my ($user, $event) = @_;
	return qq({"type":"track","event":"$event","userId":"$user","properties":{"revenue":10}});
}

my $inbox_drained = q{SELECT NOT EXISTS (SELECT FROM cdp.inbox)};

# (a) cdp not installed where the worker runs: it keeps looking, logs that
# once, and never raises an error.
ok($node->poll_query_until('probe', q{SELECT (cdp.status()->'workers'->0->>'passes')::int >= 5}),
	'the worker keeps looking while cdp is not installed');
like(worker('last_error'), qr/^extension cdp is not installed in database "postgres"$/,
	'cdp.status() says what it waits for');
my $waiting = qr/LOG:  cdp worker: extension cdp is not installed in database "postgres"; waiting/;
is(log_count($waiting), 1, 'the waiting line is logged once');
is(log_count(qr/ERROR:/), 0, 'waiting is not an error');
ok( $node->poll_query_until(
		'probe', q{SELECT cdp.status()->'dispatcher'->>'last_error' = 'extension cdp is not installed in database "postgres"'}),
	'cdp.status() says what the dispatcher waits for too');

# (g) how the worker shows itself.
my $pid = worker('pid');
like($pid, qr/^\d+$/, 'cdp.status() reports the worker pid');
is( $node->safe_psql(
		'postgres', qq{SELECT backend_type || '|' || application_name || '|' || datname
	  FROM pg_stat_activity WHERE pid = $pid}),
	'cdp worker|cdp worker|postgres',
	'pg_stat_activity shows the worker in cdp.database');
is( $node->safe_psql(
		'probe', q{SELECT jsonb_array_length(s->'workers') || '|' || (w ?& ARRAY['name', 'pid', 'database', 'started_at',
	  'last_pass_at', 'passes', 'inbox_processed', 'inbox_naptime_ms', 'inbox_batch_size', 'last_error'])
	  || '|' || (w->>'name') || '|' || (w->>'database') || '|' || (w->>'inbox_naptime_ms')
	  || '|' || (w->>'inbox_batch_size')
	  FROM cdp.status() s, LATERAL (SELECT s->'workers'->0) x(w)}),
	'1|true|cdp worker|postgres|100|5000',
	'cdp.status() describes the worker and its settings');

# (b) once cdp is installed, COPY into the inbox is ingested; a malformed
# line is set aside.
$node->safe_psql('postgres', 'CREATE EXTENSION cdp');
copy_inbox(track('u1', 'Order Completed'),
	'{"type":"identify","userId":"u2","traits":{"email":"u2@example.com"}}',
	'this is not json');
ok( $node->poll_query_until(
		'postgres', q{SELECT (SELECT count(*) FROM cdp.inbox) = 0
	  AND (SELECT count(*) FROM cdp.events) = 2 AND (SELECT count(*) FROM cdp.inbox_rejects) = 1}),
	'the worker ingests the inbox and sets the malformed line aside');
is( $node->safe_psql('postgres', q{SELECT payload || '|' || (error LIKE 'invalid JSON%') FROM cdp.inbox_rejects}),
	'this is not json|true', 'the reject keeps the line and says why');
is($node->safe_psql('postgres', q{SELECT cdp.status()->'workers'->0->>'inbox_processed'}),
	'3', 'cdp.status() counts the processed messages');
is($node->safe_psql('postgres', q{SELECT cdp.status()->'workers'->0->'last_error'}),
	'null', 'no error once cdp is installed');
ok($node->poll_query_until('postgres', q{SELECT cdp.status()->'dispatcher'->'last_error' = 'null'}),
	'nor for the dispatcher');
is(log_count(qr/cdp worker: extension cdp is installed in database "postgres"; processing/),
	1, 'the log says when the worker found cdp');

# (c, d) A naptime of 10 minutes, applied by a reload: a commit still wakes
# the worker at once.
$node->safe_psql('postgres', q{ALTER SYSTEM SET cdp.inbox_naptime = '10min'});
$node->safe_psql('postgres', q{SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres', q{SELECT cdp.status()->'workers'->0->>'inbox_naptime_ms' = '600000'}),
	'the worker applies a reloaded setting');
ok($node->wait_for_log(qr/cdp worker: configuration reloaded\n.*DETAIL:  cdp\.inbox_naptime = 600000 ms/),
	'and logs it');
{
	# Within 60 s, well under the naptime, so only the wakeup can explain it.
	# The first message may be taken by the pass that follows the reload;
	# the second can only be found by a wakeup.
	local $PostgreSQL::Test::Utils::timeout_default = 60;
	copy_inbox(track('u3', 'Viewed'));
	ok($node->poll_query_until('postgres', $inbox_drained), 'first message after the reload is ingested');
	copy_inbox(track('u3', 'Clicked'));
	ok($node->poll_query_until('postgres', $inbox_drained),
		'a commit wakes the worker long before its naptime');
}
is($node->safe_psql('postgres', q{SELECT count(*) FROM cdp.events WHERE event IN ('Viewed', 'Clicked')}),
	'2', 'both messages became events');

# (e) pg_terminate_backend: the postmaster starts a new worker, which goes on.
$pid = worker('pid');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok( $node->poll_query_until(
		'probe', qq{SELECT cdp.status()->'workers'->0->>'pid' IS DISTINCT FROM '$pid'
	  AND cdp.status()->'workers'->0->>'pid' IS NOT NULL}),
	'a terminated worker is restarted');
ok($node->log_contains(qr/terminating background worker "cdp worker" due to administrator command/),
	'the termination is in the log');
copy_inbox(track('u4', 'Returned'));
ok($node->poll_query_until('postgres', $inbox_drained), 'the new worker ingests');

# (f) kill -9 in the middle of a pass: the postmaster restarts everything and
# the messages the dead pass had taken are ingested exactly once.  A lock on
# cdp.inbox_rejects holds the pass after it has written the events.
$pid = worker('pid');
my $locker = $node->background_psql('postgres', on_error_stop => 0);
$locker->query_safe('BEGIN; LOCK TABLE cdp.inbox_rejects IN ACCESS EXCLUSIVE MODE;');
my $truncated = '{"type":"track"';
copy_inbox(track('u5', 'Crashed'), $truncated);
ok( $node->poll_query_until(
		'postgres', qq{SELECT wait_event_type = 'Lock' AND query LIKE 'SELECT cdp.process_inbox(%'
	  FROM pg_stat_activity WHERE pid = $pid}),
	'the pass is stuck on the lock, mid-transaction');
kill 'KILL', $pid or die "could not kill the worker: $!";
ok( $node->poll_query_until(
		'probe', qq{SELECT cdp.status()->'workers'->0->>'pid' IS DISTINCT FROM '$pid'
	  AND cdp.status()->'workers'->0->>'pid' IS NOT NULL}),
	'after the crash the worker is back');
eval { $locker->quit; };
ok($node->log_contains(qr/background worker "cdp worker" \(PID $pid\) was terminated by signal 9/),
	'the postmaster saw the crash');
ok($node->poll_query_until('postgres', $inbox_drained), 'the inbox is drained after the restart');
is( $node->safe_psql(
		'postgres', qq{SELECT (SELECT count(*) FROM cdp.events WHERE event = 'Crashed')
	  || '|' || (SELECT count(*) FROM cdp.inbox_rejects WHERE payload = '$truncated')}),
	'1|1', 'nothing the killed pass had taken is lost or doubled');

# The extension dropped and created again under a running worker.
$node->safe_psql('postgres', q{ALTER SYSTEM RESET cdp.inbox_naptime});
$node->safe_psql('postgres', q{SELECT pg_reload_conf()});
ok($node->poll_query_until('probe', q{SELECT cdp.status()->'workers'->0->>'inbox_naptime_ms' = '100'}),
	'the naptime is back to 100 ms');

# A pass that fails is rolled back and retried; the same error every naptime
# is logged once, and the recovery is logged too.
$pid = worker('pid');
my $passes = worker('passes');
$node->safe_psql('postgres', 'ALTER FUNCTION cdp.process_inbox(integer) RENAME TO process_inbox_away');
ok( $node->poll_query_until(
		'probe', qq{SELECT (w->>'passes')::int >= $passes + 5
	  AND w->>'last_error' = 'inbox pass: function cdp.process_inbox(integer) does not exist'
	  FROM (SELECT cdp.status()->'workers'->0) x(w)}),
	'a failing pass is retried and cdp.status() shows its error');
is(log_count(qr/ERROR:  function cdp\.process_inbox\(integer\) does not exist/), 1,
	'the same error is logged once');
ok($node->log_contains(qr/CONTEXT:  cdp worker inbox pass/),
	'the log says which pass failed');
$node->safe_psql('postgres', 'ALTER FUNCTION cdp.process_inbox_away(integer) RENAME TO process_inbox');
copy_inbox(track('u7', 'Recovered'));
ok($node->poll_query_until('postgres', $inbox_drained), 'it ingests again once the function is back');
is(worker('last_error'), '', 'the error is cleared');
ok($node->log_contains(qr/cdp worker: inbox pass succeeded again/), 'the recovery is logged');

# An error in the middle of a pass (here a cancelled lock wait) rolls it back
# without losing anything, and the same process carries on.
$locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE cdp.inbox_rejects IN ACCESS EXCLUSIVE MODE;');
copy_inbox(track('u8', 'Cancelled'), 'not json either');
ok( $node->poll_query_until(
		'postgres', qq{SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $pid}),
	'the pass waits on the lock');
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
ok($node->poll_query_until('probe', q{SELECT cdp.status()->'workers'->0->>'last_error' LIKE '%canceling statement%'}),
	'the cancelled pass is reported');
$locker->query_safe('COMMIT;');
$locker->quit;
ok( $node->poll_query_until(
		'postgres', q{SELECT NOT EXISTS (SELECT FROM cdp.inbox)
	  AND (SELECT count(*) FROM cdp.events WHERE event = 'Cancelled') = 1
	  AND EXISTS (SELECT FROM cdp.inbox_rejects WHERE payload = 'not json either')}),
	'the retried pass ingests everything once');
is(worker('pid'), $pid, 'in the same worker process');

$node->safe_psql('postgres', 'DROP EXTENSION cdp');
ok( $node->poll_query_until(
		'probe', q{SELECT cdp.status()->'workers'->0->>'last_error' LIKE 'extension cdp is not installed%'}),
	'after DROP EXTENSION the worker waits again');
$node->safe_psql('postgres', 'CREATE EXTENSION cdp');
copy_inbox(track('u6', 'Again'));
ok( $node->poll_query_until(
		'postgres', q{SELECT NOT EXISTS (SELECT FROM cdp.inbox) AND EXISTS (SELECT FROM cdp.events WHERE event = 'Again')}),
	'and ingests once it is created again');
is(log_count($waiting), 2, 'the second wait is logged once too');
is(log_count(qr/cdp worker: extension cdp is installed in database/), 2,
	'each time the log says when it found cdp');

$node->stop;
done_testing();
