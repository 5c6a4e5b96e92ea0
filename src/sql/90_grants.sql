-- Privileges: nothing for PUBLIC; four roles (created in 00_base.sql).
--   cdp_analyst     reads the consent-aware views
--   cdp_pii_reader  sees personal data in them unmasked
--   cdp_writer      ingests (identify, track, ingest, inbox) and records consent
--   cdp_admin       configures, rebuilds, exercises data-subject rights; sees all
-- Functions that write storage run as the extension owner (SECURITY DEFINER,
-- search_path pinned); callers need only EXECUTE.

REVOKE ALL ON ALL TABLES IN SCHEMA cdp FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA cdp FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA cdp FROM PUBLIC;

GRANT USAGE ON SCHEMA cdp TO cdp_admin, cdp_writer, cdp_analyst, cdp_pii_reader;

-- The types are for everyone who may use the schema.
GRANT EXECUTE ON FUNCTION
  cdp.identifier(text, text), cdp.parse_identifier(text, text), cdp.identifier_kind(cdp.identifier),
  cdp.identifier_value(cdp.identifier), cdp.hashed(cdp.identifier),
  cdp.identifier_cmp(cdp.identifier, cdp.identifier), cdp.identifier_eq(cdp.identifier, cdp.identifier),
  cdp.identifier_ne(cdp.identifier, cdp.identifier), cdp.identifier_lt(cdp.identifier, cdp.identifier),
  cdp.identifier_le(cdp.identifier, cdp.identifier), cdp.identifier_gt(cdp.identifier, cdp.identifier),
  cdp.identifier_ge(cdp.identifier, cdp.identifier), cdp.identifier_hash(cdp.identifier),
  cdp.identifier_hash_extended(cdp.identifier, bigint),
  cdp.tcf_decode(cdp.tcstring), cdp.tcf_purpose_consent(cdp.tcstring, integer),
  cdp.tcf_purpose_legitimate_interest(cdp.tcstring, integer), cdp.tcf_vendor_consent(cdp.tcstring, integer),
  cdp.tcf_vendor_legitimate_interest(cdp.tcstring, integer),
  cdp._reader_sees_all(), cdp._reader_sees_pii(), cdp._reader_purpose(), cdp._reader_slot(), cdp._pii_keys(),
  cdp._mask_identifier(cdp.identifier), cdp._mask_identifiers(cdp.identifier[]), cdp._mask_traits(jsonb, text[])
TO cdp_admin, cdp_writer, cdp_analyst, cdp_pii_reader;

-- Analysts: the consent-aware views and what the purposes are.
GRANT SELECT ON cdp.profiles, cdp.profile_identifiers, cdp.events, cdp.purposes TO cdp_analyst;
GRANT SELECT ON cdp.profile_traits, cdp.audiences, cdp.audience_members, cdp.audience_changes,
  cdp.computed_traits TO cdp_analyst;

-- Writers: ingestion and consent recording.
GRANT EXECUTE ON FUNCTION
  cdp.identify(cdp.identifier[], jsonb, timestamptz, text, text),
  cdp.track(cdp.identifier[], text, jsonb, timestamptz, text, text),
  cdp.ingest(jsonb), cdp.process_inbox(integer),
  cdp.record_consent(cdp.identifier, text, boolean, text, jsonb, timestamptz, timestamptz),
  cdp.record_tcf(cdp.identifier, cdp.tcstring, text, integer)
TO cdp_writer;
GRANT INSERT ON cdp.inbox TO cdp_writer;
GRANT USAGE ON SEQUENCE cdp.inbox_inbox_id_seq TO cdp_writer;

-- Analysts: which destinations exist (signing secrets and header values
-- masked), what is sent where, and how delivery goes.  The outbox itself
-- (identifiers, traits) and the secrets are for cdp_admin only; a pull
-- consumer is granted EXECUTE on cdp.read, cdp.ack and cdp.nack.
GRANT SELECT ON cdp.destinations, cdp.activations, cdp.destination_stats TO cdp_analyst;

-- Admins: everything above, configuration, every table to read.
GRANT cdp_writer, cdp_analyst, cdp_pii_reader TO cdp_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA cdp TO cdp_admin;
GRANT INSERT, UPDATE, DELETE ON cdp.identity_rules, cdp.identifier_mappings, cdp.purposes, cdp.pii_keys,
  cdp.inbox, cdp.inbox_rejects TO cdp_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA cdp TO cdp_admin;
GRANT USAGE ON SEQUENCE cdp.purposes_slot_seq TO cdp_admin;   -- a new purpose's slot
