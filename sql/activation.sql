-- Activation: destinations, the outbox written by the activation stage, the
-- pull API and the dispatcher's SQL side.  Delivery over HTTP (and the
-- dispatcher process) is tested in t/006_activation.pl; here no dispatcher
-- serves this database (it runs in cdp.database), so webhook messages stay
-- where the SQL puts them.
SET search_path = public, cdp;
\set SHOW_CONTEXT never
TRUNCATE cdp.journal, cdp.identity_data, cdp.profile_data, cdp.trait_data, cdp.event_data, cdp.merges,
         cdp.identity_conflicts, cdp.message_ids, cdp.consent_state, cdp.erasures, cdp.suppressed_identifiers,
         cdp.audience_change_data, cdp.audience_member_data, cdp.audience_data CASCADE;
SET cdp.erasure_in_progress = on;   -- the ledger is append-only otherwise
DELETE FROM cdp.consent_data;
RESET cdp.erasure_in_progress;
ALTER SEQUENCE cdp.consent_data_id_seq RESTART;
SELECT setval('cdp.event_id_seq', 1, false);

-- Ada (1), Bob (2), Cy (3); Ada and Bob consent to email marketing and
-- advertising, Cy to nothing.
SELECT cdp.identify('{user_id:ada,email:ada@example.com,phone:030 1234567}', '{"first_name": "Ada", "city": "Berlin", "tier": "gold"}');
SELECT cdp.identify('{user_id:bob,email:bob@example.com}', '{"first_name": "Bob", "city": "Hamburg"}');
SELECT cdp.identify('{user_id:cy}', '{"first_name": "Cy"}');
SELECT cdp.record_consent('user_id:ada', 'email_marketing', true);
SELECT cdp.record_consent('user_id:bob', 'email_marketing', true);
SELECT cdp.record_consent('user_id:ada', 'advertising', true);
SELECT cdp.record_consent('user_id:bob', 'advertising', true);

-- Audiences whose membership the test sets by hand (their expression keeps
-- whoever is a member: an audience pass would change nothing).
INSERT INTO cdp.audience_data (audience_id, name, rule, purpose, expression, needs_full)
SELECT id, name, 'set by the test', purpose,
       format('EXISTS (SELECT FROM cdp.audience_member_data m_ WHERE m_.profile_id = t.profile_id AND m_.audience_id = %s)', id), false
  FROM (VALUES (1, 'vip', 'email_marketing'), (2, 'everyone', NULL)) v(id, name, purpose);
INSERT INTO cdp.audience_member_data VALUES (1, 1, '2026-11-01'), (1, 2, '2026-11-01'), (2, 2, '2026-11-01'), (3, 2, '2026-11-01');

-- 1. Creating destinations: what is refused, and why.
\set VERBOSITY default
SELECT cdp.create_destination('bad name!', 'https://203.0.113.10/hook');
SELECT cdp.create_destination('crm', 'ftp://203.0.113.10/hook');
SELECT cdp.create_destination('crm', 'file:///etc/passwd');
SELECT cdp.create_destination('crm', 'not a url');
SELECT cdp.create_destination('crm', 'https://user:pw@203.0.113.10/hook');
SELECT cdp.create_destination('crm', NULL);
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', options => '[]');
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', options => '{"batchsize": 10}');
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', options => '{"batch_size": 0}');
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', options => '{"batch_size": "10"}');
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', options => '{"max_attempts": 1.5}');
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', options => '{"rate_limit": 0}');
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', options => '{"timeout_ms": 50}');
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', options => '{"headers": ["x"]}');
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', options => '{"headers": {"webhook-id": "x"}}');
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', options => '{"headers": {"X-Key": "a\nb"}}');
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', options => '{"identifiers": "email"}');
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', options => '{"hash_identifiers": "yes"}');
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', options => '{"kind": "kafka"}');
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', purpose => 'spam');
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', 'short');
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', 'whsec_not*base64!');
SELECT cdp.create_destination('feed', 'https://203.0.113.10/hook', options => '{"kind": "pull"}');
SELECT cdp.create_destination('feed', NULL, options => '{"kind": "pull", "rate_limit": 5}');

