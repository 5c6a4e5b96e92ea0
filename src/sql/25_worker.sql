-- Background worker: wake it when a transaction that filled cdp.inbox commits.
--
-- The worker (cdp in shared_preload_libraries) ingests cdp.inbox every
-- cdp.inbox_naptime; this trigger only shortens the wait.  Nothing depends on
-- it for correctness: without it the rows are picked up at the next naptime.

CREATE FUNCTION cdp._wake_worker() RETURNS trigger
  LANGUAGE c
  SET search_path = pg_catalog, pg_temp
  AS 'MODULE_PATHNAME', 'cdp_wake_worker';
COMMENT ON FUNCTION cdp._wake_worker() IS
  'Internal: statement trigger (argument: the pass, inbox or audience) that wakes the cdp background worker when the inserting transaction commits; a no-op when cdp is not preloaded';

CREATE TRIGGER wake_worker AFTER INSERT ON cdp.inbox
  FOR EACH STATEMENT EXECUTE FUNCTION cdp._wake_worker('inbox');
COMMENT ON TRIGGER wake_worker ON cdp.inbox IS
  'Wake the cdp background worker at commit so that new inbox messages are ingested at once rather than after cdp.inbox_naptime (latency only)';
