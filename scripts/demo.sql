-- The cdp demo report.  Reads the CRM export (CSV) on standard input.
\pset footer off
\set QUIET on

CREATE TABLE crm_export (crm_id text, first_name text, last_name text, email text, phone text, country text);
\copy crm_export FROM pstdin WITH (FORMAT csv, HEADER true)

-- Every raw value next to its normalised identifier or the rule it breaks.
-- Phones are read in the customer's country when they lack a country code.
CREATE TABLE normalised AS
SELECT x.crm_id, x.field, x.raw, x.country, p.identifier, p.error
  FROM crm_export c
 CROSS JOIN LATERAL (VALUES ('email', c.email), ('phone', c.phone)) AS v(field, raw)
 CROSS JOIN LATERAL (SELECT c.crm_id, v.field, v.raw, c.country) AS x
 CROSS JOIN LATERAL (SELECT set_config('cdp.default_phone_region', c.country, true)) AS region
 CROSS JOIN LATERAL cdp.parse_identifier(v.field, v.raw) AS p
 WHERE nullif(trim(v.raw), '') IS NOT NULL;

\echo
\echo '================================================================'
\echo ' cdp demo — identifier normalisation on a messy CRM export'
\echo '================================================================'
\echo
SELECT (SELECT count(*) FROM crm_export) AS "CRM rows",
       count(*) FILTER (WHERE field = 'email') AS "emails given",
       count(*) FILTER (WHERE field = 'phone') AS "phones given",
       count(*) FILTER (WHERE error IS NULL) AS "valid identifiers",
       count(*) FILTER (WHERE error IS NOT NULL) AS "invalid values",
       count(DISTINCT identifier) AS "distinct customer keys"
  FROM normalised;

\echo
\echo 'Duplicates found: different spellings, one identifier'
\echo '-----------------------------------------------------'
SELECT identifier AS "identifier",
       string_agg(crm_id, ', ' ORDER BY crm_id) AS "CRM rows",
       string_agg(DISTINCT quote_literal(raw), '  ') AS "as written"
  FROM normalised
 WHERE error IS NULL
 GROUP BY identifier
HAVING count(DISTINCT crm_id) > 1
 ORDER BY identifier;

\echo
\echo 'Invalid values and why (set aside, not guessed at)'
\echo '--------------------------------------------------'
SELECT crm_id AS "CRM row", field AS "field", quote_literal(raw) AS "as written", error AS "why"
  FROM normalised
 WHERE error IS NOT NULL
 ORDER BY crm_id, field;

\echo
\echo 'Deliberately not merged: provider tricks change identity'
\echo '--------------------------------------------------------'
SELECT crm_id AS "CRM row", raw AS "as written", identifier AS "identifier"
  FROM normalised
 WHERE field = 'email' AND raw ILIKE '%gmail.com'
 ORDER BY crm_id;

\echo
\echo 'Hashed for ad platforms (SHA-256 of the normalised value)'
\echo '---------------------------------------------------------'
SELECT identifier AS "identifier", cdp.hashed(identifier) AS "cdp.hashed"
  FROM (SELECT DISTINCT identifier FROM normalised WHERE crm_id IN ('K-1001', 'K-1012') AND error IS NULL) d
 ORDER BY identifier;
