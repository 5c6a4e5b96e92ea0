-- cdp 0.1.0 -> 0.2.0
--
-- Every SQL change since 0.1.0, in the order it was made.  Each change is also
-- in src/sql/ (fresh installs); t/009_upgrade.pl checks that both agree.

\echo Use "ALTER EXTENSION cdp UPDATE TO '0.2.0'" to load this file. \quit

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
  ALTER COLUMN slot SET NOT NULL, ADD UNIQUE (slot);
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

REVOKE EXECUTE ON FUNCTION cdp._purpose_slot_fixed(), cdp._consent_until(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION cdp._purpose_slot_fixed(), cdp._consent_until(bigint) TO cdp_admin;

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
