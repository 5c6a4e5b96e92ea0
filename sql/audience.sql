-- Computed traits, audiences, their change log and the audience pass.
-- Event names start with "Aud " and identifiers with aud- so that other
-- test files' data never matches a rule here.
SET client_min_messages = warning;
SET timezone = 'UTC';

CREATE FUNCTION pg_temp.p(email text) RETURNS bigint LANGUAGE sql
  RETURN cdp.profile_of(cdp.identifier('email', email));
-- Who is in an audience, by the email of the profile (sorted).
CREATE FUNCTION pg_temp.members(audience text) RETURNS text LANGUAGE sql
  RETURN (SELECT coalesce(string_agg(e, ' ' ORDER BY e), '-') FROM (
            SELECT (SELECT min(cdp.identifier_value(i.identifier)) FROM cdp.identity_data i
                     WHERE i.profile_id = m.profile_id AND i.kind = 'email') AS e
              FROM cdp.audience_members m WHERE m.audience = members.audience) q);

------------------------------------------------------------------------
-- Computed traits: every aggregate, windows, filters
------------------------------------------------------------------------
SELECT cdp.track(ARRAY[cdp.identifier('email', 'aud-ann@example.com')], 'Aud Order',
                 '{"revenue": 120, "sku": "shoe"}', now() - interval '10 days') > 0 AS ok;
SELECT cdp.track(ARRAY[cdp.identifier('email', 'aud-ann@example.com')], 'Aud Order',
                 '{"revenue": "30.5", "sku": "sock"}', now() - interval '100 days') > 0 AS ok;
SELECT cdp.track(ARRAY[cdp.identifier('email', 'aud-ann@example.com')], 'Aud Order',
                 '{"revenue": "n/a", "sku": "shoe"}', now() - interval '5 days') > 0 AS ok;
SELECT cdp.track(ARRAY[cdp.identifier('email', 'aud-ann@example.com')], 'Aud Page', '{}', now()) > 0 AS ok;
SELECT cdp.identify(ARRAY[cdp.identifier('email', 'aud-bob@example.com')], '{"country": "DE", "suite": "aud"}') > 0 AS ok;

-- What sum/avg/min/max read from a property: JSON numbers, and strings that
-- hold a decimal number (surrounding white space allowed); nothing else.
SELECT v AS property, cdp._jsonb_numeric(v) AS value
  FROM unnest(ARRAY['12.5', '"12.5"', '" -3 "', '"+.5"', '"5."', '"1e3"', '"2.5E-1"', '"\t7\n"',
                    '"abc"', '"NaN"', '"Infinity"', '""', '" "', '"1e"', '"."', '"-"', '"1 2"', '"0x1A"',
                    'true', 'null', '{"a": 1}', '[1]']::jsonb[]) AS v;

-- Defined after the events: backfilled (by the next pass for events it has
-- not seen yet).
SELECT cdp.create_trait('aud_orders', 'count', 'Aud Order');
SELECT cdp.create_trait('aud_orders_90d', 'count', 'Aud Order', NULL, '90 days');
SELECT cdp.create_trait('aud_revenue', 'sum', 'Aud Order', 'revenue');
SELECT cdp.create_trait('aud_avg', 'avg', 'Aud Order', 'revenue');
SELECT cdp.create_trait('aud_min', 'min', 'Aud Order', 'revenue');
SELECT cdp.create_trait('aud_max_30d', 'max', 'Aud Order', 'revenue', '30 days');
SELECT cdp.create_trait('aud_first_sku', 'first', 'Aud Order', 'sku');
SELECT cdp.create_trait('aud_last_sku', 'last', 'Aud Order', 'sku');
SELECT cdp.create_trait('aud_skus', 'count_distinct', 'Aud Order', 'sku');
SELECT cdp.create_trait('aud_big', 'count', 'Aud Order', NULL, NULL,
                        $$cdp._jsonb_numeric(properties -> 'revenue') > 100$$);
SELECT cdp.create_trait('aud_any', 'count', NULL, NULL, '1 day');
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;

SELECT t.aud_orders, t.aud_orders_90d, t.aud_revenue, round(t.aud_avg, 2) AS aud_avg, t.aud_min, t.aud_max_30d,
       t.aud_first_sku, t.aud_last_sku, t.aud_skus, t.aud_big, t.aud_any
  FROM cdp.profile_traits t WHERE t.profile_id = pg_temp.p('aud-ann@example.com');
