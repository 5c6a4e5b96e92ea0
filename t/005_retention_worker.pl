# The background worker deletes events past their retention without anyone
# calling cdp.apply_retention(), and reports it in cdp.status().
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

$node->stop;
done_testing();
