-- Data-subject rights (export, erasure, suppression) and retention.
SET search_path = public, cdp;
TRUNCATE cdp.journal, cdp.identity_data, cdp.profile_data, cdp.trait_data, cdp.event_data, cdp.merges,
         cdp.identity_conflicts, cdp.message_ids, cdp.consent_state, cdp.erasures, cdp.suppressed_identifiers;
SELECT setval('cdp.event_id_seq', 1, false);

-- Grace: a cookie, then a login, an order, a newsletter opt-in; Ben shares
-- nothing with her but tried her email once on his own account (refused).
SELECT cdp.track('{anonymous_id:grace-laptop}', 'Product Viewed', '{"sku": "A1"}', '2026-03-01');
SELECT cdp.identify('{anonymous_id:grace-laptop,user_id:grace,email:grace@example.org}',
                    '{"first_name": "Grace", "city": "Berlin"}', '2026-03-02');
SELECT cdp.track('{user_id:grace}', 'Order Completed', '{"revenue": 99.5}', '2026-03-03', 'web', 'order-1');
SELECT cdp.record_consent('email:grace@example.org', 'email_marketing', true, 'newsletter form', '{"form": "footer"}');
SELECT cdp.identify('{user_id:ben,email:ben@example.com}', '{"first_name": "Ben"}', '2026-03-04');
SELECT cdp.track('{user_id:ben,email:grace@example.org}', 'Clicked', '{}', '2026-03-05');   -- Grace's email refused on Ben
SELECT profile_id, identifiers FROM cdp.profiles ORDER BY profile_id;

-- 1. Export (Art. 15/20): everything about the person, from any of her identifiers.
SELECT x->'found' AS found, x->'profile'->'traits' AS traits,
       (SELECT array_agg(i->>'identifier' ORDER BY i->>'identifier') FROM jsonb_array_elements(x->'profile'->'identifiers') i) AS identifiers,
       (SELECT array_agg(e->>'event' ORDER BY e->>'occurred_at') FROM jsonb_array_elements(x->'events') e) AS events,
       (SELECT array_agg((l->>'purpose') || ' ' || (l->>'granted') || ' via ' || (l->>'source') || ' ' || (l->'proof')::text)
          FROM jsonb_array_elements(x->'consent_ledger') l) AS ledger,
       x->'consents'->'email_marketing'->>'status' AS email_marketing,
       jsonb_array_length(x->'profile'->'merges') AS merges
  FROM cdp.export_subject('anonymous_id:grace-laptop') x;
SELECT array(SELECT jsonb_object_keys(cdp.export_subject('user_id:grace')) ORDER BY 1) AS export_keys;
SELECT cdp.export_subject('email:nobody@example.com') - 'exported_at';

-- 2. Erasure (Art. 17): nothing left but the record.
SELECT cdp.erase_subject('user_id:grace', NULL);
SELECT cdp.erase_subject('user_id:grace', 'Art. 17 request, ticket 4711');
SELECT profile_id, identifiers FROM cdp.profiles ORDER BY profile_id;
SELECT reason, cardinality(identifier_hashes) AS hashes,
       identifier_hashes @> ARRAY[encode(sha256('email:grace@example.org'::bytea), 'hex')] AS has_email_hash
  FROM cdp.erasures;
-- Nowhere in cdp's tables does her data remain (her identifiers, her traits).
SELECT c.relname, count(*) AS rows_mentioning_grace
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
       LATERAL (SELECT (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM cdp.%I t WHERE t::text ~* ''grace''', c.relname), false, true, '')))[1]::text::int AS n) q
 WHERE n.nspname = 'cdp' AND c.relkind IN ('r', 'p') AND q.n > 0
 GROUP BY c.relname ORDER BY 1;
SELECT event_id, profile_id, event, identifiers FROM cdp.events ORDER BY event_id;
-- No decision is left on a profile row (Grace's went with hers), none out of step.
SELECT count(*) FILTER (WHERE consent_until <> '{}') AS rows_with_decisions,
       count(*) FILTER (WHERE consent_until IS DISTINCT FROM cdp._consent_until(profile_id)) AS out_of_step
  FROM cdp.profile_data;

-- 3. Suppression: her identifiers stay out until cdp.unsuppress().
SELECT cdp.identify('{email:Grace@Example.org}');
SELECT cdp.ingest('{"type": "track", "event": "Viewed", "anonymousId": "new-cookie", "context": {"traits": {"email": "grace@example.org"}}}')
       - 'new_profiles' - 'merges';
SELECT identifiers FROM cdp.events WHERE event = 'Viewed';
SELECT reason, identifier, detail FROM cdp.identity_conflicts WHERE reason = 'suppressed';
SELECT cdp.record_consent('email:grace@example.org', 'analytics', true);
SELECT cdp.unsuppress('email:grace@example.org') AS unsuppressed, cdp.unsuppress('email:grace@example.org') AS again;
SELECT cdp.identify('{email:grace@example.org}') > 0 AS welcome_back;
-- Erasing someone unknown still keeps them out.
SELECT cdp.erase_subject('phone:+4930999999', 'request received before any data') - 'erasure_id';
SELECT cdp.track('{phone:030 999999}', 'Called');

-- 4. Only admins exercise these rights.
CREATE ROLE cdp_test_rights_writer IN ROLE cdp_writer;
SET ROLE cdp_test_rights_writer;
SELECT cdp.export_subject('user_id:ben');
SELECT cdp.erase_subject('user_id:ben', 'no');
RESET ROLE;
DROP ROLE cdp_test_rights_writer;

-- 5. Retention: per event name, a default from the purposes, identity evidence kept.
TRUNCATE cdp.journal, cdp.identity_data, cdp.profile_data, cdp.trait_data, cdp.event_data, cdp.merges, cdp.identity_conflicts, cdp.message_ids;
SELECT cdp.identify('{user_id:r1}', '{"tier": "gold"}', now() - interval '5 years');
SELECT cdp.track('{user_id:r1}', 'Page Viewed', '{}', now() - interval '100 days', message_id => 'r-old');
SELECT cdp.track('{user_id:r1}', 'Page Viewed', '{}', now() - interval '10 days', message_id => 'r-new');
SELECT cdp.track('{user_id:r1}', 'Order Completed', '{}', now() - interval '4 years');
SELECT cdp.track('{user_id:r1}', 'Order Completed', '{}', now() - interval '2 years');
SELECT cdp.set_retention('Page Viewed', '90 days');
SELECT cdp.set_retention('Page Viewed', '-1 day');
SELECT event, keep FROM cdp.retention;
SELECT max(retention) AS default_retention FROM cdp.purposes;
SELECT cdp.apply_retention() - 'applied_at' - 'default_keep';
SELECT event, now() - occurred_at > interval '1 year' AS older_than_a_year FROM cdp.events ORDER BY occurred_at;
-- The deleted events' message ids went with them; the kept one's stays.
SELECT message_id FROM cdp.message_ids ORDER BY 1;
SELECT cdp.set_retention('Page Viewed', NULL);
SELECT count(*) AS rules FROM cdp.retention;
