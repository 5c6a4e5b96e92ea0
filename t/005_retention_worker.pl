# The background worker deletes events past their retention without anyone
# calling cdp.apply_retention(), and reports it in cdp.status(); the same
# pass creates the coming months' event partitions.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('retention');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'cdp'
cdp.retention_naptime = '1h'
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION cdp;
SELECT cdp.identify('{user_id:r1}', '{}', now() - interval '5 years');
SELECT cdp.track('{user_id:r1}', 'Page Viewed', '{}', now() - interval '200 days');
SELECT cdp.track('{user_id:r1}', 'Page Viewed', '{}', now() - interval '1 day');
SELECT cdp.set_retention('Page Viewed', '90 days');
});
is($node->safe_psql('postgres', q{SELECT count(*) FROM cdp.events WHERE event = 'Page Viewed'}), '2',
	'two page views stored, one past its retention');

# The pass runs hourly; make it due within seconds.
$node->safe_psql('postgres', q{ALTER SYSTEM SET cdp.retention_naptime = '1s'; SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM cdp.events WHERE event = 'Page Viewed'}),
	'the worker deleted the expired page view');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cdp.events WHERE event = 'identify'}), '1',
	'identity evidence without a rule of its own is kept');
ok($node->poll_query_until('postgres',
		q{SELECT (cdp.status()->'workers'->0->>'retention_deleted')::int >= 1}),
	'cdp.status() counts the deleted events');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM generate_series(1, 2) k
	 WHERE to_regclass('cdp.event_data_' || to_char(date_trunc('month', now() AT TIME ZONE 'UTC')
	                                                 + make_interval(months => k), 'YYYY_MM')) IS NOT NULL}),
	'2', 'the same pass created the next two months\' event partitions ahead of ingestion');


# A long reader of events holds cdp.event_data: creating a partition would
# make it (and everyone after it) wait, so the call gives up on that month
# after lock_timeout, says so, and the next call creates it.
# (The worker back at its hourly pace first, so that it does not create the
# partition itself in between; a pass already due runs within the sleep.)
$node->safe_psql('postgres', q{ALTER SYSTEM SET cdp.retention_naptime = '1h'; SELECT pg_reload_conf()});
sleep 3;
my $next = q{'cdp.event_data_' || to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month', 'YYYY_MM')};
$node->safe_psql('postgres', qq{DO \$\$ BEGIN EXECUTE format('DROP TABLE %s', $next); END \$\$});
my $reader = $node->background_psql('postgres');
$reader->query_safe('BEGIN; SELECT count(*) FROM cdp.events;');
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT cdp.create_event_partitions(1)});
is($out, '0', 'with events in use, nothing is created');
like($err, qr/WARNING:  cdp: the event partition for \d{4}-\d\d was not created: cdp.event_data is in use/,
	'and it says which month and why');
$reader->query_safe('COMMIT;');
$reader->quit;
is($node->safe_psql('postgres', q{SELECT cdp.create_event_partitions(1)}), '1', 'the next call creates it');

# A library newer than the installed SQL (0.1.0, before ALTER EXTENSION
# UPDATE): the pass skips what the old install does not have and still
# applies retention.
$node->safe_psql('postgres', q{CREATE DATABASE old});
$node->safe_psql('old', q{
CREATE EXTENSION cdp VERSION '0.1.0';
SELECT cdp.track('{user_id:o1}', 'Page Viewed', '{}', now() - interval '200 days');
SELECT cdp.set_retention('Page Viewed', '90 days');
});
$node->safe_psql('postgres', q{ALTER SYSTEM SET cdp.database = 'old'; ALTER SYSTEM SET cdp.retention_naptime = '1s'});
my $log_offset = -s $node->logfile;
$node->restart;
ok($node->poll_query_until('old', q{SELECT count(*) = 0 FROM cdp.events WHERE event = 'Page Viewed'}),
	'with the 0.1.0 install, the worker still applies retention');
ok(!$node->log_contains(qr/create_event_partitions|cdp worker: retention pass/, $log_offset),
	'without failing its pass on what 0.1.0 lacks');

$node->stop;
done_testing();
