-- Identity stitching (src/identity/): identifiers resolve into profiles,
-- merges follow cdp.identity_rules, everything is replayable by
-- cdp.restitch().
--
-- Storage tables end in _data; read the views (cdp.profiles, cdp.events,
-- cdp.profile_identifiers), which always attribute merged history to the
-- surviving profile.  Writes go through cdp functions only: no trigger on a
-- profile-keyed table carries correctness (DESIGN.md, Citus).

-- Event ids come from one sequence, taken in the order identity decisions
-- are made (after the identity locks).  A profile's id is the id of the
-- event that created it, so replaying events in id order reproduces every
-- profile id exactly.
CREATE SEQUENCE cdp.event_id_seq;
COMMENT ON SEQUENCE cdp.event_id_seq IS
  'Event ids, in the order identity decisions were made; a profile id is the id of the event that created it';

CREATE TABLE cdp.identity_rules (
  kind            text PRIMARY KEY
                  CHECK (kind = '*' OR kind ~ '^[a-z][a-z0-9_]{0,31}$'),
  priority        integer NOT NULL CHECK (priority >= 0),
  max_per_profile integer CHECK (max_per_profile > 0),
  blocked_values  text[] NOT NULL DEFAULT '{}',
  blocked_pattern text CHECK (blocked_pattern IS NULL OR ('' ~ blocked_pattern) IS NOT NULL)
);
COMMENT ON TABLE cdp.identity_rules IS
  'Merge rules per identifier kind: priority (1 = strongest), max identifiers of the kind on one profile, values that never link. Row ''*'' applies to every kind (blocked values/pattern) and to kinds without a row (priority, limit). Apply changes to existing data with cdp.restitch().';
COMMENT ON COLUMN cdp.identity_rules.priority IS 'When a merge would exceed a limit, the message''s identifiers with the highest number here are dropped first';
COMMENT ON COLUMN cdp.identity_rules.max_per_profile IS 'At most this many identifiers of the kind on one profile; NULL: no limit';
COMMENT ON COLUMN cdp.identity_rules.blocked_values IS 'Normalised values (compared case-insensitively) that are never used to link, e.g. null, test@test.com';
COMMENT ON COLUMN cdp.identity_rules.blocked_pattern IS 'A regular expression: values matching it are never used to link';

INSERT INTO cdp.identity_rules (kind, priority, max_per_profile, blocked_values, blocked_pattern) VALUES
  ('*',            10, NULL,
   ARRAY['', 'null', 'undefined', 'none', 'nan', 'unknown', 'anonymous', '0', '-1',
         '[object object]', 'test@test.com', 'test@example.com'],
   '^[0-]*$'),
  ('user_id',       1, 1,    '{}', NULL),
  ('crm_id',        2, 1,    '{}', NULL),
  ('email',         3, 5,    '{}', NULL),
  ('phone',         4, 5,    '{}', NULL),
  ('device_id',     5, 10,   '{}', NULL),
  ('anonymous_id',  9, NULL, '{}', NULL);

-- Where cdp.ingest() and cdp.process_inbox() find identifiers in a
-- Segment-spec message.
CREATE TABLE cdp.identifier_mappings (
  path text[] PRIMARY KEY CHECK (cardinality(path) > 0),
  kind text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,31}$')
);
COMMENT ON TABLE cdp.identifier_mappings IS
  'JSON path in a Segment-spec message -> identifier kind, e.g. {traits,email} -> email. Add rows for your own identifiers (loyalty cards, CRM ids).';
INSERT INTO cdp.identifier_mappings (path, kind) VALUES
  ('{userId}', 'user_id'),
  ('{anonymousId}', 'anonymous_id'),
  ('{previousId}', 'anonymous_id'),
  ('{traits,email}', 'email'),
  ('{context,traits,email}', 'email'),
  ('{traits,phone}', 'phone'),
  ('{context,device,advertisingId}', 'device_id'),
  ('{context,device,id}', 'device_id');

