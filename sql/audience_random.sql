-- The audience invariant, on a random workload: after the pass has caught
-- up, computed traits equal aggregating every event from scratch,
-- membership equals evaluating every rule from scratch on current data
-- (consent included), and replaying the change log gives the membership.
-- Events, merges, splits, consent changes and passes are interleaved.
SET client_min_messages = warning;
SELECT setseed(0.4711);

SELECT cdp.create_trait('rnd_orders_90d', 'count', 'Rnd Order', NULL, '90 days');
SELECT cdp.create_trait('rnd_revenue', 'sum', 'Rnd Order', 'revenue');
SELECT cdp.create_trait('rnd_max', 'max', 'Rnd Order', 'revenue');
SELECT cdp.create_trait('rnd_avg_30d', 'avg', 'Rnd Order', 'revenue', '30 days');
SELECT cdp.create_trait('rnd_first', 'first', 'Rnd Order', 'sku');
SELECT cdp.create_trait('rnd_last_60d', 'last', 'Rnd Order', 'sku', '60 days');
SELECT cdp.create_trait('rnd_skus', 'count_distinct', 'Rnd Order', 'sku');
SELECT cdp.create_trait('rnd_big', 'count', 'Rnd Order', NULL, NULL, $$cdp._jsonb_numeric(properties->'revenue') >= 80$$);
SELECT cdp.create_trait('rnd_carts_7d', 'count', 'Rnd Cart', NULL, '7 days');

SELECT cdp.create_audience('rnd_valuable', 'rnd_orders_90d >= 2 AND rnd_revenue > 150') > 0 AS created;
SELECT cdp.create_audience('rnd_mail', $$cdp.in_audience('rnd_valuable') AND rnd_skus >= 2$$, 'email_marketing') > 0 AS created;
SELECT cdp.create_audience('rnd_cart', $$rnd_carts_7d > 0 AND NOT cdp.in_audience('rnd_mail') AND coalesce(rnd_last_60d, '') <> 'sku0'$$,
                           'advertising') > 0 AS created;
SELECT cdp.create_audience('rnd_big_avg', 'rnd_big >= 1 AND rnd_avg_30d > 40 AND rnd_first IN (''sku1'', ''sku2'')') > 0 AS created;

-- 1,200 random operations over 80 people, a pass every 150.
DO $$
DECLARE
  i int;
  who text;
  r float8;
BEGIN
  FOR i IN 1 .. 1200 LOOP
    who := format('rnd-%s@example.com', (random() * 79)::int);
    r := random();
    IF r < 0.55 THEN
      PERFORM cdp.track(ARRAY[cdp.identifier('email', who)], 'Rnd Order',
                        jsonb_build_object('revenue', CASE WHEN random() < 0.05 THEN to_jsonb('n/a'::text)
                                                           ELSE to_jsonb(round((random() * 120)::numeric, 2)) END,
                                           'sku', 'sku' || (random() * 5)::int),
                        now() - random() * interval '120 days');
    ELSIF r < 0.75 THEN
      PERFORM cdp.track(ARRAY[cdp.identifier('email', who)], 'Rnd Cart', '{}', now() - random() * interval '14 days');
    ELSIF r < 0.83 THEN
      -- Two people share a household id: merged.
      PERFORM cdp.identify(ARRAY[cdp.identifier('email', who), cdp.identifier('crm_id', 'rnd-h' || (random() * 30)::int)]);
    ELSIF r < 0.86 THEN
      PERFORM cdp.forget_identifier(cdp.identifier('crm_id', 'rnd-h' || (random() * 30)::int));
    ELSE
      PERFORM cdp.record_consent(cdp.identifier('email', who),
                                 CASE WHEN random() < 0.5 THEN 'email_marketing' ELSE 'advertising' END,
                                 random() < 0.7);
    END IF;
    IF i % 150 = 0 THEN
      PERFORM cdp.refresh_audiences();
    END IF;
  END LOOP;
END $$;
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;

-- The decisions on the profile rows (what cdp.profiles tests) against the
-- latest ledger entry among each profile's identifiers, from scratch.
SELECT count(*) AS profile_rows_out_of_step
  FROM cdp.profile_data p CROSS JOIN cdp.purposes pu
 WHERE coalesce(p.consent_until[pu.slot] > now(), false)
       IS DISTINCT FROM
       coalesce((SELECT l.granted AND (l.expires_at IS NULL OR l.expires_at > now())
                   FROM cdp.consent_data l JOIN cdp.identity_data i ON i.identifier OPERATOR(cdp.=) l.subject
                  WHERE i.profile_id = p.profile_id AND l.purpose = pu.purpose
                  ORDER BY l.recorded_at DESC, l.id DESC LIMIT 1), false);

