-- cdp 0.1.0 -> 0.2.0
--
-- Every SQL change since 0.1.0, in the order it was made; a function changed
-- more than once appears only where it last changed (its final definition).
-- Each change is also in src/sql/ (fresh installs); t/009_upgrade.pl checks
-- that both agree.

\echo Use "ALTER EXTENSION cdp UPDATE TO '0.2.0'" to load this file. \quit



-- audiences: a faster pass.  The numbers sum/avg/min/max traits aggregate are
-- read in C (the SQL version, a regular expression never inlined, dominated
-- folding); a pass's new events are looked up one probe each in their own
-- partition (a batch of a few thousand ids was planned as a hash join over
-- every stored event); sets of profiles are joined as IN (SELECT unnest(...))
-- (= ANY was estimated element by element and steered plans to full scans);
-- expired window entries are collected only where they can be; audiences of
-- one dependency level are evaluated in one statement.  Fixed: a changed
-- rule now reaches the audiences that use it in a pass where no profile
-- changed.  (The pass, the trait fold and values and the level evaluation
-- changed again later: their definitions are in the audience-state block.)
CREATE OR REPLACE FUNCTION cdp._jsonb_numeric(value jsonb) RETURNS numeric
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
  AS 'MODULE_PATHNAME', 'cdp_jsonb_numeric';
COMMENT ON FUNCTION cdp._jsonb_numeric(jsonb) IS
  'Internal: a JSON number, or a string holding a decimal number, as numeric; NULL for anything else';




CREATE OR REPLACE FUNCTION cdp._rule_source(restricted boolean) RETURNS text
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
  RETURN format('(SELECT p.profile_id, p.traits%s FROM cdp.profile_data p '
                'LEFT JOIN cdp.computed_trait_values v ON v.profile_id = p.profile_id '
                'WHERE p.merged_into IS NULL%s) t',
                cdp._trait_columns(), CASE WHEN restricted THEN ' AND p.profile_id IN (SELECT unnest($1))' ELSE '' END);
COMMENT ON FUNCTION cdp._rule_source(boolean) IS 'Internal: the FROM item audience rules are evaluated against';

CREATE OR REPLACE FUNCTION cdp._change_counts(change_ids bigint[]) RETURNS jsonb
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
  RETURN (SELECT jsonb_build_object('entered', count(*) FILTER (WHERE c.change = 'entered'),
                                    'exited', count(*) FILTER (WHERE c.change = 'exited'))
            FROM cdp.audience_change_data c WHERE c.change_id IN (SELECT unnest(change_ids)));
COMMENT ON FUNCTION cdp._change_counts(bigint[]) IS 'Internal: {"entered": n, "exited": n} of these audience changes';

CREATE OR REPLACE FUNCTION cdp._evaluate_audience(a cdp.audience_data, cand bigint[], full_scan boolean, due bigint[],
                                       as_of timestamptz, OUT change_ids bigint[], OUT changed bigint[])
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  consent text := CASE WHEN a.purpose IS NULL THEN 'true'
                       ELSE 'EXISTS (SELECT FROM cdp.consent_state c WHERE c.profile_id = t.profile_id '
                            'AND c.purpose = $5 AND c.granted AND (c.expires_at IS NULL OR c.expires_at > $3))' END;
  restrict_members text := CASE WHEN full_scan THEN '' ELSE ' AND m.profile_id IN (SELECT unnest($1))' END;
BEGIN
  EXECUTE format($q$
    WITH r AS MATERIALIZED (SELECT t.profile_id, %s AS consented FROM %s WHERE (%s)),
    cur AS MATERIALIZED (SELECT m.profile_id FROM cdp.audience_member_data m WHERE m.audience_id = $2%s),
    ins AS (INSERT INTO cdp.audience_member_data (profile_id, audience_id, entered_at)
            SELECT r.profile_id, $2, $3 FROM r
             WHERE r.consented AND NOT EXISTS (SELECT FROM cur WHERE cur.profile_id = r.profile_id)
            RETURNING profile_id),
    del AS (DELETE FROM cdp.audience_member_data m
             WHERE m.audience_id = $2%4$s
               AND NOT EXISTS (SELECT FROM r WHERE r.profile_id = m.profile_id AND r.consented)
            RETURNING m.profile_id),
    log AS (INSERT INTO cdp.audience_change_data (profile_id, audience_id, change, reason, changed_at)
            SELECT ins.profile_id, $2, 'entered', $4, $3 FROM ins
            UNION ALL
            SELECT del.profile_id, $2, 'exited',
                   CASE WHEN p.profile_id IS NULL THEN 'erased'
                        WHEN p.merged_into IS NOT NULL THEN 'merged'
                        WHEN EXISTS (SELECT FROM r WHERE r.profile_id = del.profile_id) THEN 'consent'
                        WHEN del.profile_id = ANY ($6) THEN 'window'
                        ELSE $4 END, $3
              FROM del LEFT JOIN cdp.profile_data p ON p.profile_id = del.profile_id
            RETURNING change_id, profile_id)
    SELECT coalesce(array_agg(log.change_id ORDER BY log.change_id), '{}'), coalesce(array_agg(log.profile_id), '{}')
      FROM log $q$,
    consent, cdp._rule_source(NOT full_scan), a.expression, restrict_members)
  INTO change_ids, changed
  USING cand, a.audience_id, as_of, CASE WHEN full_scan THEN 'definition' ELSE 'rule' END, a.purpose, due;
END $$;
COMMENT ON FUNCTION cdp._evaluate_audience(cdp.audience_data, bigint[], boolean, bigint[], timestamptz) IS
  'Internal: bring one audience current for some profiles (or all) and log the changes';