-- Nothing matched: count is 0, the others NULL.
SELECT t.aud_orders, t.aud_revenue, t.aud_first_sku, t.aud_skus, t.aud_any, t.traits
  FROM cdp.profile_traits t WHERE t.profile_id = pg_temp.p('aud-bob@example.com');
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'cdp.profile_traits'::regclass AND attnum > 0 ORDER BY attnum;

-- New events are folded in by the pass, not at ingestion.
SELECT cdp.track(ARRAY[cdp.identifier('email', 'aud-ann@example.com')], 'Aud Order',
                 '{"revenue": 7, "sku": "hat"}', now() - interval '1 hour') > 0 AS ok;
SELECT aud_orders FROM cdp.profile_traits WHERE profile_id = pg_temp.p('aud-ann@example.com');
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT aud_orders, aud_revenue, aud_min, aud_max_30d, aud_last_sku, aud_skus
  FROM cdp.profile_traits WHERE profile_id = pg_temp.p('aud-ann@example.com');

-- Bad definitions.
SELECT cdp.create_trait('Orders', 'count');
SELECT cdp.create_trait('aud_orders', 'count');
SELECT cdp.create_trait('traits', 'count');
SELECT cdp.create_trait('aud_x', 'median', 'Aud Order', 'revenue');
SELECT cdp.create_trait('aud_x', 'sum', 'Aud Order');
SELECT cdp.create_trait('aud_x', 'count', 'Aud Order', 'revenue');
SELECT cdp.create_trait('aud_x', 'count', 'Aud Order', NULL, '-1 day');
SELECT cdp.create_trait('aud_x', 'count', 'Aud Order', NULL, NULL, 'properties->>''sku'' = ');
SELECT cdp.create_trait('aud_x', 'count', 'Aud Order', NULL, NULL, 'event = ''x''');
SELECT cdp.create_trait('aud_x', 'count', 'Aud Order', NULL, NULL, 'random() < 0.5');
SELECT cdp.create_trait('aud_x', 'count', 'Aud Order', NULL, NULL, '(SELECT true)');
SELECT cdp.drop_trait('aud_nope');

------------------------------------------------------------------------
-- Audiences
------------------------------------------------------------------------
SELECT cdp.preview_audience('aud_orders >= 2') - 'sample' AS preview,
       jsonb_array_length(cdp.preview_audience('aud_orders >= 2') -> 'sample') AS sample_size;
SELECT cdp.preview_audience('aud_orders >= 2', 'email_marketing') - 'sample' AS preview;
SELECT cdp.create_audience('aud_buyers', 'aud_orders_90d >= 2', NULL, 'Ordered twice in 90 days') > 0 AS created;
SELECT cdp.create_audience('aud_de_mail',
         $$traits->>'country' = 'DE' AND traits->>'suite' = 'aud' AND (aud_any > 0 OR NOT cdp.in_audience('aud_buyers'))$$,
         'email_marketing') > 0 AS created;
SELECT cdp.create_audience('aud_campaign', $$cdp.in_audience('aud_buyers') AND NOT cdp.in_audience('aud_de_mail')$$) > 0 AS created;
-- Nothing happens until a pass runs.
SELECT name, size, pending > 0 AS pending FROM cdp.audiences WHERE name LIKE 'aud%' ORDER BY name;
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT name, size, pending, depends_on, error FROM cdp.audiences WHERE name LIKE 'aud%' ORDER BY name;
SELECT pg_temp.members('aud_buyers') AS buyers, pg_temp.members('aud_de_mail') AS de_mail,
       pg_temp.members('aud_campaign') AS campaign;

-- Consent for the purpose brings Bob in; withdrawing it takes him out.
SELECT cdp.record_consent(cdp.identifier('email', 'aud-bob@example.com'), 'email_marketing', true) > 0 AS recorded;
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT pg_temp.members('aud_de_mail') AS de_mail;
SELECT cdp.record_consent(cdp.identifier('email', 'aud-bob@example.com'), 'email_marketing', false) > 0 AS recorded;
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT pg_temp.members('aud_de_mail') AS de_mail;
SELECT cdp.record_consent(cdp.identifier('email', 'aud-bob@example.com'), 'email_marketing', true) > 0 AS recorded;
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;

