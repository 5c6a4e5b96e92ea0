-- Consent: purposes, the append-only ledger, the decision in force,
-- TCF strings, and reads that only show what the reader's purpose allows.
SET search_path = public, cdp;
TRUNCATE cdp.journal, cdp.identity_data, cdp.profile_data, cdp.trait_data, cdp.event_data, cdp.merges,
         cdp.identity_conflicts, cdp.message_ids, cdp.consent_state;
SELECT setval('cdp.event_id_seq', 1, false);

-- try(sql): '<SQLSTATE> <message>' or 'ok', run as the current role.
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ' ' || SQLERRM;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.try(text) TO PUBLIC;

SELECT purpose, lawful_basis, tcf_purposes, retention, slot FROM cdp.purposes ORDER BY purpose;

-- 1. Recording.  An unknown subject gets a profile: consent may come first.
SELECT cdp.record_consent('email:ada@example.com', 'email_marketing', true, 'newsletter form',
                          '{"form": "footer", "double_opt_in": "2026-05-01T10:00:00Z"}', '2026-05-01 10:00+00');
SELECT profile_id, identifiers FROM cdp.profiles;
SELECT profile_id, subject, purpose, granted, source, proof, recorded_at AT TIME ZONE 'UTC' AS recorded_utc
  FROM cdp.consent_ledger;
-- Bad input.
SELECT cdp.record_consent('email:ada@example.com', 'marketing', true);
SELECT cdp.record_consent('email:ada@example.com', 'analytics', NULL);
SELECT cdp.record_consent('email:ada@example.com', 'analytics', true, proof => '[1]');
SELECT cdp.record_consent('email:ada@example.com', 'analytics', true, recorded_at => '2026-05-01', expires_at => '2026-04-01');
SELECT cdp.record_consent('user_id:null', 'analytics', true);
SELECT cdp.has_consent(1, 'marketing');

-- 2. Default deny: no decision is no.
SELECT purpose, granted, status FROM cdp.consents WHERE profile_id = 1 ORDER BY purpose;
SELECT cdp.has_consent(1, 'email_marketing') AS email, cdp.has_consent(1, 'analytics') AS analytics,
       cdp.has_consent(999, 'analytics') AS unknown_profile;

-- 3. The latest decision across all of a profile's identifiers wins, also
-- when identifiers merge later.
SELECT cdp.identify('{user_id:u1}', '{"first_name": "Ada", "country": "DE"}');
SELECT cdp.record_consent('user_id:u1', 'email_marketing', false, 'preference center', recorded_at => '2026-06-01 09:00+00');
SELECT profile_id, purpose, granted, status FROM cdp.consents WHERE status <> 'missing' ORDER BY 1, 2;
SELECT cdp.identify('{user_id:u1,email:ada@example.com}');                       -- merge: profile 1 survives
SELECT profile_id, purpose, granted, status, ledger_id FROM cdp.consents WHERE status <> 'missing' ORDER BY 1, 2;
SELECT cdp.has_consent(2, 'email_marketing') AS via_merged_id;
-- An older decision recorded later (a backfill) does not override a newer one.
SELECT cdp.record_consent('email:ada@example.com', 'email_marketing', true, 'crm import', recorded_at => '2026-01-01 00:00+00');
SELECT granted, status FROM cdp.consents WHERE profile_id = 1 AND purpose = 'email_marketing';
SELECT cdp.record_consent('email:ada@example.com', 'email_marketing', true, 'newsletter form', recorded_at => '2026-07-01 00:00+00');
SELECT granted, status FROM cdp.consents WHERE profile_id = 1 AND purpose = 'email_marketing';

-- 4. Expiry: an expired grant is no grant.
SELECT cdp.record_consent('user_id:u1', 'personalization', true, 'app', recorded_at => now() - interval '2 days',
                          expires_at => now() - interval '1 day');
SELECT cdp.record_consent('user_id:u1', 'analytics', true, 'cookie banner', expires_at => now() + interval '1 year');
SELECT purpose, granted, status FROM cdp.consents WHERE profile_id = 1 ORDER BY purpose;

