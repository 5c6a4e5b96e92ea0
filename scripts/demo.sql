-- The cdp demo report.  psql variables: datadir (crm_export.csv,
-- retail.ndjson), persons and expected_profiles (the data set's ground truth),
-- tcf_all (a real TCF v2.2 string allowing every purpose).
\pset footer off
\set QUIET on
\set crmfile :datadir '/crm_export.csv'
\set retailfile :datadir '/retail.ndjson'

CREATE TABLE crm_export (crm_id text, first_name text, last_name text, email text, phone text, country text);
COPY crm_export FROM :'crmfile' WITH (FORMAT csv, HEADER true);

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


\echo
\echo '================================================================'
\echo ' cdp demo — identity stitching of an omni-channel retail stream'
\echo '================================================================'
\echo
\echo 'Web shop (cookies, then logins), app (device ids), stores (loyalty cards), CRM export'
\echo '(messy emails and phones), support tickets and the newsletter, as Segment-spec NDJSON.'
\echo

-- Where this retailer's identifiers live in its messages.
INSERT INTO cdp.identifier_mappings VALUES
  ('{traits,crm_id}', 'crm_id'), ('{traits,loyalty_id}', 'loyalty_id'),
  ('{context,traits,loyalty_id}', 'loyalty_id'), ('{properties,loyalty_id}', 'loyalty_id'),
  ('{context,traits,phone}', 'phone');
INSERT INTO cdp.identity_rules (kind, priority, max_per_profile) VALUES ('loyalty_id', 2, 1);
INSERT INTO cdp.pii_keys VALUES ('crm_id'), ('loyalty_id');

COPY cdp.inbox (payload) FROM :'retailfile' WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02');
CREATE TEMP TABLE run AS SELECT cdp.process_inbox() AS r;

SELECT (r->>'processed')::int AS "messages", (r->>'accepted')::int AS "accepted",
       (r->>'duplicates')::int AS "re-sent (stored once)", (r->>'rejected')::int AS "rejected",
       (r->>'merges')::int AS "merges", (r->>'conflicts')::int AS "refused links"
  FROM run;

\echo
\echo 'Profiles before and after stitching'
\echo '-----------------------------------'
SELECT (SELECT count(*) FROM cdp.profile_identifiers) AS "identifiers seen (one per silo record)",
       (SELECT count(*) FROM cdp.profiles) AS "profiles after stitching",
       :expected_profiles AS "ground truth: connected facets",
       :persons AS "ground truth: people";

\echo
\echo 'Why some messages were rejected (set aside in cdp.inbox_rejects, the rest kept)'
\echo '-----------------------------------------------------------------------------'
SELECT regexp_replace(error, '"[^"]*"', '"…"', 'g') AS "reason", count(*) AS "messages"
  FROM cdp.inbox_rejects GROUP BY 1 ORDER BY 2 DESC, 1;

\echo
\echo 'Merges, explained (cdp.merges): what linked two profiles'
\echo '--------------------------------------------------------'
SELECT m.profile_id AS "survivor", m.merged_profile_id AS "merged",
       CASE WHEN e.type IN ('track', 'page', 'screen') THEN e.type || ' ' || e.event ELSE e.type END AS "by message",
       e.source AS "channel", (SELECT string_agg(x, ', ') FROM jsonb_array_elements_text(m.cause->'identifiers') x) AS "linking identifiers"
  FROM cdp.merges m JOIN cdp.events e ON e.event_id = m.event_id
 ORDER BY m.merged_at, m.merged_profile_id LIMIT 6;

\echo
\echo 'Refused links (cdp.identity_conflicts): merge protection at work'
\echo '----------------------------------------------------------------'
SELECT reason AS "reason", count(*) AS "times", min(identifier::text) AS "e.g. identifier",
       min(detail) AS "e.g. why"
  FROM cdp.identity_conflicts GROUP BY reason ORDER BY 2 DESC;
\echo
\echo 'The shared family tablets: one device, two customers (never merged)'
SELECT c.identifier AS "device", string_agg(DISTINCT i.identifier::text, ', ') AS "user ids kept apart"
  FROM cdp.identity_conflicts c
  JOIN cdp.events e ON e.event_id = c.event_id
  JOIN cdp.profile_identifiers i ON i.profile_id IN (e.profile_id, cdp.profile_of(c.identifier)) AND i.identifier::text LIKE 'user_id:%'
 WHERE c.reason = 'limit' AND c.identifier::text LIKE 'device_id:%'
 GROUP BY 1 ORDER BY 1 LIMIT 3;

\echo
\echo 'Largest profiles'
\echo '----------------'
SELECT p.profile_id AS "profile",
       (SELECT string_agg(k || '×' || n, ' ') FROM (SELECT cdp.identifier_kind(x) AS k, count(*) AS n
          FROM unnest(p.identifiers) x GROUP BY 1 ORDER BY 1) s) AS "identifiers",
       (SELECT count(*) FROM cdp.events e WHERE e.profile_id = p.profile_id) AS "events",
       (SELECT string_agg(DISTINCT e.source, ', ') FROM cdp.events e WHERE e.profile_id = p.profile_id) AS "channels",
       p.traits->>'first_name' AS "first name", p.traits->>'city' AS "city"
  FROM cdp.profiles p ORDER BY cardinality(p.identifiers) DESC, p.profile_id LIMIT 5;

\echo
\echo 'Rebuilding the whole graph from the events gives the same result (cdp.restitch(): nothing to change)'
SELECT r->'profiles' AS "profiles", r->'merges' AS "merges", r->'rows_written' AS "rows changed",
       r->'duration_ms' AS "ms"
  FROM cdp.restitch() r;

\echo
\echo '================================================================'
\echo ' cdp demo — consent: proof, TCF, withdrawal, and what BI can see'
\echo '================================================================'
\echo

-- The newsletter form: double opt-in for the subscribers' emails.
SELECT count(cdp.record_consent(cdp.identifier('email', e.properties->>'email'), 'email_marketing', true, 'newsletter form',
                                jsonb_build_object('form', 'footer', 'double_opt_in', e.occurred_at)))
         AS "newsletter opt-ins recorded"
  FROM (SELECT DISTINCT ON (e.profile_id) e.* FROM cdp.events e
         WHERE e.type = 'identify' AND e.source = 'newsletter' AND e.properties ? 'email') e
 WHERE (cdp.parse_identifier('email', e.properties->>'email')).error IS NULL;

-- The web shop's CMP: a TC string allowing TCF purposes 1-11 for 60 % of
-- the logged-in visitors, one refusing everything but purposes 1, 2, 7 for the rest.
SELECT count(*) FILTER (WHERE ok) AS "TCF: accepted all", count(*) FILTER (WHERE NOT ok) AS "TCF: refused profiling"
  FROM (SELECT cdp.record_tcf(i.identifier,
                 CASE WHEN i.profile_id % 5 < 3
                      THEN :'tcf_all'
                      ELSE 'COvzTO5OvzTO5B7ABCENAwEoAMIAAEKAAAqIAAAAAAAA' END::cdp.tcstring, 'web cmp') > 0
               AND i.profile_id % 5 < 3 AS ok
          FROM cdp.profile_identifiers i WHERE i.identifier::text LIKE 'user_id:%') s;

-- Somebody changes their mind in the preference center.
SELECT i.identifier AS "withdraws analytics", cdp.record_consent(i.identifier, 'analytics', false, 'preference center') AS "ledger id"
  FROM cdp.profile_identifiers i
 WHERE i.identifier::text LIKE 'user_id:%' AND cdp.has_consent(i.profile_id, 'analytics')
 ORDER BY i.identifier LIMIT 1;

SELECT purpose AS "purpose", count(*) FILTER (WHERE granted) AS "profiles granted",
       count(*) FILTER (WHERE status = 'withdrawn') AS "refused or withdrawn", count(*) FILTER (WHERE status = 'missing') AS "no decision (= no)"
  FROM cdp.consents GROUP BY purpose ORDER BY purpose;

-- A BI role: analytics purpose set once, on the role.
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'demo_bi') THEN CREATE ROLE demo_bi LOGIN IN ROLE cdp_analyst; END IF;
END $$;
ALTER ROLE demo_bi SET cdp.purpose = 'analytics';