-- A merge: Bob's state joins Ann's (the older profile); Bob's profile
-- leaves every audience, Ann's qualifies for more.
SELECT cdp.identify(ARRAY[cdp.identifier('email', 'aud-bob@example.com'), cdp.identifier('user_id', 'aud-u1')]) > 0 AS ok;
SELECT cdp.track(ARRAY[cdp.identifier('email', 'aud-bob@example.com')], 'Aud Order', '{"revenue": 50, "sku": "cap"}',
                 now() - interval '2 days') > 0 AS ok;
SELECT cdp.identify(ARRAY[cdp.identifier('email', 'aud-ann@example.com'), cdp.identifier('user_id', 'aud-u1')]) > 0 AS ok;
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT aud_orders, aud_revenue, aud_skus, aud_last_sku, traits->>'country' AS country
  FROM cdp.profile_traits WHERE profile_id = pg_temp.p('aud-bob@example.com');
SELECT pg_temp.members('aud_buyers') AS buyers, pg_temp.members('aud_de_mail') AS de_mail,
       pg_temp.members('aud_campaign') AS campaign;

-- The change log, in order, with reasons (profile ids as first/second).
SELECT c.audience, c.change, c.reason,
       CASE c.profile_id WHEN pg_temp.p('aud-ann@example.com') THEN 'ann' ELSE 'bob''s old profile' END AS who
  FROM cdp.audience_changes c WHERE c.audience LIKE 'aud%' ORDER BY c.change_id;

-- Replaying the log gives the membership.
CREATE TEMP VIEW replayed AS
  SELECT audience, profile_id FROM (
    SELECT DISTINCT ON (audience, profile_id) audience, profile_id, change
      FROM cdp.audience_changes WHERE audience LIKE 'aud%' ORDER BY audience, profile_id, change_id DESC) l
   WHERE change = 'entered';
SELECT count(*) AS mismatches FROM (
  (SELECT audience, profile_id FROM cdp.audience_members WHERE audience LIKE 'aud%' EXCEPT SELECT * FROM replayed)
  UNION ALL
  (SELECT * FROM replayed EXCEPT SELECT audience, profile_id FROM cdp.audience_members WHERE audience LIKE 'aud%')) d;

-- Rebuilding every computed trait from the stored events gives the values
-- the incremental state had.
CREATE TEMP TABLE before_rebuild AS SELECT * FROM cdp.computed_trait_values;
SELECT cdp.rebuild_traits() ->> 'traits' AS traits_rebuilt;
SELECT count(*) AS values_differing FROM (
  (SELECT profile_id, vals FROM before_rebuild EXCEPT SELECT profile_id, vals FROM cdp.computed_trait_values)
  UNION ALL
  (SELECT profile_id, vals FROM cdp.computed_trait_values EXCEPT SELECT profile_id, vals FROM before_rebuild)) d;
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;

-- A full re-evaluation finds nothing to change.
SELECT cdp.refresh_audience('aud_campaign', true) - 'size' AS full_refresh;

-- Split: forgetting the user id that joined them gives Bob a profile of his
-- own again, with his traits recomputed from his events.
SELECT cdp.forget_identifier(cdp.identifier('user_id', 'aud-u1')) IS NOT NULL AS forgotten;
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT pg_temp.p('aud-ann@example.com') <> pg_temp.p('aud-bob@example.com') AS split;
SELECT aud_orders, aud_revenue, aud_last_sku, aud_skus
  FROM cdp.profile_traits WHERE profile_id IN (pg_temp.p('aud-ann@example.com'), pg_temp.p('aud-bob@example.com'))
 ORDER BY profile_id;
SELECT pg_temp.members('aud_buyers') AS buyers, pg_temp.members('aud_de_mail') AS de_mail,
       pg_temp.members('aud_campaign') AS campaign;

