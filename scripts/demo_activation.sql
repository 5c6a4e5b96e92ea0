-- The activation part of the demo (scripts/demo): run after demo.sql, with
-- both background workers serving this database and the demo receiver
-- (scripts/demo_receiver.py) listening at :'hook_url', logging to :'receiver_log'.
\set ON_ERROR_STOP 1
\pset footer off
SET client_min_messages = warning;

-- Wait (up to 20 s) until the workers have nothing left to do for a destination.
CREATE FUNCTION pg_temp.settle(dest text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1 .. 200 LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM cdp.journal)
          AND NOT EXISTS (SELECT FROM cdp.outbox o JOIN cdp.destinations d ON d.name = o.destination
                           WHERE o.destination = dest AND o.status IN ('pending', 'in_flight') AND NOT d.paused);
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
-- What the receiver logged, one row per request.
SELECT set_config('demo.receiver_log', :'receiver_log', false) \gset
CREATE FUNCTION pg_temp.received() RETURNS TABLE (at timestamptz, webhook_id text, verified boolean, messages jsonb)
  LANGUAGE sql AS $$
  SELECT to_timestamp((l->>'at')::float8), l->>'webhook_id', (l->>'verified')::boolean, l->'messages'
    FROM (SELECT line::jsonb AS l FROM regexp_split_to_table(pg_read_file(current_setting('demo.receiver_log')), E'\n') line
           WHERE line <> '') s $$;

\echo
\echo '================================================================'
\echo ' cdp demo — activation: audiences delivered to the tools that use them'
\echo '================================================================'
\echo

-- The newsletter tool takes signed webhooks; the ad platform pulls a feed.
SET cdp.allow_private_destinations = on;   -- the demo receiver listens on 127.0.0.1
\o /dev/null
SELECT cdp.create_destination('newsletter_tool', :'hook_url', :'hook_secret', 'email_marketing',
         '{"batch_size": 50, "identifiers": ["email"], "hash_identifiers": true, "traits": ["first_name", "country"]}');
SELECT cdp.create_destination('ad_platform', NULL, NULL, 'advertising',
         '{"kind": "pull", "identifiers": ["email", "phone"], "hash_identifiers": true, "min_audience_size": 5}');
\o
RESET cdp.allow_private_destinations;
SET ROLE demo_bi;                          -- what an analyst sees: no secrets
SELECT name AS "destination", kind AS "kind", url AS "url", purpose AS "purpose", secret AS "secret (as analysts see it)"
  FROM cdp.destinations ORDER BY name;
RESET ROLE;

SELECT cdp.activate('high_value_de', 'newsletter_tool') AS "high_value_de: members queued",
       cdp.activate('cart_abandoners', 'newsletter_tool') AS "cart_abandoners: members queued",
       cdp.activate('social_retargeting', 'ad_platform') AS "social_retargeting: members queued";
\o /dev/null
SELECT pg_temp.settle('newsletter_tool');
\o

\echo
\echo 'Deliveries arriving at the newsletter tool (it verifies each Standard Webhooks signature)'
\echo '-----------------------------------------------------------------------------------------'
SELECT at::time(0) AS "received", webhook_id AS "webhook-id", verified AS "signature ok",
       (SELECT string_agg(m->>'type' || ' ' || (m->>'audience'), ', ' ORDER BY m->>'id') FROM jsonb_array_elements(messages) m)
         AS "messages"
  FROM pg_temp.received() ORDER BY at;
\echo 'One message as sent (identifiers hashed, only the configured traits):'
SELECT jsonb_pretty((messages->0) - 'occurred_at') AS "message" FROM pg_temp.received() ORDER BY at LIMIT 1;

\echo
\echo 'The ad platform pulls its feed: cdp.read() leases, cdp.ack() confirms'
\echo '---------------------------------------------------------------------'
SELECT message_id AS "message", type AS "type", payload->>'audience' AS "audience",
       left(payload->'identifiers'->>0, 28) || '…' AS "first identifier (hashed)"
  FROM cdp.read('ad_platform', 3) ORDER BY message_id;
SELECT cdp.ack(ARRAY(SELECT message_id FROM cdp.outbox WHERE destination = 'ad_platform' AND status = 'in_flight'))
         AS "acknowledged";

\echo
\echo 'A withdrawal wins over a message not yet sent'
\echo '---------------------------------------------'
\echo 'The newsletter tool is paused (maintenance); a German customer places three orders and qualifies:'
SELECT cdp.pause_destination('newsletter_tool') \gset
CREATE TEMP TABLE late AS
  SELECT t.profile_id, (SELECT i.identifier FROM cdp.profile_identifiers i WHERE i.profile_id = t.profile_id ORDER BY 1 LIMIT 1) AS id
    FROM cdp.profile_traits t
   WHERE t.traits->>'country' = 'DE' AND cdp.has_consent(t.profile_id, 'email_marketing')
     AND NOT EXISTS (SELECT FROM cdp.audience_members m WHERE m.profile_id = t.profile_id)
   ORDER BY t.profile_id LIMIT 1;
SELECT count(cdp.track(ARRAY[l.id], 'Order Completed', jsonb_build_object('order_id', 'late-' || n, 'revenue', 150), now()))
         AS "orders"
  FROM late l, generate_series(1, 3) n;
\o /dev/null
SELECT pg_temp.settle('newsletter_tool');
\o
SELECT o.type AS "type", o.payload->>'audience' AS "audience", o.status AS "status"
  FROM cdp.outbox o, late l WHERE o.profile_id = l.profile_id ORDER BY o.message_id;
\echo 'Before the tool is back, the customer unsubscribes:'
SELECT cdp.record_consent(l.id, 'email_marketing', false, 'unsubscribe link') > 0 AS "withdrawal recorded" FROM late l;
\o /dev/null
SELECT pg_temp.settle('newsletter_tool');
SELECT cdp.resume_destination('newsletter_tool');
SELECT pg_temp.settle('newsletter_tool');
\o
SELECT o.type AS "type", o.payload->>'audience' AS "audience", o.status AS "status",
       coalesce(o.last_error, '') AS "note"
  FROM cdp.outbox o, late l WHERE o.profile_id = l.profile_id ORDER BY o.message_id;
SELECT count(*) FILTER (WHERE m->>'type' = 'audience.entered') AS "entries the tool ever saw for this customer",
       string_agg(m->>'type', ', ') FILTER (WHERE m->>'type' <> 'audience.entered') AS "what it was told instead"
  FROM pg_temp.received() r, jsonb_array_elements(r.messages) m, late l
 WHERE (m->>'profile_id')::bigint = l.profile_id;

\echo
\echo 'cdp.destination_stats'
\echo '---------------------'
SELECT destination AS "destination", kind AS "kind", pending AS "pending", in_flight AS "in flight",
       delivered_last_hour AS "delivered (1 h)", dead AS "dead", cancelled AS "cancelled",
       date_trunc('millisecond', latency_p50) AS "latency p50", date_trunc('millisecond', latency_p99) AS "latency p99"
  FROM cdp.destination_stats ORDER BY destination;
