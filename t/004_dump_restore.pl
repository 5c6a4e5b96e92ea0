# pg_dump and restore keep everything cdp stores: profiles, identifiers,
# events (in their partitions), merges, conflicts, the consent ledger and
# the configuration rows a user added.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'cdp'");
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', q{
CREATE EXTENSION cdp;
INSERT INTO cdp.identifier_mappings VALUES ('{traits,loyalty_id}', 'loyalty_id');
INSERT INTO cdp.identity_rules (kind, priority, max_per_profile) VALUES ('loyalty_id', 2, 1);
SELECT cdp.track('{anonymous_id:c1}', 'Viewed', '{"sku": "A1"}', '2026-01-15');
SELECT cdp.identify('{anonymous_id:c1,user_id:u1}', '{"name": "Ada"}');
SELECT cdp.track('{anonymous_id:c2}', 'Viewed', occurred_at => '2026-02-15');
SELECT cdp.identify('{anonymous_id:c2,user_id:u1}');
SELECT cdp.identify('{user_id:u2,anonymous_id:c1}');
SELECT cdp.ingest('{"type": "identify", "userId": "u3", "traits": {"loyalty_id": "L-1"}, "messageId": "m-1"}');
SELECT cdp.record_consent('user_id:u1', 'analytics', true, 'form', '{"form": "signup"}');
INSERT INTO cdp.purposes (purpose, description, lawful_basis) VALUES ('loyalty', 'Loyalty programme', 'contract');
SELECT cdp.record_consent('user_id:u2', 'loyalty', true, expires_at => now() + interval '1 year');
INSERT INTO cdp.inbox (payload) VALUES ('{"type": "track", "event": "Later", "userId": "u9"}');
});

my $fingerprint = q{
SELECT concat_ws(' | ',
  (SELECT string_agg(profile_id || '=' || identifiers::text || traits::text, ';' ORDER BY profile_id) FROM cdp.profiles),
  (SELECT string_agg(event_id || '@' || profile_id || ':' || event, ';' ORDER BY event_id) FROM cdp.events),
  (SELECT string_agg(profile_id || '<' || merged_profile_id, ';' ORDER BY 1) FROM cdp.merges),
  (SELECT count(*) FROM cdp.identity_conflicts),
  (SELECT string_agg(purpose || granted, ';') FROM cdp.consent_ledger),
  (SELECT string_agg(purpose || granted, ';') FROM cdp.consents WHERE status <> 'missing'),
  (SELECT string_agg(purpose || '=' || slot, ';' ORDER BY slot) FROM cdp.purposes),
  (SELECT string_agg(profile_id || '=' || consent_until::text, ';' ORDER BY profile_id) FROM cdp.profile_data),
  (SELECT count(*) FROM cdp.message_ids),
  (SELECT count(*) FROM cdp.inbox),
  (SELECT string_agg(kind || priority, ';' ORDER BY kind) FROM cdp.identity_rules),
  (SELECT string_agg(kind, ';' ORDER BY kind) FROM cdp.identifier_mappings),
  (SELECT last_value FROM cdp.event_id_seq))};
my $before = $node->safe_psql('src', $fingerprint);

my $dump = $node->basedir . '/src.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('src') ], 'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE dst');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('dst'), $dump ], 'pg_restore');

my $after = $node->safe_psql('dst', $fingerprint);
is($after, $before, 'the restored database holds the same cdp data');

# And it goes on working: ids continue, the custom rule applies.
is($node->safe_psql('dst', q{SELECT cdp.identify('{user_id:u1}') = cdp.profile_of('user_id:u1')}), 't',
	'identity works on the restored data');
is($node->safe_psql('dst', q{SELECT (cdp.process_inbox()->>'accepted')::int}), '1',
	'the restored inbox is processed');
is($node->safe_psql('dst', q{SELECT cdp.restitch()->'rows_written'}), '0',
	'a rebuild of the restored graph finds nothing to change');
is($node->safe_psql('dst', q{
	INSERT INTO cdp.purposes (purpose, description, lawful_basis) VALUES ('later', 'Added after the restore', 'contract')
	RETURNING slot}), '6', 'a purpose added after the restore gets a slot of its own');

$node->stop;
done_testing();