-- Time windows expire on their own: a member leaves when the window passes.
SELECT cdp.create_trait('aud_flash', 'count', 'Aud Flash', NULL, '2 seconds');
SELECT cdp.create_audience('aud_flash_buyers', 'aud_flash > 0') > 0 AS created;
SELECT cdp.identify(ARRAY[cdp.identifier('email', 'aud-cy@example.com')], '{"suite": "aud"}') > 0 AS ok;
SELECT cdp.track(ARRAY[cdp.identifier('email', 'aud-cy@example.com')], 'Aud Flash', '{}', now() - interval '1 second') > 0 AS ok;
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT pg_temp.members('aud_flash_buyers') AS flash;
SELECT next_due IS NOT NULL AS has_due FROM cdp.computed_trait_values WHERE profile_id = pg_temp.p('aud-cy@example.com');
SELECT pg_sleep(1.5);
SELECT (cdp.refresh_audiences() ->> 'due')::int >= 1 AS expired_some;
SELECT pg_temp.members('aud_flash_buyers') AS flash;
SELECT aud_flash FROM cdp.profile_traits WHERE profile_id = pg_temp.p('aud-cy@example.com');
SELECT change, reason FROM cdp.audience_changes WHERE audience = 'aud_flash_buyers' ORDER BY change_id;
-- A window that passes while a trait is defined or dropped (outside any
-- pass) is still the pass's to act on: the member leaves, reason window.
SELECT cdp.track(ARRAY[cdp.identifier('email', 'aud-cy@example.com')], 'Aud Flash', '{}', now() - interval '1 second') > 0 AS ok;
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT pg_temp.members('aud_flash_buyers') AS flash;
SELECT pg_sleep(1.5);
SELECT cdp.create_trait('aud_tmp', 'count', 'Aud Flash');
SELECT cdp.drop_trait('aud_tmp');
SELECT (cdp.refresh_audiences() ->> 'due')::int >= 1 AS expired_some;
SELECT pg_temp.members('aud_flash_buyers') AS flash;
SELECT change, reason FROM cdp.audience_changes WHERE audience = 'aud_flash_buyers' ORDER BY change_id DESC LIMIT 1;

-- A window's value is computed in C (cdp._window_value, _window_oldest):
-- the same as the aggregates over unnest() it replaced, for every
-- aggregate, on random entries -- NULL times and values, ties in time,
-- values of different scales, repeated values, entries outside the window.
CREATE FUNCTION pg_temp.window_ref(agg text, cutoff timestamptz, ats timestamptz[], vals text[], ids bigint[])
  RETURNS jsonb LANGUAGE sql AS $$
  SELECT CASE agg
    WHEN 'count' THEN (SELECT to_jsonb(count(*)) FROM unnest(ats) AS x(at) WHERE x.at > cutoff)
    WHEN 'sum' THEN (SELECT to_jsonb(sum(x.v::numeric)) FROM unnest(ats, vals) AS x(at, v) WHERE x.at > cutoff)
    WHEN 'avg' THEN (SELECT to_jsonb(avg(x.v::numeric)) FROM unnest(ats, vals) AS x(at, v) WHERE x.at > cutoff)
    WHEN 'min' THEN (SELECT to_jsonb(min(x.v::numeric)) FROM unnest(ats, vals) AS x(at, v) WHERE x.at > cutoff)
    WHEN 'max' THEN (SELECT to_jsonb(max(x.v::numeric)) FROM unnest(ats, vals) AS x(at, v) WHERE x.at > cutoff)
    WHEN 'first' THEN (SELECT to_jsonb(x.v) FROM unnest(ats, ids, vals) AS x(at, id, v)
                        WHERE x.at > cutoff ORDER BY x.at, x.id LIMIT 1)
    WHEN 'last' THEN (SELECT to_jsonb(x.v) FROM unnest(ats, ids, vals) AS x(at, id, v)
                       WHERE x.at > cutoff ORDER BY x.at DESC, x.id DESC LIMIT 1)
    WHEN 'count_distinct' THEN (SELECT to_jsonb(count(DISTINCT x.v)) FROM unnest(ats, vals) AS x(at, v)
                                 WHERE x.at > cutoff)
  END $$;
SELECT setseed(0.5);
CREATE TEMP TABLE window_cases AS
SELECT c, array_agg(CASE WHEN random() < 0.05 THEN NULL
                         ELSE timestamptz '2026-01-01' + (random() * 20)::int * interval '1 day' END ORDER BY i) AS ats,
          array_agg(CASE WHEN random() < 0.15 THEN NULL
                         ELSE ((random() * 40)::int - 10)::numeric / (10 ^ (random() * 3)::int)::numeric
                         END::text ORDER BY i) AS vals,
          array_agg(1000 * c + (random() * 1e6)::int ORDER BY i) AS ids
  FROM generate_series(1, 300) c, generate_series(1, 1 + (c % 9)) i
 GROUP BY c;
