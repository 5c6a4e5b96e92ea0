-- Identity stitching: ingestion, merge rules, audit, split, restitch.
SET search_path = public, cdp;

-- Start from an empty graph with predictable ids (a profile id is the id of
-- the event that created it).
CREATE FUNCTION pg_temp.reset() RETURNS void LANGUAGE sql AS $$
  TRUNCATE cdp.journal, cdp.identity_data, cdp.profile_data, cdp.trait_data, cdp.event_data, cdp.merges,
           cdp.identity_conflicts, cdp.message_ids, cdp.inbox, cdp.inbox_rejects;
  SELECT setval('cdp.event_id_seq', 1, false);
  SELECT setval('cdp.inbox_inbox_id_seq', 1, false);
$$;
SELECT pg_temp.reset();

-- A compact view of the graph.
CREATE FUNCTION pg_temp.graph() RETURNS TABLE (profile_id bigint, identifiers text, events bigint, traits jsonb)
LANGUAGE sql AS $$
  SELECT p.profile_id, p.identifiers::text,
         (SELECT count(*) FROM cdp.events e WHERE e.profile_id = p.profile_id), p.traits
    FROM cdp.profiles p ORDER BY p.profile_id
$$;

-- The defaults.
SELECT kind, priority, max_per_profile, blocked_values, blocked_pattern FROM cdp.identity_rules ORDER BY priority;
SELECT path, kind FROM cdp.identifier_mappings ORDER BY path;

-- 1. Priority demotion (user_id allows one per profile): Jane's email cannot
-- glue a second user id onto her profile; the email is dropped from the
-- second message, which gets its own profile, and the conflict is recorded.
SELECT cdp.identify('{user_id:abc123,email:jane@example.com}');
SELECT cdp.identify('{user_id:abc456,email:JANE@example.com}');
SELECT * FROM pg_temp.graph();
SELECT event_id, profile_id, identifier, reason, detail FROM cdp.identity_conflicts ORDER BY conflict_id;

