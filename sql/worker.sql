-- The background worker's settings and the trigger that wakes it.  The
-- worker itself (ingestion, wakeups, restarts) is tested in t/002_worker.pl.
SELECT name, setting, unit, context, vartype, min_val, max_val
  FROM pg_settings
 WHERE name IN ('cdp.database', 'cdp.inbox_naptime', 'cdp.inbox_batch_size')
 ORDER BY name;

-- Server-wide settings: not per session.
SET cdp.inbox_naptime = '5s';
SET cdp.inbox_batch_size = 10;

-- One statement-level trigger on cdp.inbox; a rolled-back insert leaves
-- nothing behind and raises nothing.
SELECT tgname, tgtype, tgenabled, obj_description(oid, 'pg_trigger') IS NOT NULL AS commented
  FROM pg_trigger
 WHERE tgrelid = 'cdp.inbox'::regclass AND NOT tgisinternal;
BEGIN;
INSERT INTO cdp.inbox (payload) VALUES ('{"type":"track","event":"Viewed","userId":"w1"}');
ROLLBACK;
SELECT count(*) AS waiting FROM cdp.inbox;

-- It is a trigger function only.
SELECT cdp._wake_worker();

-- cdp.status() always has a "workers" array (here the worker runs in
-- another database, cdp.database).
SELECT jsonb_typeof(cdp.status()->'workers') AS workers;