-- ---- consent: the decision on the profile row (bench/consent, issue #4) ----
-- cdp.purposes.slot, cdp.profile_data.consent_until kept by
-- cdp._consent_refresh().  The shipped purposes get the slots a fresh install
-- gives them (a dump restored into a fresh install must agree); purposes a
-- user added follow in name order.
ALTER TABLE cdp.purposes ADD COLUMN slot integer;
UPDATE cdp.purposes p SET slot = n.slot
  FROM (SELECT q.purpose,
               coalesce(array_position(b.shipped, q.purpose),
                        4 + row_number() OVER (PARTITION BY array_position(b.shipped, q.purpose) IS NULL
                                               ORDER BY q.purpose)) AS slot
          FROM cdp.purposes q,
               (SELECT ARRAY['analytics', 'personalization', 'email_marketing', 'advertising']) AS b(shipped)) n
 WHERE n.purpose = p.purpose;
CREATE SEQUENCE cdp.purposes_slot_seq AS integer OWNED BY cdp.purposes.slot;
SELECT pg_catalog.setval('cdp.purposes_slot_seq', greatest(max(slot), 4)) FROM cdp.purposes;
ALTER TABLE cdp.purposes ALTER COLUMN slot SET DEFAULT nextval('cdp.purposes_slot_seq'),
  ALTER COLUMN slot SET NOT NULL, ADD UNIQUE (slot), ADD CHECK (slot BETWEEN 1 AND 1000);
COMMENT ON COLUMN cdp.purposes.slot IS
  'Where the purpose''s decision is kept in cdp.profile_data.consent_until; assigned when the purpose is added (the shipped purposes have 1-4) and never changed';
REVOKE ALL ON SEQUENCE cdp.purposes_slot_seq FROM PUBLIC;
GRANT USAGE ON SEQUENCE cdp.purposes_slot_seq TO cdp_admin;
SELECT pg_catalog.pg_extension_config_dump('cdp.purposes_slot_seq', '');

CREATE FUNCTION cdp._purpose_slot_fixed() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RAISE EXCEPTION 'the slot of purpose "%" cannot change', OLD.purpose
    USING ERRCODE = 'feature_not_supported',
          DETAIL = 'Every profile keeps its decision for the purpose at that position of cdp.profile_data.consent_until.',
          HINT = 'Leave slot out of UPDATE; a new purpose gets its slot when it is inserted.';
END $$;
COMMENT ON FUNCTION cdp._purpose_slot_fixed() IS 'Internal: refuses to change a purpose''s slot';
CREATE TRIGGER purposes_slot_fixed BEFORE UPDATE OF slot ON cdp.purposes
  FOR EACH ROW WHEN (OLD.slot IS DISTINCT FROM NEW.slot) EXECUTE FUNCTION cdp._purpose_slot_fixed();

-- A slot given by hand on INSERT moves the sequence past it, so that the
-- purposes added after it do not collide with it.  After the insert, so a
-- row its constraints refuse moves nothing (a rolled-back one still does,
-- like any nextval()).  Forward only, by nextval().  (A restore needs none
-- of this: the dumped sequence value is set after the rows.)  A default
-- inserted concurrently can still draw the same slot; one of the two then
-- fails with a unique violation, as before.
CREATE FUNCTION cdp._purpose_slot_claim() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  -- The last slot handed out (none yet: is_called is false after a reset).
  IF NEW.slot > (SELECT CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END
                   FROM cdp.purposes_slot_seq s) THEN
    LOOP
      EXIT WHEN nextval('cdp.purposes_slot_seq') >= NEW.slot;
    END LOOP;
  END IF;
  RETURN NULL;
END $$;
COMMENT ON FUNCTION cdp._purpose_slot_claim() IS
  'Internal: moves the slot sequence past a slot given explicitly on INSERT, so that later purposes do not collide with it';
CREATE TRIGGER purposes_slot_claim AFTER INSERT ON cdp.purposes
  FOR EACH ROW EXECUTE FUNCTION cdp._purpose_slot_claim();

ALTER TABLE cdp.profile_data ADD COLUMN consent_until timestamptz[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN cdp.profile_data.consent_until IS
  'Per cdp.purposes.slot: until when the purpose is granted (infinity: no expiry; NULL: not granted); kept with cdp.consent_state by cdp._consent_refresh()';

CREATE FUNCTION cdp._consent_until(profile_id bigint) RETURNS timestamptz[]
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
  RETURN (WITH g AS (SELECT pu.slot, coalesce(s.expires_at, 'infinity') AS until
                       FROM cdp.consent_state s JOIN cdp.purposes pu ON pu.purpose = s.purpose
                      WHERE s.profile_id = _consent_until.profile_id AND s.granted)
          SELECT coalesce(array_agg(g.until ORDER BY k.slot), '{}')
            FROM generate_series(1, (SELECT max(g.slot) FROM g)) AS k(slot) LEFT JOIN g ON g.slot = k.slot);
COMMENT ON FUNCTION cdp._consent_until(bigint) IS
  'Internal: the profile''s consent_until as cdp.consent_state has it: up to the last granted slot, ''{}'' when nothing is granted';

-- Every profile with a grant gets its decisions on the row.
UPDATE cdp.profile_data p SET consent_until = cdp._consent_until(p.profile_id)
 WHERE p.profile_id IN (SELECT s.profile_id FROM cdp.consent_state s WHERE s.granted);

CREATE OR REPLACE FUNCTION cdp._consent_refresh(profiles bigint[]) RETURNS void
  LANGUAGE sql
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  DELETE FROM cdp.consent_state WHERE profile_id = ANY (profiles);
  INSERT INTO cdp.consent_state (profile_id, purpose, granted, recorded_at, expires_at, ledger_id)
  SELECT DISTINCT ON (i.profile_id, l.purpose) i.profile_id, l.purpose, l.granted, l.recorded_at, l.expires_at, l.id
    FROM cdp.consent_data l
    JOIN cdp.identity_data i ON i.identifier OPERATOR(cdp.=) l.subject
   WHERE i.profile_id = ANY (profiles)
   ORDER BY i.profile_id, l.purpose, l.recorded_at DESC, l.id DESC;
  -- The profile rows: only those that have or had a grant can differ.
  UPDATE cdp.profile_data p SET consent_until = u.until
    FROM (SELECT q.profile_id, cdp._consent_until(q.profile_id) AS until
            FROM cdp.profile_data q
           WHERE q.profile_id = ANY (profiles)
             AND (q.consent_until <> '{}'
                  OR EXISTS (SELECT FROM cdp.consent_state s WHERE s.profile_id = q.profile_id AND s.granted))) u
   WHERE p.profile_id = u.profile_id AND p.consent_until IS DISTINCT FROM u.until;
END;
COMMENT ON FUNCTION cdp._consent_refresh(bigint[]) IS
  'Internal: recompute the decisions of these profiles from the ledger (after consent is recorded or identifiers move), in cdp.consent_state and on the profile rows';

REVOKE EXECUTE ON FUNCTION cdp._purpose_slot_fixed(), cdp._purpose_slot_claim(), cdp._consent_until(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp._purpose_slot_fixed(), cdp._purpose_slot_claim(), cdp._consent_until(bigint) TO cdp_admin;

-- ---- consent: cdp.profiles tests the profile row (bench/consent, issue #4) ----
-- The analysts' branch of cdp.profiles tests consent_until at the slot of
-- cdp.purpose instead of joining cdp.consent_state; every view's analysts'
-- branch becomes a security_barrier view of its own.
CREATE FUNCTION cdp._reader_slot() RETURNS integer
  LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  RETURN (SELECT pu.slot FROM cdp.purposes pu WHERE pu.purpose = cdp._reader_purpose());
COMMENT ON FUNCTION cdp._reader_slot() IS
  'Internal: the cdp.purposes.slot of the session''s cdp.purpose, NULL when unset or unknown';

-- What analysts read: each view's second branch, a security_barrier view
-- of its own.  The planner flattens a UNION ALL view into its branches and
-- pushes a reader's WHERE clause into them, where it would be ordered with
-- the consent test by cost alone (a cheap leaky function first); a branch
-- that is a security_barrier view itself keeps every qual but leakproof
-- ones (profile_id = 42, time ranges) above its own filter.
CREATE VIEW cdp._profiles_consented WITH (security_barrier) AS
  SELECT p.profile_id,
         CASE WHEN (SELECT cdp._reader_sees_pii()) THEN p.traits
              ELSE cdp._mask_traits(p.traits, (SELECT cdp._pii_keys())) END AS traits,
         coalesce((SELECT array_agg(CASE WHEN (SELECT cdp._reader_sees_pii()) THEN i.identifier
                                         ELSE cdp._mask_identifier(i.identifier) END ORDER BY i.identifier)
                     FROM cdp.identity_data i WHERE i.profile_id = p.profile_id), '{}') AS identifiers,
         p.created_at, p.updated_at
    FROM cdp.profile_data p
   WHERE p.merged_into IS NULL
     AND NOT (SELECT cdp._reader_sees_all())
     AND p.consent_until[(SELECT cdp._reader_slot())] > now();
COMMENT ON VIEW cdp._profiles_consented IS
  'Internal: what cdp.profiles shows readers who do not see everything (consent tested on the profile row)';

CREATE VIEW cdp._profile_identifiers_consented WITH (security_barrier) AS
  SELECT CASE WHEN (SELECT cdp._reader_sees_pii()) THEN i.identifier
              ELSE cdp._mask_identifier(i.identifier) END AS identifier,
         i.profile_id, i.source, i.first_seen, i.last_seen
    FROM cdp.identity_data i
   WHERE NOT (SELECT cdp._reader_sees_all())
     AND i.profile_id IN (SELECT s.profile_id FROM cdp.consent_state s
                           WHERE s.purpose = (SELECT cdp._reader_purpose()) AND s.granted
                             AND (s.expires_at IS NULL OR s.expires_at > now()));
COMMENT ON VIEW cdp._profile_identifiers_consented IS
  'Internal: what cdp.profile_identifiers shows readers who do not see everything';

CREATE VIEW cdp._events_consented WITH (security_barrier) AS
  SELECT e.event_id, e.profile_id, e.event,
         CASE WHEN (SELECT cdp._reader_sees_pii()) THEN e.properties
              ELSE cdp._mask_traits(e.properties, (SELECT cdp._pii_keys())) END AS properties,
         CASE WHEN (SELECT cdp._reader_sees_pii()) THEN e.identifiers
              ELSE cdp._mask_identifiers(e.identifiers) END AS identifiers,
         e.occurred_at, e.received_at, e.source, e.message_id, e.type
    FROM cdp.event_data e
   WHERE NOT (SELECT cdp._reader_sees_all())
     AND e.profile_id IN (SELECT s.profile_id FROM cdp.consent_state s
                           WHERE s.purpose = (SELECT cdp._reader_purpose()) AND s.granted
                             AND (s.expires_at IS NULL OR s.expires_at > now()));
COMMENT ON VIEW cdp._events_consented IS
  'Internal: what cdp.events shows readers who do not see everything';

CREATE OR REPLACE VIEW cdp.profiles WITH (security_barrier) AS
  SELECT p.profile_id, p.traits,
         coalesce((SELECT array_agg(i.identifier ORDER BY i.identifier)
                     FROM cdp.identity_data i WHERE i.profile_id = p.profile_id), '{}') AS identifiers,
         p.created_at, p.updated_at
    FROM cdp.profile_data p
   WHERE p.merged_into IS NULL
     AND (SELECT cdp._reader_sees_all())
  UNION ALL
  SELECT c.profile_id, c.traits, c.identifiers, c.created_at, c.updated_at
    FROM cdp._profiles_consented c;

CREATE OR REPLACE VIEW cdp.profile_identifiers WITH (security_barrier) AS
  SELECT i.identifier, i.profile_id, i.source, i.first_seen, i.last_seen
    FROM cdp.identity_data i
   WHERE (SELECT cdp._reader_sees_all())
  UNION ALL
  SELECT c.identifier, c.profile_id, c.source, c.first_seen, c.last_seen
    FROM cdp._profile_identifiers_consented c;

CREATE OR REPLACE VIEW cdp.events WITH (security_barrier) AS
  SELECT e.event_id, e.profile_id, e.event, e.properties, e.identifiers,
         e.occurred_at, e.received_at, e.source, e.message_id, e.type
    FROM cdp.event_data e
   WHERE (SELECT cdp._reader_sees_all())
  UNION ALL
  SELECT c.event_id, c.profile_id, c.event, c.properties, c.identifiers,
         c.occurred_at, c.received_at, c.source, c.message_id, c.type
    FROM cdp._events_consented c;

REVOKE ALL ON cdp._profiles_consented, cdp._profile_identifiers_consented, cdp._events_consented FROM PUBLIC;
GRANT SELECT ON cdp._profiles_consented, cdp._profile_identifiers_consented, cdp._events_consented TO cdp_admin;

REVOKE EXECUTE ON FUNCTION cdp._reader_slot() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp._reader_slot() TO cdp_admin, cdp_writer, cdp_analyst, cdp_pii_reader;

-- ---- ingest: faster ingestion (bench/ingest, issue #3) ----
-- The journal's arrays are stored uncompressed (compression cost more CPU
-- than the bytes it saved).
ALTER TABLE cdp.journal ALTER COLUMN profile_ids SET STORAGE EXTERNAL,
  ALTER COLUMN event_ids SET STORAGE EXTERNAL, ALTER COLUMN occurred_ats SET STORAGE EXTERNAL;


-- ---- audiences: window values in C (bench/audience, issue #5) ----
-- A rolling-window trait's value and next due time were SQL subqueries over
-- unnest() of its entries, one executor subplan per state row: most of the
-- cost of recomputing a profile's values in a pass.
CREATE FUNCTION cdp._window_value(aggregate text, cutoff timestamptz, ats timestamptz[], vals text[], ids bigint[])
  RETURNS jsonb
  LANGUAGE c IMMUTABLE PARALLEL SAFE
  AS 'MODULE_PATHNAME', 'cdp_window_value';
COMMENT ON FUNCTION cdp._window_value(text, timestamptz, timestamptz[], text[], bigint[]) IS
  'Internal: the value (jsonb) of a rolling-window computed trait from its entries (times, values, event ids) after cutoff';

CREATE FUNCTION cdp._window_oldest(cutoff timestamptz, ats timestamptz[]) RETURNS timestamptz
  LANGUAGE c IMMUTABLE PARALLEL SAFE
  AS 'MODULE_PATHNAME', 'cdp_window_oldest';
COMMENT ON FUNCTION cdp._window_oldest(timestamptz, timestamptz[]) IS
  'Internal: the earliest time after cutoff in a window state (when the trait next changes on its own, less the window)';
REVOKE EXECUTE ON FUNCTION cdp._window_value(text, timestamptz, timestamptz[], text[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp._window_value(text, timestamptz, timestamptz[], text[], bigint[]) TO cdp_admin;
REVOKE EXECUTE ON FUNCTION cdp._window_oldest(timestamptz, timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp._window_oldest(timestamptz, timestamptz[]) TO cdp_admin;

-- ---- ingest: event partitions created ahead of time ----
-- Creating a partition locks cdp.event_data exclusively; at the first event of
-- a month ingestion waited for every query on events.  The worker's retention
-- pass now creates the coming months' partitions ahead (C change in worker.c).
-- cdp._create_event_partition() says whether it created the partition.
DROP FUNCTION cdp._create_event_partition(timestamptz);
CREATE FUNCTION cdp._create_event_partition(month_start timestamptz) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  -- Month boundaries in UTC, whatever the session's time zone.
  lo timestamp := date_trunc('month', month_start AT TIME ZONE 'UTC');
  name text := format('event_data_%s', to_char(lo, 'YYYY_MM'));
BEGIN
  IF to_regclass(format('cdp.%I', name)) IS NOT NULL THEN
    RETURN false;
  END IF;
  EXECUTE format('CREATE TABLE cdp.%I PARTITION OF cdp.event_data FOR VALUES FROM (%L) TO (%L)',
                 name, lo AT TIME ZONE 'UTC', (lo + interval '1 month') AT TIME ZONE 'UTC');
  EXECUTE format('ALTER TABLE cdp.%I ADD PRIMARY KEY (profile_id, event_id, occurred_at)', name);
  EXECUTE format('CREATE INDEX ON cdp.%I (event_id)', name);
  EXECUTE format('COMMENT ON TABLE cdp.%I IS %L', name,
                 format('Events that occurred in %s (UTC); a partition of cdp.event_data', to_char(lo, 'YYYY-MM')));
  RETURN true;
EXCEPTION WHEN duplicate_table OR unique_violation THEN
  RETURN false;  -- a concurrent session created it first
END $$;
COMMENT ON FUNCTION cdp._create_event_partition(timestamptz) IS
  'Internal: create the cdp.event_data partition for the month starting at month_start (UTC) unless it exists; true when this call created it';
REVOKE EXECUTE ON FUNCTION cdp._create_event_partition(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp._create_event_partition(timestamptz) TO cdp_admin;

CREATE FUNCTION cdp.create_event_partitions(months_ahead integer DEFAULT 2) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  SET lock_timeout = '5s'
AS $$
DECLARE
  month_start timestamptz;
  created integer := 0;
BEGIN
  IF months_ahead IS NULL OR months_ahead NOT BETWEEN 0 AND 120 THEN
    RAISE EXCEPTION 'months_ahead must be between 0 and 120, not %', coalesce(months_ahead::text, 'NULL')
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'It is the number of months after the current one (UTC) to create partitions for.';
  END IF;
  FOR month_start IN
    SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => k)) AT TIME ZONE 'UTC'
      FROM generate_series(0, months_ahead) k LOOP
    BEGIN
      created := created + cdp._create_event_partition(month_start)::integer;
    EXCEPTION WHEN lock_not_available THEN
      RAISE WARNING 'cdp: the event partition for % was not created: cdp.event_data is in use',
                    to_char(month_start AT TIME ZONE 'UTC', 'YYYY-MM')
        USING ERRCODE = 'lock_not_available',
              HINT = 'It is tried again at the next call (the worker''s retention pass, hourly).';
    END;
  END LOOP;
  RETURN created;
END $$;
COMMENT ON FUNCTION cdp.create_event_partitions(integer) IS
  'Create the cdp.event_data partitions of this month and the next months_ahead months (UTC) that do not exist yet, ahead of ingestion (the worker does it hourly); returns how many it created';
REVOKE EXECUTE ON FUNCTION cdp.create_event_partitions(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.create_event_partitions(integer) TO cdp_admin;


-- ---- retention: message ids go with their events ----
-- cdp.apply_retention() left the message ids of the events it deleted (they
-- piled up for ever); erasure found them by a scan of every message id
-- (cdp.erase_subject() changed again later: its definition is further down).
CREATE OR REPLACE FUNCTION cdp.apply_retention() RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r record;
  n bigint;
  total bigint := 0;
  per jsonb := '{}';
  deflt interval := (SELECT max(p.retention) FROM cdp.purposes p);
BEGIN
  -- Each deleted event takes its message id along (looked up by key): the
  -- ids would otherwise pile up for ever, for events no longer stored.
  FOR r IN SELECT * FROM cdp.retention ORDER BY event LOOP
    WITH gone AS (DELETE FROM cdp.event_data e WHERE e.event = r.event AND e.occurred_at < now() - r.keep
                  RETURNING e.event_id, e.message_id),
         ids AS (DELETE FROM cdp.message_ids m USING gone
                  WHERE m.message_id = gone.message_id AND m.event_id = gone.event_id)
    SELECT count(*) INTO n FROM gone;
    per := per || jsonb_build_object(r.event, n);
    total := total + n;
  END LOOP;
  IF deflt IS NOT NULL THEN
    WITH gone AS (DELETE FROM cdp.event_data e
                   WHERE e.occurred_at < now() - deflt AND e.type NOT IN ('identify', 'alias')
                     AND NOT EXISTS (SELECT 1 FROM cdp.retention x WHERE x.event = e.event)
                  RETURNING e.event_id, e.message_id),
         ids AS (DELETE FROM cdp.message_ids m USING gone
                  WHERE m.message_id = gone.message_id AND m.event_id = gone.event_id)
    SELECT count(*) INTO n FROM gone;
    per := per || jsonb_build_object('default', n);
    total := total + n;
  END IF;
  RETURN jsonb_build_object('deleted', total, 'by_rule', per, 'default_keep', deflt, 'applied_at', now());
END $$;
COMMENT ON FUNCTION cdp.apply_retention() IS
  'Delete events older than their retention: the cdp.retention rule of their name, else the longest purpose retention (identify and alias events only by an explicit rule)';

-- ---- consent: cdp.refresh_consents() ----
-- Both copies of the decisions derived from the ledger again, for every live
-- profile (e.g. after restoring a dump taken before 0.2.0).
CREATE FUNCTION cdp.refresh_consents() RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  live bigint[];
BEGIN
  PERFORM cdp._lock_identity();   -- no merge or decision moves a profile meanwhile
  SELECT coalesce(array_agg(p.profile_id), '{}') INTO live FROM cdp.profile_data p WHERE p.merged_into IS NULL;
  PERFORM cdp._consent_refresh(live);
  RETURN cardinality(live);
END $$;
COMMENT ON FUNCTION cdp.refresh_consents() IS
  'Recompute every live profile''s decisions in force from the consent ledger (cdp.consent_state and the profile rows); e.g. after restoring a dump taken before 0.2.0. Returns the number of profiles';

REVOKE EXECUTE ON FUNCTION cdp.refresh_consents() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp.refresh_consents() TO cdp_admin;

-- ---- audiences: one state per profile, folded in C (bench/audience, issue #5) ----
-- The computed-trait state moves from one row per profile and trait
-- (cdp.computed_trait_state) into the profile's values row as one bytea
-- (src/audience/state.c): a pass reads and writes each changed profile once,
-- folding its new events and recomputing its values in C.  The old rows are
-- converted as they are (all-time aggregates keep events that retention has
-- deleted since).  No pass may run meanwhile (a 0.1.0 worker would write
-- state rows after the conversion read them): the pass lock first, as
-- cdp._audience_lock() takes it.
SELECT pg_advisory_xact_lock(hashtext('cdp.audience_pass'));
-- The state of computed traits (src/audience/state.c).
CREATE FUNCTION cdp._trait_state_fold(internal, integer, text, boolean, timestamptz, bigint, text)
  RETURNS internal
  LANGUAGE c
  AS 'MODULE_PATHNAME', 'cdp_trait_state_fold';
COMMENT ON FUNCTION cdp._trait_state_fold(internal, integer, text, boolean, timestamptz, bigint, text) IS
  'Internal: transition function of cdp._trait_state_agg';

CREATE FUNCTION cdp._trait_state_final(internal) RETURNS bytea
  LANGUAGE c
  AS 'MODULE_PATHNAME', 'cdp_trait_state_final';
COMMENT ON FUNCTION cdp._trait_state_final(internal) IS 'Internal: final function of cdp._trait_state_agg';

CREATE AGGREGATE cdp._trait_state_agg(trait_id integer, aggregate text, windowed boolean, at timestamptz,
                                      event_id bigint, value text) (
  SFUNC = cdp._trait_state_fold,
  STYPE = internal,
  FINALFUNC = cdp._trait_state_final
);
COMMENT ON AGGREGATE cdp._trait_state_agg(integer, text, boolean, timestamptz, bigint, text) IS
  'Internal: the computed-trait state of matching events (one row per event and trait it matches)';

CREATE FUNCTION cdp._trait_state_merge(a bytea, b bytea) RETURNS bytea
  LANGUAGE c IMMUTABLE PARALLEL SAFE
  AS 'MODULE_PATHNAME', 'cdp_trait_state_merge';
COMMENT ON FUNCTION cdp._trait_state_merge(bytea, bytea) IS
  'Internal: two computed-trait states combined (counts and sums add, extremes compare, values and window entries unite)';

CREATE AGGREGATE cdp._trait_state_union(bytea) (
  SFUNC = cdp._trait_state_merge,
  STYPE = bytea
);
COMMENT ON AGGREGATE cdp._trait_state_union(bytea) IS 'Internal: computed-trait states combined';

CREATE FUNCTION cdp._trait_state_apply(state bytea, incoming bytea, as_of timestamptz, trait_ids integer[],
                                       names text[], aggregates text[], windows interval[],
                                       OUT state bytea, OUT vals jsonb, OUT due timestamptz)
  LANGUAGE c STABLE PARALLEL SAFE
  AS 'MODULE_PATHNAME', 'cdp_trait_state_apply';
COMMENT ON FUNCTION cdp._trait_state_apply(bytea, bytea, timestamptz, integer[], text[], text[], interval[]) IS
  'Internal: a profile''s computed-trait state with incoming merged in and expired window entries dropped, its values by trait name, and when they next change on their own';

CREATE FUNCTION cdp._trait_state_json(state bytea) RETURNS jsonb
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
  AS 'MODULE_PATHNAME', 'cdp_trait_state_json';
COMMENT ON FUNCTION cdp._trait_state_json(bytea) IS
  'Internal: a computed-trait state as readable jsonb, by trait id (for inspection and tests)';
CREATE FUNCTION cdp._trait_state_from_row(trait_id integer, n bigint, total numeric, lo numeric, hi numeric,
                                          first_at timestamptz, first_id bigint, first_val text,
                                          last_at timestamptz, last_id bigint, last_val text,
                                          vals text[], ats timestamptz[], ids bigint[]) RETURNS bytea
  LANGUAGE c IMMUTABLE
  AS 'MODULE_PATHNAME', 'cdp_trait_state_from_row';

ALTER TABLE cdp.computed_trait_values ADD COLUMN state bytea;
ALTER TABLE cdp.computed_trait_values SET (fillfactor = 80);
COMMENT ON TABLE cdp.computed_trait_values IS
  'Internal: the computed trait values of each profile (read cdp.profile_traits), when they next change on their own (a window entry or a consent expiring), and the state they are computed from';
COMMENT ON COLUMN cdp.computed_trait_values.state IS
  'Internal: the mergeable state of every computed trait of the profile (binary; cdp._trait_state_json() shows it)';
INSERT INTO cdp.computed_trait_values AS v (profile_id, state)
SELECT s.profile_id,
       cdp._trait_state_union(cdp._trait_state_from_row(s.trait_id, s.n, s.total, s.lo, s.hi, s.first_at, s.first_id,
                                                        s.first_val, s.last_at, s.last_id, s.last_val, s.vals, s.ats, s.ids)
                              ORDER BY s.trait_id)
  FROM cdp.computed_trait_state s
 GROUP BY s.profile_id
ON CONFLICT (profile_id) DO UPDATE SET state = excluded.state;
DROP FUNCTION cdp._trait_state_from_row(integer, bigint, numeric, numeric, numeric, timestamptz, bigint, text,
                                        timestamptz, bigint, text, text[], timestamptz[], bigint[]);
ALTER EXTENSION cdp DROP TABLE cdp.computed_trait_state;
DROP TABLE cdp.computed_trait_state;
DROP FUNCTION cdp._trait_fold(bigint[], bigint[], bigint[], timestamptz, integer, timestamptz[]);
DROP FUNCTION cdp._trait_values(bigint[], timestamptz, boolean);
DROP FUNCTION cdp._trait_merge_sql();
DROP FUNCTION cdp._trait_value_sql();

-- What a pass gathers of each profile it brings current, for every level.
CREATE TYPE cdp._rule_input AS (profile_id bigint, traits jsonb, vals jsonb, consent_until timestamptz[]);
COMMENT ON TYPE cdp._rule_input IS
  'Internal: a profile as the audience pass evaluates rules against it (traits, computed trait values, consent in force by purpose slot)';

CREATE OR REPLACE FUNCTION cdp._rule_source_rows(n integer) RETURNS text
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
  RETURN format('(SELECT v.profile_id, v.traits, v.consent_until AS _consent_until%s FROM unnest($%s::cdp._rule_input[]) v) t',
                cdp._trait_columns(), n);
COMMENT ON FUNCTION cdp._rule_source_rows(integer) IS
  'Internal: the FROM item audience rules are evaluated against, from the rows a pass gathered';

CREATE FUNCTION cdp._evaluate_level(auds cdp.audience_data[], cand bigint[], due bigint[], as_of timestamptz,
                                    rows cdp._rule_input[] DEFAULT NULL)
  RETURNS TABLE (audience_id integer, change_ids bigint[], changed bigint[])
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN QUERY EXECUTE format($q$
    WITH cs AS MATERIALIZED (
      -- the candidates' consent for the purposes used here, one probe each
      -- (not with rows: they carry it)
      SELECT c.profile_id, c.purpose FROM cdp.consent_state c
       WHERE $6 IS NULL AND c.profile_id IN (SELECT unnest($1)) AND c.purpose = ANY ($5) AND c.granted
         AND (c.expires_at IS NULL OR c.expires_at > $3)),
    r AS MATERIALIZED (
      SELECT t.profile_id, x.audience_id,
             x.purpose IS NULL OR %s AS consented
        FROM %s CROSS JOIN LATERAL (VALUES %s) AS x(audience_id, hit, purpose, slot)
       WHERE x.hit),
    cur AS MATERIALIZED (SELECT m.profile_id, m.audience_id FROM cdp.audience_member_data m
                          WHERE m.profile_id IN (SELECT unnest($1)) AND m.audience_id = ANY ($2)),
    ins AS (INSERT INTO cdp.audience_member_data (profile_id, audience_id, entered_at)
            SELECT r.profile_id, r.audience_id, $3 FROM r
             WHERE r.consented
               AND NOT EXISTS (SELECT FROM cur WHERE cur.profile_id = r.profile_id AND cur.audience_id = r.audience_id)
            RETURNING profile_id, audience_id),
    -- (the members are found by the candidates, as in cur: joined to cur,
    -- the planner hashes every member of these audiences)
    del AS (DELETE FROM cdp.audience_member_data m
             WHERE m.profile_id IN (SELECT unnest($1)) AND m.audience_id = ANY ($2)
               AND NOT EXISTS (SELECT FROM r WHERE r.profile_id = m.profile_id AND r.audience_id = m.audience_id
                                                AND r.consented)
            RETURNING m.profile_id, m.audience_id),
    log AS (INSERT INTO cdp.audience_change_data (profile_id, audience_id, change, reason, changed_at)
            SELECT ins.profile_id, ins.audience_id, 'entered', 'rule', $3 FROM ins
            UNION ALL
            SELECT del.profile_id, del.audience_id, 'exited',
                   CASE WHEN p.profile_id IS NULL THEN 'erased'
                        WHEN p.merged_into IS NOT NULL THEN 'merged'
                        WHEN EXISTS (SELECT FROM r WHERE r.profile_id = del.profile_id AND r.audience_id = del.audience_id)
                          THEN 'consent'
                        WHEN del.profile_id = ANY ($4) THEN 'window'
                        ELSE 'rule' END, $3
              FROM del LEFT JOIN cdp.profile_data p ON p.profile_id = del.profile_id
            RETURNING change_id, profile_id, audience_id)
    SELECT a.id, coalesce(array_agg(log.change_id ORDER BY log.change_id) FILTER (WHERE log.change_id IS NOT NULL), '{}'),
           coalesce(array_agg(log.profile_id) FILTER (WHERE log.change_id IS NOT NULL), '{}')
      FROM unnest($2) AS a(id) LEFT JOIN log ON log.audience_id = a.id
     GROUP BY a.id $q$,
    CASE WHEN rows IS NULL
         THEN 'EXISTS (SELECT FROM cs WHERE cs.profile_id = t.profile_id AND cs.purpose = x.purpose)'
         -- granted, and not expired (a grant without expiry: infinity)
         ELSE 'coalesce(t._consent_until[x.slot] > $3, false)' END,
    CASE WHEN rows IS NULL THEN cdp._rule_source(true) ELSE cdp._rule_source_rows(6) END,
    (SELECT string_agg(format('(%s, (%s), %L::text, %s)', a.audience_id, a.expression, a.purpose,
                              coalesce((SELECT pu.slot FROM cdp.purposes pu WHERE pu.purpose = a.purpose)::text, 'NULL::integer')),
                       ', ' ORDER BY a.audience_id)
       FROM unnest(auds) AS a))
  USING cand, (SELECT array_agg(a.audience_id) FROM unnest(auds) AS a), as_of, due,
        (SELECT coalesce(array_agg(DISTINCT a.purpose) FILTER (WHERE a.purpose IS NOT NULL), '{}') FROM unnest(auds) AS a),
        rows;
END $$;
COMMENT ON FUNCTION cdp._evaluate_level(cdp.audience_data[], bigint[], bigint[], timestamptz, cdp._rule_input[]) IS
  'Internal: bring audiences of one dependency level current for some profiles in one statement and log the changes';

CREATE OR REPLACE FUNCTION cdp._rebuild_profile_traits() RETURNS boolean
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  want text[] := ARRAY['profile_id', 'traits'] || coalesce((SELECT array_agg(c.name ORDER BY c.trait_id)
                                                              FROM cdp.computed_traits c), '{}');
  have text[] := (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                   WHERE a.attrelid = 'cdp.profile_traits'::regclass AND a.attnum > 0 AND NOT a.attisdropped);
  member boolean := EXISTS (SELECT FROM pg_depend d
                             WHERE d.classid = 'pg_class'::regclass AND d.objid = 'cdp.profile_traits'::regclass
                               AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e');
BEGIN
  IF want = have THEN
    RETURN false;
  END IF;
  IF member THEN
    ALTER EXTENSION cdp DROP VIEW cdp.profile_traits;
  END IF;
  DROP VIEW cdp.profile_traits;
  -- (without computed traits, the view of a fresh install)
  EXECUTE format('CREATE VIEW cdp.profile_traits AS SELECT p.profile_id, p.traits%s FROM cdp.profiles p%s',
                 cdp._trait_columns(),
                 CASE WHEN cardinality(want) > 2
                      THEN ' LEFT JOIN cdp.computed_trait_values v ON v.profile_id = p.profile_id' ELSE '' END);
  IF member THEN
    ALTER EXTENSION cdp ADD VIEW cdp.profile_traits;
  END IF;
  COMMENT ON VIEW cdp.profile_traits IS
    'Each live profile with its traits and one column per computed trait: the row audience rules are evaluated against; consent-aware like cdp.profiles';
  GRANT SELECT ON cdp.profile_traits TO cdp_analyst, cdp_admin;
  RETURN true;
END $$;
COMMENT ON FUNCTION cdp._rebuild_profile_traits() IS
  'Internal: recreate cdp.profile_traits with one column per computed trait, if they changed';

CREATE OR REPLACE FUNCTION cdp._trait_update(profiles bigint[], as_of timestamptz,
                                  event_ids bigint[] DEFAULT NULL, event_times timestamptz[] DEFAULT NULL,
                                  reset bigint[] DEFAULT '{}', tombstones boolean DEFAULT true,
                                  all_events boolean DEFAULT false, reset_all boolean DEFAULT false,
                                  only_trait integer DEFAULT NULL, gather boolean DEFAULT false,
                                  in_pass boolean DEFAULT false,
                                  OUT folded bigint[], OUT rows cdp._rule_input[])
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  c cdp.computed_traits;
  val text;
  keep text;
  parts text[] := '{}';
  events text[] := '{}';
  any_event boolean := false;
  sources text[] := '{}';
  pending constant text := 'e.event_id NOT IN (SELECT unnest(j.event_ids) FROM cdp.journal j WHERE j.kind = ''events'')';
  ids integer[];
  names text[];
  aggs text[];
  windows interval[];
BEGIN
  SELECT coalesce(array_agg(d.trait_id ORDER BY d.trait_id), '{}'), coalesce(array_agg(d.name ORDER BY d.trait_id), '{}'),
         coalesce(array_agg(d.aggregate ORDER BY d.trait_id), '{}'), coalesce(array_agg(d."window" ORDER BY d.trait_id), '{}')
    INTO ids, names, aggs, windows
    FROM cdp.computed_traits d;

  -- One branch per trait: its matching events with the value it keeps.
  FOR c IN SELECT * FROM cdp.computed_traits ct
            WHERE only_trait IS NULL OR ct.trait_id = only_trait ORDER BY ct.trait_id LOOP
    IF c.event IS NULL THEN
      any_event := true;
    ELSE
      events := events || c.event;
    END IF;
    val := CASE WHEN c.aggregate IN ('sum', 'avg', 'min', 'max')
                THEN format('cdp._jsonb_numeric(e.properties -> %L)::text', c.property)
                WHEN c.property IS NOT NULL THEN format('e.properties ->> %L', c.property)
                ELSE 'NULL::text' END;
    parts := parts || format(
      'SELECT e.profile_id, %s::integer, %L::text, %L::boolean, e.occurred_at, e.event_id, %s FROM ev e WHERE true%s%s%s',
      c.trait_id, c.aggregate, c."window" IS NOT NULL, val,
      CASE WHEN c.event IS NOT NULL THEN format(' AND e.event = %L', c.event) ELSE '' END,
      CASE WHEN c.filter_sql IS NOT NULL THEN format(' AND (%s)', c.filter_sql) ELSE '' END,
      CASE WHEN c."window" IS NOT NULL THEN format(' AND e.occurred_at > $2 - %L::interval', c."window") ELSE '' END);
  END LOOP;

  -- The events: new ones, each from its partition (OFFSET 0 keeps the probe
  -- a parameterised inner side: joined, a batch of a few thousand ids is
  -- planned as a hash join over every stored event); all of reset profiles';
  -- or all.
  IF all_events THEN
    sources := sources || ('SELECT e.profile_id, e.event_id, e.occurred_at, e.event, e.properties '
                           'FROM cdp.event_data e WHERE ' || pending);
  ELSE
    IF event_ids IS NOT NULL AND cardinality(event_ids) > 0 THEN
      sources := sources || ('SELECT e.profile_id, e.event_id, e.occurred_at, e.event, e.properties FROM '
                             || CASE WHEN event_times IS NOT NULL
                                     THEN 'unnest($3, $4) AS u(id, at) CROSS JOIN LATERAL (SELECT e.* FROM cdp.event_data e '
                                          'WHERE e.event_id = u.id AND e.occurred_at = u.at OFFSET 0) e WHERE true'
                                     -- (journal rows written by 0.1.0 carry no times)
                                     ELSE 'cdp.event_data e WHERE e.event_id = ANY ($3)' END
                             || CASE WHEN cardinality(reset) > 0 THEN ' AND e.profile_id <> ALL ($5)' ELSE '' END);
    END IF;
    IF cardinality(reset) > 0 THEN
      sources := sources || ('SELECT e.profile_id, e.event_id, e.occurred_at, e.event, e.properties '
                             'FROM cdp.event_data e WHERE e.profile_id = ANY ($5) AND ' || pending);
    END IF;
  END IF;

  EXECUTE format($q$
    WITH ev AS MATERIALIZED (SELECT * FROM (%s) e%s),
    f AS MATERIALIZED (
      SELECT m.profile_id, cdp._trait_state_agg(m.trait_id, m.agg, m.windowed, m.occurred_at, m.event_id, m.v) AS st
        FROM (%s) AS m(profile_id, trait_id, agg, windowed, occurred_at, event_id, v)
       GROUP BY m.profile_id),
    src AS MATERIALIZED (
      SELECT p.profile_id, p.traits, p.consent_until, r.vals, r.state,
             -- when the values next change on their own: a window entry
             -- leaving, or a consent in force expiring; outside a pass, a
             -- due time already past stays (the pass has yet to evaluate
             -- the profile's audiences for it)
             CASE WHEN NOT $11 AND o.next_due <= $2 THEN o.next_due
                  ELSE least(r.due, (SELECT min(u) FROM unnest(p.consent_until) AS u WHERE u > $2 AND u < 'infinity'))
             END AS due
        FROM (%s) AS k(profile_id)
        JOIN cdp.profile_data p ON p.profile_id = k.profile_id AND p.merged_into IS NULL
        LEFT JOIN f ON f.profile_id = p.profile_id
        LEFT JOIN cdp.computed_trait_values o ON o.profile_id = p.profile_id
        CROSS JOIN LATERAL cdp._trait_state_apply(%s, f.st, $2, $6, $7, $8, $9) r),
    up AS (
      INSERT INTO cdp.computed_trait_values AS t (profile_id, vals, next_due, state)
      SELECT s.profile_id, s.vals, s.due, s.state FROM src s
      ON CONFLICT (profile_id) DO UPDATE SET vals = excluded.vals, next_due = excluded.next_due, state = excluded.state
       WHERE t.vals IS DISTINCT FROM excluded.vals OR t.next_due IS DISTINCT FROM excluded.next_due
          OR t.state IS DISTINCT FROM excluded.state)
    SELECT (SELECT coalesce(array_agg(f.profile_id), '{}') FROM f),
           CASE WHEN $10 THEN (SELECT coalesce(array_agg(ROW(s.profile_id, s.traits, s.vals, s.consent_until)::cdp._rule_input),
                                               '{}') FROM src s) END $q$,
    CASE WHEN cardinality(sources) = 0 OR cardinality(parts) = 0
         THEN 'SELECT NULL::bigint AS profile_id, NULL::bigint AS event_id, NULL::timestamptz AS occurred_at, '
              'NULL::text AS event, NULL::jsonb AS properties WHERE false'
         ELSE array_to_string(sources, ' UNION ALL ') END,
    CASE WHEN any_event OR cardinality(parts) = 0 THEN '' ELSE format(' WHERE e.event = ANY (%L::text[])', events) END,
    CASE WHEN cardinality(parts) = 0
         THEN 'SELECT NULL::bigint, NULL::integer, NULL::text, NULL::boolean, NULL::timestamptz, NULL::bigint, NULL::text WHERE false'
         ELSE array_to_string(parts, ' UNION ALL ') END,
    CASE WHEN reset_all THEN 'SELECT p2.profile_id FROM cdp.profile_data p2 WHERE p2.merged_into IS NULL '
                             'AND EXISTS (SELECT FROM cdp.computed_trait_values v WHERE v.profile_id = p2.profile_id) '
                             'UNION SELECT f.profile_id FROM f'
         ELSE 'SELECT unnest($1) UNION SELECT f.profile_id FROM f' END,
    CASE WHEN reset_all THEN 'NULL::bytea'
         WHEN cardinality(reset) > 0 THEN 'CASE WHEN p.profile_id = ANY ($5) THEN NULL ELSE o.state END'
         ELSE 'o.state' END)
    INTO folded, rows
    USING profiles, as_of, event_ids, event_times, reset, ids, names, aggs, windows, gather, in_pass;

  IF tombstones AND profiles IS NOT NULL THEN
    DELETE FROM cdp.computed_trait_values v
     WHERE v.profile_id IN (SELECT unnest(profiles))
       AND NOT EXISTS (SELECT FROM cdp.profile_data p WHERE p.profile_id = v.profile_id AND p.merged_into IS NULL);
  END IF;
END $$;
COMMENT ON FUNCTION cdp._trait_update(bigint[], timestamptz, bigint[], timestamptz[], bigint[], boolean, boolean, boolean, integer, boolean, boolean) IS
  'Internal: fold events into the computed-trait state of profiles and recompute their values, one row read and written per profile; returns the profiles with folded events and (gather) the live profiles as audience rules read them';

CREATE OR REPLACE FUNCTION cdp.create_trait(name text, aggregate text, event text DEFAULT NULL, property text DEFAULT NULL,
                                 "window" interval DEFAULT NULL, filter text DEFAULT NULL) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  checked text;
  tid integer;
BEGIN
  PERFORM cdp._check_name('computed trait', name);
  IF name IN ('profile_id', 'traits') THEN
    RAISE EXCEPTION 'a computed trait cannot be called "%"', name
      USING ERRCODE = 'duplicate_column', DETAIL = 'cdp.profile_traits already has a column of that name.';
  END IF;
  IF EXISTS (SELECT FROM cdp.computed_traits c WHERE c.name = create_trait.name) THEN
    RAISE EXCEPTION 'computed trait "%" already exists', name
      USING ERRCODE = 'duplicate_object', HINT = 'Drop it first with cdp.drop_trait(), or choose another name.';
  END IF;
  IF aggregate IS NULL OR aggregate NOT IN ('count', 'sum', 'min', 'max', 'avg', 'first', 'last', 'count_distinct') THEN
    RAISE EXCEPTION 'unknown aggregate "%"', aggregate
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use one of count, sum, min, max, avg, first, last, count_distinct.';
  END IF;
  IF aggregate = 'count' AND property IS NOT NULL THEN
    RAISE EXCEPTION 'count takes no property'
      USING ERRCODE = 'invalid_parameter_value',
            HINT = format('To count only events that have it, add the filter properties ? %L.', property);
  END IF;
  IF aggregate <> 'count' AND (property IS NULL OR property = '') THEN
    RAISE EXCEPTION '% needs a property', aggregate
      USING ERRCODE = 'invalid_parameter_value',
            HINT = format('Name the event property to aggregate, e.g. cdp.create_trait(%L, %L, ''Order Completed'', ''revenue'').',
                          name, aggregate);
  END IF;
  IF "window" IS NOT NULL AND "window" <= interval '0' THEN
    RAISE EXCEPTION 'window must be positive, not %', "window"
      USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. interval ''90 days''; NULL means all time.';
  END IF;
  IF filter IS NOT NULL THEN
    checked := (cdp._check_expression(filter, '(SELECT ''{}''::jsonb AS properties) t', NULL)).expression;
  END IF;

  PERFORM cdp._audience_lock();
  INSERT INTO cdp.computed_traits (name, aggregate, event, property, "window", filter, filter_sql)
  VALUES (name, aggregate, event, property, "window", filter, checked)
  RETURNING trait_id INTO tid;
  -- Backfill from the events already stored (those still in the journal
  -- are folded by the pass).
  PERFORM cdp._trait_update('{}', now(), tombstones => false, all_events => true, only_trait => tid);
  PERFORM cdp._rebuild_profile_traits();
END $$;
COMMENT ON FUNCTION cdp.create_trait(text, text, text, text, interval, text) IS
  'Define a computed trait: aggregate (count, sum, min, max, avg, first, last, count_distinct) over the events named event (NULL: any), of property, within a rolling window (NULL: all time), of events matching filter (an SQL expression over properties); backfilled from stored events, then kept incrementally';

CREATE OR REPLACE FUNCTION cdp.drop_trait(name text) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  users text;
BEGIN
  PERFORM cdp._audience_lock();
  IF NOT EXISTS (SELECT FROM cdp.computed_traits c WHERE c.name = drop_trait.name) THEN
    RAISE EXCEPTION 'computed trait "%" does not exist', name
      USING ERRCODE = 'undefined_object',
            HINT = format('Known computed traits: %s.', coalesce((SELECT string_agg(c.name, ', ' ORDER BY c.name)
                                                                   FROM cdp.computed_traits c), 'none'));
  END IF;
  SELECT string_agg(a.name, ', ' ORDER BY a.name) INTO users FROM cdp.audience_data a WHERE drop_trait.name = ANY (a.columns);
  IF users IS NOT NULL THEN
    RAISE EXCEPTION 'cannot drop computed trait "%" because audiences use it', name
      USING ERRCODE = 'dependent_objects_still_exist', DETAIL = format('Used by: %s.', users),
            HINT = 'Change or drop those audiences first.';
  END IF;
  DELETE FROM cdp.computed_traits c WHERE c.name = drop_trait.name;
  -- Every profile that has it: its state and values without it (and the
  -- next due time without its window).
  PERFORM cdp._trait_update(ARRAY(SELECT v.profile_id FROM cdp.computed_trait_values v WHERE v.vals ? drop_trait.name),
                            now(), tombstones => false);
  PERFORM cdp._rebuild_profile_traits();
END $$;
COMMENT ON FUNCTION cdp.drop_trait(text) IS 'Drop a computed trait (refused while an audience rule uses it)';

CREATE OR REPLACE FUNCTION cdp.rebuild_traits() RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  live bigint[];
BEGIN
  PERFORM cdp._audience_lock();
  -- Every state from scratch: the live profiles that have values or events.
  PERFORM cdp._trait_update(NULL, now(), tombstones => false, all_events => true, reset_all => true);
  SELECT coalesce(array_agg(p.profile_id), '{}') INTO live
    FROM cdp.profile_data p JOIN cdp.computed_trait_values v ON v.profile_id = p.profile_id
   WHERE p.merged_into IS NULL;
  -- Rows of profiles no longer live (tombstones awaiting a pass) go too.
  DELETE FROM cdp.computed_trait_values v
   WHERE NOT EXISTS (SELECT FROM cdp.profile_data p WHERE p.profile_id = v.profile_id AND p.merged_into IS NULL);
  INSERT INTO cdp.journal (kind, profile_ids) SELECT 'identity', live WHERE cardinality(live) > 0;
  RETURN jsonb_build_object('traits', (SELECT count(*) FROM cdp.computed_traits), 'profiles', cardinality(live));
END $$;
COMMENT ON FUNCTION cdp.rebuild_traits() IS
  'Recompute every computed trait of every profile from the stored events (after retention deleted events, or to check the incremental state); the next pass re-evaluates the audiences of those profiles';

CREATE OR REPLACE FUNCTION cdp._audience_pass(max_rows integer DEFAULT 1000) RETURNS jsonb
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  as_of timestamptz := now();
  n_rows bigint;
  n_events bigint;
  ev bigint[];
  ev_at timestamptz[];
  ev_profiles bigint[];
  ident bigint[];
  rebuilt bigint[];
  consent bigint[];
  erased bigint[];
  defs boolean;
  due bigint[];
  live_rebuilt bigint[];
  survivors bigint[];
  folded bigint[];
  gathered cdp._rule_input[];
  gathered_all boolean;
  touched bigint[];
  cand bigint[];
  m record;
  a cdp.audience_data;
  lvl integer;
  together cdp.audience_data[];
  alone cdp.audience_data[];
  res record;
  lvl_changes bigint[];
  lvl_changed jsonb;
  changed jsonb := '{}';
  all_changes bigint[] := '{}';
  dep_changed bigint[];
  errors integer := 0;
  evaluated integer := 0;
BEGIN
  PERFORM cdp._audience_lock();
  PERFORM cdp._rebuild_profile_traits();

  WITH taken AS (
    DELETE FROM cdp.journal j
     WHERE j.journal_id IN (SELECT j2.journal_id FROM cdp.journal j2 ORDER BY j2.journal_id LIMIT max_rows)
    RETURNING j.kind, j.profile_ids, j.event_ids, j.occurred_ats)
  SELECT (SELECT count(*) FROM taken),
         (SELECT coalesce(array_agg(u.e ORDER BY u.e), '{}') FROM taken t, unnest(t.event_ids) u(e) WHERE t.kind = 'events'),
         (SELECT array_agg(u.a ORDER BY u.e) FROM taken t, unnest(t.event_ids, t.occurred_ats) u(e, a)
           WHERE t.kind = 'events'),
         (SELECT coalesce(array_agg(DISTINCT p), '{}') FROM taken t, unnest(t.profile_ids) p WHERE t.kind = 'events'),
         (SELECT coalesce(array_agg(DISTINCT p), '{}') FROM taken t, unnest(t.profile_ids) p WHERE t.kind = 'identity'),
         (SELECT coalesce(array_agg(DISTINCT p), '{}') FROM taken t, unnest(t.profile_ids) p WHERE t.kind = 'rebuilt'),
         (SELECT coalesce(array_agg(DISTINCT p), '{}') FROM taken t, unnest(t.profile_ids) p WHERE t.kind = 'consent'),
         (SELECT coalesce(array_agg(DISTINCT p), '{}') FROM taken t, unnest(t.profile_ids) p WHERE t.kind = 'erased'),
         (SELECT count(*) > 0 FROM taken t WHERE t.kind = 'audience')
    INTO n_rows, ev, ev_at, ev_profiles, ident, rebuilt, consent, erased, defs;
  n_events := cardinality(ev);

  -- 1. Merged profiles: their state joins the survivor's.
  FOR m IN SELECT p.profile_id AS tomb, cdp.resolve(p.profile_id) AS survivor
             FROM cdp.profile_data p
            WHERE p.profile_id = ANY (ident) AND p.merged_into IS NOT NULL
              AND EXISTS (SELECT FROM cdp.computed_trait_values v WHERE v.profile_id = p.profile_id) LOOP
    INSERT INTO cdp.computed_trait_values AS s (profile_id, state)
    SELECT m.survivor, o.state FROM cdp.computed_trait_values o WHERE o.profile_id = m.tomb AND o.state IS NOT NULL
    ON CONFLICT (profile_id) DO UPDATE SET state = cdp._trait_state_merge(s.state, excluded.state);
    DELETE FROM cdp.computed_trait_values v WHERE v.profile_id = m.tomb;
  END LOOP;
  -- Rebuilt from events: the live profiles among those rebuilt (split,
  -- restitch) and the survivors of rebuilt profiles merged since (whose
  -- state, combined in above, predates the rebuild: events the rebuild
  -- moved to them are missing from it, events it moved away are still
  -- counted).  Erased profiles lose their row below.
  SELECT coalesce(array_agg(DISTINCT coalesce(p.merged_into, p.profile_id)), '{}') INTO live_rebuilt
    FROM cdp.profile_data p WHERE p.profile_id = ANY (rebuilt);

  -- 2-4. Every touched profile: new events folded in, due expiries
  -- dropped, values recomputed -- one statement.  Survivors of merges are
  -- touched too.
  SELECT coalesce(array_agg(v.profile_id), '{}') INTO due
    FROM cdp.computed_trait_values v WHERE v.next_due <= as_of;
  SELECT coalesce(array_agg(DISTINCT x), '{}') INTO touched
    FROM unnest(ident || rebuilt || erased || consent || due || ev_profiles || live_rebuilt) x;
  SELECT coalesce(array_agg(DISTINCT p.merged_into), '{}') INTO survivors
    FROM cdp.profile_data p WHERE p.profile_id IN (SELECT unnest(touched)) AND p.merged_into IS NOT NULL;
  SELECT u.folded, u.rows INTO folded, gathered
    FROM cdp._trait_update(touched || survivors, as_of, ev,
                           CASE WHEN array_position(ev_at, NULL) IS NULL THEN ev_at END, live_rebuilt,
                           cardinality(ident) + cardinality(rebuilt) + cardinality(erased) > 0,
                           gather => true, in_pass => true) u;
  SELECT coalesce(array_agg(DISTINCT x), '{}') INTO touched FROM unnest(touched || survivors || folded) x;

  -- 5. Audiences, in dependency order.  Those of one level that need no
  -- full evaluation go together (one statement); if any of their rules fails
  -- they go one at a time, so that one failing rule does not stop the others.
  FOR lvl IN SELECT DISTINCT ad.level FROM cdp.audience_data ad ORDER BY ad.level LOOP
    SELECT coalesce(array_agg(ad ORDER BY ad.audience_id) FILTER (WHERE NOT ad.needs_full), '{}'),
           coalesce(array_agg(ad ORDER BY ad.audience_id) FILTER (WHERE ad.needs_full), '{}')
      INTO together, alone
      FROM cdp.audience_data ad WHERE ad.level = lvl;
    -- The profiles whose membership of an audience used here changed.
    SELECT coalesce(array_agg(DISTINCT x::bigint), '{}') INTO dep_changed
      FROM unnest(together) g, unnest(g.depends_on) d, jsonb_array_elements_text(coalesce(changed -> d, '[]')) x;
    cand := touched || dep_changed;
    -- (a set difference: <@ compares every element with every other)
    gathered_all := NOT EXISTS (SELECT unnest(dep_changed) EXCEPT SELECT unnest(touched));
    IF cardinality(together) > 0 AND cardinality(cand) > 0 THEN
      BEGIN
        -- (a profile whose membership of an audience used here changed is
        -- among those gathered, unless a full evaluation changed it)
        WITH e AS MATERIALIZED (SELECT * FROM cdp._evaluate_level(together, cand, due, as_of,
                                                                  CASE WHEN gathered_all THEN gathered END))
        SELECT (SELECT coalesce(array_agg(u.c ORDER BY u.c), '{}') FROM e, unnest(e.change_ids) AS u(c)),
               (SELECT coalesce(jsonb_object_agg(g.name, to_jsonb(e.changed)), '{}')
                  FROM e JOIN unnest(together) AS g ON g.audience_id = e.audience_id)
          INTO lvl_changes, lvl_changed;
        UPDATE cdp.audience_data ad SET last_evaluated_at = as_of, error = NULL, errored_at = NULL
         WHERE ad.audience_id IN (SELECT g.audience_id FROM unnest(together) AS g)
           AND (ad.error IS NOT NULL OR ad.last_evaluated_at IS DISTINCT FROM as_of);
        -- (only now: a failure above leaves them as they were)
        all_changes := all_changes || lvl_changes;
        changed := changed || lvl_changed;
        evaluated := evaluated + cardinality(together);
      EXCEPTION WHEN OTHERS THEN
        alone := together || alone;
      END;
    END IF;
    FOREACH a IN ARRAY alone LOOP
      SELECT coalesce(array_agg(DISTINCT x::bigint), '{}') INTO dep_changed
        FROM unnest(a.depends_on) d, jsonb_array_elements_text(coalesce(changed -> d, '[]')) x;
      cand := touched || dep_changed;
      IF NOT a.needs_full AND cardinality(cand) = 0 THEN
        CONTINUE;
      END IF;
      BEGIN
        res := cdp._evaluate_audience(a, cand, a.needs_full, due, as_of);
        all_changes := all_changes || res.change_ids;
        changed := changed || jsonb_build_object(a.name, to_jsonb(res.changed));
        UPDATE cdp.audience_data ad SET last_evaluated_at = as_of, needs_full = false, error = NULL, errored_at = NULL
         WHERE ad.audience_id = a.audience_id
           AND (ad.needs_full OR ad.error IS NOT NULL OR ad.last_evaluated_at IS DISTINCT FROM as_of);
        evaluated := evaluated + 1;
      EXCEPTION WHEN OTHERS THEN
        -- Re-evaluated in full once it works again: what it missed is not lost.
        UPDATE cdp.audience_data ad SET error = SQLERRM, errored_at = as_of, needs_full = true
         WHERE ad.audience_id = a.audience_id;
        errors := errors + 1;
      END;
    END LOOP;
  END LOOP;

  -- 6. The activation stage turns the changes into outbox messages, in
  -- this transaction.
  PERFORM cdp._activation_stage(all_changes,
                                (SELECT coalesce(array_agg(p.profile_id), '{}') FROM cdp.profile_data p
                                  WHERE p.profile_id = ANY (consent) AND p.merged_into IS NULL),
                                erased);

  RETURN jsonb_build_object('journal_rows', n_rows, 'events', n_events, 'profiles', cardinality(touched),
                            'due', cardinality(due), 'audiences', evaluated, 'errors', errors,
                            'more', n_rows >= max_rows)
         || cdp._change_counts(all_changes);
END $$;
COMMENT ON FUNCTION cdp._audience_pass(integer) IS
  'Internal: one audience pass over at most max_rows journal rows (the worker''s unit of work)';

CREATE OR REPLACE FUNCTION cdp.erase_subject(subject cdp.identifier, reason text) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  pid bigint;
  ids cdp.identifier[];
  pids bigint[];
  hashes text[];
  erasure bigint;
  n_events bigint;
  n_ledger bigint;
BEGIN
  IF reason IS NULL OR btrim(reason) = '' THEN
    RAISE EXCEPTION 'an erasure needs a reason'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. ''Art. 17 request of 2026-11-22, ticket 4711''.';
  END IF;
  -- The audience pass first (as the pass takes it, before anything else):
  -- a pass that gathered the profile before the erasure committed would
  -- otherwise still evaluate it as live and could log it entering.
  PERFORM cdp._audience_lock();
  PERFORM cdp._lock_identity();

  pid := cdp.profile_of(subject);
  IF pid IS NULL THEN
    ids := ARRAY[subject];
    pids := '{}';
  ELSE
    SELECT array_agg(i.identifier) INTO ids FROM cdp.identity_data i WHERE i.profile_id = pid;
    SELECT array_agg(p.profile_id) INTO pids FROM cdp.profile_data p WHERE p.profile_id = pid OR p.merged_into = pid;
  END IF;
  SELECT array_agg(DISTINCT cdp._identifier_sha256(x) ORDER BY cdp._identifier_sha256(x)) INTO hashes FROM unnest(ids) x;

  -- Events of other people that carried one of these identifiers (dropped
  -- there by a rule) keep the event but lose the identifier.
  UPDATE cdp.event_data e SET identifiers = (SELECT coalesce(array_agg(x), '{}') FROM unnest(e.identifiers) x
                                              WHERE NOT x OPERATOR(cdp.=) ANY (ids))
   WHERE e.event_id IN (SELECT c.event_id FROM cdp.identity_conflicts c WHERE c.identifier OPERATOR(cdp.=) ANY (ids))
     AND e.profile_id <> ALL (pids);

  DELETE FROM cdp.message_ids m USING cdp.event_data e
   WHERE e.profile_id = ANY (pids) AND m.message_id = e.message_id AND m.event_id = e.event_id;
  DELETE FROM cdp.event_data e WHERE e.profile_id = ANY (pids);
  GET DIAGNOSTICS n_events = ROW_COUNT;
  DELETE FROM cdp.identity_conflicts c WHERE c.profile_id = ANY (pids) OR c.identifier OPERATOR(cdp.=) ANY (ids);
  DELETE FROM cdp.merges m WHERE m.profile_id = ANY (pids) OR m.merged_profile_id = ANY (pids);
  DELETE FROM cdp.trait_data t WHERE t.profile_id = ANY (pids);
  DELETE FROM cdp.identity_data i WHERE i.profile_id = ANY (pids) OR i.identifier OPERATOR(cdp.=) ANY (ids);
  DELETE FROM cdp.consent_state s WHERE s.profile_id = ANY (pids);
  DELETE FROM cdp.profile_data p WHERE p.profile_id = ANY (pids);
  -- Computed traits go now; memberships leave through the audience pass,
  -- which logs the exits (destinations must hear of them).
  DELETE FROM cdp.computed_trait_values v WHERE v.profile_id = ANY (pids);
  IF cardinality(pids) > 0 THEN
    INSERT INTO cdp.journal (kind, profile_ids) VALUES ('erased', pids);
  END IF;

  -- The person's decisions are those recorded for their identifiers (the
  -- profile an entry was recorded under may since have been split).
  PERFORM set_config('cdp.erasure_in_progress', 'on', true);
  DELETE FROM cdp.consent_data l WHERE l.subject OPERATOR(cdp.=) ANY (ids);
  GET DIAGNOSTICS n_ledger = ROW_COUNT;
  PERFORM set_config('cdp.erasure_in_progress', 'off', true);

  INSERT INTO cdp.erasures (reason, identifier_hashes) VALUES (reason, hashes) RETURNING erasure_id INTO erasure;
  INSERT INTO cdp.suppressed_identifiers (identifier_hash, erasure_id)
  SELECT h, erasure FROM unnest(hashes) h ON CONFLICT (identifier_hash) DO UPDATE SET erasure_id = excluded.erasure_id;

  RETURN jsonb_build_object('erasure_id', erasure, 'profiles', cardinality(pids), 'identifiers', cardinality(ids),
                            'events', n_events, 'ledger_entries', n_ledger, 'suppressed', cardinality(hashes));
END $$;
COMMENT ON FUNCTION cdp.erase_subject(cdp.identifier, text) IS
  'Erase the person an identifier belongs to (GDPR Art. 17): events, identifiers, traits, merges, consent ledger and everything derived; keeps only an erasure record (SHA-256 of the identifiers, date, reason) and suppresses the identifiers for future ingestion';

-- cdp.status() now reports the dispatcher as well (library code).
COMMENT ON FUNCTION cdp.status() IS
  'Version of the loaded cdp library, its shared state, its background worker (pid, database, last pass, messages processed, last error; empty "workers" when it is not running) and its dispatcher (pid, requests, messages delivered, failed requests, requests in flight, last error; "dispatcher" null when it is not running); requires cdp in shared_preload_libraries (SQLSTATE 55000 otherwise)';

REVOKE EXECUTE ON FUNCTION
  cdp._trait_state_fold(internal, integer, text, boolean, timestamptz, bigint, text), cdp._trait_state_final(internal),
  cdp._trait_state_agg(integer, text, boolean, timestamptz, bigint, text), cdp._trait_state_merge(bytea, bytea),
  cdp._trait_state_union(bytea), cdp._trait_state_apply(bytea, bytea, timestamptz, integer[], text[], text[], interval[]),
  cdp._trait_state_json(bytea),
  cdp._trait_update(bigint[], timestamptz, bigint[], timestamptz[], bigint[], boolean, boolean, boolean, integer, boolean, boolean),
  cdp._rule_source_rows(integer), cdp._evaluate_level(cdp.audience_data[], bigint[], bigint[], timestamptz, cdp._rule_input[])
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
  cdp._trait_state_fold(internal, integer, text, boolean, timestamptz, bigint, text), cdp._trait_state_final(internal),
  cdp._trait_state_agg(integer, text, boolean, timestamptz, bigint, text), cdp._trait_state_merge(bytea, bytea),
  cdp._trait_state_union(bytea), cdp._trait_state_apply(bytea, bytea, timestamptz, integer[], text[], text[], interval[]),
  cdp._trait_state_json(bytea),
  cdp._trait_update(bigint[], timestamptz, bigint[], timestamptz[], bigint[], boolean, boolean, boolean, integer, boolean, boolean),
  cdp._rule_source_rows(integer), cdp._evaluate_level(cdp.audience_data[], bigint[], bigint[], timestamptz, cdp._rule_input[])
TO cdp_admin;
