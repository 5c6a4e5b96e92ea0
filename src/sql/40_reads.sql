-- Consent-aware reads: the public views over identity's storage.
--
-- Readers who may see everything (superusers, the extension owner, members
-- of cdp_admin) see every live profile.  Everybody else who was granted a
-- view -- members of cdp_analyst -- sees only profiles with consent for the
-- session's cdp.purpose, nothing while it is unset, and personal data
-- masked unless they are also members of cdp_pii_reader.  The views run
-- with their owner's rights, analysts have no access to the storage
-- tables, and security_barrier keeps functions in a reader's WHERE clause
-- from seeing rows the view filters out.  The reader tests are written as
-- (SELECT ...) so that they are evaluated once per query, not per row.
--
-- Each view is two branches, UNION ALL, of which one runs: readers who see
-- everything get the storage as it is (no consent test, nothing to mask);
-- everybody else gets only the profiles that have consent for the purpose.
-- cdp.profiles tests each profile row itself: consent_until (kept with
-- cdp.consent_state, src/sql/30_consent.sql) at the slot of the session's
-- purpose, looked up once per query, must lie after now() -- no join, and
-- an expiry counts at the time of the read.  The views over other tables
-- are joined (a semi-join) with the profiles that have consent, read once
-- per query from the index consent_state_granted rather than once per event
-- partition ("sees all OR profile IN (...)" would), the planner picking the
-- join method by size.  A branch whose test is false is not executed at
-- all, and columns a query does not use are not computed (masking
-- included).  bench/consent measures the cost against the owner.

CREATE TABLE cdp.pii_keys (
  key text PRIMARY KEY
);
COMMENT ON TABLE cdp.pii_keys IS
  'Top-level trait and property keys holding personal data: masked for readers who are not cdp_pii_reader';
INSERT INTO cdp.pii_keys VALUES ('email'), ('phone'), ('first_name'), ('last_name'), ('name'), ('address'), ('birthday');

CREATE FUNCTION cdp._reader_sees_all() RETURNS boolean
  LANGUAGE sql STABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  RETURN pg_has_role(current_user, 'cdp_admin', 'MEMBER')
      OR pg_has_role(current_user, (SELECT e.extowner FROM pg_extension e WHERE e.extname = 'cdp'), 'MEMBER');
COMMENT ON FUNCTION cdp._reader_sees_all() IS
  'Internal: may the current user see every profile (superuser, extension owner, cdp_admin)?';

CREATE FUNCTION cdp._reader_sees_pii() RETURNS boolean
  LANGUAGE sql STABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  RETURN cdp._reader_sees_all() OR pg_has_role(current_user, 'cdp_pii_reader', 'MEMBER');
COMMENT ON FUNCTION cdp._reader_sees_pii() IS 'Internal: may the current user see personal data unmasked?';

CREATE FUNCTION cdp._reader_purpose() RETURNS text
  LANGUAGE sql STABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  RETURN nullif(current_setting('cdp.purpose', true), '');
COMMENT ON FUNCTION cdp._reader_purpose() IS 'Internal: the session''s cdp.purpose, NULL when unset';

CREATE FUNCTION cdp._reader_slot() RETURNS integer
  LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  RETURN (SELECT pu.slot FROM cdp.purposes pu WHERE pu.purpose = cdp._reader_purpose());
COMMENT ON FUNCTION cdp._reader_slot() IS
  'Internal: the cdp.purposes.slot of the session''s cdp.purpose, NULL when unset or unknown';

CREATE FUNCTION cdp._pii_keys() RETURNS text[]
  LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  RETURN (SELECT coalesce(array_agg(k.key), '{}') FROM cdp.pii_keys k);
COMMENT ON FUNCTION cdp._pii_keys() IS 'Internal: the keys in cdp.pii_keys';

CREATE FUNCTION cdp._mask_identifier(cdp.identifier) RETURNS cdp.identifier
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'cdp_mask_identifier';
COMMENT ON FUNCTION cdp._mask_identifier(cdp.identifier) IS 'Internal: the identifier''s kind with its value hidden (email:***)';
CREATE FUNCTION cdp._mask_identifiers(cdp.identifier[]) RETURNS cdp.identifier[]
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'cdp_mask_identifiers';
COMMENT ON FUNCTION cdp._mask_identifiers(cdp.identifier[]) IS 'Internal: every identifier masked';
CREATE FUNCTION cdp._mask_traits(doc jsonb, keys text[]) RETURNS jsonb
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'cdp_mask_traits';
COMMENT ON FUNCTION cdp._mask_traits(jsonb, text[]) IS 'Internal: the values of these top-level keys replaced by "***"';

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

-- The profiles a reader may see: all, or those with consent for the purpose.
CREATE VIEW cdp.profiles WITH (security_barrier) AS
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
COMMENT ON VIEW cdp.profiles IS
  'Live profiles with their traits and identifiers; for analysts only those with consent for cdp.purpose, personal data masked unless cdp_pii_reader';

CREATE VIEW cdp.profile_identifiers WITH (security_barrier) AS
  SELECT i.identifier, i.profile_id, i.source, i.first_seen, i.last_seen
    FROM cdp.identity_data i
   WHERE (SELECT cdp._reader_sees_all())
  UNION ALL
  SELECT c.identifier, c.profile_id, c.source, c.first_seen, c.last_seen
    FROM cdp._profile_identifiers_consented c;
COMMENT ON VIEW cdp.profile_identifiers IS
  'Which live profile each identifier belongs to, where it was first seen and when; consent-aware like cdp.profiles';

CREATE VIEW cdp.events WITH (security_barrier) AS
  SELECT e.event_id, e.profile_id, e.event, e.properties, e.identifiers,
         e.occurred_at, e.received_at, e.source, e.message_id, e.type
    FROM cdp.event_data e
   WHERE (SELECT cdp._reader_sees_all())
  UNION ALL
  SELECT c.event_id, c.profile_id, c.event, c.properties, c.identifiers,
         c.occurred_at, c.received_at, c.source, c.message_id, c.type
    FROM cdp._events_consented c;
COMMENT ON VIEW cdp.events IS
  'Every accepted message, attributed to the live profile (merges move history to the survivor); type is the Segment message type; consent-aware like cdp.profiles';