SELECT count(*) AS cases,
       count(*) FILTER (WHERE cdp._window_value(a, cutoff, ats, vals, ids)::text  -- as text: 1.50 is not 1.5
                              IS DISTINCT FROM pg_temp.window_ref(a, cutoff, ats, vals, ids)::text) AS differ,
       count(*) FILTER (WHERE cdp._window_value(a, cutoff, ats, vals, ids) IS NOT NULL) AS with_value,
       count(*) FILTER (WHERE cdp._window_oldest(cutoff, ats)
                              IS DISTINCT FROM (SELECT min(x) FROM unnest(ats) x WHERE x > cutoff)) AS oldest_differ
  FROM window_cases,
       unnest(ARRAY['count', 'sum', 'avg', 'min', 'max', 'first', 'last', 'count_distinct']) a,
       (VALUES (timestamptz '2025-12-01'), ('2026-01-10'), ('2026-02-01')) t(cutoff);
-- Values keep their scale; NULL arrays are no entries; inconsistent state is refused.
SELECT cdp._window_value('sum', '2026-01-01', '{2026-01-02,2026-01-03}', '{1.50,2}', '{1,2}') AS sum,
       cdp._window_value('avg', '2026-01-01', '{2026-01-02,2026-01-03}', '{1.50,2}', '{1,2}') AS avg,
       cdp._window_value('last', '2026-01-01', '{2026-01-02,2026-01-02}', '{a,b}', '{7,3}') AS last,
       cdp._window_value('count', '2026-01-01', NULL, NULL, NULL) AS none,
       cdp._window_value('max', '2026-01-01', NULL, NULL, NULL) AS no_max;
SELECT cdp._window_value('sum', '2026-01-01', '{2026-01-02,2026-01-03}', '{1}', '{1,2}');
SELECT cdp._window_value('median', '2026-01-01', '{}', '{}', '{}');

-- A profile's trait state is one value (cdp._trait_state_agg folds events
-- into it, cdp._trait_state_merge combines two).  Folding a profile's events
-- in two parts and merging gives the state of folding them at once, for
-- every aggregate with and without a window, on random events (NULL values,
-- ties in time, repeated values); so do the values and due times computed
-- from it.
CREATE TEMP TABLE state_events AS
SELECT c, i, t::integer, a, w,
       timestamptz '2026-01-01' + (random() * 20)::int * interval '1 day' AS at,
       1000 * c + i::bigint AS id,
       CASE WHEN random() < 0.15 THEN NULL
            ELSE ((random() * 40)::int - 10)::numeric / (10 ^ (random() * 3)::int)::numeric END::text AS v
  FROM generate_series(1, 60) c, generate_series(1, 1 + (c % 7)) i,
       unnest(ARRAY['count', 'sum', 'avg', 'min', 'max', 'first', 'last', 'count_distinct']) WITH ORDINALITY AS x(a, t),
       unnest(ARRAY[false, true]) AS w;
CREATE TEMP TABLE state_defs AS
SELECT array_agg(t + 10 * w::int ORDER BY t + 10 * w::int) AS ids,
       array_agg(a || CASE WHEN w THEN '_w' ELSE '' END ORDER BY t + 10 * w::int) AS names,
       array_agg(a ORDER BY t + 10 * w::int) AS aggs,
       array_agg(CASE WHEN w THEN interval '10 days' END ORDER BY t + 10 * w::int) AS windows
  FROM (SELECT DISTINCT t, a, w FROM state_events) d;
CREATE TEMP TABLE states AS
SELECT c,
       cdp._trait_state_agg(t + 10 * w::int, a, w, at, id, v) AS whole,
       cdp._trait_state_agg(t + 10 * w::int, a, w, at, id, v) FILTER (WHERE i % 2 = 0) AS even,
       cdp._trait_state_agg(t + 10 * w::int, a, w, at, id, v) FILTER (WHERE i % 2 = 1) AS odd
  FROM state_events GROUP BY c;
SELECT count(*) AS profiles,
       count(*) FILTER (WHERE cdp._trait_state_json(cdp._trait_state_merge(even, odd))
                              IS DISTINCT FROM cdp._trait_state_json(whole)) AS merged_differ,
       count(*) FILTER (WHERE cdp._trait_state_json(cdp._trait_state_merge(odd, even))
                              IS DISTINCT FROM cdp._trait_state_json(whole)) AS swapped_differ,
       count(*) FILTER (WHERE (SELECT (r.vals::text, r.due) FROM state_defs d,
                                      cdp._trait_state_apply(even, odd, '2026-01-15', d.ids, d.names, d.aggs, d.windows) r)
                              IS DISTINCT FROM
                              (SELECT (r.vals::text, r.due) FROM state_defs d,
                                      cdp._trait_state_apply(whole, NULL, '2026-01-15', d.ids, d.names, d.aggs, d.windows) r))
         AS values_differ
  FROM states;