-- Traits from scratch, straight from the events.
CREATE TEMP VIEW scratch AS
  SELECT p.profile_id,
         count(*) FILTER (WHERE e.event = 'Rnd Order' AND e.occurred_at > now() - interval '90 days') AS orders_90d,
         sum(cdp._jsonb_numeric(e.properties->'revenue')) FILTER (WHERE e.event = 'Rnd Order') AS revenue,
         max(cdp._jsonb_numeric(e.properties->'revenue')) FILTER (WHERE e.event = 'Rnd Order') AS max_rev,
         avg(cdp._jsonb_numeric(e.properties->'revenue'))
           FILTER (WHERE e.event = 'Rnd Order' AND e.occurred_at > now() - interval '30 days') AS avg_30d,
         (array_agg(e.properties->>'sku' ORDER BY e.occurred_at, e.event_id) FILTER (WHERE e.event = 'Rnd Order'))[1] AS first_sku,
         (array_agg(e.properties->>'sku' ORDER BY e.occurred_at DESC, e.event_id DESC)
            FILTER (WHERE e.event = 'Rnd Order' AND e.occurred_at > now() - interval '60 days'))[1] AS last_60d,
         count(DISTINCT e.properties->>'sku') FILTER (WHERE e.event = 'Rnd Order') AS skus,
         count(*) FILTER (WHERE e.event = 'Rnd Order' AND cdp._jsonb_numeric(e.properties->'revenue') >= 80) AS big,
         count(*) FILTER (WHERE e.event = 'Rnd Cart' AND e.occurred_at > now() - interval '7 days') AS carts_7d
    FROM cdp.profile_data p JOIN cdp.event_data e ON e.profile_id = p.profile_id
   WHERE p.merged_into IS NULL AND e.event IN ('Rnd Order', 'Rnd Cart')
   GROUP BY p.profile_id;

SELECT count(*) AS profiles_with_events FROM scratch;
SELECT count(*) AS trait_mismatches
  FROM scratch s JOIN cdp.profile_traits t ON t.profile_id = s.profile_id
 WHERE (t.rnd_orders_90d, t.rnd_revenue, t.rnd_max, round(t.rnd_avg_30d, 6), t.rnd_first, t.rnd_last_60d,
        coalesce(t.rnd_skus, 0), t.rnd_big, t.rnd_carts_7d)
       IS DISTINCT FROM
       (s.orders_90d, s.revenue, s.max_rev, round(s.avg_30d, 6), s.first_sku, s.last_60d,
        s.skus, s.big, s.carts_7d);

-- Membership from scratch.
CREATE TEMP VIEW consented AS
  SELECT profile_id, purpose FROM cdp.consent_state WHERE granted AND (expires_at IS NULL OR expires_at > now());
CREATE TEMP VIEW scratch_members AS
  WITH v AS (SELECT profile_id FROM scratch WHERE orders_90d >= 2 AND revenue > 150),
       m AS (SELECT profile_id FROM scratch WHERE profile_id IN (SELECT profile_id FROM v) AND skus >= 2
                AND (profile_id, 'email_marketing') IN (SELECT * FROM consented))
  SELECT 'rnd_valuable' AS audience, profile_id FROM v
  UNION ALL SELECT 'rnd_mail', profile_id FROM m
  UNION ALL SELECT 'rnd_cart', profile_id FROM scratch
             WHERE carts_7d > 0 AND profile_id NOT IN (SELECT profile_id FROM m) AND coalesce(last_60d, '') <> 'sku0'
               AND (profile_id, 'advertising') IN (SELECT * FROM consented)
  UNION ALL SELECT 'rnd_big_avg', profile_id FROM scratch WHERE big >= 1 AND avg_30d > 40 AND first_sku IN ('sku1', 'sku2');

SELECT audience, count(*) > 0 AS nonempty FROM scratch_members GROUP BY 1 ORDER BY 1;
SELECT count(*) AS membership_mismatches FROM (
  (SELECT audience, profile_id FROM cdp.audience_members WHERE audience LIKE 'rnd%' EXCEPT SELECT * FROM scratch_members)
  UNION ALL
  (SELECT * FROM scratch_members EXCEPT SELECT audience, profile_id FROM cdp.audience_members WHERE audience LIKE 'rnd%')) d;

-- The log replays to the membership, and saw merges, splits and consent.
CREATE TEMP VIEW replayed AS
  SELECT audience, profile_id FROM (
    SELECT DISTINCT ON (audience, profile_id) audience, profile_id, change
      FROM cdp.audience_changes WHERE audience LIKE 'rnd%' ORDER BY audience, profile_id, change_id DESC) l
   WHERE change = 'entered';
SELECT count(*) AS replay_mismatches FROM (
  (SELECT audience, profile_id FROM cdp.audience_members WHERE audience LIKE 'rnd%' EXCEPT SELECT * FROM replayed)
  UNION ALL
  (SELECT * FROM replayed EXCEPT SELECT audience, profile_id FROM cdp.audience_members WHERE audience LIKE 'rnd%')) d;
SELECT reason, count(*) > 0 AS seen FROM cdp.audience_changes WHERE audience LIKE 'rnd%' GROUP BY 1 ORDER BY 1;

-- Rebuilding the traits from the events changes no value.
CREATE TEMP TABLE before_rebuild AS SELECT * FROM cdp.computed_trait_values;
SELECT cdp.rebuild_traits() ->> 'traits' AS traits_rebuilt;
SELECT count(*) AS values_differing FROM (
  (SELECT profile_id, vals FROM before_rebuild EXCEPT SELECT profile_id, vals FROM cdp.computed_trait_values)
  UNION ALL
  (SELECT profile_id, vals FROM cdp.computed_trait_values EXCEPT SELECT profile_id, vals FROM before_rebuild)) d;
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;

-- A full re-evaluation of every rule changes nothing.
SELECT cdp.refresh_audience(name, true) ->> 'entered' AS entered, cdp.refresh_audience(name, true) ->> 'exited' AS exited
  FROM cdp.audience_data WHERE name LIKE 'rnd%' ORDER BY name;

-- Leave no audiences behind for the other test files.
SELECT cdp.drop_audience(name) FROM (VALUES ('rnd_cart'), ('rnd_big_avg'), ('rnd_mail'), ('rnd_valuable')) v(name);