CREATE TEMP TABLE side_by_side (who text, profiles bigint, events bigint, orders bigint, revenue numeric);
GRANT INSERT ON side_by_side TO demo_bi;
INSERT INTO side_by_side SELECT 'admin (sees all)', (SELECT count(*) FROM cdp.profiles), count(*),
       count(*) FILTER (WHERE event = 'Order Completed'), sum((properties->>'revenue')::numeric) FROM cdp.events;
SET ROLE demo_bi;
SET cdp.purpose = 'analytics';
INSERT INTO side_by_side SELECT 'BI tool (cdp_analyst, analytics)', (SELECT count(*) FROM cdp.profiles), count(*),
       count(*) FILTER (WHERE event = 'Order Completed'), sum((properties->>'revenue')::numeric) FROM cdp.events;
RESET ROLE;
\echo
\echo 'The same query, as admin and as the BI tool: only consented people, by construction'
\echo '----------------------------------------------------------------------------------'
SELECT who AS "reader", profiles AS "profiles", events AS "events", orders AS "orders", round(revenue, 2) AS "revenue" FROM side_by_side;

\echo
\echo 'What the BI tool sees of a profile: personal data masked'
SET ROLE demo_bi;
SET cdp.purpose = 'analytics';
SELECT profile_id AS "profile", identifiers AS "identifiers", traits - 'customer_since' AS "traits"
  FROM cdp.profiles WHERE traits ? 'first_name' ORDER BY profile_id LIMIT 3;
