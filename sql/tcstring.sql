-- cdp.tcstring: IAB TCF v2.x TC strings, checked against public decoders'
-- test vectors (sql/data/tcf_vectors.json, from ../shared/testdata) and
-- strings encoded for cdp (sql/data/tcf_extra_vectors.json).
SET search_path = public, cdp;

-- try(tc): 'ok' or '<SQLSTATE> <detail>' without aborting.
CREATE FUNCTION pg_temp.try(tc text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  state text;
  detail text;
BEGIN
  PERFORM tc::cdp.tcstring;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL;
  RETURN state || ' ' || detail;
END $$;

-- mismatches(tc, x): every key of a vector's decode x (camelCase, as the
-- public decoders name them) that cdp.tcf_decode() gets wrong.
CREATE FUNCTION pg_temp.mismatches(tc text, x jsonb) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
  d jsonb := cdp.tcf_decode(tc::cdp.tcstring);
  m record;
  s jsonb;
  ours jsonb;
  theirs jsonb;
BEGIN
  FOR m IN SELECT * FROM (VALUES
      ('version', 'version'), ('cmpId', 'cmp_id'), ('cmpVersion', 'cmp_version'),
      ('consentScreen', 'consent_screen'), ('consentLanguage', 'consent_language'),
      ('vendorListVersion', 'vendor_list_version'), ('tcfPolicyVersion', 'policy_version'),
      ('isServiceSpecific', 'is_service_specific'), ('useNonStandardTexts', 'use_non_standard_texts'),
      ('purposeOneTreatment', 'purpose_one_treatment'), ('publisherCC', 'publisher_cc'),
      ('specialFeatureOptIns', 'special_feature_optins'), ('purposesConsent', 'purpose_consents'),
      ('purposesLITransparency', 'purpose_legitimate_interests')) AS k(theirs, ours)
  LOOP
    IF x ? m.theirs AND x->m.theirs IS DISTINCT FROM d->m.ours THEN
      RETURN NEXT m.theirs || ': expected ' || (x->m.theirs)::text || ', got ' || coalesce((d->m.ours)::text, 'nothing');
    END IF;
  END LOOP;
  IF (x->>'created')::timestamptz IS DISTINCT FROM (d->>'created')::timestamptz THEN
    RETURN NEXT 'created: expected ' || (x->>'created') || ', got ' || (d->>'created');
  END IF;
  IF (x->>'lastUpdated')::timestamptz IS DISTINCT FROM (d->>'last_updated')::timestamptz THEN
    RETURN NEXT 'lastUpdated: expected ' || (x->>'lastUpdated') || ', got ' || (d->>'last_updated');
  END IF;
  FOR m IN SELECT * FROM (VALUES ('vendorConsents', 'vendor_consents'),
                                 ('vendorLegitimateInterests', 'vendor_legitimate_interests')) AS k(theirs, ours)
  LOOP
    -- Long lists are given as a summary: "810 ids (first 10: [...], last 5: [...])".
    IF jsonb_typeof(x->m.theirs->'ids') = 'string' THEN
      IF x->m.theirs->>'ids' <> format('%s ids (first 10: %s, last 5: %s)', jsonb_array_length(d->m.ours),
            (SELECT jsonb_agg(v ORDER BY n) FROM jsonb_array_elements(d->m.ours) WITH ORDINALITY a(v, n) WHERE n <= 10),
            (SELECT jsonb_agg(v ORDER BY n) FROM jsonb_array_elements(d->m.ours) WITH ORDINALITY a(v, n)
              WHERE n > jsonb_array_length(d->m.ours) - 5)) THEN
        RETURN NEXT m.theirs || ' (summary)';
      END IF;
    ELSIF x->m.theirs->'ids' IS DISTINCT FROM d->m.ours THEN
      RETURN NEXT m.theirs;
    END IF;
    IF (x->m.theirs->>'count')::int IS DISTINCT FROM jsonb_array_length(d->m.ours) THEN
      RETURN NEXT m.theirs || ' count';
    END IF;
  END LOOP;
  -- Restrictions: the union of each (purpose, type)'s ranges, whatever the encoding.
  SELECT coalesce(jsonb_agg(r ORDER BY r->>'purpose', r->>'type'), '[]') INTO theirs FROM (
    SELECT jsonb_build_object('purpose', (e->>'purposeId')::int, 'type', (e->>'restrictionType')::int,
             'vendors', coalesce((SELECT jsonb_agg(DISTINCT v ORDER BY v) FROM
               jsonb_array_elements(x->'pubRestrictions') e2, jsonb_array_elements(e2->'ranges') rg,
               generate_series((rg->>0)::int, (rg->>1)::int) v
              WHERE e2->>'purposeId' = e->>'purposeId' AND e2->>'restrictionType' = e->>'restrictionType'), '[]')) AS r
      FROM (SELECT DISTINCT ON (e->>'purposeId', e->>'restrictionType') e
              FROM jsonb_array_elements(coalesce(x->'pubRestrictions', '[]')) e) e) rs;
  SELECT coalesce(jsonb_agg(r ORDER BY r->>'purpose', r->>'type'), '[]') INTO ours
    FROM jsonb_array_elements(d->'publisher_restrictions') r;
  IF theirs IS DISTINCT FROM ours THEN
    RETURN NEXT 'pubRestrictions: expected ' || theirs::text || ', got ' || ours::text;
  END IF;
  -- Optional segments.
  FOR s IN SELECT * FROM jsonb_array_elements(coalesce(x->'segments', '[]')) LOOP
    IF (s->>'segmentType')::int = 1 AND s->'ids' IS DISTINCT FROM d->'disclosed_vendors' THEN
      RETURN NEXT 'disclosedVendors';
    ELSIF (s->>'segmentType')::int = 2 AND s->'ids' IS DISTINCT FROM d->'allowed_vendors' THEN
      RETURN NEXT 'allowedVendors';
    ELSIF (s->>'segmentType')::int = 3 AND jsonb_build_object(
            'purpose_consents', s->'pubPurposesConsent', 'purpose_legitimate_interests', s->'pubPurposesLITransparency',
            'custom_purpose_consents', s->'customPurposesConsent',
            'custom_purpose_legitimate_interests', s->'customPurposesLITransparency') IS DISTINCT FROM d->'publisher_tc' THEN
      RETURN NEXT 'publisherTC: expected ' || s::text || ', got ' || (d->'publisher_tc')::text;
    END IF;
  END LOOP;
  IF NOT (x->'segments' @> '[{"segmentType": 1}]') AND d ? 'disclosed_vendors' THEN RETURN NEXT 'unexpected disclosed_vendors'; END IF;
  IF NOT (x->'segments' @> '[{"segmentType": 2}]') AND d ? 'allowed_vendors' THEN RETURN NEXT 'unexpected allowed_vendors'; END IF;
  IF NOT (x->'segments' @> '[{"segmentType": 3}]') AND d ? 'publisher_tc' THEN RETURN NEXT 'unexpected publisher_tc'; END IF;