-- 2. Anonymous history merges on login: a cookie browses, then logs in.
SELECT pg_temp.reset();
SELECT cdp.track('{anonymous_id:cookie-1}', 'Product Viewed', '{"sku": "A1"}');
SELECT cdp.track('{anonymous_id:cookie-1}', 'Product Added', '{"sku": "A1"}');
SELECT cdp.identify('{anonymous_id:cookie-1,user_id:u1}', '{"first_name": "Ada"}');
-- A second browser, anonymous at first, then the same login: two profiles merge
-- into the older one; the newer becomes a tombstone that still resolves.
SELECT cdp.track('{anonymous_id:cookie-2}', 'Product Viewed', '{"sku": "B2"}');
SELECT * FROM pg_temp.graph();
SELECT cdp.identify('{anonymous_id:cookie-2,user_id:u1}');
SELECT * FROM pg_temp.graph();
SELECT profile_id, merged_profile_id, event_id, cause FROM cdp.merges;
SELECT cdp.resolve(4) AS tombstone_resolves_to, cdp.resolve(1) AS live, cdp.resolve(999) AS unknown;
SELECT cdp.profile_of('anonymous_id:cookie-2') AS cookie_2, cdp.profile_of('user_id:nobody') AS unknown;
-- All history is the survivor's in every view.
SELECT event_id, profile_id, event, properties FROM cdp.events ORDER BY event_id;
SELECT identifier, profile_id FROM cdp.profile_identifiers ORDER BY identifier;
SELECT jsonb_pretty(cdp.profile(4) - 'created_at' - 'updated_at' #- '{merges,0,merged_at}'
                    #- '{identifiers,0,first_seen}' #- '{identifiers,0,last_seen}'
                    #- '{identifiers,1,first_seen}' #- '{identifiers,1,last_seen}'
                    #- '{identifiers,2,first_seen}' #- '{identifiers,2,last_seen}');

-- 3. A shared family tablet seen with two user ids: two customers, not one.
SELECT pg_temp.reset();
SELECT cdp.track('{device_id:6D92078A-8246-4BA4-AE5B-76104861E7DC,user_id:mum}', 'Screen Viewed');
SELECT cdp.track('{device_id:6D92078A-8246-4BA4-AE5B-76104861E7DC,user_id:kid}', 'Screen Viewed');
SELECT * FROM pg_temp.graph();
SELECT event_id, identifier, reason, detail FROM cdp.identity_conflicts;

-- 4. Every blocked value: two strangers sending the same junk never merge.
SELECT pg_temp.reset();
CREATE TEMP TABLE junk (kind text, value text);
INSERT INTO junk VALUES
  ('user_id', 'null'), ('user_id', 'NULL'), ('user_id', 'undefined'), ('user_id', 'none'), ('user_id', 'NaN'),
  ('user_id', 'unknown'), ('user_id', 'anonymous'), ('user_id', '0'), ('user_id', '-1'),
  ('user_id', '[object Object]'), ('email', 'test@test.com'), ('email', 'TEST@example.com'),
  ('anonymous_id', '0000'), ('crm_id', '---'), ('device_id', '00000000-0000-0000-0000-000000000000');
SELECT j.kind, j.value,
       cdp.identify(ARRAY[cdp.identifier(j.kind, j.value), cdp.identifier('email', 'a' || n || '@example.com')]) AS first,
       cdp.identify(ARRAY[cdp.identifier(j.kind, j.value), cdp.identifier('email', 'b' || n || '@example.com')]) AS second
  FROM (SELECT row_number() OVER () AS n, * FROM junk) j ORDER BY n;
SELECT count(*) AS profiles, count(*) FILTER (WHERE cardinality(identifiers) = 1) AS with_one_identifier FROM cdp.profiles;
SELECT count(*) AS junk_attached FROM cdp.identity_data WHERE kind <> 'email';
SELECT identifier, count(*), min(detail) FROM cdp.identity_conflicts WHERE reason = 'blocked' GROUP BY identifier ORDER BY identifier;
-- Blocked values match in any case; values that only share a blocked value's
-- first letter or length are not junk.
SELECT u.v, cdp.identify(ARRAY[cdp.identifier('user_id', u.v), cdp.identifier('email', 'l' || u.n || '@example.com')]) AS profile
  FROM unnest(ARRAY['UnDeFiNeD', 'undefinex', 'nulx', 'Nonesuch', 'NONE', '-2', 'Test@Test.Com']) WITH ORDINALITY AS u(v, n);
SELECT identifier FROM cdp.identity_data WHERE kind = 'user_id' ORDER BY identifier;
-- A message with nothing but junk is rejected, saying why.
SELECT cdp.identify('{user_id:null}');
SELECT cdp.track('{}', 'Nothing');

-- 5. cdp.ingest: Segment-spec messages; a batch with malformed messages keeps the good ones.
SELECT pg_temp.reset();
SELECT cdp.ingest('{"type": "identify", "userId": "u1", "traits": {"email": " Ada@Example.COM ", "phone": "030 1234567", "name": "Ada"},
                    "messageId": "m-1", "timestamp": "2026-03-01T10:00:00Z", "context": {"library": {"name": "web"}}}');
SELECT jsonb_pretty(cdp.ingest('{"batch": [
  {"type": "track", "event": "Order Completed", "userId": "u1", "properties": {"revenue": 42.5}, "messageId": "m-2", "timestamp": "2026-03-02T10:00:00+01:00"},
  {"type": "page", "name": "Home", "anonymousId": "c-9", "properties": {"url": "/"}, "timestamp": "2026-03-03T10:00:00Z"},
  {"type": "screen", "anonymousId": "c-9", "context": {"device": {"advertisingId": "6D92078A-8246-4BA4-AE5B-76104861E7DC"}}},
  {"type": "alias", "previousId": "c-9", "userId": "u1"},
  {"type": "group", "userId": "u1", "groupId": "acme", "traits": {"plan": "pro"}},
  {"type": "purchase", "userId": "u1"},
  {"event": "no type", "userId": "u1"},
  {"type": "track", "userId": "u1"},
  {"type": "track", "event": "Clicked", "userId": "u1", "timestamp": "last tuesday"},
  {"type": "track", "event": "Clicked", "userId": "u1", "timestamp": "2026-03-01T10:00:00"},
  {"type": "track", "event": "Clicked", "traits": {"email": "ada@"}},
  {"type": "track", "event": "Clicked"},
  {"type": "identify", "userId": "u1", "traits": "not an object"},
  {"type": "track", "event": "Clicked", "userId": "u1", "properties": [1, 2]},
  "not a message",
  {"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m-2"}
]}'));
SELECT event_id, profile_id, type, event, properties,
       CASE WHEN occurred_at = received_at THEN 'at receipt' ELSE to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') END AS occurred_utc,
       source, message_id
  FROM cdp.events ORDER BY event_id;
SELECT * FROM pg_temp.graph();
-- An identifier that does not normalise is recorded, and the message goes on with the others.
SELECT cdp.ingest('{"type": "identify", "userId": "u1", "traits": {"email": "ada@localhost"}}')->'accepted' AS accepted;
SELECT reason, detail FROM cdp.identity_conflicts WHERE reason = 'invalid';
SELECT cdp.ingest('[1, 2]');
SELECT cdp.ingest('{"batch": {"type": "track"}}');

-- 6. Idempotent re-send: the same message id is stored once, and identify()
-- answers with the profile the original landed on.
SELECT cdp.track('{user_id:u1}', 'Order Completed', message_id => 'm-2') = cdp.profile_of('user_id:u1') AS same_profile;
SELECT cdp.ingest('{"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m-2"}')
       - 'new_profiles' - 'merges' - 'conflicts' AS resend;
SELECT count(*) AS stored FROM cdp.events WHERE message_id = 'm-2';

-- 7. Custom identifiers: map a JSON path to a kind.
INSERT INTO cdp.identifier_mappings VALUES ('{traits,loyalty_id}', 'loyalty_id'), ('{properties,loyalty_id}', 'loyalty_id');
SELECT cdp.ingest('{"type": "identify", "userId": "u1", "traits": {"loyalty_id": "L-0042"}}')->'accepted' AS accepted;
SELECT cdp.ingest('{"type": "track", "event": "Order Completed", "properties": {"loyalty_id": "L-0042", "store": "Berlin"}}')->'accepted' AS accepted;
SELECT profile_id, identifiers FROM cdp.profiles WHERE 'loyalty_id:L-0042' = ANY (identifiers);

-- 8. Traits: last write wins per key by occurred_at, also across merges.
SELECT pg_temp.reset();
SELECT cdp.identify('{user_id:t1}', '{"tier": "gold", "city": "Berlin"}', '2026-05-10');
SELECT cdp.identify('{user_id:t1}', '{"tier": "silver"}', '2026-05-01');          -- older: ignored for tier
SELECT cdp.identify('{user_id:t1}', '{"city": "Hamburg", "zip": "20095"}', '2026-05-20');
SELECT traits FROM cdp.profiles;
SELECT cdp.identify('{email:t2@example.com}', '{"tier": "platinum", "city": "Munich"}', '2026-05-15');
SELECT cdp.identify('{user_id:t1,email:t2@example.com}', '{}', '2026-05-30');    -- merge: newer per key wins
SELECT profile_id, traits FROM cdp.profiles;

-- 9. Events are partitioned by month, partitions made as needed.
SELECT cdp.track('{user_id:t1}', 'Old', occurred_at => '2019-12-31 23:59:59+00');
SELECT cdp.track('{user_id:t1}', 'New', occurred_at => '2026-06-01 00:00:00+00');
SET timezone = 'UTC';
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = 'cdp.event_data'::regclass AND c.relname IN ('event_data_2019_12', 'event_data_2026_06')
 ORDER BY 1;
RESET timezone;
-- The coming months' partitions ahead of ingestion (the worker does this
-- hourly): created once, then nothing left to do.
SELECT cdp.create_event_partitions(2) BETWEEN 0 AND 3 AS created;
SELECT count(*) AS ahead FROM generate_series(0, 2) k
 WHERE to_regclass('cdp.event_data_' || to_char(date_trunc('month', now() AT TIME ZONE 'UTC')
                                                 + make_interval(months => k), 'YYYY_MM')) IS NOT NULL;