RESET ROLE;
RESET cdp.purpose;

\echo
\echo 'A customer asks what we hold about them (Art. 15), then to be forgotten (Art. 17)'
\echo '--------------------------------------------------------------------------------'
CREATE TEMP TABLE subject AS
  SELECT i.identifier FROM cdp.profile_identifiers i
   WHERE i.identifier::text LIKE 'email:%'
     AND (SELECT count(*) FROM cdp.events e WHERE e.profile_id = i.profile_id) > 20
   ORDER BY i.identifier LIMIT 1;
SELECT s.identifier AS "subject",
       jsonb_array_length(x->'profile'->'identifiers') AS "identifiers",
       jsonb_array_length(x->'events') AS "events",
       jsonb_array_length(x->'consent_ledger') AS "consent entries",
       (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(x) k) AS "export sections"
  FROM subject s, cdp.export_subject(s.identifier) x;
SELECT e AS "erasure" FROM subject s, cdp.erase_subject(s.identifier, 'Art. 17 request via support, ticket 4711') e;
SELECT erased_at::date AS "erased on", reason AS "reason", left(identifier_hashes[1], 16) || '…' AS "what is left: hashes"
  FROM cdp.erasures;
\echo 'The same email arriving again from the newsletter is dropped, not stored:'
SELECT cdp.ingest(jsonb_build_object('type', 'identify', 'traits', jsonb_build_object('email', cdp.identifier_value(s.identifier))))->'rejected'->0->>'error'
         AS "ingesting the erased email again"
  FROM subject s;

\echo
\echo '================================================================'
\echo ' cdp demo — audiences: computed traits, SQL rules, kept current'
\echo '================================================================'
\echo

-- Computed traits over the stream (kept incrementally by the audience pass).
\o /dev/null
SELECT cdp.create_trait('orders_90d', 'count', 'Order Completed', NULL, '90 days');
SELECT cdp.create_trait('revenue_90d', 'sum', 'Order Completed', 'revenue', '90 days');
SELECT cdp.create_trait('product_views_90d', 'count', 'Product Viewed', NULL, '90 days');
SELECT cdp.create_trait('carts_24h', 'count', 'Product Added', NULL, '24 hours');
SELECT cdp.create_trait('carts_1h', 'count', 'Product Added', NULL, '1 hour');
SELECT cdp.create_trait('orders_24h', 'count', 'Order Completed', NULL, '24 hours');
SELECT cdp.create_trait('last_product', 'last', 'Product Added', 'product_id');
SELECT cdp.create_trait('critical_opened', 'count', 'Ticket Opened', NULL, NULL, $$properties->>'priority' = 'critical'$$);
SELECT cdp.create_trait('critical_closed', 'count', 'Ticket Closed', NULL, NULL, $$properties->>'priority' = 'critical'$$);

-- Audiences, in SQL over cdp.profile_traits.
SELECT cdp.create_audience('open_critical_ticket', 'critical_opened > critical_closed', NULL,
                           'An open critical support ticket: excluded from every campaign');
SELECT cdp.create_audience('cart_abandoners',
         $$carts_24h > 0 AND carts_1h = 0 AND orders_24h = 0 AND NOT cdp.in_audience('open_critical_ticket')$$,
         'email_marketing', 'Added to cart in the last day, not in the last hour, no order since');
