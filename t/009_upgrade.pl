# Upgrades: every released version (src/sql/releases/cdp--X.sql, frozen at
# its tag), updated with ALTER EXTENSION cdp UPDATE through the scripts in
# src/sql/updates/, must end with exactly the objects of a fresh install of
# the current version: same tables and columns, functions (with their
# bodies, settings and privileges), views, indexes, constraints, triggers
# and comments.  Also: every object of the extension is documented with
# COMMENT ON.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'cdp'\ncdp.database = 'nowhere'\n");
$node->start;

# Everything that makes up the extension, one line per object.
my $describe = q{
WITH members AS (
  SELECT d.classid, d.objid, d.objsubid FROM pg_depend d
   WHERE d.refclassid = 'pg_extension'::regclass
     AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'cdp') AND d.deptype = 'e')
SELECT line FROM (
  SELECT pg_describe_object(classid, objid, objsubid) || ' -- ' || coalesce(obj_description(objid, classid::regclass::name), '') AS line
    FROM members
  UNION ALL
  SELECT 'function ' || p.oid::regprocedure || ': ' || pg_get_functiondef(p.oid) || ' acl ' || coalesce(p.proacl::text, '')
    FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid WHERE p.prokind <> 'a'
  UNION ALL
  SELECT 'column ' || a.attrelid::regclass || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
         || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END || ' storage ' || a.attstorage::text || ' default ' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '')
         || ' -- ' || coalesce(col_description(a.attrelid, a.attnum), '')
    FROM members m JOIN pg_attribute a ON m.classid = 'pg_class'::regclass AND a.attrelid = m.objid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
   WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'relation ' || c.oid::regclass || ' ' || c.relkind::text || ' acl ' || coalesce(c.relacl::text, '')
         || coalesce(' view ' || pg_get_viewdef(c.oid), '')
    FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
  UNION ALL
  SELECT 'index ' || pg_get_indexdef(i.indexrelid)
    FROM members m JOIN pg_index i ON m.classid = 'pg_class'::regclass AND i.indrelid = m.objid
  UNION ALL
  SELECT 'constraint ' || co.conrelid::regclass || ' ' || co.conname || ' ' || pg_get_constraintdef(co.oid)
    FROM members m JOIN pg_constraint co ON m.classid = 'pg_class'::regclass AND co.conrelid = m.objid
  UNION ALL
  SELECT 'trigger ' || pg_get_triggerdef(t.oid)
    FROM members m JOIN pg_trigger t ON m.classid = 'pg_class'::regclass AND t.tgrelid = m.objid AND NOT t.tgisinternal
) s ORDER BY line};

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION cdp');
my $fresh = $node->safe_psql('fresh', $describe);
my $current = $node->safe_psql('fresh', q{SELECT extversion FROM pg_extension WHERE extname = 'cdp'});
ok(length($fresh) > 0, "a fresh install of $current describes itself");

# Documented: every table, view, function and type of the extension has a comment.
is($node->safe_psql('fresh', q{
	SELECT coalesce(string_agg(pg_describe_object(d.classid, d.objid, 0), ', ' ORDER BY pg_describe_object(d.classid, d.objid, 0)), '')
	  FROM pg_depend d
	 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
	   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'cdp')
	   AND d.classid IN ('pg_class'::regclass, 'pg_proc'::regclass, 'pg_type'::regclass)
	   AND obj_description(d.objid, d.classid::regclass::name) IS NULL
	   AND NOT (d.classid = 'pg_class'::regclass
	            AND (SELECT relkind FROM pg_class WHERE oid = d.objid) IN ('S', 'i'))
	   AND NOT (d.classid = 'pg_type'::regclass
	            AND (SELECT typtype = 'c' OR typelem <> 0 FROM pg_type WHERE oid = d.objid))}),
	'', 'every table, view, function and type has COMMENT ON');

$node->safe_psql('postgres', 'CREATE ROLE upgrade_analyst IN ROLE cdp_analyst');