-- 5. TCF: one entry per purpose mapped to TCF purposes, the string kept as proof.
--    all-segments: purposes 1, 2, 7 consented; vendors 23, 37.
SELECT cdp.record_tcf('anonymous_id:web-7', 'COvzTO5OvzTO5B7ABCENAwEoAMIAAEKAAAqIAUAAAAgAIAAAAA.IBAwAwALwAlACgAQI.QAagAQAgAAAAg.cAAALAAAAsUA');
SELECT purpose, granted, proof->>'tc_string' = 'COvzTO5OvzTO5B7ABCENAwEoAMIAAEKAAAqIAUAAAAgAIAAAAA.IBAwAwALwAlACgAQI.QAagAQAgAAAAg.cAAALAAAAsUA' AS proof_kept,
       proof->'tcf_purposes' AS tcf_purposes
  FROM cdp.consent_ledger WHERE subject = 'anonymous_id:web-7' ORDER BY purpose;
-- A purpose needing only TCF purposes 1, 2 and 7 is granted; with a vendor, the vendor must agree too.
INSERT INTO cdp.purposes VALUES ('basic_ads', 'Basic advertising measured without profiles', 'consent', '{1,2,7}', '13 months');
SELECT cdp.record_tcf('anonymous_id:web-8', 'COvzTO5OvzTO5B7ABCENAwEoAMIAAEKAAAqIAUAAAAgAIAAAAA.IBAwAwALwAlACgAQI.QAagAQAgAAAAg.cAAALAAAAsUA', 'cmp', 23);
SELECT cdp.record_tcf('anonymous_id:web-9', 'COvzTO5OvzTO5B7ABCENAwEoAMIAAEKAAAqIAUAAAAgAIAAAAA.IBAwAwALwAlACgAQI.QAagAQAgAAAAg.cAAALAAAAsUA', 'cmp', 24);
SELECT subject, purpose, granted FROM cdp.consent_ledger WHERE purpose = 'basic_ads' ORDER BY subject;
-- Legitimate interest counts where the purpose's basis is legitimate interest.
INSERT INTO cdp.purposes VALUES ('content_measurement', 'Measure content performance', 'legitimate_interest', '{2,9}', NULL);
SELECT cdp.record_tcf('anonymous_id:web-10', 'COvzTO5OvzTO5B7ABCENAwEoAMIAAEKAAAqIAAAAAAAA');
SELECT purpose, granted FROM cdp.consent_ledger WHERE subject = 'anonymous_id:web-10' ORDER BY purpose;
SELECT cdp.record_tcf('anonymous_id:web-11', 'COvzTO5OvzTO5B7ABCENAwEoAMIAAEKAAAqIAAAAAAAA', vendor_id => 0);
DELETE FROM cdp.purposes WHERE purpose = 'content_measurement';    -- referenced by the ledger: refused
-- Each purpose has its own slot on the profile rows, which never changes.
SELECT purpose, slot FROM cdp.purposes WHERE slot > 4 ORDER BY slot;
UPDATE cdp.purposes SET slot = 1 WHERE purpose = 'basic_ads';
UPDATE cdp.purposes SET slot = 99 WHERE purpose = 'basic_ads';
UPDATE cdp.purposes SET description = description || '.', slot = slot WHERE purpose = 'basic_ads' RETURNING purpose, slot;

-- 6. The ledger is append-only for everyone, owner included.
SELECT pg_temp.try('UPDATE cdp.consent_data SET granted = true') AS owner_update,
       pg_temp.try('DELETE FROM cdp.consent_data') AS owner_delete,
       pg_temp.try('TRUNCATE cdp.consent_data') AS owner_truncate;
CREATE ROLE cdp_test_admin IN ROLE cdp_admin;
CREATE ROLE cdp_test_writer IN ROLE cdp_writer;
CREATE ROLE cdp_test_analyst IN ROLE cdp_analyst;
CREATE ROLE cdp_test_pii IN ROLE cdp_analyst, cdp_pii_reader;
CREATE ROLE cdp_test_nobody;
SET ROLE cdp_test_admin;
SELECT pg_temp.try('UPDATE cdp.consent_data SET granted = true') AS admin_update,
       pg_temp.try('DELETE FROM cdp.consent_data') AS admin_delete,
       pg_temp.try('UPDATE cdp.consent_ledger SET granted = true') AS admin_update_view;
SET ROLE cdp_test_writer;
SELECT pg_temp.try('UPDATE cdp.consent_data SET granted = true') AS writer_update,
       pg_temp.try('DELETE FROM cdp.consent_ledger') AS writer_delete_view;