END $$;

\set vectors `cat sql/data/tcf_vectors.json`
CREATE TEMP TABLE vectors AS
  SELECT v->>'id' AS id, v->>'tc_string' AS tc, v->'independent_decode_crosscheck' AS x, v->'expected_per_source_test' AS e
    FROM jsonb_array_elements((:'vectors')::jsonb->'valid') v;
CREATE TEMP TABLE bad_vectors AS
  SELECT v->>'tc_string' AS tc, v->>'expected_error_per_source' AS theirs
    FROM jsonb_array_elements((:'vectors')::jsonb->'invalid') v;

-- Every valid vector decodes to every value listed for it: no mismatch at all.
SELECT count(*) AS vectors FROM vectors;
SELECT id, m AS mismatch FROM vectors, pg_temp.mismatches(tc, x) m;
-- The values the decoders' own tests assert agree too (a sample of keys).
SELECT id FROM vectors
 WHERE (e ? 'cmpId' AND (e->'cmpId') <> (cdp.tcf_decode(tc::cdp.tcstring)->'cmp_id'))
    OR (e ? 'purposesConsent' AND (e->'purposesConsent') <> (cdp.tcf_decode(tc::cdp.tcstring)->'purpose_consents'))
    OR (e ? 'publisherCC' AND (e->'publisherCC') <> (cdp.tcf_decode(tc::cdp.tcstring)->'publisher_cc'));
-- What they hold, at a glance.
SELECT id, d->'cmp_id' AS cmp, d->'policy_version' AS policy, d->'consent_language' AS lang,
       d->'purpose_consents' AS purposes, jsonb_array_length(d->'vendor_consents') AS vendors,
       jsonb_array_length(d->'publisher_restrictions') AS restrictions,
       array_remove(ARRAY[CASE WHEN d ? 'disclosed_vendors' THEN 'disclosed' END,
                          CASE WHEN d ? 'allowed_vendors' THEN 'allowed' END,
                          CASE WHEN d ? 'publisher_tc' THEN 'publisher_tc' END], NULL) AS segments
  FROM vectors, cdp.tcf_decode(tc::cdp.tcstring) d ORDER BY id;
-- One decode in full.
SELECT jsonb_pretty(cdp.tcf_decode(tc::cdp.tcstring)) FROM vectors WHERE id = 'liveramp-pub-restrictions';

-- Every invalid vector is refused with 22P02 and a reason.
SELECT left(tc, 24) || '...' AS tc, theirs, pg_temp.try(tc) AS cdp FROM bad_vectors;