SELECT cdp.create_event_partitions(2) AS created_again;
SELECT cdp.create_event_partitions(-1);

-- 10. Bulk: NDJSON through COPY into cdp.inbox, then cdp.process_inbox().
SELECT pg_temp.reset();
\copy cdp.inbox (payload) FROM 'sql/data/inbox.ndjson' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')
SELECT count(*) AS waiting FROM cdp.inbox;
SELECT cdp.process_inbox(3) - 'new_profiles' - 'merges' - 'conflicts' AS first_three;
SELECT cdp.process_inbox() - 'new_profiles' - 'merges' - 'conflicts' AS the_rest;
SELECT count(*) AS waiting FROM cdp.inbox;
SELECT inbox_id, error FROM cdp.inbox_rejects ORDER BY inbox_id;
SELECT event, properties FROM cdp.events WHERE type = 'track' ORDER BY event_id;
-- JSON nested deeper than the parser's stack allows is set aside like any bad line.
INSERT INTO cdp.inbox (payload) VALUES (repeat('[', 100000) || repeat(']', 100000));
SELECT cdp.process_inbox() - 'new_profiles' - 'merges' - 'conflicts' AS too_deep;
SELECT error FROM cdp.inbox_rejects ORDER BY inbox_id DESC LIMIT 1;
SELECT cdp.process_inbox(-1);

