-- Masking personal data for readers who are not cdp_pii_reader:
-- cdp._mask_traits() writes the masked document directly in jsonb's binary
-- format, so it is checked against a reference written with jsonb_each()
-- on documents of every shape: up to 80 keys (past jsonb's offset stride of
-- 32 entries), every value type, numerics and containers whose alignment
-- moves when a value before them is replaced.

-- The reference: every top-level key in keys gets the value "***".
CREATE FUNCTION pg_temp.mask_ref(doc jsonb, keys text[]) RETURNS jsonb LANGUAGE sql AS $$
  SELECT CASE WHEN jsonb_typeof(doc) <> 'object' THEN doc
              ELSE coalesce((SELECT jsonb_object_agg(e.k, CASE WHEN e.k = ANY (keys) THEN '"***"'::jsonb ELSE e.v END)
                               FROM jsonb_each(doc) AS e(k, v)), '{}') END
$$;

-- Examples.
SELECT cdp._mask_traits('{"email": "ada@example.com", "country": "DE", "first_name": "Ada"}',
                        '{email,phone,first_name}') AS masked;
SELECT cdp._mask_traits('{"plan": "pro", "seats": 3}', '{email}') AS nothing_to_mask;
SELECT cdp._mask_traits('{"email": {"work": "a@x.io"}, "n": 1.5, "tags": [1, "x"]}', '{email}') AS container_masked;
SELECT cdp._mask_traits('{"a": 1, "email": null, "b": true}', '{email,email,NULL}') AS duplicates_and_null_keys;
SELECT cdp._mask_traits('[{"email": "a@x.io"}]', '{email}') AS array_unchanged,
       cdp._mask_traits('"email"', '{email}') AS scalar_unchanged,
       cdp._mask_traits('{}', '{email}') AS empty_object,
       cdp._mask_traits('{"email": "a@x.io"}', '{}') AS no_keys;
-- The key list may change from row to row.
SELECT k, cdp._mask_traits('{"a": 1, "bb": 2, "ccc": 3}', k) AS masked
  FROM (VALUES ('{a}'::text[]), ('{bb,ccc}'), ('{a}'), ('{zz}')) v(k);

-- Random documents: keys from a pool of short, long and PII names, values
-- of every type; keys masked from a few key lists.
SELECT setseed(0.5);
CREATE TEMP TABLE docs AS
SELECT d, (SELECT coalesce(jsonb_object_agg(k, v), '{}')
             FROM (SELECT (ARRAY['a', 'bb', 'ccc', 'email', 'phone', 'first_name', 'last_name', 'x'])[1 + (random() * 7)::int]
                          || CASE WHEN random() < 0.6 THEN '_' || (random() * 100)::int ELSE '' END
                          || CASE WHEN random() < 0.1 THEN repeat('long', 20) ELSE '' END AS k,
                          CASE (random() * 8)::int
                            WHEN 0 THEN to_jsonb(round((random() * 1000)::numeric, (random() * 4)::int))
                            WHEN 1 THEN to_jsonb(repeat('s', (random() * 12)::int))
                            WHEN 2 THEN 'true'::jsonb
                            WHEN 3 THEN 'false'::jsonb
                            WHEN 4 THEN 'null'::jsonb
                            WHEN 5 THEN jsonb_build_array(random() < 0.5, 1.25, repeat('t', (random() * 5)::int))
                            WHEN 6 THEN jsonb_build_object('email', 'x@y.z', 'n', (random() * 9)::int)
                            ELSE to_jsonb((random() * 100000)::int)
                          END AS v
                     FROM generate_series(1, (random() * 80)::int + d % 2) g
                    WHERE d > 0) kv) AS doc
  FROM generate_series(1, 3000) d;
CREATE TEMP TABLE masked AS
SELECT d, keys, doc, cdp._mask_traits(doc, keys) AS got, pg_temp.mask_ref(doc, keys) AS want
  FROM docs, (VALUES ('{email,phone,first_name,last_name,name,address,birthday}'::text[]),
                     ('{a,bb,ccc,x}'), ('{email_1,a_7,bb_50,ccc_99,x_3}')) k(keys);
SELECT count(*) AS cases,
       count(*) FILTER (WHERE (SELECT count(*) FROM jsonb_object_keys(doc)) > 32) AS over_stride,
       count(*) FILTER (WHERE got IS DISTINCT FROM doc) AS changed,
       count(*) FILTER (WHERE got IS DISTINCT FROM want) AS differ,
       count(*) FILTER (WHERE got::text IS DISTINCT FROM want::text) AS differ_as_text,
       count(*) FILTER (WHERE EXISTS (SELECT FROM jsonb_each(want) w(k, v) WHERE got -> w.k IS DISTINCT FROM w.v)) AS differ_by_key,
       count(*) FILTER (WHERE (SELECT array_agg(t.k) FROM jsonb_object_keys(got) t(k))
                              IS DISTINCT FROM (SELECT array_agg(t.k) FROM jsonb_object_keys(doc) t(k))) AS keys_differ
  FROM masked;
-- Every masked document is valid jsonb: it survives a round trip and every
-- value reads back by path.
SELECT count(*) FILTER (WHERE got::text::jsonb IS DISTINCT FROM got) AS bad_round_trip,
       count(*) FILTER (WHERE jsonb_path_query_array(got, '$.*') IS DISTINCT FROM jsonb_path_query_array(want, '$.*')) AS bad_values
  FROM masked;