-- Strings encoded for cdp: bitfield and range encodings, overlapping ranges,
-- publisher restrictions, every optional segment in any order, padding,
-- and a catalogue of malformed input.
\set extra `cat sql/data/tcf_extra_vectors.json`
CREATE TEMP TABLE extra AS
  SELECT v->>'name' AS name, v->>'tc_string' AS tc, v->'expected_json' AS expected,
         v->>'expected_error_substring' AS error, v->'expected_counts' AS counts
    FROM jsonb_array_elements((:'extra')::jsonb) v;
SELECT count(*) FILTER (WHERE expected IS NOT NULL) AS valid, count(*) FILTER (WHERE error IS NOT NULL) AS invalid,
       count(*) FILTER (WHERE counts IS NOT NULL) AS large FROM extra;
-- Valid ones decode exactly to the expected JSON (timestamps compared as instants).
SELECT name, jsonb_pretty(cdp.tcf_decode(tc::cdp.tcstring) - 'created' - 'last_updated') AS got
  FROM extra
 WHERE expected IS NOT NULL
   AND ((cdp.tcf_decode(tc::cdp.tcstring) - 'created' - 'last_updated') <> (expected - 'created' - 'last_updated')
        OR (cdp.tcf_decode(tc::cdp.tcstring)->>'created')::timestamptz <> (expected->>'created')::timestamptz
        OR (cdp.tcf_decode(tc::cdp.tcstring)->>'last_updated')::timestamptz <> (expected->>'last_updated')::timestamptz);
-- Invalid ones fail with 22P02 and the expected reason.
SELECT name, pg_temp.try(tc) AS got FROM extra
 WHERE error IS NOT NULL AND (pg_temp.try(tc) NOT LIKE '22P02 %' OR strpos(pg_temp.try(tc), error) = 0);
SELECT name, pg_temp.try(tc) AS error FROM extra WHERE error IS NOT NULL ORDER BY name;
-- Pathological but valid strings stay bounded.
SELECT name, jsonb_array_length(d->'vendor_consents') AS vendor_consents,
       jsonb_array_length(d->'vendor_legitimate_interests') AS vendor_li,
       jsonb_array_length(d->'publisher_restrictions') AS restrictions,
       jsonb_array_length(d->'publisher_restrictions'->0->'vendors') AS restriction_0_vendors, counts
  FROM extra, cdp.tcf_decode(tc::cdp.tcstring) d WHERE counts IS NOT NULL ORDER BY name;
-- The decode is built as a jsonb value directly: it is exactly what its
-- JSON text parses back to, for every vector, the large ones included.
SELECT count(*) AS decodes,
       count(*) FILTER (WHERE d::text::jsonb IS DISTINCT FROM d OR d::text::jsonb::text <> d::text
                           OR pg_column_size(d::text::jsonb) <> pg_column_size(d)) AS differ_from_text
  FROM (SELECT cdp.tcf_decode(tc::cdp.tcstring) FROM vectors UNION ALL
        SELECT cdp.tcf_decode(tc::cdp.tcstring) FROM extra WHERE error IS NULL) x(d);

-- Accessors.
SELECT cdp.tcf_purpose_consent(tc::cdp.tcstring, 1) AS p1, cdp.tcf_purpose_consent(tc::cdp.tcstring, 2) AS p2,
       cdp.tcf_purpose_legitimate_interest(tc::cdp.tcstring, 2) AS li2,
       cdp.tcf_vendor_consent(tc::cdp.tcstring, 23) AS v23, cdp.tcf_vendor_consent(tc::cdp.tcstring, 24) AS v24,
       cdp.tcf_vendor_consent(tc::cdp.tcstring, 0) AS v0, cdp.tcf_purpose_consent(tc::cdp.tcstring, 99) AS p99
  FROM extra WHERE name = 'all-segments';
SELECT cdp.tcf_decode(NULL) IS NULL AS strict, cdp.tcf_vendor_consent(NULL, 1) IS NULL AS strict2;

-- The string is kept exactly as received (it is the proof), and binary I/O
-- validates like text input.
CREATE TEMP TABLE proofs (tc cdp.tcstring);
INSERT INTO proofs SELECT tc FROM vectors;
SELECT count(*) FILTER (WHERE p.tc::text = v.tc) AS identical FROM proofs p JOIN vectors v ON v.tc = p.tc::text;
\copy proofs TO 'results/tcstring.bin' WITH (FORMAT binary)
CREATE TEMP TABLE proofs2 (LIKE proofs);
\copy proofs2 FROM 'results/tcstring.bin' WITH (FORMAT binary)
SELECT count(*) FROM proofs2;
SELECT 'COvzTO5OvzTO5B7A+CENAwEoAMIAAEKAAAqIAAAAAAAA'::cdp.tcstring;
SELECT ''::cdp.tcstring;