-- Loopback and private networks are refused unless a superuser allows them.
SELECT cdp.create_destination('crm', 'http://127.0.0.1:8080/hook');
SELECT cdp.create_destination('crm', 'http://10.1.2.3/hook');
SELECT cdp.create_destination('crm', 'http://[::1]:8080/hook');
SELECT cdp.create_destination('crm', 'http://[::ffff:192.168.1.1]/hook');
SELECT cdp.create_destination('crm', 'http://169.254.169.254/latest/meta-data');
SELECT cdp.create_destination('crm', 'http://localhost:8080/hook');
\set VERBOSITY terse
SELECT cdp.create_destination('crm', 'https://no-such-host.invalid/hook');
\set VERBOSITY default

-- Accepted: a public webhook with every option, a pull feed, a local test receiver.
SELECT cdp.create_destination('crm', 'https://203.0.113.10/hook', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'email_marketing',
         '{"batch_size": 2, "rate_limit": 0.5, "headers": {"Authorization": "Bearer s3cr3t"}, "traits": ["first_name", "tier"],
           "identifiers": ["email", "user_id"]}') AS crm;
SELECT cdp.create_destination('ads', 'https://203.0.113.11/audiences', NULL, 'advertising',
         '{"hash_identifiers": true, "identifiers": ["email", "phone"], "min_audience_size": 4}') AS ads;
SELECT cdp.create_destination('feed', NULL, options => '{"kind": "pull", "max_attempts": 2}') AS feed;
SELECT cdp.create_destination('crm', 'https://203.0.113.12/');
SET cdp.allow_private_destinations = on;
SELECT cdp.create_destination('local', 'http://127.0.0.1:9/hook', options => '{"max_attempts": 2}') AS local;
RESET cdp.allow_private_destinations;
SELECT name, kind, url, purpose, options, secret IS NOT NULL AS has_secret, paused, private_allowed
  FROM cdp.destinations ORDER BY destination_id;

-- Changing one: options merge, null returns to the default, the kind stays.
SELECT cdp.alter_destination('crm', options => '{"batch_size": 3, "rate_limit": null}');
SELECT cdp.alter_destination('crm', options => '{"kind": "pull"}');
SELECT cdp.alter_destination('feed', url => 'https://203.0.113.10/');
SELECT cdp.alter_destination('nope', options => '{}');
SELECT options->'batch_size' AS batch_size, options->'rate_limit' AS rate_limit, options->'traits' AS traits
  FROM cdp.destinations WHERE name = 'crm';

-- Only superusers may allow private destinations; secrets and header values
-- only for cdp_admin.
CREATE ROLE cdp_test_act_analyst IN ROLE cdp_analyst;
CREATE ROLE cdp_test_act_writer IN ROLE cdp_writer;
CREATE ROLE cdp_test_act_admin IN ROLE cdp_admin;
SET ROLE cdp_test_act_admin;
SET cdp.allow_private_destinations = on;
SELECT name, secret, options->'headers' AS headers FROM cdp.destinations WHERE name = 'crm';
SELECT count(*) AS secrets FROM cdp.destination_secrets;
SET ROLE cdp_test_act_analyst;
SELECT name, secret, options->'headers' AS headers FROM cdp.destinations WHERE name = 'crm';
SELECT * FROM cdp.destination_secrets;
SELECT count(*) FROM cdp.outbox;
SELECT cdp.create_destination('x', 'https://203.0.113.10/');
SET ROLE cdp_test_act_writer;
SELECT name FROM cdp.destinations;
SELECT * FROM cdp.read('feed');
RESET ROLE;

-- 2. Activating an audience sends its current members: only those with
-- consent for the destination's purpose (else the audience's).
SELECT cdp.activate('vip', 'nope');
SELECT cdp.activate('nope', 'crm');
SELECT cdp.pause_destination('crm');
SELECT cdp.pause_destination('ads');
SELECT cdp.activate('vip', 'crm') AS crm_vip, cdp.activate('everyone', 'crm') AS crm_everyone,
       cdp.activate('everyone', 'ads') AS ads_everyone, cdp.activate('everyone', 'feed') AS feed_everyone;