SET ROLE cdp_test_analyst;
SELECT pg_temp.try('DELETE FROM cdp.consent_data') AS analyst_delete,
       pg_temp.try('SELECT * FROM cdp.consent_ledger') AS analyst_read_ledger;
RESET ROLE;
SELECT count(*) AS entries FROM cdp.consent_ledger;

-- 7. Least privilege.
SET ROLE cdp_test_writer;
SELECT cdp.track('{user_id:u1}', 'Order Completed', '{"revenue": 42, "email": "ada@example.com"}', '2026-07-02') AS writer_tracks;
SELECT cdp.record_consent('user_id:u2', 'analytics', true, 'app') > 0 AS writer_records;
SELECT pg_temp.try('SELECT * FROM cdp.profile_data') AS writer_reads_storage,
       pg_temp.try('SELECT cdp.restitch()') AS writer_restitches,
       pg_temp.try('INSERT INTO cdp.inbox (payload) VALUES (''{}'')') AS writer_fills_inbox;
SET ROLE cdp_test_analyst;
SELECT pg_temp.try('SELECT * FROM cdp.profile_data') AS analyst_reads_storage,
       pg_temp.try('SELECT cdp.identify(''{user_id:x}'')') AS analyst_ingests,
       pg_temp.try('SELECT cdp.profile(1)') AS analyst_profile_json,
       pg_temp.try('SELECT cdp.profile_of(''user_id:u1'')') AS analyst_looks_up;
SET ROLE cdp_test_nobody;
SELECT pg_temp.try('SELECT * FROM cdp.profiles') AS nobody_reads,
       pg_temp.try('SELECT cdp.track(''{user_id:u1}'', ''x'')') AS nobody_ingests;
RESET ROLE;
DELETE FROM cdp.inbox;

