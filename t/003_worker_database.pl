# cdp.database names a database that does not exist (yet): the worker says
# so once and waits, instead of failing at every restart; once the database
# is there it connects and ingests.  Dropping it WITH (FORCE) under the
# worker brings it back to waiting.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dbwait');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'cdp'
cdp.database = 'shop'
cdp.inbox_naptime = '100ms'
});
$node->start;

# cdp.status() from the postgres database, where the worker does not run.
$node->safe_psql('postgres', 'CREATE EXTENSION cdp');

sub log_count
{
	my ($re) = @_;
	my $n = () = slurp_file($node->logfile) =~ /$re/g;
	return $n;
}

my $missing = qr/FATAL:  database "shop" does not exist/;
my $waiting = qr/LOG:  cdp worker: database "shop" does not exist or does not accept connections; waiting/;

$node->wait_for_log($waiting);
ok( $node->poll_query_until(
		'postgres', q{SELECT (w->>'passes')::int >= 5 AND w->>'database' = 'shop'
	  AND w->>'last_error' LIKE 'database "shop" does not exist%'
	  FROM (SELECT cdp.status()->'workers'->0) x(w)}),
	'the worker waits for its database and says so in cdp.status()');
is(log_count($missing), 1, 'the failed connection is logged once');
is(log_count($waiting), 1, 'so is the waiting');

$node->safe_psql('postgres', 'CREATE DATABASE shop');
$node->safe_psql('shop', 'CREATE EXTENSION cdp');
$node->safe_psql('shop',
	"INSERT INTO cdp.inbox (payload) VALUES ('{\"type\":\"track\",\"event\":\"Opened\",\"userId\":\"s1\"}')");
ok( $node->poll_query_until(
		'shop', q{SELECT NOT EXISTS (SELECT FROM cdp.inbox) AND EXISTS (SELECT FROM cdp.events WHERE event = 'Opened')}),
	'once the database exists the worker connects and ingests');
is( $node->safe_psql('shop', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'cdp worker' AND datname = 'shop'}),
	'1', 'it is connected to it');

$node->safe_psql('postgres', 'DROP DATABASE shop WITH (FORCE)');
$node->wait_for_log(qr/(?s)$waiting.*$waiting/);
ok( $node->poll_query_until(
		'postgres', q{SELECT (cdp.status()->'workers'->0->>'passes')::int >= 5}),
	'after DROP DATABASE WITH (FORCE) the worker waits again');
is(log_count($missing), 2, 'again with one failed connection in the log');

$node->stop;
done_testing();