SELECT cdp.create_audience('high_value_de',
         $$orders_90d >= 3 AND revenue_90d > 300 AND traits->>'country' = 'DE' AND NOT cdp.in_audience('open_critical_ticket')$$,
         'email_marketing', 'German customers with three orders over 300 EUR in 90 days');
SELECT cdp.create_audience('social_retargeting', 'product_views_90d >= 10 AND orders_90d = 0', 'advertising',
                           'Browsed a lot, never bought: for ad platforms');
SELECT cdp.refresh_audiences();
\o
\echo 'Computed traits (cdp.create_trait): columns of cdp.profile_traits'
\echo '-----------------------------------------------------------------'
SELECT name AS "trait", aggregate AS "aggregate", event AS "of event", property AS "property",
       "window" AS "window", filter AS "filter"
  FROM cdp.computed_traits ORDER BY trait_id;

\echo
\echo 'Audiences over the retail data (members need consent for the audience purpose)'
\echo '-------------------------------------------------------------------------------'
SELECT name AS "audience", purpose AS "purpose", size AS "members", rule AS "rule"
  FROM cdp.audiences ORDER BY name;

-- Live: three customers act now.
CREATE TEMP TABLE live AS
  SELECT (SELECT m.profile_id FROM cdp.audience_members m WHERE m.audience = 'high_value_de' ORDER BY m.profile_id LIMIT 1) AS vip,
         (SELECT t.profile_id FROM cdp.profile_traits t
           WHERE t.traits->>'country' = 'DE' AND t.orders_90d = 2 AND t.revenue_90d > 200
             AND cdp.has_consent(t.profile_id, 'email_marketing') ORDER BY t.profile_id LIMIT 1) AS almost,
         (SELECT c.profile_id FROM cdp.consents c WHERE c.purpose = 'email_marketing' AND c.granted
           ORDER BY c.profile_id DESC LIMIT 1) AS shopper;
CREATE TEMP TABLE live_ids AS
  SELECT l.*, (SELECT i.identifier FROM cdp.profile_identifiers i WHERE i.profile_id = l.vip ORDER BY 1 LIMIT 1) AS vip_id,
         (SELECT i.identifier FROM cdp.profile_identifiers i WHERE i.profile_id = l.almost ORDER BY 1 LIMIT 1) AS almost_id,
         (SELECT i.identifier FROM cdp.profile_identifiers i WHERE i.profile_id = l.shopper ORDER BY 1 LIMIT 1) AS shopper_id
    FROM live l;
SELECT max(change_id) AS before FROM cdp.audience_change_data \gset
SELECT count(*) AS "events streamed now" FROM live_ids l, LATERAL (VALUES
  -- a German customer's third order crosses the line
  (cdp.track(ARRAY[l.almost_id], 'Order Completed', '{"order_id": "live-1", "revenue": 180}', now())),
  -- a high-value customer opens a critical ticket: out of every campaign at once
  (cdp.track(ARRAY[l.vip_id], 'Ticket Opened', '{"ticket_id": "live-2", "priority": "critical"}', now())),
  -- a shopper put something in the cart 59 minutes and 50 seconds ago and left
  (cdp.track(ARRAY[l.shopper_id], 'Product Added', '{"product_id": "sofa-42"}', now() - interval '59 minutes 50 seconds'))) v(e);
\o /dev/null
SELECT cdp.refresh_audiences();
\o
\echo
\echo 'What changed (cdp.audience_changes), seconds after the events'
\echo '-------------------------------------------------------------'
SELECT c.audience AS "audience", c.change AS "change", c.reason AS "reason",
       CASE c.profile_id WHEN l.almost THEN 'third order' WHEN l.vip THEN 'critical ticket' ELSE 'cart' END AS "who"
  FROM cdp.audience_changes c, live l WHERE c.change_id > :before ORDER BY c.change_id;
\echo
\echo 'Ten seconds later the cart is an hour old: the 1-hour window expires and the shopper becomes a cart abandoner'
\o /dev/null
SELECT pg_sleep(11);
SELECT cdp.refresh_audiences();
\o
SELECT c.audience AS "audience", c.change AS "change", c.reason AS "reason", t.last_product AS "last product added"
  FROM cdp.audience_changes c JOIN live l ON c.profile_id = l.shopper JOIN cdp.profile_traits t ON t.profile_id = c.profile_id
 WHERE c.change_id > :before ORDER BY c.change_id;
