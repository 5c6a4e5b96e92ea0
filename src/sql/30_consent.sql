-- Consent (src/consent/): purposes, an append-only ledger with proof, the
-- current decision per profile and purpose.  Missing consent means no.

CREATE TABLE cdp.purposes (
  purpose      text PRIMARY KEY CHECK (purpose ~ '^[a-z][a-z0-9_]{0,62}$'),
  description  text NOT NULL,
  lawful_basis text NOT NULL CHECK (lawful_basis IN ('consent', 'legitimate_interest', 'contract',
                                                     'legal_obligation', 'vital_interests', 'public_task')),
  tcf_purposes integer[] NOT NULL DEFAULT '{}'
               CHECK (tcf_purposes <@ ARRAY[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
  retention    interval CHECK (retention > interval '0'),
  -- (bounded: every granting profile's consent_until is as long as the
  -- largest slot it grants)
  slot         serial UNIQUE CHECK (slot BETWEEN 1 AND 1000)
);
COMMENT ON TABLE cdp.purposes IS
  'What customer data is used for, under which GDPR Art. 6 lawful basis, which IAB TCF v2.2 purposes it corresponds to, and how long events may be kept for it';
COMMENT ON COLUMN cdp.purposes.tcf_purposes IS
  'TCF purposes (1-11) that must all be allowed in a TC string for cdp.record_tcf() to record consent for this purpose; empty: not a TCF purpose';
COMMENT ON COLUMN cdp.purposes.retention IS
  'How long events are kept for this purpose; events with no cdp.retention rule are kept as long as the longest purpose retention (NULL everywhere: forever)';
COMMENT ON COLUMN cdp.purposes.slot IS
  'Where the purpose''s decision is kept in cdp.profile_data.consent_until; assigned when the purpose is added (the shipped purposes have 1-4) and never changed';

-- A purpose's slot indexes every profile's consent_until: changing it would
-- hand one purpose's grants to another.
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

INSERT INTO cdp.purposes (purpose, description, lawful_basis, tcf_purposes, retention) VALUES
  ('analytics', 'Measure audiences and improve our services: statistics, product and content analytics',
   'consent', '{1,8,9,10}', '25 months'),
  ('personalization', 'Personalise content and recommendations from the customer''s profile',
   'consent', '{1,5,6}', '24 months'),
  ('email_marketing', 'Send marketing email and newsletters (double opt-in)',
   'consent', '{}', '36 months'),
  ('advertising', 'Select and measure personalised advertising, including ad-platform audiences',
   'consent', '{1,2,3,4,7}', '13 months');

-- The ledger.  Storage table; read cdp.consent_ledger.
CREATE TABLE cdp.consent_data (
  id          bigserial PRIMARY KEY,
  subject     cdp.identifier NOT NULL,
  profile_id  bigint NOT NULL,
  purpose     text NOT NULL REFERENCES cdp.purposes (purpose),
  granted     boolean NOT NULL,
  source      text,
  proof       jsonb NOT NULL DEFAULT '{}',
  recorded_at timestamptz NOT NULL,
  expires_at  timestamptz,
  CHECK (expires_at IS NULL OR expires_at > recorded_at)
);
CREATE INDEX consent_data_subject ON cdp.consent_data (subject);
COMMENT ON TABLE cdp.consent_data IS
  'Every consent decision ever recorded, with its proof; append-only (only cdp.erase_subject() removes entries). Storage: read cdp.consent_ledger.';
COMMENT ON COLUMN cdp.consent_data.profile_id IS 'The profile the subject belonged to when the decision was recorded';

CREATE FUNCTION cdp._consent_ledger_append_only() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('cdp.erasure_in_progress', true) = 'on' THEN
    RETURN NULL;
  END IF;
  RAISE EXCEPTION 'the consent ledger is append-only'
    USING ERRCODE = 'insufficient_privilege',
          DETAIL = format('%s on cdp.consent_data is not allowed: the ledger is the proof of every decision.', TG_OP),
          HINT = 'Record a new decision with cdp.record_consent() (granted = false withdraws); only cdp.erase_subject() removes entries.';
END $$;
COMMENT ON FUNCTION cdp._consent_ledger_append_only() IS 'Internal: keeps the consent ledger append-only';
CREATE TRIGGER consent_data_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON cdp.consent_data
  FOR EACH STATEMENT EXECUTE FUNCTION cdp._consent_ledger_append_only();

-- The decision in force per profile and purpose, kept in step by
-- cdp.record_consent() and by identity changes (see src/consent/consent.c).
CREATE TABLE cdp.consent_state (
  profile_id  bigint NOT NULL,
  purpose     text NOT NULL,
  granted     boolean NOT NULL,
  recorded_at timestamptz NOT NULL,
  expires_at  timestamptz,
  ledger_id   bigint NOT NULL,
  PRIMARY KEY (profile_id, purpose)
);
-- Who has consent for a purpose: what consent-aware reads join with
-- (src/sql/40_reads.sql), read from the index alone.
CREATE INDEX consent_state_granted ON cdp.consent_state (purpose, profile_id) INCLUDE (expires_at) WHERE granted;
COMMENT ON TABLE cdp.consent_state IS
  'The latest decision per live profile and purpose across all of its identifiers (derived from the ledger). Storage: read cdp.consents.';

-- The same decisions on the profile row, for consent-aware reads
-- (src/sql/40_reads.sql): a per-row test instead of a join.  Element slot
-- (cdp.purposes.slot) is until when the purpose is granted: 'infinity'
-- without expiry, NULL (or past the end of the array, which ends at the
-- last granted slot) when withdrawn or missing.  An expiry is kept as it
-- is and compared with the time of the read, so an expired grant is no
-- grant without anything rewriting the row.
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

CREATE FUNCTION cdp._consent_refresh(profiles bigint[]) RETURNS void
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

-- Both copies of the decisions are derived from the ledger and kept by
-- every write that changes them; this recomputes them for every live
-- profile: after restoring a dump taken before 0.2.0 (whose profile rows
-- carry no consent_until: analysts would see no profile), or to repair
-- rows written around cdp's functions.
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

CREATE FUNCTION cdp._check_purpose(purpose text) RETURNS void
  LANGUAGE plpgsql STABLE
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF purpose IS NULL OR NOT EXISTS (SELECT 1 FROM cdp.purposes p WHERE p.purpose = _check_purpose.purpose) THEN
    RAISE EXCEPTION 'unknown purpose "%"', purpose
      USING ERRCODE = 'invalid_parameter_value',
            HINT = format('Known purposes: %s. Add one with INSERT INTO cdp.purposes.',
                          (SELECT string_agg(p.purpose, ', ' ORDER BY p.purpose) FROM cdp.purposes p));
  END IF;
END $$;
COMMENT ON FUNCTION cdp._check_purpose(text) IS 'Internal: raise 22023 naming the known purposes unless purpose is one';

-- Decisions for a profile and changes to its identifiers take turns (the
-- identity locks, src/identity/store.c): a decision racing a merge or
-- another decision for the same profile waits, then recomputes the state
-- from every committed ledger entry, never from a snapshot missing one
-- (specs/consent_withdrawal.spec).
CREATE FUNCTION cdp._consent_lock_subject(subject cdp.identifier) RETURNS bigint
  LANGUAGE c VOLATILE STRICT
  AS 'MODULE_PATHNAME', 'cdp_consent_lock_subject';
COMMENT ON FUNCTION cdp._consent_lock_subject(cdp.identifier) IS
  'Internal: lock the subject and its profile against concurrent ingestion and decisions until commit (as identity does); returns the profile, NULL if unknown';

CREATE FUNCTION cdp.record_consent(subject cdp.identifier, purpose text, granted boolean,
                                   source text DEFAULT NULL, proof jsonb DEFAULT '{}',
                                   recorded_at timestamptz DEFAULT now(),
                                   expires_at timestamptz DEFAULT NULL) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  pid bigint;
  entry bigint;
BEGIN
  PERFORM cdp._check_purpose(purpose);
  IF subject IS NULL OR granted IS NULL OR recorded_at IS NULL THEN
    RAISE EXCEPTION 'subject, granted and recorded_at must not be NULL'
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF proof IS NULL OR jsonb_typeof(proof) <> 'object' THEN
    RAISE EXCEPTION 'proof must be a JSON object' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Keep what shows the decision was made: form id, page, IP, wording version, double opt-in token.';
  END IF;
  IF expires_at IS NOT NULL AND expires_at <= recorded_at THEN
    RAISE EXCEPTION 'expires_at must be later than recorded_at' USING ERRCODE = 'invalid_parameter_value';
  END IF;

  -- Consent may come before any event: an unknown subject gets a profile.
  pid := cdp._consent_lock_subject(subject);
  IF pid IS NULL THEN
    pid := cdp.identify(ARRAY[subject], '{}', recorded_at, coalesce(source, 'consent'));
  END IF;

  INSERT INTO cdp.consent_data (subject, profile_id, purpose, granted, source, proof, recorded_at, expires_at)
  VALUES (subject, pid, purpose, granted, source, proof, recorded_at, expires_at)
  RETURNING id INTO entry;
  PERFORM cdp._consent_refresh(ARRAY[pid]);
  INSERT INTO cdp.journal (kind, profile_ids) VALUES ('consent', ARRAY[pid]);
  RETURN entry;
END $$;
COMMENT ON FUNCTION cdp.record_consent(cdp.identifier, text, boolean, text, jsonb, timestamptz, timestamptz) IS
  'Append a consent decision (granted = false withdraws) with its proof to the ledger; the latest decision across a profile''s identifiers is in force at once. Returns the ledger id.';

CREATE FUNCTION cdp.record_tcf(subject cdp.identifier, tc cdp.tcstring, source text DEFAULT NULL,
                               vendor_id integer DEFAULT NULL) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  p record;
  d jsonb := cdp.tcf_decode(tc);
  allowed boolean;
  n integer := 0;
BEGIN
  IF vendor_id IS NOT NULL AND vendor_id NOT BETWEEN 1 AND 65535 THEN
    RAISE EXCEPTION 'vendor_id % is not a TCF vendor id', vendor_id
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Vendor ids are 1-65535 (the Global Vendor List id of your company).';
  END IF;
  FOR p IN SELECT * FROM cdp.purposes WHERE cardinality(tcf_purposes) > 0 ORDER BY purpose LOOP
    -- Every mapped TCF purpose must be allowed: by consent, or where the
    -- purpose's basis is legitimate interest, by an established one.
    SELECT bool_and(cdp.tcf_purpose_consent(tc, t)
                    OR (p.lawful_basis = 'legitimate_interest' AND cdp.tcf_purpose_legitimate_interest(tc, t)))
      INTO allowed FROM unnest(p.tcf_purposes) t;
    IF vendor_id IS NOT NULL THEN
      allowed := allowed AND (cdp.tcf_vendor_consent(tc, vendor_id)
                              OR (p.lawful_basis = 'legitimate_interest' AND cdp.tcf_vendor_legitimate_interest(tc, vendor_id)));
    END IF;
    PERFORM cdp.record_consent(subject, p.purpose, allowed, coalesce(source, 'tcf'),
              jsonb_build_object('tc_string', tc::text, 'tcf_purposes', p.tcf_purposes, 'vendor_id', vendor_id,
                                 'cmp_id', d->'cmp_id', 'tc_last_updated', d->'last_updated',
                                 'policy_version', d->'policy_version'));
    n := n + 1;
  END LOOP;
  RETURN n;
END $$;
COMMENT ON FUNCTION cdp.record_tcf(cdp.identifier, cdp.tcstring, text, integer) IS
  'Record one ledger entry per cdp purpose mapped to TCF purposes, granted when the TC string allows every mapped purpose (and the vendor, if given); the raw string is kept as proof. Returns the number of entries.';

CREATE VIEW cdp.consent_ledger AS
  SELECT l.id, coalesce(i.profile_id, l.profile_id) AS profile_id, l.subject, l.purpose, l.granted,
         l.source, l.proof, l.recorded_at, l.expires_at
    FROM cdp.consent_data l
    LEFT JOIN cdp.identity_data i ON i.identifier OPERATOR(cdp.=) l.subject;
COMMENT ON VIEW cdp.consent_ledger IS
  'Every consent decision with its proof, attributed to the subject''s current profile; append-only';

CREATE VIEW cdp.consents AS
  SELECT p.profile_id, pu.purpose,
         coalesce(s.granted AND (s.expires_at IS NULL OR s.expires_at > now()), false) AS granted,
         CASE WHEN s.profile_id IS NULL THEN 'missing'
              WHEN NOT s.granted THEN 'withdrawn'
              WHEN s.expires_at <= now() THEN 'expired'
              ELSE 'granted' END AS status,
         s.recorded_at, s.expires_at, s.ledger_id
    FROM cdp.profile_data p
   CROSS JOIN cdp.purposes pu
    LEFT JOIN cdp.consent_state s ON s.profile_id = p.profile_id AND s.purpose = pu.purpose
   WHERE p.merged_into IS NULL;
COMMENT ON VIEW cdp.consents IS
  'The decision in force per live profile and purpose: the latest across all of the profile''s identifiers; missing, withdrawn or expired means not granted';

CREATE FUNCTION cdp.has_consent(profile_id bigint, purpose text) RETURNS boolean
  LANGUAGE plpgsql STABLE
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM cdp._check_purpose(purpose);
  RETURN coalesce((SELECT s.granted AND (s.expires_at IS NULL OR s.expires_at > now())
                     FROM cdp.consent_state s
                    WHERE s.profile_id = cdp.resolve(has_consent.profile_id) AND s.purpose = has_consent.purpose), false);
END $$;
COMMENT ON FUNCTION cdp.has_consent(bigint, text) IS
  'Does the profile (or the survivor of a merged id) have consent for the purpose now? Missing or expired: false';