-- The values are those of the aggregates over the events (window: those
-- after as_of minus the window; first/last by time, then event id).
SELECT count(*) AS checked, count(*) FILTER (WHERE got::text IS DISTINCT FROM want::text) AS differ
  FROM (SELECT s.c, d.name, nullif(r.vals -> d.name, 'null') AS got,
               CASE WHEN d.win IS NULL THEN pg_temp.window_ref(d.agg, '-infinity', e.ats, e.vals, e.ids)
                    ELSE pg_temp.window_ref(d.agg, timestamptz '2026-01-15' - d.win, e.ats, e.vals, e.ids) END AS want,
               d.agg, e.n_inside
          FROM states s CROSS JOIN state_defs sd
         CROSS JOIN LATERAL cdp._trait_state_apply(s.whole, NULL, '2026-01-15', sd.ids, sd.names, sd.aggs, sd.windows) r
         CROSS JOIN LATERAL unnest(sd.ids, sd.names, sd.aggs, sd.windows) AS d(id, name, agg, win)
         CROSS JOIN LATERAL (
           SELECT array_agg(x.at ORDER BY x.i) AS ats, array_agg(x.v ORDER BY x.i) AS vals, array_agg(x.id ORDER BY x.i) AS ids,
                  count(*) FILTER (WHERE d.win IS NULL OR x.at > timestamptz '2026-01-15' - d.win) AS n_inside
             FROM state_events x WHERE x.c = s.c AND x.t + 10 * x.w::int = d.id
              AND (x.v IS NOT NULL OR d.agg NOT IN ('sum', 'avg', 'min', 'max', 'count_distinct'))) e) q
 -- a trait with no matching event (or none left inside its window) has no key
 WHERE got IS NOT NULL OR n_inside > 0;
-- Readable; dropped traits and expired entries leave the state when it is applied.
SELECT jsonb_pretty(cdp._trait_state_json(
         cdp._trait_state_agg(t, a, w, at, id, v ORDER BY t)))
  FROM (VALUES (1, 'sum', false, timestamptz '2026-01-02', 11::bigint, '2.50'), (1, 'sum', false, '2026-01-03', 12, '1'),
               (2, 'count_distinct', false, '2026-01-02', 11, 'b'), (2, 'count_distinct', false, '2026-01-03', 12, 'a'),
               (2, 'count_distinct', false, '2026-01-04', 13, 'b'),
               (3, 'last', true, '2026-01-05', 14, 'x'), (3, 'last', true, '2026-01-01', 10, 'y')) AS e(t, a, w, at, id, v);
SELECT r.vals, r.due, cdp._trait_state_json(r.state) AS state
  FROM cdp._trait_state_apply(
         (SELECT cdp._trait_state_agg(t, a, w, at, id, v)
            FROM (VALUES (1, 'sum', false, timestamptz '2026-01-02', 11::bigint, '2.50'),
                         (3, 'last', true, '2026-01-05', 14, 'x'), (3, 'last', true, '2026-01-01', 10, 'y')) AS e(t, a, w, at, id, v)),
         NULL, '2026-01-09', '{3}', '{last_w}', '{last}', '{7 days}') r;
-- Damaged state is refused with a hint, not misread.
SELECT cdp._trait_state_json('\x02'::bytea);
SELECT cdp._trait_state_json('\x0101000000'::bytea);
-- A number in the state is checked like any binary numeric input.
SELECT cdp._trait_state_json(decode('01' || '00000001' || '0002' || '0000000000000001' || '00000004' || 'ffffffff', 'hex'));
SELECT cdp._trait_state_json(decode('01' || '00000001' || '0002' || '0000000000000001' || '0000000a' || '0001000000000000ffff', 'hex'));
-- Definitions may differ from row to row; each row is valued by its own.
SELECT d.names, r.vals
  FROM (VALUES ('{1}'::int[], '{a}'::text[], '{sum}'::text[], '{NULL}'::interval[]),
               ('{1}', '{b}', '{max}', '{NULL}'), ('{1}', '{a}', '{sum}', '{NULL}')) AS d(ids, names, aggs, windows),
       cdp._trait_state_apply((SELECT cdp._trait_state_agg(1, 'sum', false, '2026-01-02', 1, v) FROM unnest('{2,5}'::text[]) v),
                              NULL, '2026-01-09', d.ids, d.names, d.aggs, d.windows) r;