SELECT cdp.activate('vip', 'crm');
SELECT audience, destination FROM cdp.activations ORDER BY 1, 2;
SELECT message_id, destination, profile_id, type, status, payload - 'occurred_at' AS payload
  FROM cdp.outbox ORDER BY message_id;

-- 3. The activation stage (called by the audience pass): changes become
-- messages for every destination the audience is active on.  Cy enters vip
-- (no consent for crm's purpose: nothing for crm), Bob leaves everyone
-- (an exit only where his entry went), Ada enters everyone; change 104 is
-- not part of this pass.
INSERT INTO cdp.audience_change_data (profile_id, change_id, audience_id, change, changed_at) VALUES
  (3, 101, 1, 'entered', '2026-11-22 10:00+00'),
  (2, 102, 2, 'exited', '2026-11-22 10:01+00'),
  (1, 103, 2, 'entered', '2026-11-22 10:02+00'),
  (1, 104, 1, 'exited', '2026-11-22 10:03+00');
SELECT cdp._activation_stage('{101,102,103}', '{}', '{}');
SELECT message_id, destination, profile_id, type, status, payload - 'occurred_at' AS payload
  FROM cdp.outbox WHERE message_id > 8 ORDER BY message_id;
SELECT cdp._activation_stage(NULL, NULL, NULL);

-- 4. Pull: one message per profile at a time, oldest first; leases.
SELECT message_id, profile_id, type, status, attempts FROM cdp.read('feed', 10);
SELECT message_id, profile_id, type FROM cdp.read('feed', 10);      -- leased: nothing now
SELECT cdp.ack(ARRAY[(SELECT min(message_id) FROM cdp.outbox WHERE destination = 'feed' AND profile_id = 2)]) AS acked;
SELECT message_id, profile_id, type, status, attempts FROM cdp.read('feed', 10);   -- Bob's exit, after his entry
SELECT cdp.nack(ARRAY(SELECT message_id FROM cdp.outbox WHERE destination = 'feed' AND status = 'in_flight' AND profile_id = 3), '1 hour') AS later;
SELECT cdp.ack(ARRAY(SELECT message_id FROM cdp.outbox WHERE destination = 'feed' AND status = 'in_flight')) AS acked,
       cdp.ack(ARRAY(SELECT message_id FROM cdp.outbox WHERE destination = 'feed' AND status = 'delivered')) AS again;
-- Visibility: unacknowledged, a message comes back; after max_attempts (2) reads it is dead.
SELECT cdp.nack(ARRAY(SELECT message_id FROM cdp.outbox WHERE destination = 'feed' AND profile_id = 3)) AS now_again;
SELECT message_id, profile_id, attempts FROM cdp.read('feed', 10, '10 milliseconds');
SELECT pg_sleep(0.05);
SELECT message_id, profile_id, attempts FROM cdp.read('feed', 10, '10 milliseconds');
SELECT pg_sleep(0.05);
SELECT count(*) AS read_after_max FROM cdp.read('feed', 10);
SELECT message_id, profile_id, type, status, attempts, last_error FROM cdp.outbox WHERE destination = 'feed' ORDER BY message_id;
SELECT cdp.retry_dead('feed') AS retried;
SELECT message_id, status, attempts FROM cdp.read('feed');
SELECT * FROM cdp.read('crm');
SELECT * FROM cdp.read('feed', 0);
SELECT * FROM cdp.read('feed', 1, '0');
SELECT cdp.nack('{1}', '-1 second');

-- 5. Consent at dispatch: Bob withdraws before his pending entry to crm is
-- leased; the lease cancels it instead of sending it.
SELECT cdp.resume_destination('crm');
SELECT cdp.record_consent('user_id:bob', 'email_marketing', false);
SELECT webhook_id, message_ids, body::jsonb->'messages'->0->'traits' AS first_traits
  FROM cdp._dispatch_lease((SELECT destination_id FROM cdp.destination_data WHERE name = 'crm'), 10);
SELECT message_id, profile_id, type, status, attempts, last_error FROM cdp.outbox WHERE destination = 'crm' ORDER BY message_id;

-- How the dispatcher records answers: 5xx retries with backoff, 2xx
-- delivers, other 4xx is dead with the response kept, 410 pauses.
SELECT cdp._dispatch_result(ARRAY(SELECT message_id FROM cdp.outbox WHERE destination = 'crm' AND status = 'in_flight'),
                            503, NULL, 0, 'try later') AS outcome;
SELECT message_id, status, attempts, last_status, last_error, next_attempt_at > now() AS backing_off
  FROM cdp.outbox WHERE destination = 'crm' ORDER BY message_id;
UPDATE cdp.outbox_data SET next_attempt_at = now() WHERE status = 'pending';
SELECT webhook_id, message_ids FROM cdp._dispatch_lease((SELECT destination_id FROM cdp.destination_data WHERE name = 'crm'), 10);
SELECT cdp._dispatch_result(ARRAY(SELECT message_id FROM cdp.outbox WHERE destination = 'crm' AND status = 'in_flight'),
                            200, NULL, 0, NULL) AS outcome;
SELECT webhook_id, message_ids FROM cdp._dispatch_lease((SELECT destination_id FROM cdp.destination_data WHERE name = 'crm'), 10);
SELECT cdp._dispatch_result(ARRAY(SELECT message_id FROM cdp.outbox WHERE destination = 'crm' AND status = 'in_flight'),
                            422, NULL, 0, '{"error": "unknown field"}') AS outcome;
SELECT message_id, profile_id, type, status, attempts, last_status, last_error FROM cdp.outbox WHERE destination = 'crm' ORDER BY message_id;
SELECT cdp.retry_dead('crm');
SELECT webhook_id, message_ids FROM cdp._dispatch_lease((SELECT destination_id FROM cdp.destination_data WHERE name = 'crm'), 10);
SELECT cdp._dispatch_result(ARRAY(SELECT message_id FROM cdp.outbox WHERE destination = 'crm' AND status = 'in_flight'),
                            410, NULL, 0, NULL) AS outcome;
SELECT name, paused, paused_reason LIKE 'the receiver answered 410 Gone%' AS gone FROM cdp.destinations WHERE name = 'crm';
-- Retries run out: dead after max_attempts (2 for local), the last error kept.
INSERT INTO cdp.outbox_data (profile_id, destination_id, type, payload)
SELECT 1, destination_id, 'audience.exited', '{"type": "audience.exited"}' FROM cdp.destination_data WHERE name = 'local';
SELECT cdp._dispatch_result(message_ids, 0, 'Could not connect to server', 0, NULL)
  FROM cdp._dispatch_lease((SELECT destination_id FROM cdp.destination_data WHERE name = 'local'), 1);
UPDATE cdp.outbox_data SET next_attempt_at = now() WHERE status = 'pending';
SELECT cdp._dispatch_result(message_ids, 429, NULL, 120000, NULL)
  FROM cdp._dispatch_lease((SELECT destination_id FROM cdp.destination_data WHERE name = 'local'), 1);
SELECT status, attempts, last_status, last_error FROM cdp.outbox WHERE destination = 'local';
-- Retry-After is honoured when longer than the backoff.
SELECT cdp.retry_dead('local');
SELECT cdp._dispatch_result(message_ids, 429, NULL, 120000, NULL)
  FROM cdp._dispatch_lease((SELECT destination_id FROM cdp.destination_data WHERE name = 'local'), 1);
SELECT status, next_attempt_at - now() > interval '110 seconds' AS waits_for_retry_after FROM cdp.outbox WHERE destination = 'local';

-- 6. min_audience_size: ads holds "everyone" (3 members) until it has 4.
SELECT cdp.resume_destination('ads');
SELECT count(*) AS leased FROM cdp._dispatch_lease((SELECT destination_id FROM cdp.destination_data WHERE name = 'ads'), 10);
INSERT INTO cdp.audience_member_data VALUES (4, 2, now());
SELECT message_ids FROM cdp._dispatch_lease((SELECT destination_id FROM cdp.destination_data WHERE name = 'ads'), 10);

-- 7. Consent withdrawn (the pass reports whose decisions changed): where a
-- destination holds data for a purpose the person no longer consents to,
-- it is told (identifiers only); pending entries are cancelled.  Bob's
-- entry to feed has been delivered; feed has no purpose of its own and
-- "everyone" none either, so nothing goes there.  crm (email_marketing)
-- got Bob's entry: it is told.
SELECT cdp._activation_stage('{}', '{2}', '{}');
UPDATE cdp.outbox_data o SET status = 'delivered', delivered_at = now(), lease_until = NULL
  FROM cdp.destination_data d WHERE d.destination_id = o.destination_id AND d.name = 'crm' AND o.profile_id = 2 AND o.type = 'audience.entered';
SELECT cdp._activation_stage('{}', '{2}', '{}');
SELECT cdp._activation_stage('{}', '{2}', '{}');   -- told once
SELECT message_id, destination, profile_id, type, status, payload - 'occurred_at' AS payload
  FROM cdp.outbox WHERE type = 'consent.withdrawn';

-- 8. Erasure: Ada's pending messages are cancelled, every destination that
-- received data about her gets profile.erased with the identifiers it was
-- sent, and no message keeps her identifiers or traits.
UPDATE cdp.outbox_data o SET status = 'delivered', delivered_at = now(), lease_until = NULL
  FROM cdp.destination_data d WHERE d.destination_id = o.destination_id AND d.name = 'ads' AND o.profile_id = 1;
SELECT cdp.erase_subject('user_id:ada', 'Art. 17 request') - 'erasure_id';
SELECT cdp._activation_stage('{}', '{}', '{1}');
SELECT message_id, destination, type, status, payload - 'occurred_at' AS payload
  FROM cdp.outbox WHERE profile_id = 1 ORDER BY message_id;
SELECT count(*) AS messages_mentioning_ada FROM cdp.outbox_data
 WHERE payload::text ~* 'ada' AND NOT (type = 'profile.erased' AND status = 'pending');

-- 9. Operations.
SELECT destination, kind, paused, pending, in_flight, delivered_last_hour, dead, cancelled,
       oldest_pending_age IS NOT NULL AS has_pending, latency_p50 IS NOT NULL AS has_latency
  FROM cdp.destination_stats ORDER BY destination;
-- An activated audience cannot be dropped (the destination would never hear of it again).
SELECT cdp.drop_audience('everyone');
SELECT cdp.deactivate('everyone', 'ads') AS cancelled;
SELECT cdp.deactivate('everyone', 'ads');
SELECT cdp.drop_destination('ads');
SELECT cdp.drop_destination('ads', force => true);
SELECT cdp.drop_destination('ads');
SELECT name FROM cdp.destinations ORDER BY 1;

-- Signatures follow the Standard Webhooks test vector.
SELECT cdp.webhook_signature('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_p5jXN8AQM9LWM0D4loKWxJek',
                             1614265330, '{"test": 2432232314}');
SELECT cdp.webhook_signature('whsec_???', 'msg_1', 1, '{}');

SET ROLE cdp_test_act_analyst;
SELECT destination, pending FROM cdp.destination_stats ORDER BY 1;
RESET ROLE;
DROP ROLE cdp_test_act_analyst;
DROP ROLE cdp_test_act_writer;
DROP ROLE cdp_test_act_admin;

-- Leave nothing behind for the tests that follow.
TRUNCATE cdp.outbox_data, cdp.activation_data, cdp.destination_secrets, cdp.destination_data,
         cdp.audience_change_data, cdp.audience_member_data, cdp.audience_data,
         cdp.identity_data, cdp.profile_data, cdp.trait_data, cdp.event_data, cdp.merges,
         cdp.identity_conflicts, cdp.message_ids, cdp.consent_state, cdp.erasures, cdp.suppressed_identifiers;
SET cdp.erasure_in_progress = on;   -- the ledger is append-only otherwise
DELETE FROM cdp.consent_data;
RESET cdp.erasure_in_progress;
ALTER SEQUENCE cdp.consent_data_id_seq RESTART;
ALTER SEQUENCE cdp.erasures_erasure_id_seq RESTART;