-- An admin adds a purpose: it gets the next slot.
SET ROLE cdp_test_admin;
INSERT INTO cdp.purposes (purpose, description, lawful_basis) VALUES ('admin_added', 'Added by an admin', 'contract')
RETURNING purpose, slot;
DELETE FROM cdp.purposes WHERE purpose = 'admin_added';
-- A slot outside 1-1000 is refused (it would index an array nobody reads,
-- or make every granting profile's row as long).
INSERT INTO cdp.purposes (purpose, description, lawful_basis, slot) VALUES ('bad_slot', 'x', 'contract', 0);
INSERT INTO cdp.purposes (purpose, description, lawful_basis, slot) VALUES ('bad_slot', 'x', 'contract', 1000000);
-- A slot given by hand ahead of the sequence is skipped by the purposes
-- added after it; one given behind it is kept; a row refused by a
-- constraint moves nothing.
INSERT INTO cdp.purposes (purpose, description, lawful_basis, slot) VALUES ('hand_slot', 'x', 'contract', 9),
  ('hand_slot_low', 'x', 'contract', 8);
INSERT INTO cdp.purposes (purpose, description, lawful_basis, slot) VALUES ('Bad-Name', 'x', 'contract', 900);
INSERT INTO cdp.purposes (purpose, description, lawful_basis) VALUES ('after_hand_1', 'x', 'contract'),
  ('after_hand_2', 'x', 'contract');
SELECT purpose, slot FROM cdp.purposes WHERE description = 'x' ORDER BY slot;
DELETE FROM cdp.purposes WHERE description = 'x';
RESET ROLE;

-- reads(): per purpose, the profiles an analyst reading for it sees in
-- cdp.profiles and those whose decision in force is granted (cdp.consents);
-- and the profile rows whose consent_until is out of step with
-- cdp.consent_state (must be none).
CREATE FUNCTION pg_temp.reads() RETURNS TABLE (purpose text, analyst_sees bigint[], granted bigint[])
  LANGUAGE plpgsql AS $$
DECLARE
  pu text;
BEGIN
  FOR pu IN SELECT p.purpose FROM cdp.purposes p ORDER BY p.slot LOOP
    purpose := pu;
    granted := (SELECT coalesce(array_agg(c.profile_id ORDER BY c.profile_id), '{}') FROM cdp.consents c
                 WHERE c.purpose = pu AND c.granted);
    PERFORM set_config('role', 'cdp_test_analyst', true);
    PERFORM set_config('cdp.purpose', pu, true);
    analyst_sees := (SELECT coalesce(array_agg(v.profile_id ORDER BY v.profile_id), '{}') FROM cdp.profiles v);
    PERFORM set_config('role', 'none', true);
    RETURN NEXT;
  END LOOP;
  IF EXISTS (SELECT FROM cdp.profile_data p WHERE p.consent_until IS DISTINCT FROM cdp._consent_until(p.profile_id)) THEN
    RAISE EXCEPTION 'consent_until out of step with cdp.consent_state for profiles %',
      (SELECT array_agg(p.profile_id ORDER BY p.profile_id) FROM cdp.profile_data p
        WHERE p.consent_until IS DISTINCT FROM cdp._consent_until(p.profile_id));
  END IF;
END $$;

-- 8. Consent-aware reads.  What is granted now (profile 1 is Ada: analytics
-- and email); a purpose not listed for a profile reads as no consent.
SELECT profile_id, purpose FROM cdp.consents WHERE granted ORDER BY 1, 2;
-- The decisions are also on the profile rows, each purpose at its slot:
-- infinity is granted without expiry, a time granted until then (the
-- expired personalization grant is kept, and counts as no grant when read).
SELECT profile_id, array_length(consent_until, 1) AS slots,
       (SELECT array_agg(CASE WHEN u IS NULL THEN NULL WHEN u = 'infinity' THEN 'granted'
                              WHEN u > now() THEN 'until later' ELSE 'expired' END ORDER BY n)
          FROM unnest(consent_until) WITH ORDINALITY AS x(u, n)) AS decisions
  FROM cdp.profile_data ORDER BY profile_id;
SELECT * FROM pg_temp.reads();
-- As owner: everything, unmasked.
SELECT profile_id, identifiers, traits FROM cdp.profiles ORDER BY profile_id;
-- As an analyst without a purpose: nothing.
SET ROLE cdp_test_analyst;
SHOW cdp.purpose;
SELECT count(*) AS profiles FROM cdp.profiles;
SELECT count(*) AS events FROM cdp.events;
SELECT count(*) AS identifiers FROM cdp.profile_identifiers;
-- With a purpose: only consented profiles, personal data masked.
SET cdp.purpose = 'analytics';
SELECT profile_id, identifiers, traits FROM cdp.profiles ORDER BY profile_id;
SELECT profile_id, event, properties, identifiers FROM cdp.events ORDER BY event_id;
SELECT identifier, profile_id FROM cdp.profile_identifiers ORDER BY 1, 2;
-- Another purpose, another audience.
SET cdp.purpose = 'email_marketing';
SELECT count(*) AS profiles FROM cdp.profiles;
SET cdp.purpose = 'no such purpose';
SELECT count(*) AS profiles FROM cdp.profiles;
-- A leaky function in the reader's WHERE clause does not see filtered rows.
SET cdp.purpose = 'analytics';
CREATE FUNCTION pg_temp.peek(bigint) RETURNS boolean LANGUAGE plpgsql COST 0.0001 AS $$
BEGIN RAISE NOTICE 'saw profile %', $1; RETURN true; END $$;
SELECT profile_id FROM cdp.profiles WHERE pg_temp.peek(profile_id);
-- Nor when the planner hashes the consented profiles, as it does at scale:
-- a function keeping what it is shown sees only profile 1 and 10 in every
-- view.
CREATE TEMP TABLE shown (view text, profile_id bigint);
CREATE FUNCTION pg_temp.keep(text, bigint) RETURNS boolean LANGUAGE plpgsql COST 0.0001 AS $$
BEGIN INSERT INTO pg_temp.shown VALUES ($1, $2); RETURN true; END $$;
SET enable_nestloop = off;
SET enable_mergejoin = off;
SELECT count(*) AS events FROM cdp.events WHERE pg_temp.keep('events', profile_id);
SELECT count(*) AS identifiers FROM cdp.profile_identifiers WHERE pg_temp.keep('profile_identifiers', profile_id);
SELECT count(*) AS profiles FROM cdp.profiles WHERE pg_temp.keep('profiles', profile_id);
RESET enable_nestloop;
RESET enable_mergejoin;
SELECT view, array_agg(DISTINCT profile_id ORDER BY profile_id) AS shown FROM pg_temp.shown GROUP BY 1 ORDER BY 1;
DROP TABLE pg_temp.shown;
DROP FUNCTION pg_temp.keep(text, bigint);
RESET ROLE;
-- An analyst who is also cdp_pii_reader sees personal data.
SET ROLE cdp_test_pii;
SET cdp.purpose = 'analytics';
SELECT profile_id, identifiers, traits FROM cdp.profiles ORDER BY profile_id;
RESET ROLE;
-- An admin sees every profile, whatever the purpose.
SET ROLE cdp_test_admin;
RESET cdp.purpose;
SELECT count(*) AS profiles FROM cdp.profiles;
RESET ROLE;
-- A BI tool needs nothing but its role's setting.
CREATE ROLE cdp_test_bi IN ROLE cdp_analyst;
ALTER ROLE cdp_test_bi SET cdp.purpose = 'analytics';
SELECT setconfig FROM pg_db_role_setting WHERE setrole = 'cdp_test_bi'::regrole;

-- 9. A withdrawal counts from the moment it commits.
SET ROLE cdp_test_analyst;
SET cdp.purpose = 'analytics';
SELECT count(*) AS before_withdrawal FROM cdp.profiles;
RESET ROLE;
SELECT cdp.record_consent('email:ada@example.com', 'analytics', false, 'cookie banner') > 0 AS withdrawn;
SET ROLE cdp_test_analyst;
SELECT count(*) AS after_withdrawal FROM cdp.profiles;
SELECT count(*) AS events_after FROM cdp.events;
RESET ROLE;
RESET cdp.purpose;
SELECT * FROM pg_temp.reads() WHERE purpose = 'analytics';

-- 10. The decisions on the profile rows follow merges, splits and rebuilds.
--     m1's email grants advertising, its cookie personalization; merged,
--     the profile has both; the cookie forgotten, advertising only.
SELECT cdp.record_consent('email:m1@example.com', 'advertising', true, recorded_at => '2026-01-01 00:00+00') > 0 AS granted;
SELECT cdp.record_consent('anonymous_id:m1-web', 'personalization', true, recorded_at => '2026-01-02 00:00+00') > 0 AS granted;
SELECT cdp.profile_of('email:m1@example.com') AS m1_email, cdp.profile_of('anonymous_id:m1-web') AS m1_web;
SELECT * FROM pg_temp.reads() WHERE purpose IN ('advertising', 'personalization');
SELECT cdp.identify('{email:m1@example.com,anonymous_id:m1-web}') AS merged_into;
SELECT profile_id, merged_into, consent_until = '{}' AS nothing_on_row FROM cdp.profile_data
 WHERE profile_id IN (11, 12) ORDER BY 1;
SELECT * FROM pg_temp.reads() WHERE purpose IN ('advertising', 'personalization');
SELECT cdp.forget_identifier('anonymous_id:m1-web')->'profiles_after' AS profiles_after;
SELECT * FROM pg_temp.reads() WHERE purpose IN ('advertising', 'personalization');
SELECT cdp.restitch() IS NOT NULL AS rebuilt;
SELECT * FROM pg_temp.reads();
-- The forgotten cookie is seen again with the email: new to the graph, but
-- the ledger still has its grant, so the profile has personalization again.
-- A new identifier the ledger does not know changes no decision.
SELECT cdp.identify('{email:m1@example.com,anonymous_id:m1-web,user_id:m1}')
       = cdp.profile_of('email:m1@example.com') AS same_profile;
SELECT * FROM pg_temp.reads() WHERE purpose IN ('advertising', 'personalization');

-- Decisions lost around cdp's functions (or profile rows restored from a
-- dump taken before 0.2.0, which have no consent_until): analysts would see
-- nobody.  cdp.refresh_consents() derives both copies from the ledger again.
DELETE FROM cdp.consent_state;
UPDATE cdp.profile_data SET consent_until = '{}';
SELECT count(*) AS profiles_with_grants FROM cdp.consents WHERE granted;
SELECT cdp.refresh_consents() = (SELECT count(*) FROM cdp.profile_data WHERE merged_into IS NULL) AS every_live_profile;
SELECT * FROM pg_temp.reads();

DELETE FROM cdp.purposes WHERE purpose = 'basic_ads';   -- referenced: refused
DROP FUNCTION pg_temp.peek(bigint), pg_temp.reads();
DROP ROLE cdp_test_admin, cdp_test_writer, cdp_test_analyst, cdp_test_pii, cdp_test_nobody, cdp_test_bi;
