# cdp without shared_preload_libraries: the extension installs and its
# types work, but functions that need the shared state refuse with SQLSTATE
# 55000 and say how to fix it.  With the library preloaded they answer.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('plain');
$node->init;
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION cdp');
is($node->safe_psql('postgres', q{SELECT 'email: Jane@Example.COM'::cdp.identifier}),
	'email:jane@example.com', 'the type works without preloading');

my ($rc, $stdout, $stderr) = $node->psql('postgres',
	q{\set VERBOSITY verbose
SELECT cdp.status()});
isnt($rc, 0, 'cdp.status() fails without preloading');
like($stderr, qr/ERROR:  55000: cdp\.status\(\) requires cdp to be loaded via shared_preload_libraries/,
	'SQLSTATE 55000 names the function and the cause');
like($stderr, qr/HINT:  Add cdp to shared_preload_libraries/, 'the hint says how to fix it');

$node->append_conf('postgresql.conf', "shared_preload_libraries = 'cdp'");
$node->restart;
like($node->safe_psql('postgres', q{SELECT cdp.status()->>'library_version'}),
	qr/^\d+\.\d+\.\d+$/, 'cdp.status() answers once preloaded');
is($node->safe_psql('postgres', q{SELECT cdp.status()->>'library_version' = extversion FROM pg_extension WHERE extname = 'cdp'}),
	't', 'the library and the installed extension have the same version');

$node->stop;
done_testing();
