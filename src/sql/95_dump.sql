-- pg_dump: an extension's tables are not dumped unless registered here.
-- Data tables are dumped whole; configuration tables only with the rows a
-- user added (CREATE EXTENSION brings the shipped defaults back; a changed
-- default row must be changed again after a restore, see doc/operations.md).
-- Event partitions are created at run time, are not extension members, and
-- are dumped like any table.

SELECT pg_catalog.pg_extension_config_dump('cdp.profile_data', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.trait_data', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.identity_data', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.message_ids', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.merges', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.identity_conflicts', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.inbox', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.inbox_rejects', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.consent_data', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.consent_state', '');

SELECT pg_catalog.pg_extension_config_dump('cdp.identity_rules',
  $$WHERE kind NOT IN ('*', 'user_id', 'crm_id', 'email', 'phone', 'device_id', 'anonymous_id')$$);
SELECT pg_catalog.pg_extension_config_dump('cdp.identifier_mappings',
  $$WHERE path NOT IN ('{userId}', '{anonymousId}', '{previousId}', '{traits,email}', '{context,traits,email}',
                       '{traits,phone}', '{context,device,advertisingId}', '{context,device,id}')$$);
SELECT pg_catalog.pg_extension_config_dump('cdp.purposes',
  $$WHERE purpose NOT IN ('analytics', 'personalization', 'email_marketing', 'advertising')$$);
SELECT pg_catalog.pg_extension_config_dump('cdp.purposes_slot_seq', '');

SELECT pg_catalog.pg_extension_config_dump('cdp.event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.identity_conflicts_conflict_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.inbox_inbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.consent_data_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.suppressed_identifiers', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.erasures', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.erasures_erasure_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.retention', '');

-- Change journal and audiences.
SELECT pg_catalog.pg_extension_config_dump('cdp.journal', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.journal_journal_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.computed_traits', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.computed_traits_trait_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.computed_trait_values', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.audience_data', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.audience_data_audience_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.audience_member_data', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.audience_change_data', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.audience_change_data_change_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.destination_data', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.destination_secrets', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.activation_data', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.outbox_data', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.destination_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('cdp.outbox_message_id_seq', '');
