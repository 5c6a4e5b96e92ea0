# The background worker keeps audiences current without anyone calling
# cdp.refresh_audiences(): woken by the commit of new events, and on its
# naptime for time windows that expire.  A rule that fails at run time does
# not stop the others; SIGHUP applies a new naptime; after the worker is
# killed (and after a crash of the whole server) it is started again and
# catches up, losing nothing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = PostgreSQL::Test::Cluster->new('audience');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'cdp'
cdp.audience_naptime = '1h'
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION cdp;
SELECT cdp.create_trait('orders', 'count', 'Order Completed');
SELECT cdp.create_trait('flash', 'count', 'Flash', NULL, '3 seconds');
SELECT cdp.create_audience('buyers', 'orders >= 2');
SELECT cdp.create_audience('flash_buyers', 'flash > 0');
SELECT cdp.create_audience('fragile', $$(traits->>'age')::int > 30$$);
});

sub members
{
	my ($audience) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT coalesce(string_agg(cdp.identifier_value(i.identifier), ' ' ORDER BY 1), '')
		  FROM cdp.audience_members m JOIN cdp.identity_data i ON i.profile_id = m.profile_id
		 WHERE m.audience = '$audience'});
}

# Woken at commit: the naptime is an hour, the change takes well under one.
my $t0 = time;
$node->safe_psql('postgres', q{
SELECT cdp.track('{user_id:ann}', 'Order Completed');
SELECT cdp.track('{user_id:ann}', 'Order Completed');
SELECT cdp.identify('{user_id:dee}', '{"age": "thirty"}');
});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM cdp.audience_members WHERE audience = 'buyers'}),
	'the worker brought the audience current after the commit');
cmp_ok(time - $t0, '<', 30, 'without waiting for its naptime');
is(members('buyers'), 'ann', 'ann is a buyer');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cdp.journal}), '0', 'the journal is drained');
like($node->safe_psql('postgres', q{SELECT error FROM cdp.audiences WHERE name = 'fragile'}),
	qr/invalid input syntax for type integer/, 'the failing rule is marked with its error');
is($node->safe_psql('postgres', q{SELECT (cdp.status()->'workers'->0->>'audience_profiles')::int > 0}), 't',
	'cdp.status() counts the profiles the worker evaluated');

# A window expires on the naptime: make it short (SIGHUP).
$node->safe_psql('postgres', q{ALTER SYSTEM SET cdp.audience_naptime = '500ms'; SELECT pg_reload_conf()});
$node->safe_psql('postgres', q{SELECT cdp.track('{user_id:bob}', 'Flash')});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM cdp.audience_members WHERE audience = 'flash_buyers'}),
	'bob entered the flash audience');
ok($node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM cdp.audience_members WHERE audience = 'flash_buyers'}),
	'and left it when the 3-second window passed, by the worker alone');
is($node->safe_psql('postgres',
		q{SELECT string_agg(change || ':' || reason, ' ' ORDER BY change_id) FROM cdp.audience_changes WHERE audience = 'flash_buyers'}),
	'entered:rule exited:window', 'the exit is logged with its reason');

# Kill the worker: the postmaster starts it again and it catches up.
my $pid = $node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'cdp worker'});
$node->safe_psql('postgres', q{ALTER SYSTEM SET cdp.audience_naptime = '1h'; SELECT pg_reload_conf()});
kill 'KILL', $pid;
# A background worker killed by a signal makes the postmaster reinitialise.
$node->poll_query_until('postgres', 'SELECT 1', '1');
$node->safe_psql('postgres', q{SELECT cdp.track('{user_id:cy}', 'Order Completed'); SELECT cdp.track('{user_id:cy}', 'Order Completed')});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM cdp.audience_members WHERE audience = 'buyers'}),
	'after the crash restart the worker caught up');
is(members('buyers'), 'ann cy', 'cy is a buyer');

# Stop the server hard while work waits in the journal: nothing is lost.
$node->safe_psql('postgres', q{ALTER SYSTEM SET cdp.database = 'nowhere'});
$node->restart;
$node->safe_psql('postgres', q{SELECT cdp.track('{user_id:eve}', 'Order Completed'); SELECT cdp.track('{user_id:eve}', 'Order Completed')});
is($node->safe_psql('postgres', q{SELECT count(*) > 0 FROM cdp.journal}), 't', 'the change waits in the journal');
$node->stop('immediate');
$node->start;
$node->safe_psql('postgres', q{ALTER SYSTEM RESET cdp.database});
$node->restart;
ok($node->poll_query_until('postgres', q{SELECT count(*) = 3 FROM cdp.audience_members WHERE audience = 'buyers'}),
	'after an immediate shutdown and restart the journal was processed');

# SIGTERM: the worker exits cleanly with the server.
$node->stop('fast');
my $log = slurp_file($node->logfile);
unlike($log, qr/cdp worker.*(PANIC|terminated by signal 11)/, 'no crash of the worker in the log');
done_testing();