-- 11. Split on forget: two cookies joined only by an email come apart, and
-- each event follows the identifiers it carried.
SELECT pg_temp.reset();
SELECT cdp.track('{anonymous_id:laptop}', 'Viewed');
SELECT cdp.identify('{anonymous_id:laptop,email:shared@example.com}');
SELECT cdp.track('{anonymous_id:phone}', 'Viewed');
SELECT cdp.identify('{anonymous_id:phone,email:shared@example.com}');
SELECT * FROM pg_temp.graph();
SELECT cdp.forget_identifier('email:shared@example.com') - 'identifier';
SELECT * FROM pg_temp.graph();
SELECT event_id, profile_id, identifiers FROM cdp.events ORDER BY event_id;
SELECT count(*) AS merges_left FROM cdp.merges;
SELECT cdp.resolve(3) AS revived;
SELECT cdp.forget_identifier('email:nobody@example.com');
-- Forgetting the identifier that blocked a merge lets the merge happen,
-- exactly as a rebuild would decide.
SELECT pg_temp.reset();
SELECT cdp.track('{device_id:00000000-0000-0000-0000-0000000000aa,user_id:mum}', 'Opened');
SELECT cdp.track('{device_id:00000000-0000-0000-0000-0000000000aa,user_id:kid}', 'Opened');
SELECT cdp.forget_identifier('user_id:mum') - 'identifier';
SELECT * FROM pg_temp.graph();
-- An event that carried nothing but the forgotten identifier goes with it.
SELECT cdp.track('{anonymous_id:lonely}', 'Viewed');
SELECT cdp.forget_identifier('anonymous_id:lonely') -> 'events_removed' AS events_removed;
SELECT count(*) FROM cdp.events WHERE event = 'Viewed';