my @releases = sort map { m{cdp--([0-9.]+)\.sql$} ? $1 : () } glob("$ENV{TESTDIR}/src/sql/releases/cdp--*.sql");
note(@releases ? "releases: @releases" : "no earlier release: nothing to update from yet");
for my $v (@releases)
{
	next if $v eq $current;
	my $db = "from_" . ($v =~ s/\./_/gr);
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION cdp VERSION '$v'");
	# What an installation holds: decisions, a purpose of its own (added
	# before a shipped one was changed, so it is not last on disk).
	$node->safe_psql($db, q{
		INSERT INTO cdp.purposes (purpose, description, lawful_basis) VALUES ('loyalty', 'Loyalty programme', 'contract');
		UPDATE cdp.purposes SET retention = '12 months' WHERE purpose = 'analytics';
		SELECT cdp.record_consent('email:up1@example.com', 'analytics', true);
		SELECT cdp.record_consent('email:up1@example.com', 'loyalty', true, expires_at => now() + interval '1 day');
		SELECT cdp.record_consent('email:up2@example.com', 'analytics', false);
		SELECT cdp.record_consent('email:up3@example.com', 'loyalty', true);
	});
	# Computed traits of every shape, with state kept by the old layout.
	$node->safe_psql($db, q{
		SELECT cdp.create_trait('up_orders', 'count', 'Order');
		SELECT cdp.create_trait('up_orders_30d', 'count', 'Order', NULL, '30 days');
		SELECT cdp.create_trait('up_revenue', 'sum', 'Order', 'revenue');
		SELECT cdp.create_trait('up_avg', 'avg', 'Order', 'revenue');
		SELECT cdp.create_trait('up_min', 'min', 'Order', 'revenue');
		SELECT cdp.create_trait('up_max_30d', 'max', 'Order', 'revenue', '30 days');
		SELECT cdp.create_trait('up_first_sku', 'first', 'Order', 'sku');
		SELECT cdp.create_trait('up_last_sku', 'last', 'Order', 'sku');
		SELECT cdp.create_trait('up_skus', 'count_distinct', 'Order', 'sku');
		SELECT cdp.track(ARRAY[cdp.identifier('email', 'up' || (g % 3 + 1) || '@example.com')], 'Order',
		                 jsonb_build_object('revenue', g * 10.5, 'sku', 'S' || (g % 4)), now() - g * interval '9 days')
		  FROM generate_series(1, 12) g;
		SELECT cdp.refresh_audiences();
	});
	my $values = q{SELECT string_agg(v.profile_id || ' ' || v.vals::text || ' ' || coalesce(v.next_due::text, '-'), E'\n'
	                                 ORDER BY v.profile_id) FROM cdp.computed_trait_values v};
	my $old_values = $node->safe_psql($db, $values);
	$node->safe_psql($db, 'ALTER EXTENSION cdp UPDATE');
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'cdp'}), $current,
		"$v updates to $current");
	# The computed-trait state was converted, not recomputed: the values it
	# yields are the old ones, and new events fold into it.
	like($old_values, qr/up_skus/, "$v: the old install computed trait values");
	$node->safe_psql($db, q{SELECT cdp._trait_update(ARRAY(SELECT profile_id FROM cdp.profile_data), now(), tombstones => false)});
	is($node->safe_psql($db, $values), $old_values, "$v updated: the converted trait state yields the same values");
	is($node->safe_psql($db, q{
		SELECT count(*) FROM cdp.computed_trait_values WHERE state IS NOT NULL AND cdp._trait_state_json(state) IS NOT NULL}),
		'3', "$v updated: every profile with traits has its state in one row");
	$node->safe_psql($db, q{
		SELECT cdp.track(ARRAY[cdp.identifier('email', 'up1@example.com')], 'Order', '{"revenue": 1, "sku": "S9"}');
		SELECT cdp.refresh_audiences();
	});
	is($node->safe_psql($db, q{
		SELECT (vals->>'up_orders') || ',' || (vals->>'up_skus') || ',' || (vals->>'up_min') FROM cdp.computed_trait_values
		 WHERE profile_id = cdp.profile_of(cdp.identifier('email', 'up1@example.com'))}),
		'5,5,1', "$v updated: a new event folds into the converted state");
	my $incremental = $node->safe_psql($db, $values);
	$node->safe_psql($db, 'SELECT cdp.rebuild_traits()');
	is($node->safe_psql($db, $values), $incremental, "$v updated: rebuilding from events gives the same values");
	# (dropped again: their columns would make cdp.profile_traits differ below)
	$node->safe_psql($db, q{SELECT cdp.drop_trait(name) FROM cdp.computed_traits WHERE name LIKE 'up\_%'});
	is($node->safe_psql($db, q{SELECT count(*) FROM cdp.computed_trait_values WHERE vals <> '{}' OR state IS NOT NULL}),
		'0', "$v updated: dropped traits leave no values and no state");

	my $updated = $node->safe_psql($db, $describe);
	is($updated, $fresh, "$v updated to $current has exactly the objects of a fresh install");

	# The data carried over: purposes get the slots a fresh install gives,
	# the decisions in force are on the profile rows, and an analyst reads
	# exactly the profiles with consent.
	is($node->safe_psql($db, q{SELECT string_agg(purpose || '=' || slot, ',' ORDER BY slot) FROM cdp.purposes}),
		'analytics=1,personalization=2,email_marketing=3,advertising=4,loyalty=5',
		"$v updated: the shipped purposes have their fresh-install slots, added ones follow");
	is($node->safe_psql($db, q{
		SELECT count(*) FROM cdp.profile_data WHERE consent_until IS DISTINCT FROM cdp._consent_until(profile_id)}),
		'0', "$v updated: every profile row carries its decisions");
	for my $purpose ('analytics', 'loyalty', 'advertising')
	{
		is($node->safe_psql($db, qq{
			SET ROLE upgrade_analyst; SET cdp.purpose = '$purpose';
			SELECT coalesce(string_agg(profile_id::text, ',' ORDER BY profile_id), '') FROM cdp.profiles}),
			$node->safe_psql($db, qq{
				SELECT coalesce(string_agg(profile_id::text, ',' ORDER BY profile_id), '') FROM cdp.consents
				 WHERE purpose = '$purpose' AND granted}),
			"$v updated: an analyst reading for $purpose sees the profiles with consent");
	}
	is($node->safe_psql($db, q{
		INSERT INTO cdp.purposes (purpose, description, lawful_basis) VALUES ('later', 'Added after the update', 'contract')
		RETURNING slot}), '6', "$v updated: a purpose added later gets the next slot");
}

$node->stop;
done_testing();
