-- The change journal: "these profiles changed", appended in the same
-- transaction as the change (DESIGN.md, data flow).  Identity appends new
-- events and identifier changes, consent appends decisions, erasure appends
-- the erased profiles, audience definitions append themselves.  The
-- audience pass (src/audience/, run by the worker or cdp.refresh_audiences())
-- drains it in batches: a row is deleted by the transaction that handled
-- it, so a crash or a failed pass loses nothing, and rows of transactions
-- still in progress are simply not visible yet.
--
-- One row per writing call, not per profile: a bulk ingest of 10,000
-- messages appends one row.  It is a queue, not profile-keyed data, so its
-- key is its own id (on Citus it would be a local table of the coordinator).

CREATE TABLE cdp.journal (
  journal_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind        text NOT NULL CHECK (kind IN ('events', 'identity', 'rebuilt', 'consent', 'erased', 'audience')),
  profile_ids bigint[] NOT NULL,
  event_ids   bigint[],
  occurred_ats timestamptz[],
  recorded_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((kind = 'events') = (event_ids IS NOT NULL)),
  CHECK (event_ids IS NULL OR cardinality(event_ids) = cardinality(profile_ids)),
  CHECK (occurred_ats IS NULL OR cardinality(occurred_ats) = cardinality(event_ids))
);
-- A row's arrays hold a batch's ids and timestamps (tens of kilobytes), which
-- compression was tried on every row and saved next to nothing: stored as they are.
ALTER TABLE cdp.journal ALTER COLUMN profile_ids SET STORAGE EXTERNAL,
  ALTER COLUMN event_ids SET STORAGE EXTERNAL, ALTER COLUMN occurred_ats SET STORAGE EXTERNAL;
COMMENT ON TABLE cdp.journal IS
  'Change journal: profiles whose events, identifiers or consent changed (or that were erased), waiting for the audience pass; each row is deleted by the pass that handled it';
COMMENT ON COLUMN cdp.journal.occurred_ats IS
  'kind events: each event''s occurred_at (the partition key of cdp.event_data), so that the pass reads each event from its one partition';
COMMENT ON COLUMN cdp.journal.kind IS
  'events: new events (event_ids[i] was added to profile_ids[i]); identity: identifiers added or profiles merged (tombstones included); rebuilt: profiles rebuilt from their events (split, restitch); consent: a decision was recorded; erased: profiles erased; audience: an audience definition changed (profile_ids empty)';