-- So does consent that expires.
SELECT cdp.create_audience('aud_cy_mail', $$aud_any > 0 AND aud_flash = 0 AND traits->>'suite' = 'aud'$$, 'email_marketing') > 0 AS created;
SELECT cdp.record_consent(cdp.identifier('email', 'aud-cy@example.com'), 'email_marketing', true, NULL, '{}',
                          now(), clock_timestamp() + interval '1.5 seconds') > 0 AS recorded;
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT pg_temp.members('aud_cy_mail') AS cy_mail;
SELECT pg_sleep(1.7);
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT pg_temp.members('aud_cy_mail') AS cy_mail;
SELECT change, reason FROM cdp.audience_changes WHERE audience = 'aud_cy_mail' ORDER BY change_id;

-- Erasure: the profile leaves its audiences, its computed traits go at once.
SELECT cdp.record_consent(cdp.identifier('email', 'aud-cy@example.com'), 'email_marketing', true) > 0 AS recorded;
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT pg_temp.members('aud_cy_mail') AS cy_mail;
SELECT cdp.erase_subject(cdp.identifier('email', 'aud-cy@example.com'), 'test') ->> 'profiles' AS erased;
SELECT count(*) AS left_over FROM cdp.computed_trait_values s
 WHERE NOT EXISTS (SELECT FROM cdp.profile_data p WHERE p.profile_id = s.profile_id);
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT change, reason FROM cdp.audience_changes WHERE audience = 'aud_cy_mail' ORDER BY change_id DESC LIMIT 1;
SELECT pg_temp.members('aud_cy_mail') AS cy_mail;
SELECT count(*) AS mismatches FROM (
  (SELECT audience, profile_id FROM cdp.audience_members WHERE audience LIKE 'aud%' EXCEPT SELECT * FROM replayed)
  UNION ALL
  (SELECT * FROM replayed EXCEPT SELECT audience, profile_id FROM cdp.audience_members WHERE audience LIKE 'aud%')) d;

------------------------------------------------------------------------
-- Rules: what is refused, and why
------------------------------------------------------------------------
SELECT cdp.create_audience('aud_bad', 'aud_orders >');
SELECT cdp.create_audience('aud_bad', 'aud_nosuch > 1');
SELECT cdp.create_audience('aud_bad', 'aud_orders');
SELECT cdp.create_audience('aud_bad', 'random() > 0.5');
SELECT cdp.create_audience('aud_bad', 'true; DROP TABLE cdp.journal');
SELECT cdp.create_audience('aud_bad', 'true FROM pg_authid');
SELECT cdp.create_audience('aud_bad', 'true) OR (true');
SELECT cdp.create_audience('aud_bad', 'profile_id IN (SELECT 1)');
SELECT cdp.create_audience('aud_bad', 'count(*) > 1');
SELECT cdp.create_audience('aud_bad', 'cdp.in_audience(''aud_nope'')');
SELECT cdp.create_audience('aud_bad', 'cdp.in_audience(traits->>''x'')');
SELECT cdp.create_audience('aud_bad', '');
SELECT cdp.create_audience('aud_bad', NULL);
SELECT cdp.create_audience('Aud Bad', 'true');
SELECT cdp.create_audience('aud_buyers', 'true');
SELECT cdp.create_audience('aud_bad', 'true', 'nosuch_purpose');
SELECT cdp.alter_audience('aud_buyers', 'cdp.in_audience(''aud_campaign'')');
SELECT cdp.alter_audience('aud_buyers', 'cdp.in_audience(''aud_buyers'')');
SELECT cdp.alter_audience('aud_nope', 'true');
SELECT cdp.drop_audience('aud_buyers');
SELECT cdp.drop_trait('aud_orders_90d');
SELECT cdp.drop_audience('aud_nope');
SELECT cdp.in_audience('aud_buyers');
-- Rules run with the extension owner's rights: functions a non-superuser
-- owns are refused, even stable ones.
CREATE ROLE aud_owner;
CREATE FUNCTION public.aud_peek(bigint) RETURNS boolean LANGUAGE sql STABLE RETURN true;
ALTER FUNCTION public.aud_peek(bigint) OWNER TO aud_owner;
SELECT cdp.create_audience('aud_bad', 'public.aud_peek(profile_id)');
SELECT cdp.create_trait('aud_x', 'count', NULL, NULL, NULL, 'public.aud_peek(1)');
DROP FUNCTION public.aud_peek(bigint);
DROP ROLE aud_owner;
SELECT count(*) AS nothing_created FROM cdp.audience_data WHERE name = 'aud_bad';

