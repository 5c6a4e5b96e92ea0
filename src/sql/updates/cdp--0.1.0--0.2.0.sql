-- cdp 0.1.0 -> 0.2.0
--
-- Every SQL change since 0.1.0, in the order it was made.  Each change is also
-- in src/sql/ (fresh installs); t/009_upgrade.pl checks that both agree.

\echo Use "ALTER EXTENSION cdp UPDATE TO '0.2.0'" to load this file. \quit

-- audiences: the new events of a pass are looked up one probe each, in their own partition
-- (a batch of a few thousand ids was planned as a hash join over every stored event).
CREATE OR REPLACE FUNCTION cdp._trait_fold(event_ids bigint[], profiles bigint[], skip_profiles bigint[],
                                as_of timestamptz, only_trait integer DEFAULT NULL,
                                event_times timestamptz[] DEFAULT NULL) RETURNS bigint[]
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  c cdp.computed_traits;
  src text;
  val text;
  agg text;
  keep text;
  parts text[] := '{}';
  events text[] := '{}';
  any_event boolean := false;
  touched bigint[];
BEGIN
  IF event_ids IS NOT NULL AND event_times IS NOT NULL THEN
    -- Each event from its one partition (occurred_at is the partition key).
    src := 'true';
  ELSIF event_ids IS NOT NULL THEN
    src := 'e.event_id = ANY ($1)';
  ELSIF profiles IS NOT NULL THEN
    src := 'e.profile_id = ANY ($2) AND e.event_id NOT IN (SELECT unnest(j.event_ids) FROM cdp.journal j WHERE j.kind = ''events'')';
  ELSE
    src := 'e.event_id NOT IN (SELECT unnest(j.event_ids) FROM cdp.journal j WHERE j.kind = ''events'')';
  END IF;
  IF skip_profiles IS NOT NULL AND cardinality(skip_profiles) > 0 THEN
    src := src || ' AND e.profile_id <> ALL ($3)';
  END IF;

  FOR c IN SELECT * FROM cdp.computed_traits ct
            WHERE only_trait IS NULL OR ct.trait_id = only_trait ORDER BY ct.trait_id LOOP
    IF c.event IS NULL THEN
      any_event := true;
    ELSE
      events := events || c.event;
    END IF;
    val := CASE WHEN c.aggregate IN ('sum', 'avg', 'min', 'max')
                THEN format('cdp._jsonb_numeric(e.properties -> %L)::text', c.property)
                WHEN c.property IS NOT NULL THEN format('e.properties ->> %L', c.property)
                ELSE 'NULL::text' END;
    keep := CASE WHEN c.aggregate IN ('sum', 'avg', 'min', 'max', 'count_distinct') THEN 'm.v IS NOT NULL' ELSE 'true' END;
    IF c."window" IS NOT NULL THEN
      keep := keep || format(' AND m.occurred_at > $4 - %L::interval', c."window");
      agg := 'count(*), NULL::numeric, NULL::numeric, NULL::numeric, NULL::timestamptz, NULL::bigint, NULL::text, '
             'NULL::timestamptz, NULL::bigint, NULL::text, array_agg(m.v), array_agg(m.occurred_at), array_agg(m.event_id)';
    ELSE
      agg := CASE WHEN c.aggregate IN ('sum', 'avg', 'min', 'max')
                  THEN 'count(*), sum(m.v::numeric), min(m.v::numeric), max(m.v::numeric)'
                  ELSE 'count(*), NULL::numeric, NULL::numeric, NULL::numeric' END
      || CASE WHEN c.aggregate = 'first'
              THEN ', min(m.occurred_at), (array_agg(m.event_id ORDER BY m.occurred_at, m.event_id))[1], '
                   '(array_agg(m.v ORDER BY m.occurred_at, m.event_id))[1]'
              ELSE ', NULL::timestamptz, NULL::bigint, NULL::text' END
      || CASE WHEN c.aggregate = 'last'
              THEN ', max(m.occurred_at), (array_agg(m.event_id ORDER BY m.occurred_at DESC, m.event_id DESC))[1], '
                   '(array_agg(m.v ORDER BY m.occurred_at DESC, m.event_id DESC))[1]'
              ELSE ', NULL::timestamptz, NULL::bigint, NULL::text' END
      || CASE WHEN c.aggregate = 'count_distinct'
              THEN ', array_agg(DISTINCT m.v ORDER BY m.v)'
              ELSE ', NULL::text[]' END
      || ', NULL::timestamptz[], NULL::bigint[]';
    END IF;
    -- One trait: its matching events (with the value it aggregates) per profile.
    parts := parts || format(
      'SELECT m.profile_id, %s AS trait_id, %s FROM (SELECT e.profile_id, e.event_id, e.occurred_at, %s AS v FROM ev e '
      'WHERE true%s%s) m WHERE %s GROUP BY m.profile_id',
      c.trait_id, agg, val,
      CASE WHEN c.event IS NOT NULL THEN format(' AND e.event = %L', c.event) ELSE '' END,
      CASE WHEN c.filter_sql IS NOT NULL THEN format(' AND (%s)', c.filter_sql) ELSE '' END,
      keep);
  END LOOP;
  IF cardinality(parts) = 0 THEN
    RETURN '{}';
  END IF;

  EXECUTE format(
    'WITH ev AS MATERIALIZED (SELECT e.profile_id, e.event_id, e.occurred_at, e.event, e.properties '
    '                           FROM %s WHERE %s%s), '
    'up AS (INSERT INTO cdp.computed_trait_state AS s (profile_id, trait_id, n, total, lo, hi, first_at, first_id, '
    '         first_val, last_at, last_id, last_val, vals, ats, ids) '
    '       %s '
    '       ON CONFLICT (profile_id, trait_id) DO UPDATE SET %s RETURNING s.profile_id) '
    'SELECT coalesce(array_agg(DISTINCT profile_id), ''{}'') FROM up',
    CASE WHEN event_ids IS NOT NULL AND event_times IS NOT NULL
         -- A probe per event, into its one partition (OFFSET 0 keeps the
         -- subquery a parameterised inner side: joined, a batch of a few
         -- thousand ids is planned as a hash join over every event stored).
         THEN 'unnest($1, $5) AS u(id, at) CROSS JOIN LATERAL (SELECT e.* FROM cdp.event_data e '
              'WHERE e.event_id = u.id AND e.occurred_at = u.at OFFSET 0) e'
         ELSE 'cdp.event_data e' END,
    src,
    CASE WHEN any_event THEN '' ELSE format(' AND e.event = ANY (%L::text[])', events) END,
    array_to_string(parts, ' UNION ALL '),
    cdp._trait_merge_sql())
    INTO touched USING event_ids, profiles, skip_profiles, as_of, event_times;
  RETURN touched;
END $$;
COMMENT ON FUNCTION cdp._trait_fold(bigint[], bigint[], bigint[], timestamptz, integer, timestamptz[]) IS
  'Internal: fold events (new ones, or every event of rebuilt profiles) into computed-trait state';

-- audiences: the numbers sum/avg/min/max traits aggregate are read in C (the
-- SQL version, a regular expression never inlined, dominated folding).
CREATE OR REPLACE FUNCTION cdp._jsonb_numeric(value jsonb) RETURNS numeric
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
  AS 'MODULE_PATHNAME', 'cdp_jsonb_numeric';
COMMENT ON FUNCTION cdp._jsonb_numeric(jsonb) IS
  'Internal: a JSON number, or a string holding a decimal number, as numeric; NULL for anything else';