CREATE TABLE cdp.profile_data (
  profile_id  bigint PRIMARY KEY,
  merged_into bigint,
  traits      jsonb NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL,
  updated_at  timestamptz NOT NULL,
  CHECK (merged_into IS NULL OR merged_into <> profile_id)
);
CREATE INDEX profile_data_merged_into ON cdp.profile_data (merged_into) WHERE merged_into IS NOT NULL;
COMMENT ON TABLE cdp.profile_data IS
  'Profiles, live (merged_into IS NULL) and tombstones (merged_into = the live survivor). Storage: read cdp.profiles.';

-- Traits, one row per profile and top-level key: last write wins by
-- (occurred_at, event_id).  profile_data.traits is their snapshot.
CREATE TABLE cdp.trait_data (
  profile_id  bigint NOT NULL,
  key         text NOT NULL,
  value       jsonb NOT NULL,
  occurred_at timestamptz NOT NULL,
  event_id    bigint NOT NULL,
  PRIMARY KEY (profile_id, key)
);
COMMENT ON TABLE cdp.trait_data IS 'Profile traits with the version that wrote each key (last write wins by occurred_at, then event id). Storage: read cdp.profiles.';

CREATE TABLE cdp.identity_data (
  identifier  cdp.identifier PRIMARY KEY,
  kind        text NOT NULL,
  profile_id  bigint NOT NULL,
  source      text,
  first_seen  timestamptz NOT NULL,
  last_seen   timestamptz NOT NULL
);
CREATE INDEX identity_data_profile ON cdp.identity_data (profile_id);
COMMENT ON TABLE cdp.identity_data IS
  'Identifier -> live profile (each identifier on at most one). Storage: read cdp.profile_identifiers.';

CREATE TABLE cdp.event_data (
  profile_id  bigint NOT NULL,
  event_id    bigint NOT NULL,
  occurred_at timestamptz NOT NULL,
  type        text NOT NULL,
  event       text,
  properties  jsonb NOT NULL DEFAULT '{}',
  identifiers cdp.identifier[] NOT NULL,
  received_at timestamptz NOT NULL,
  source      text,
  message_id  text
) PARTITION BY RANGE (occurred_at);
-- Keys are declared per partition (see cdp._create_event_partition): an
-- index on this extension-owned parent would make pg_dump emit each
-- partition's inherited key twice and the restore fail.
COMMENT ON TABLE cdp.event_data IS
  'Every accepted message (track, identify, page, screen, group, alias) with the identifiers it carried, partitioned by month of occurred_at (partitions are created as needed, each with primary key (profile_id, event_id, occurred_at) and an index on event_id). Storage: read cdp.events.';
COMMENT ON COLUMN cdp.event_data.identifiers IS 'All identifiers the message carried, normalised, including those the rules dropped: cdp.restitch() replays them';

-- Idempotent ingestion: a message id is accepted once.
CREATE TABLE cdp.message_ids (
  message_id  text PRIMARY KEY,
  event_id    bigint NOT NULL,
  received_at timestamptz NOT NULL
);
COMMENT ON TABLE cdp.message_ids IS 'Message ids already ingested: a re-sent message is counted as a duplicate and stored once';

CREATE TABLE cdp.merges (
  profile_id        bigint NOT NULL,
  merged_profile_id bigint NOT NULL,
  event_id          bigint NOT NULL,
  merged_at         timestamptz NOT NULL,
  cause             jsonb NOT NULL,
  PRIMARY KEY (profile_id, merged_profile_id)
);
CREATE INDEX merges_merged ON cdp.merges (merged_profile_id);
COMMENT ON TABLE cdp.merges IS
  'Audit of merges: merged_profile_id was merged into profile_id by event event_id; cause names the linking identifiers';

