-- cdp.restitch() on a larger graph, with the stored tables in any physical
-- order.  A full rebuild compares the stored rows with the replay in one
-- ordered pass (the order the replay met identifiers and created
-- profiles) and looks up only the rows that are elsewhere; events are
-- sorted by id whatever order they are stored in.  Whatever the order, the
-- result must be the incremental one, and an unchanged graph must not be
-- written to.
SET search_path = public, cdp;
SET client_min_messages = warning;

-- From an empty graph, and back to one at the end.
TRUNCATE cdp.journal, cdp.identity_data, cdp.profile_data, cdp.trait_data, cdp.event_data, cdp.merges,
         cdp.identity_conflicts, cdp.message_ids;

-- The stored graph, table by table (ids that rebuilds renumber left out),
-- and a snapshot of it to compare with.
CREATE TEMP TABLE graph_tables (what text, query text);
INSERT INTO graph_tables VALUES
  ('profiles', 'SELECT profile_id, merged_into, traits, created_at, updated_at FROM cdp.profile_data'),
  ('identifiers', 'SELECT identifier::text, kind, profile_id, source, first_seen, last_seen FROM cdp.identity_data'),
  ('events', 'SELECT event_id, profile_id, identifiers::text FROM cdp.event_data'),
  ('merges', 'SELECT profile_id, merged_profile_id, event_id, merged_at, cause FROM cdp.merges'),
  ('conflicts', 'SELECT event_id, profile_id, identifier::text, reason, detail FROM cdp.identity_conflicts'),
  ('traits', 'SELECT * FROM cdp.trait_data');

CREATE FUNCTION pg_temp.snapshot() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  t record;
BEGIN
  FOR t IN SELECT * FROM graph_tables LOOP
    EXECUTE format('DROP TABLE IF EXISTS %I', 'snap_' || t.what);
    EXECUTE format('CREATE TEMP TABLE %I AS %s', 'snap_' || t.what, t.query);
  END LOOP;
END $$;

-- Rows that differ from the snapshot, per table (all zero: equal).
CREATE FUNCTION pg_temp.differences() RETURNS TABLE (what text, differences bigint) LANGUAGE plpgsql AS $$
DECLARE
  t record;
BEGIN
  FOR t IN SELECT * FROM graph_tables ORDER BY ctid LOOP
    what := t.what;
    EXECUTE format('SELECT count(*) FROM ((TABLE %1$I EXCEPT ALL %2$s) UNION ALL (%2$s EXCEPT ALL TABLE %1$I)) d',
                   'snap_' || t.what, t.query) INTO differences;
    RETURN NEXT;
  END LOOP;
END $$;

-- Rewrite a storage table with its rows in the given order (a physical
-- order restitch did not choose).
CREATE FUNCTION pg_temp.reorder(tab text, ord text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('CREATE TEMP TABLE reorder_tmp AS SELECT * FROM cdp.%I', tab);
  EXECUTE format('TRUNCATE cdp.%I', tab);
  EXECUTE format('INSERT INTO cdp.%I SELECT * FROM reorder_tmp ORDER BY %s', tab, ord);
  DROP TABLE reorder_tmp;
END $$;

-- 1. A random workload, incremental: 3,000 messages over about 6,000
-- identifiers (more than the replay's cache of recent identifiers and its
-- batches of lookups), people coming back after a while, repeated
-- identifiers within a message, merges, refused merges, blocked values.
SELECT setseed(0.2311);
DO $$
DECLARE
  ids cdp.identifier[];
  person int;
BEGIN
  FOR i IN 1..3000 LOOP
    -- mostly someone recent, sometimes someone from long ago
    person := CASE WHEN random() < 0.8 THEN greatest(1, i / 2 - floor(random() * 20)::int)
                   ELSE 1 + floor(random() * 1500)::int END;
    ids := ARRAY[cdp.identifier('anonymous_id', 'c' || person || '-' || floor(random() * 4))];
    IF random() < 0.5 THEN
      ids := ids || cdp.identifier('email', 'p' || CASE WHEN random() < 0.9 THEN person ELSE floor(random() * 1500)::int END || '@example.com');
    END IF;
    IF random() < 0.2 THEN
      ids := ids || cdp.identifier('user_id', 'u' || CASE WHEN random() < 0.9 THEN person ELSE floor(random() * 1500)::int END);
    END IF;
    IF random() < 0.1 THEN
      ids := ids || cdp.identifier('phone', '+4930' || (1000000 + person));
    END IF;
    IF random() < 0.05 THEN
      ids := ids || cdp.identifier('anonymous_id', 'null');
    END IF;
    IF random() < 0.05 THEN
      ids := ids || ids[1];
    END IF;
    BEGIN
      IF random() < 0.3 THEN
        PERFORM cdp.identify(ids, jsonb_build_object('n', i), now() - (random() * interval '60 days'));
      ELSE
        PERFORM cdp.track(ids, 'e' || (i % 5), '{}', now() - (random() * interval '60 days'));
      END IF;
    EXCEPTION WHEN invalid_parameter_value THEN
      NULL;
    END;
  END LOOP;
END $$;
SELECT count(*) > 1000 AS many_profiles, (SELECT count(*) FROM cdp.identity_data) > 4096 AS many_identifiers,
       (SELECT count(*) FROM cdp.merges) > 50 AS many_merges,
       (SELECT count(*) FROM cdp.identity_conflicts WHERE reason = 'limit') > 10 AS some_refusals,
       (SELECT count(*) FROM cdp.identity_conflicts WHERE reason = 'blocked') > 10 AS some_blocked
  FROM cdp.profiles;

-- The rebuild finds nothing to change in what ingestion stored.
SELECT cdp.restitch()->'rows_written' AS rows_written_after_ingestion;
SELECT pg_temp.snapshot();

-- 2. Identifiers, profiles and events stored in orders the replay does not
-- meet them in: nothing to change, nothing written.
SELECT pg_temp.reorder('identity_data', 'random()');
SELECT pg_temp.reorder('profile_data', 'profile_id DESC');
SELECT pg_temp.reorder('event_data', 'random()');
SELECT cdp.restitch()->'rows_written' AS rows_written_reordered;
SELECT * FROM pg_temp.differences();

-- Mostly in order, with a few rows moved away and a few missing.
SELECT pg_temp.reorder('identity_data', '(identifier::text LIKE ''email:p1%''), profile_id');
SELECT pg_temp.reorder('profile_data', '(profile_id % 97 = 0), profile_id');
SELECT cdp.restitch()->'rows_written' AS rows_written_partly_reordered;
SELECT * FROM pg_temp.differences();

-- In the replay's order (identifiers as events, by id, first carry them;
-- profiles by id) with single rows out of place here and there.
CREATE TEMP TABLE replay_order AS
SELECT identifier, row_number() OVER (ORDER BY min(event_id), min(pos)) AS n
  FROM (SELECT e.event_id, u.identifier::text AS identifier, u.pos
          FROM cdp.event_data e, unnest(e.identifiers) WITH ORDINALITY AS u(identifier, pos)) s
 GROUP BY identifier;