-- 12. Rule changes apply with cdp.restitch().
SELECT pg_temp.reset();
SELECT cdp.identify('{crm_id:K-1,email:desk@shop.example}');
SELECT cdp.identify('{crm_id:K-2,phone:+49 30 1234567}');
SELECT cdp.identify('{email:desk@shop.example,phone:+49 30 1234567}');   -- crm_id limit: refused
SELECT * FROM pg_temp.graph();
UPDATE cdp.identity_rules SET max_per_profile = NULL WHERE kind = 'crm_id';
SELECT cdp.restitch() - 'duration_ms' - 'replay_ms' - 'write_ms' - 'phases_ms';
SELECT * FROM pg_temp.graph();
UPDATE cdp.identity_rules SET max_per_profile = 1 WHERE kind = 'crm_id';
UPDATE cdp.identity_rules SET blocked_values = '{desk@shop.example}' WHERE kind = 'email';
SELECT cdp.restitch() - 'duration_ms' - 'replay_ms' - 'write_ms' - 'phases_ms';
SELECT * FROM pg_temp.graph();
UPDATE cdp.identity_rules SET blocked_values = '{}' WHERE kind = 'email';
-- Rules are validated.
UPDATE cdp.identity_rules SET blocked_pattern = '([' WHERE kind = 'email';
INSERT INTO cdp.identity_rules (kind, priority) VALUES ('Bad Kind', 1);
UPDATE cdp.identity_rules SET max_per_profile = 0 WHERE kind = 'email';

-- 13. Restitch equals incremental on a random workload: many sessions' worth
-- of identifies and tracks over overlapping identifiers, with merges,
-- refused merges, blocked values and a forget, then a full rebuild must
-- leave every profile, identifier, event assignment, merge and conflict as
-- it was.
SELECT pg_temp.reset();
SELECT setseed(0.42);
DO $$
DECLARE
  kinds text[] := ARRAY['user_id', 'email', 'phone', 'anonymous_id', 'device_id', 'crm_id'];
  ids cdp.identifier[];
  k text;
BEGIN
  FOR i IN 1..600 LOOP
    ids := '{}';
    FOR j IN 1..(1 + floor(random() * 3))::int LOOP
      k := kinds[1 + floor(random() * 6)::int];
      ids := ids || CASE k
        WHEN 'user_id' THEN cdp.identifier(k, 'u' || floor(random() * 60))
        WHEN 'email' THEN cdp.identifier(k, 'p' || floor(random() * 80) || '@example.com')
        WHEN 'phone' THEN cdp.identifier(k, '+4930' || (1000000 + floor(random() * 50)))
        WHEN 'anonymous_id' THEN cdp.identifier(k, CASE WHEN random() < 0.05 THEN 'null' ELSE 'c' || floor(random() * 150) END)
        WHEN 'device_id' THEN cdp.identifier(k, lpad(to_hex(floor(random() * 30)::int), 32, '0'))
        ELSE cdp.identifier(k, 'K-' || floor(random() * 40)) END;
    END LOOP;
    BEGIN
      IF random() < 0.3 THEN
        PERFORM cdp.identify(ids, jsonb_build_object('score', i), now() - (random() * interval '90 days'));
      ELSE
        PERFORM cdp.track(ids, 'e' || (i % 7), jsonb_build_object('i', i), now() - (random() * interval '90 days'));
      END IF;
    EXCEPTION WHEN invalid_parameter_value THEN
      NULL;  -- only blocked identifiers: rejected, as it should be
    END;
  END LOOP;
END $$;
-- Straight after incremental ingestion, a rebuild finds nothing to change.
SELECT cdp.restitch()->'rows_written' AS rows_written_after_ingestion;
SELECT cdp.forget_identifier(identifier) - 'identifier' - 'profile_id' - 'profiles_after' AS forget
  FROM cdp.identity_data WHERE kind = 'email' ORDER BY identifier LIMIT 1;
SELECT count(*) > 50 AS many_profiles, (SELECT count(*) FROM cdp.merges) > 20 AS many_merges,
       (SELECT count(*) FROM cdp.identity_conflicts WHERE reason = 'limit') > 20 AS many_refusals,
       (SELECT count(*) FROM cdp.identity_conflicts WHERE reason = 'blocked') > 5 AS some_blocked
  FROM cdp.profiles;
