-- Base: the schema and what every capability relies on.

-- Roles are cluster-wide: created when missing, kept by DROP EXTENSION.
-- What each may do is in 90_grants.sql and doc/security.md.
DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['cdp_admin', 'cdp_writer', 'cdp_analyst', 'cdp_pii_reader'] LOOP
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I NOLOGIN', r);
    END IF;
  END LOOP;
END $$;

COMMENT ON SCHEMA cdp IS
  'cdp: Customer Data Platform — identity stitching, consent-aware views, incremental audiences and activation queues';

CREATE FUNCTION cdp.status() RETURNS jsonb
  LANGUAGE c STABLE STRICT PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  AS 'MODULE_PATHNAME', 'cdp_status';
COMMENT ON FUNCTION cdp.status() IS
  'Version of the loaded cdp library, its shared state, its background worker (pid, database, last pass, messages processed, last error; empty "workers" when it is not running) and its dispatcher (pid, requests, messages delivered, failed requests, requests in flight, last error; "dispatcher" null when it is not running); requires cdp in shared_preload_libraries (SQLSTATE 55000 otherwise)';
