-- cdp 0.1.0 -> 0.2.0
--
-- Every SQL change since 0.1.0, in the order it was made.  Each change is also
-- in src/sql/ (fresh installs); t/009_upgrade.pl checks that both agree.

\echo Use "ALTER EXTENSION cdp UPDATE TO '0.2.0'" to load this file. \quit

-- ---- ingest: faster ingestion (bench/ingest, issue #3) ----
-- The journal's arrays are stored uncompressed (compression cost more CPU
-- than the bytes it saved).
ALTER TABLE cdp.journal ALTER COLUMN profile_ids SET STORAGE EXTERNAL,
  ALTER COLUMN event_ids SET STORAGE EXTERNAL, ALTER COLUMN occurred_ats SET STORAGE EXTERNAL;