CREATE TABLE cdp.identity_conflicts (
  conflict_id bigserial,
  event_id    bigint,
  profile_id  bigint,
  identifier  cdp.identifier,
  reason      text NOT NULL CHECK (reason IN ('blocked', 'limit', 'invalid', 'suppressed')),
  detail      text NOT NULL,
  recorded_at timestamptz NOT NULL,
  PRIMARY KEY (conflict_id)
);
CREATE INDEX identity_conflicts_identifier ON cdp.identity_conflicts (identifier);
CREATE INDEX identity_conflicts_event ON cdp.identity_conflicts (event_id);
CREATE INDEX identity_conflicts_profile ON cdp.identity_conflicts (profile_id);
COMMENT ON TABLE cdp.identity_conflicts IS
  'Identifiers a message carried but that were not used: blocked values, merges refused by a limit (the lower-priority identifier dropped), invalid values; profile_id is where the message''s event is now (it follows merges)';

-- Identifiers erased by cdp.erase_subject(): only their SHA-256 is kept,
-- and ingestion drops them until cdp.unsuppress().
CREATE TABLE cdp.suppressed_identifiers (
  identifier_hash text PRIMARY KEY CHECK (identifier_hash ~ '^[0-9a-f]{64}$'),
  erasure_id      bigint,
  suppressed_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE cdp.suppressed_identifiers IS
  'Lower-case hex SHA-256 of erased identifiers (their kind:value text); ingestion drops them until cdp.unsuppress()';

CREATE FUNCTION cdp._lock_identity() RETURNS void
  LANGUAGE c VOLATILE
  AS 'MODULE_PATHNAME', 'cdp_lock_identity';
COMMENT ON FUNCTION cdp._lock_identity() IS
  'Internal: lock the identity graph exclusively until the end of the transaction';

-- Bulk ingestion: COPY NDJSON lines into payload, then cdp.process_inbox().
CREATE TABLE cdp.inbox (
  inbox_id    bigserial PRIMARY KEY,
  payload     text NOT NULL,
  source      text,
  received_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE cdp.inbox IS
  'Landing table for bulk ingestion: one Segment-spec JSON message per row (text, so a malformed line is set aside, not fatal). Load NDJSON with COPY cdp.inbox (payload) FROM ... WITH (FORMAT csv, QUOTE E''\x01'', DELIMITER E''\x02''); process with cdp.process_inbox() or the background worker.';

CREATE TABLE cdp.inbox_rejects (
  inbox_id    bigint PRIMARY KEY,
  payload     text NOT NULL,
  source      text,
  received_at timestamptz NOT NULL,
  error       text NOT NULL,
  rejected_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE cdp.inbox_rejects IS 'Inbox messages that could not be ingested, with the reason; fix and re-insert into cdp.inbox to retry';

-- Partitions of cdp.event_data, one per calendar month (UTC), created by
-- ingestion as needed.  True when this call created it.
CREATE FUNCTION cdp._create_event_partition(month_start timestamptz) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  -- Month boundaries in UTC, whatever the session's time zone.
  lo timestamp := date_trunc('month', month_start AT TIME ZONE 'UTC');
  name text := format('event_data_%s', to_char(lo, 'YYYY_MM'));
BEGIN
  IF to_regclass(format('cdp.%I', name)) IS NOT NULL THEN
    RETURN false;
  END IF;
  EXECUTE format('CREATE TABLE cdp.%I PARTITION OF cdp.event_data FOR VALUES FROM (%L) TO (%L)',
                 name, lo AT TIME ZONE 'UTC', (lo + interval '1 month') AT TIME ZONE 'UTC');
  EXECUTE format('ALTER TABLE cdp.%I ADD PRIMARY KEY (profile_id, event_id, occurred_at)', name);
  EXECUTE format('CREATE INDEX ON cdp.%I (event_id)', name);
  EXECUTE format('COMMENT ON TABLE cdp.%I IS %L', name,
                 format('Events that occurred in %s (UTC); a partition of cdp.event_data', to_char(lo, 'YYYY-MM')));
  RETURN true;
EXCEPTION WHEN duplicate_table OR unique_violation THEN
  RETURN false;  -- a concurrent session created it first
END $$;
COMMENT ON FUNCTION cdp._create_event_partition(timestamptz) IS
  'Internal: create the cdp.event_data partition for the month starting at month_start (UTC) unless it exists; true when this call created it';

-- Creating a partition locks cdp.event_data ACCESS EXCLUSIVE: done by
-- ingestion at the first event of a month, it would wait for every query
-- reading events (a long report, the audience pass) and everything would
-- queue behind it.  The background worker's retention pass (hourly) calls
-- this to create this month's partition and the next ones ahead of time;
-- a partition whose lock is not granted within lock_timeout is left for the
-- next call.  Ingestion still creates partitions of other months (history
-- loaded later) as it meets them.
CREATE FUNCTION cdp.create_event_partitions(months_ahead integer DEFAULT 2) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  SET lock_timeout = '5s'
AS $$
DECLARE
  month_start timestamptz;
  created integer := 0;
BEGIN
  IF months_ahead IS NULL OR months_ahead NOT BETWEEN 0 AND 120 THEN
    RAISE EXCEPTION 'months_ahead must be between 0 and 120, not %', coalesce(months_ahead::text, 'NULL')
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'It is the number of months after the current one (UTC) to create partitions for.';
  END IF;
  FOR month_start IN
    SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => k)) AT TIME ZONE 'UTC'
      FROM generate_series(0, months_ahead) k LOOP
    BEGIN
      created := created + cdp._create_event_partition(month_start)::integer;
    EXCEPTION WHEN lock_not_available THEN
      RAISE WARNING 'cdp: the event partition for % was not created: cdp.event_data is in use',
                    to_char(month_start AT TIME ZONE 'UTC', 'YYYY-MM')
        USING ERRCODE = 'lock_not_available',
              HINT = 'It is tried again at the next call (the worker''s retention pass, hourly).';
    END;
  END LOOP;
  RETURN created;
END $$;
COMMENT ON FUNCTION cdp.create_event_partitions(integer) IS
  'Create the cdp.event_data partitions of this month and the next months_ahead months (UTC) that do not exist yet, ahead of ingestion (the worker does it hourly); returns how many it created';

-- Ingestion.
CREATE FUNCTION cdp.identify(identifiers cdp.identifier[], traits jsonb DEFAULT '{}',
                             occurred_at timestamptz DEFAULT now(), source text DEFAULT NULL,
                             message_id text DEFAULT NULL) RETURNS bigint
  LANGUAGE c VOLATILE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS 'MODULE_PATHNAME', 'cdp_identify';
COMMENT ON FUNCTION cdp.identify(cdp.identifier[], jsonb, timestamptz, text, text) IS
  'Resolve identifiers to a profile (creating or merging under cdp.identity_rules), set its traits (last write wins per key) and return the profile id';

CREATE FUNCTION cdp.track(identifiers cdp.identifier[], event text, properties jsonb DEFAULT '{}',
                          occurred_at timestamptz DEFAULT now(), source text DEFAULT NULL,
                          message_id text DEFAULT NULL) RETURNS bigint
  LANGUAGE c VOLATILE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS 'MODULE_PATHNAME', 'cdp_track';
COMMENT ON FUNCTION cdp.track(cdp.identifier[], text, jsonb, timestamptz, text, text) IS
  'Record an event for the profile the identifiers resolve to and return the profile id';

CREATE FUNCTION cdp.ingest(payload jsonb) RETURNS jsonb
  LANGUAGE c VOLATILE STRICT SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS 'MODULE_PATHNAME', 'cdp_ingest';
COMMENT ON FUNCTION cdp.ingest(jsonb) IS
  'Ingest one Segment-spec message or {"batch": [...]}; returns counts and the rejected messages with their index and error (a bad message never aborts the others)';

CREATE FUNCTION cdp.process_inbox(max_messages integer DEFAULT NULL) RETURNS jsonb
  LANGUAGE c VOLATILE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS 'MODULE_PATHNAME', 'cdp_process_inbox';
COMMENT ON FUNCTION cdp.process_inbox(integer) IS
  'Ingest messages waiting in cdp.inbox (oldest first, at most max_messages; NULL: all), setting bad ones aside in cdp.inbox_rejects';

-- Lookups.
CREATE FUNCTION cdp.resolve(profile_id bigint) RETURNS bigint
  LANGUAGE sql STABLE STRICT PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  RETURN (SELECT coalesce(p.merged_into, p.profile_id) FROM cdp.profile_data p WHERE p.profile_id = resolve.profile_id);
COMMENT ON FUNCTION cdp.resolve(bigint) IS 'The live profile a profile id stands for now (a merged id gives its survivor); NULL if unknown';

CREATE FUNCTION cdp.profile_of(identifier cdp.identifier) RETURNS bigint
  LANGUAGE sql STABLE STRICT PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  RETURN (SELECT i.profile_id FROM cdp.identity_data i WHERE i.identifier OPERATOR(cdp.=) profile_of.identifier);
COMMENT ON FUNCTION cdp.profile_of(cdp.identifier) IS 'The live profile an identifier belongs to; NULL when unknown';

CREATE FUNCTION cdp.profile(profile_id bigint) RETURNS jsonb
  LANGUAGE sql STABLE STRICT
  SET search_path = pg_catalog, pg_temp
AS $$
  SELECT jsonb_build_object(
           'profile_id', p.profile_id,
           'requested_id', profile.profile_id,
           'created_at', p.created_at,
           'updated_at', p.updated_at,
           'traits', p.traits,
           'identifiers', coalesce((
              SELECT jsonb_agg(jsonb_build_object('identifier', i.identifier::text, 'source', i.source,
                                                  'first_seen', i.first_seen, 'last_seen', i.last_seen)
                               ORDER BY i.identifier)
                FROM cdp.identity_data i WHERE i.profile_id = p.profile_id), '[]'),
           'merges', coalesce((
              SELECT jsonb_agg(jsonb_build_object('merged_profile_id', m.merged_profile_id, 'into', m.profile_id,
                                                  'merged_at', m.merged_at, 'cause', m.cause)
                               ORDER BY m.merged_at, m.merged_profile_id)
                FROM cdp.merges m
                JOIN cdp.profile_data t ON t.profile_id = m.merged_profile_id
               WHERE t.merged_into = p.profile_id), '[]'),
           'events', (SELECT count(*) FROM cdp.event_data e WHERE e.profile_id = p.profile_id))
    FROM cdp.profile_data p
   WHERE p.profile_id = cdp.resolve(profile.profile_id)
$$;
COMMENT ON FUNCTION cdp.profile(bigint) IS
  'A profile as JSON: identifiers with source and first/last seen, traits, merge history, event count; a merged id shows its survivor';

-- Rebuilding.
CREATE FUNCTION cdp.restitch() RETURNS jsonb
  LANGUAGE c VOLATILE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS 'MODULE_PATHNAME', 'cdp_restitch';
COMMENT ON FUNCTION cdp.restitch() IS
  'Rebuild the whole identity graph by replaying every event in event-id order under the current cdp.identity_rules; reproduces incremental stitching exactly, or applies changed rules. Blocks ingestion while it runs. Reports counts and duration.';

CREATE FUNCTION cdp.forget_identifier(identifier cdp.identifier) RETURNS jsonb
  LANGUAGE c VOLATILE STRICT SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS 'MODULE_PATHNAME', 'cdp_forget_identifier';
COMMENT ON FUNCTION cdp.forget_identifier(cdp.identifier) IS
  'Remove an identifier and every link through it; a profile whose remaining identifiers are no longer connected splits (the part with the oldest event keeps the id) and events follow the identifiers they carry. Events that carried only this identifier are removed.';