CREATE TEMP TABLE moved AS SELECT * FROM cdp.identity_data;
TRUNCATE cdp.identity_data;
INSERT INTO cdp.identity_data
SELECT m.* FROM moved m JOIN replay_order o ON o.identifier = m.identifier::text
 ORDER BY o.n + CASE WHEN o.n % 41 = 0 THEN 25.5 WHEN o.n % 53 = 0 THEN -7.5 ELSE 0 END;
DROP TABLE moved;
SELECT pg_temp.reorder('profile_data', 'profile_id + CASE WHEN profile_id % 37 = 0 THEN 500 ELSE 0 END');
SELECT cdp.restitch()->'rows_written' AS rows_written_nearly_in_order;
SELECT * FROM pg_temp.differences();

-- 3. Stored rows the replay does not make, and replayed ones not stored,
-- among in-order rows: the rebuild deletes and restores them.
DELETE FROM cdp.identity_data WHERE identifier::text LIKE 'email:p2%';
INSERT INTO cdp.identity_data (identifier, kind, profile_id, first_seen, last_seen)
SELECT cdp.identifier('email', 'ghost' || g || '@example.com'), 'email', p.profile_id, now(), now()
  FROM generate_series(1, 30) g, LATERAL (SELECT profile_id FROM cdp.profile_data WHERE merged_into IS NULL
                                           ORDER BY profile_id OFFSET g * 7 LIMIT 1) p;
DELETE FROM cdp.profile_data WHERE profile_id IN (SELECT profile_id FROM cdp.profile_data ORDER BY profile_id OFFSET 100 LIMIT 3);
SELECT (cdp.restitch()->>'rows_written')::int > 0 AS repaired;
SELECT * FROM pg_temp.differences();

-- 4. Everything written back by a rebuild (in the replay's order), then
-- compared by the next one in one pass.
TRUNCATE cdp.identity_data, cdp.profile_data;
SELECT (cdp.restitch()->>'rows_written')::int > 0 AS rebuilt;
SELECT * FROM pg_temp.differences();
SELECT cdp.restitch()->'rows_written' AS rows_written_again;

-- 5. A rule change moves identifiers; undoing it restores the graph.
CREATE TEMP TABLE busiest AS
SELECT i.identifier::text AS identifier FROM cdp.identity_data i JOIN cdp.event_data e ON e.profile_id = i.profile_id
 WHERE i.kind = 'email' GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1;
UPDATE cdp.identity_rules SET blocked_values = ARRAY(SELECT split_part(identifier, ':', 2) FROM busiest) WHERE kind = 'email';
SELECT (cdp.restitch()->>'rows_written')::int > 0 AS changed;
SELECT count(*) AS blocked_email_stored FROM cdp.identity_data WHERE identifier::text IN (SELECT identifier FROM busiest);
UPDATE cdp.identity_rules SET blocked_values = '{}' WHERE kind = 'email';
SELECT (cdp.restitch()->>'rows_written')::int > 0 AS changed_back;
SELECT * FROM pg_temp.differences();
SELECT cdp.restitch()->'rows_written' AS rows_written_at_rest;

TRUNCATE cdp.journal, cdp.identity_data, cdp.profile_data, cdp.trait_data, cdp.event_data, cdp.merges,
         cdp.identity_conflicts, cdp.message_ids;