CREATE TEMP TABLE before_profiles AS SELECT profile_id, merged_into, traits, created_at, updated_at FROM cdp.profile_data;
CREATE TEMP TABLE before_idents AS SELECT identifier::text, profile_id, source, first_seen, last_seen FROM cdp.identity_data;
CREATE TEMP TABLE before_events AS SELECT event_id, profile_id, identifiers::text FROM cdp.event_data;
CREATE TEMP TABLE before_merges AS SELECT profile_id, merged_profile_id, event_id, merged_at, cause FROM cdp.merges;
CREATE TEMP TABLE before_conflicts AS SELECT event_id, profile_id, identifier::text, reason, detail FROM cdp.identity_conflicts;
CREATE TEMP TABLE before_traits AS SELECT * FROM cdp.trait_data;
SELECT (r - 'duration_ms') ?& ARRAY['events', 'profiles', 'identifiers', 'merges', 'conflicts', 'phases_ms']
       AND (r->'phases_ms') ?& ARRAY['read', 'sort', 'apply', 'identifiers', 'profiles', 'rest'] AS reported
  FROM cdp.restitch() r;
SELECT 'profiles' AS what, count(*) AS differences FROM (
  (SELECT * FROM before_profiles EXCEPT ALL SELECT profile_id, merged_into, traits, created_at, updated_at FROM cdp.profile_data)
  UNION ALL (SELECT profile_id, merged_into, traits, created_at, updated_at FROM cdp.profile_data EXCEPT ALL SELECT * FROM before_profiles)) d
UNION ALL SELECT 'identifiers', count(*) FROM (
  (SELECT * FROM before_idents EXCEPT ALL SELECT identifier::text, profile_id, source, first_seen, last_seen FROM cdp.identity_data)
  UNION ALL (SELECT identifier::text, profile_id, source, first_seen, last_seen FROM cdp.identity_data EXCEPT ALL SELECT * FROM before_idents)) d
UNION ALL SELECT 'events', count(*) FROM (
  (SELECT * FROM before_events EXCEPT ALL SELECT event_id, profile_id, identifiers::text FROM cdp.event_data)
  UNION ALL (SELECT event_id, profile_id, identifiers::text FROM cdp.event_data EXCEPT ALL SELECT * FROM before_events)) d
UNION ALL SELECT 'merges', count(*) FROM (
  (SELECT * FROM before_merges EXCEPT ALL SELECT profile_id, merged_profile_id, event_id, merged_at, cause FROM cdp.merges)
  UNION ALL (SELECT profile_id, merged_profile_id, event_id, merged_at, cause FROM cdp.merges EXCEPT ALL SELECT * FROM before_merges)) d
UNION ALL SELECT 'conflicts', count(*) FROM (
  (SELECT * FROM before_conflicts EXCEPT ALL SELECT event_id, profile_id, identifier::text, reason, detail FROM cdp.identity_conflicts)
  UNION ALL (SELECT event_id, profile_id, identifier::text, reason, detail FROM cdp.identity_conflicts EXCEPT ALL SELECT * FROM before_conflicts)) d
UNION ALL SELECT 'traits', count(*) FROM (
  (SELECT * FROM before_traits EXCEPT ALL SELECT * FROM cdp.trait_data)
  UNION ALL (SELECT * FROM cdp.trait_data EXCEPT ALL SELECT * FROM before_traits)) d;

-- A rebuild that changes nothing writes nothing.
SELECT cdp.restitch()->'rows_written' AS rows_written_again;

-- The invariants hold: every identifier on one live profile, nothing on a tombstone.
SELECT (SELECT count(*) FROM cdp.identity_data i JOIN cdp.profile_data p USING (profile_id) WHERE p.merged_into IS NOT NULL) AS idents_on_tombstones,
       (SELECT count(*) FROM cdp.event_data e JOIN cdp.profile_data p USING (profile_id) WHERE p.merged_into IS NOT NULL) AS events_on_tombstones,
       (SELECT count(*) FROM cdp.profile_data t JOIN cdp.profile_data s ON s.profile_id = t.merged_into WHERE s.merged_into IS NOT NULL) AS chained_tombstones,
       (SELECT count(*) FROM cdp.event_data e WHERE NOT EXISTS (SELECT 1 FROM cdp.profile_data p WHERE p.profile_id = e.profile_id)) AS orphan_events;

SELECT pg_temp.reset();