-- A rule that fails at run time marks its audience, the others go on.
SELECT cdp.create_audience('aud_fragile', $$(traits->>'age')::int > 30$$) > 0 AS created;
SELECT cdp.identify(ARRAY[cdp.identifier('email', 'aud-dee@example.com')], '{"age": "thirty"}') > 0 AS ok;
SELECT (cdp.refresh_audiences() ->> 'errors')::int > 0 AS had_errors;
SELECT name, error IS NOT NULL AS errored, error FROM cdp.audiences WHERE name IN ('aud_fragile', 'aud_buyers') ORDER BY name;
SELECT cdp.alter_audience('aud_fragile', $$traits->>'age' ~ '^\d+$' AND (traits->>'age')::int > 30$$);
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT name, error FROM cdp.audiences WHERE name = 'aud_fragile';

-- Audiences of one level are evaluated together; when one rule fails in
-- such a pass, it alone is marked and the others still see the change.
SELECT cdp.create_audience('aud_scored', $$(traits->>'score')::int > 5$$) > 0 AS created;
SELECT cdp.create_audience('aud_all', 'true') > 0 AS created;
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT cdp.identify(ARRAY[cdp.identifier('email', 'aud-eve@example.com')], '{"score": "high"}') AS eve \gset
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT name, error FROM cdp.audiences WHERE name IN ('aud_scored', 'aud_all', 'aud_fragile') ORDER BY name;
SELECT a.name FROM cdp.audience_member_data m JOIN cdp.audience_data a USING (audience_id)
 WHERE m.profile_id = :eve ORDER BY 1;
SELECT cdp.drop_audience('aud_scored');
SELECT cdp.drop_audience('aud_all');

-- A changed rule reaches the audiences that use it, even when no profile
-- changed in the pass.
SELECT cdp.create_audience('aud_de', $$traits->>'country' = 'DE'$$) > 0 AS created;
SELECT cdp.create_audience('aud_de_too', $$cdp.in_audience('aud_de')$$) > 0 AS created;
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT name, size FROM cdp.audiences WHERE name IN ('aud_de', 'aud_de_too') ORDER BY name;
SELECT cdp.alter_audience('aud_de', 'false');
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT name, size FROM cdp.audiences WHERE name IN ('aud_de', 'aud_de_too') ORDER BY name;
SELECT cdp.drop_audience('aud_de_too');
SELECT cdp.drop_audience('aud_de');

-- Altering a rule re-evaluates it over everyone; dropping removes it.
SELECT cdp.alter_audience('aud_campaign', 'aud_orders >= 1');
SELECT (cdp.refresh_audiences() ->> 'errors')::int AS errors;
SELECT pg_temp.members('aud_campaign') AS campaign;
SELECT change, reason FROM cdp.audience_changes WHERE audience = 'aud_campaign' ORDER BY change_id DESC LIMIT 1;
SELECT cdp.drop_audience('aud_campaign');
SELECT cdp.drop_audience('aud_fragile');
SELECT count(*) FROM cdp.audience_changes WHERE audience = 'aud_campaign';
SELECT cdp.drop_trait('aud_min');
SELECT count(*) AS column_gone FROM pg_attribute WHERE attrelid = 'cdp.profile_traits'::regclass AND attname = 'aud_min';

------------------------------------------------------------------------
-- Analysts: consent-aware reads; no writes
------------------------------------------------------------------------
SELECT pg_temp.p('aud-bob@example.com') AS bob \gset
CREATE ROLE aud_analyst LOGIN IN ROLE cdp_analyst;
SET ROLE aud_analyst;
SELECT count(*) AS without_purpose FROM cdp.audience_members WHERE audience LIKE 'aud%';
SET cdp.purpose = 'email_marketing';
SELECT audience, profile_id = :bob AS is_bob FROM cdp.audience_members WHERE audience LIKE 'aud%' ORDER BY 1;
-- Bob's traits, masked where personal (none here), and his computed traits.
SELECT traits, aud_orders, aud_last_sku FROM cdp.profile_traits WHERE profile_id = :bob;
SELECT name, size FROM cdp.audiences WHERE name LIKE 'aud%' ORDER BY name;
SELECT cdp.create_audience('aud_x', 'true');
SELECT count(*) FROM cdp.audience_member_data;
RESET cdp.purpose;
RESET ROLE;
DROP ROLE aud_analyst;
