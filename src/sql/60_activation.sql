-- Activation (src/activation/, src/worker/dispatcher.c): destinations, the
-- transactional outbox, the pull API and what the dispatcher calls.
--
-- Messages are written by cdp._activation_stage() in the audience pass's
-- own transaction (and by cdp.activate()), so a membership change and its
-- messages commit together or not at all.  Every message ends delivered,
-- dead (after its retries, or refused by the receiver) or cancelled (by
-- consent or erasure), and stays visible in cdp.outbox.  Webhook
-- destinations are served by the dispatcher background worker; pull
-- destinations by cdp.read() / cdp.ack() / cdp.nack().
--
-- Ordering: of the messages for one profile and destination, only the
-- oldest undone one (pending or in flight) may be leased, so they are
-- delivered in order whatever the batching, retries and consumers.

CREATE SEQUENCE cdp.destination_id_seq AS integer;
COMMENT ON SEQUENCE cdp.destination_id_seq IS 'Destination ids';

CREATE TABLE cdp.destination_data (
  destination_id  integer PRIMARY KEY DEFAULT nextval('cdp.destination_id_seq'),
  name            text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
  kind            text NOT NULL CHECK (kind IN ('webhook', 'pull')),
  url             text,
  purpose         text REFERENCES cdp.purposes (purpose),
  options         jsonb NOT NULL,
  private_allowed boolean NOT NULL DEFAULT false,
  paused          boolean NOT NULL DEFAULT false,
  paused_reason   text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  CHECK ((kind = 'webhook') = (url IS NOT NULL))
);
ALTER SEQUENCE cdp.destination_id_seq OWNED BY cdp.destination_data.destination_id;
COMMENT ON TABLE cdp.destination_data IS
  'Where audience changes are delivered: webhook (the dispatcher POSTs them) or pull (cdp.read). Storage: read cdp.destinations; change with cdp.create_destination() and friends.';
COMMENT ON COLUMN cdp.destination_data.options IS 'The options in force, defaults filled in (see cdp.create_destination)';
COMMENT ON COLUMN cdp.destination_data.private_allowed IS
  'The URL was accepted while cdp.allow_private_destinations was on (set by a superuser): the dispatcher may connect to loopback and private addresses for it';

-- Signing secrets apart from everything else: only cdp_admin may read them.
CREATE TABLE cdp.destination_secrets (
  destination_id integer PRIMARY KEY REFERENCES cdp.destination_data ON DELETE CASCADE,
  secret         text NOT NULL
);
COMMENT ON TABLE cdp.destination_secrets IS
  'Webhook signing secrets (Standard Webhooks; whsec_<base64> is decoded before use); readable by cdp_admin only';

CREATE TABLE cdp.activation_data (
  audience_id    integer NOT NULL REFERENCES cdp.audience_data ON DELETE CASCADE,
  destination_id integer NOT NULL REFERENCES cdp.destination_data ON DELETE CASCADE,
  activated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (audience_id, destination_id)
);
CREATE INDEX activation_data_destination ON cdp.activation_data (destination_id);
COMMENT ON TABLE cdp.activation_data IS 'Which audience is sent to which destination (cdp.activate). Storage: read cdp.activations.';

-- Dropping an activated audience would stop its deliveries without telling
-- the destinations: refuse it (a check on a configuration table, before the
-- foreign key's cascade; not on profile data).
CREATE FUNCTION cdp._audience_activated() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  dests text;
BEGIN
  SELECT string_agg(d.name, ', ' ORDER BY d.name) INTO dests
    FROM cdp.activation_data ac JOIN cdp.destination_data d ON d.destination_id = ac.destination_id
   WHERE ac.audience_id = OLD.audience_id;
  IF dests IS NOT NULL THEN
    RAISE EXCEPTION 'cannot drop audience "%" because it is activated', OLD.name
      USING ERRCODE = 'dependent_objects_still_exist', DETAIL = format('Destinations: %s.', dests),
            HINT = 'Deactivate it first with cdp.deactivate(audience, destination).';
  END IF;
  RETURN OLD;
END $$;
COMMENT ON FUNCTION cdp._audience_activated() IS
  'Internal: refuses to drop audiences that are still activated on a destination';
CREATE TRIGGER audience_activated BEFORE DELETE ON cdp.audience_data
  FOR EACH ROW EXECUTE FUNCTION cdp._audience_activated();
COMMENT ON TRIGGER audience_activated ON cdp.audience_data IS
  'Dropping an activated audience is refused: destinations would silently stop hearing of it';

CREATE SEQUENCE cdp.outbox_message_id_seq;
COMMENT ON SEQUENCE cdp.outbox_message_id_seq IS 'Outbox message ids: the order messages were created in, and the id receivers deduplicate by';

CREATE TABLE cdp.outbox_data (
  profile_id      bigint NOT NULL,
  message_id      bigint NOT NULL DEFAULT nextval('cdp.outbox_message_id_seq'),
  destination_id  integer NOT NULL REFERENCES cdp.destination_data ON DELETE CASCADE,
  audience_id     integer,
  type            text NOT NULL CHECK (type IN ('audience.entered', 'audience.exited', 'consent.withdrawn', 'profile.erased')),
  payload         jsonb NOT NULL,
  status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'in_flight', 'delivered', 'dead', 'cancelled')),
  attempts        integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  lease_until     timestamptz,
  batch_key       bigint,
  created_at      timestamptz NOT NULL DEFAULT now(),
  delivered_at    timestamptz,
  last_status     integer,
  last_error      text,
  PRIMARY KEY (profile_id, message_id),
  CHECK ((status = 'in_flight') = (lease_until IS NOT NULL))
);
ALTER SEQUENCE cdp.outbox_message_id_seq OWNED BY cdp.outbox_data.message_id;
-- Unique: message ids come from the sequence, and the planner then knows
-- that a list of ids (cdp.ack(), the dispatcher's outcomes) means as many
-- rows, statistics or not, and probes this index instead of reading the
-- destination's backlog.
CREATE UNIQUE INDEX outbox_data_message ON cdp.outbox_data (message_id);
-- What may be leased next, oldest first (read in id order, so a lease
-- does not sort the whole backlog); the in-order check (the oldest undone
-- message per profile and destination); the next retry due.
CREATE INDEX outbox_data_queue ON cdp.outbox_data (destination_id, message_id)
  WHERE status IN ('pending', 'in_flight');
CREATE INDEX outbox_data_undone ON cdp.outbox_data (destination_id, profile_id, message_id)
  WHERE status IN ('pending', 'in_flight');
CREATE INDEX outbox_data_due ON cdp.outbox_data (destination_id, next_attempt_at)
  WHERE status IN ('pending', 'in_flight');
COMMENT ON TABLE cdp.outbox_data IS
  'The transactional outbox: one row per message and destination, written in the transaction of the change that caused it. Storage: read cdp.outbox.';
COMMENT ON COLUMN cdp.outbox_data.payload IS
  'The message as sent, without its id: type, audience, profile_id, identifiers (kind:value, hashed when configured), traits, occurred_at';
COMMENT ON COLUMN cdp.outbox_data.lease_until IS 'While in flight: when the lease ends and the message may be leased again';
COMMENT ON COLUMN cdp.outbox_data.batch_key IS 'The first message id of the webhook batch this message was first sent in; a retry sends the batch together again';

-- Activation reads the audiences' change log by change id (members per
-- audience, for min_audience_size, use audience_member_data_audience).
CREATE INDEX audience_change_data_change ON cdp.audience_change_data (change_id);

-- Options ---------------------------------------------------------------

CREATE FUNCTION cdp._option_int(options jsonb, key text, deflt integer, lo integer, hi integer) RETURNS integer
  LANGUAGE plpgsql IMMUTABLE
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v jsonb := options -> key;
BEGIN
  IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
    RETURN deflt;
  END IF;
  IF jsonb_typeof(v) <> 'number' OR v::numeric <> trunc(v::numeric) OR v::numeric NOT BETWEEN lo AND hi THEN
    RAISE EXCEPTION 'option "%" must be an integer from % to %', key, lo, hi
      USING ERRCODE = 'invalid_parameter_value', DETAIL = format('Got %s.', v),
            HINT = format('E.g. {"%s": %s}; null or leaving it out means %s.', key, coalesce(deflt, lo), coalesce(deflt::text, 'no limit'));
  END IF;
  RETURN v::integer;
END $$;
COMMENT ON FUNCTION cdp._option_int(jsonb, text, integer, integer, integer) IS
  'Internal: an integer destination option within bounds, its default when absent; 22023 otherwise';

CREATE FUNCTION cdp._option_names(options jsonb, key text, pattern text) RETURNS jsonb
  LANGUAGE plpgsql IMMUTABLE
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v jsonb := options -> key;
BEGIN
  IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
    RETURN NULL;
  END IF;
  IF jsonb_typeof(v) <> 'array'
     OR EXISTS (SELECT 1 FROM jsonb_array_elements(v) e WHERE jsonb_typeof(e) <> 'string' OR NOT (e #>> '{}') ~ pattern) THEN
    RAISE EXCEPTION 'option "%" must be an array of names', key
      USING ERRCODE = 'invalid_parameter_value', DETAIL = format('Got %s.', v),
            HINT = CASE key WHEN 'identifiers' THEN 'Identifier kinds, e.g. {"identifiers": ["email", "phone"]}; leave it out to send every kind.'
                            ELSE 'Trait keys, e.g. {"traits": ["first_name", "city"]}; leave it out to send no traits.' END;
  END IF;
  RETURN (SELECT coalesce(jsonb_agg(DISTINCT e ORDER BY e), '[]') FROM jsonb_array_elements(v) e);
END $$;
COMMENT ON FUNCTION cdp._option_names(jsonb, text, text) IS 'Internal: an option that lists names (identifier kinds, trait keys), sorted and deduplicated';

CREATE FUNCTION cdp._destination_options(kind text, options jsonb) RETURNS jsonb
  LANGUAGE plpgsql IMMUTABLE
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  known constant text[] := ARRAY['kind', 'batch_size', 'max_attempts', 'timeout_ms', 'rate_limit', 'max_in_flight',
                                 'headers', 'identifiers', 'hash_identifiers', 'traits', 'min_audience_size'];
  webhook_only constant text[] := ARRAY['timeout_ms', 'rate_limit', 'max_in_flight', 'headers'];
  reserved constant text[] := ARRAY['content-type', 'content-length', 'host', 'transfer-encoding', 'connection',
                                    'webhook-id', 'webhook-timestamp', 'webhook-signature', 'expect'];
  k text;
  h record;
  rate jsonb;
  hash jsonb;
BEGIN
  IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
    RAISE EXCEPTION 'destination options must be a JSON object'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. ''{"batch_size": 100, "rate_limit": 10}''; ''{}'' for the defaults.';
  END IF;
  FOR k IN SELECT jsonb_object_keys(options) LOOP
    IF k <> ALL (known) THEN
      RAISE EXCEPTION 'unknown destination option "%"', k
        USING ERRCODE = 'invalid_parameter_value', HINT = 'Known options: ' || array_to_string(known, ', ') || '.';
    END IF;
    IF kind = 'pull' AND k = ANY (webhook_only) AND jsonb_typeof(options -> k) <> 'null' THEN
      RAISE EXCEPTION 'option "%" applies to webhook destinations only', k
        USING ERRCODE = 'invalid_parameter_value', HINT = 'A pull destination is read with cdp.read(); its consumer sets its own pace.';
    END IF;
  END LOOP;
  IF options ? 'kind' AND options ->> 'kind' IS DISTINCT FROM kind THEN
    RAISE EXCEPTION 'option "kind" must be "webhook" or "pull"'
      USING ERRCODE = 'invalid_parameter_value', DETAIL = format('Got %s.', options -> 'kind'),
            HINT = 'A destination''s kind cannot be changed: drop it and create it again.';
  END IF;

  rate := options -> 'rate_limit';
  IF rate IS NOT NULL AND jsonb_typeof(rate) <> 'null'
     AND (jsonb_typeof(rate) <> 'number' OR rate::numeric <= 0 OR rate::numeric > 100000) THEN
    RAISE EXCEPTION 'option "rate_limit" must be a number of requests per second above 0 and at most 100000'
      USING ERRCODE = 'invalid_parameter_value', DETAIL = format('Got %s.', rate),
            HINT = 'E.g. {"rate_limit": 10} or {"rate_limit": 0.5}; leave it out for no limit.';
  END IF;
  hash := options -> 'hash_identifiers';
  IF hash IS NOT NULL AND jsonb_typeof(hash) NOT IN ('boolean', 'null') THEN
    RAISE EXCEPTION 'option "hash_identifiers" must be true or false'
      USING ERRCODE = 'invalid_parameter_value', DETAIL = format('Got %s.', hash),
            HINT = 'true sends each identifier as kind:<SHA-256 of the value> (cdp.hashed), as ad platforms expect.';
  END IF;
  IF options ? 'headers' AND jsonb_typeof(options -> 'headers') <> 'null' THEN
    IF jsonb_typeof(options -> 'headers') <> 'object' THEN
      RAISE EXCEPTION 'option "headers" must be a JSON object of header names and string values'
        USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. {"headers": {"Authorization": "Bearer …"}}.';
    END IF;
    FOR h IN SELECT * FROM jsonb_each(options -> 'headers') LOOP
      IF NOT h.key ~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]{1,100}$' OR jsonb_typeof(h.value) <> 'string'
         OR (h.value #>> '{}') ~ '[\r\n\x00]' THEN
        RAISE EXCEPTION 'header "%" is not a valid HTTP header', h.key
          USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Header names are HTTP tokens; values are strings without line breaks.';
      END IF;
      IF lower(h.key) = ANY (reserved) THEN
        RAISE EXCEPTION 'header "%" is set by cdp', h.key
          USING ERRCODE = 'invalid_parameter_value',
                HINT = 'cdp sets ' || array_to_string(reserved, ', ') || ' itself.';
      END IF;
    END LOOP;
  END IF;

  RETURN jsonb_strip_nulls(jsonb_build_object(
    'batch_size', cdp._option_int(options, 'batch_size', 100, 1, 10000),
    'max_attempts', cdp._option_int(options, 'max_attempts', 12, 1, 100),
    'timeout_ms', CASE WHEN kind = 'webhook' THEN cdp._option_int(options, 'timeout_ms', 10000, 100, 300000) END,
    'rate_limit', CASE WHEN jsonb_typeof(rate) = 'number' THEN rate END,
    'max_in_flight', CASE WHEN kind = 'webhook' THEN cdp._option_int(options, 'max_in_flight', 4, 1, 100) END,
    'headers', CASE WHEN kind = 'webhook' THEN coalesce(nullif(options -> 'headers', 'null'), '{}') END,
    'identifiers', cdp._option_names(options, 'identifiers', '^[a-z][a-z0-9_]{0,31}$'),
    'hash_identifiers', coalesce((options ->> 'hash_identifiers')::boolean, false),
    'traits', coalesce(cdp._option_names(options, 'traits', '^.{1,200}$'), '[]'),
    'min_audience_size', cdp._option_int(options, 'min_audience_size', 0, 0, 100000000)));
END $$;
COMMENT ON FUNCTION cdp._destination_options(text, jsonb) IS
  'Internal: validate destination options (22023 with a hint naming what is allowed) and return them with defaults filled in';

-- The URL check is in C (src/activation/url.c): scheme, no credentials,
-- and the addresses the host resolves to.
CREATE FUNCTION cdp._check_destination_url(url text) RETURNS boolean
  LANGUAGE c VOLATILE STRICT
  AS 'MODULE_PATHNAME', 'cdp_check_destination_url';
COMMENT ON FUNCTION cdp._check_destination_url(text) IS
  'Internal: raise 22023 unless url is an http or https URL whose host resolves to public addresses only (or cdp.allow_private_destinations is on); returns whether it reaches a loopback or private address';

CREATE FUNCTION cdp._dispatch_wake() RETURNS void
  LANGUAGE c VOLATILE
  AS 'MODULE_PATHNAME', 'cdp_dispatch_wake';
COMMENT ON FUNCTION cdp._dispatch_wake() IS
  'Internal: wake the dispatcher when this transaction commits (latency only; it also looks every cdp.dispatch_naptime)';

CREATE FUNCTION cdp.webhook_signature(secret text, webhook_id text, webhook_timestamp bigint, body text) RETURNS text
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
  AS 'MODULE_PATHNAME', 'cdp_webhook_signature';
COMMENT ON FUNCTION cdp.webhook_signature(text, text, bigint, text) IS
  'The webhook-signature header cdp sends (Standard Webhooks): v1,<base64 HMAC-SHA256 of "id.timestamp.body">; a whsec_<base64> secret is decoded first. For checking a receiver.';

CREATE FUNCTION cdp._webhook_secret_check(secret text) RETURNS void
  LANGUAGE c IMMUTABLE STRICT
  AS 'MODULE_PATHNAME', 'cdp_webhook_secret_check';
COMMENT ON FUNCTION cdp._webhook_secret_check(text) IS 'Internal: 22023 unless a whsec_ secret holds valid base64';

CREATE FUNCTION cdp._destination(name text) RETURNS cdp.destination_data
  LANGUAGE plpgsql STABLE
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d cdp.destination_data;
BEGIN
  SELECT * INTO d FROM cdp.destination_data x WHERE x.name = _destination.name;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'destination "%" does not exist', name
      USING ERRCODE = 'undefined_object',
            HINT = coalesce('Known destinations: ' || (SELECT string_agg(x.name, ', ' ORDER BY x.name) FROM cdp.destination_data x) || '.',
                            'Create one with cdp.create_destination().');
  END IF;
  RETURN d;
END $$;
COMMENT ON FUNCTION cdp._destination(text) IS 'Internal: the destination of this name; 42704 naming the known ones otherwise';

-- Destinations ----------------------------------------------------------

CREATE FUNCTION cdp.create_destination(name text, url text, secret text DEFAULT NULL, purpose text DEFAULT NULL,
                                       options jsonb DEFAULT '{}') RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  kind text := coalesce(options ->> 'kind', 'webhook');
  opts jsonb;
  private boolean := false;
  id integer;
BEGIN
  IF name IS NULL OR NOT name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' THEN
    RAISE EXCEPTION 'invalid destination name "%"', name
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Up to 63 letters, digits, _, . and -, starting with a letter or digit.';
  END IF;
  IF EXISTS (SELECT 1 FROM cdp.destination_data d WHERE d.name = create_destination.name) THEN
    RAISE EXCEPTION 'destination "%" already exists', name
      USING ERRCODE = 'duplicate_object', HINT = 'Change it with cdp.alter_destination(), or drop it first.';
  END IF;
  IF kind NOT IN ('webhook', 'pull') THEN
    RAISE EXCEPTION 'option "kind" must be "webhook" or "pull"'
      USING ERRCODE = 'invalid_parameter_value', DETAIL = format('Got %s.', options -> 'kind'),
            HINT = 'webhook (the default): the dispatcher POSTs messages to url; pull: a consumer reads them with cdp.read().';
  END IF;
  IF purpose IS NOT NULL THEN
    PERFORM cdp._check_purpose(purpose);
  END IF;
  opts := cdp._destination_options(kind, options);
  IF kind = 'webhook' THEN
    IF url IS NULL THEN
      RAISE EXCEPTION 'a webhook destination needs a url'
        USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. ''https://hooks.example.com/cdp''; or options {"kind": "pull"} to read messages with cdp.read().';
    END IF;
    private := cdp._check_destination_url(url);
  ELSE
    IF url IS NOT NULL OR secret IS NOT NULL THEN
      RAISE EXCEPTION 'a pull destination has no url and no secret'
        USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass NULL for both: consumers read with cdp.read(), authenticated by their database role.';
    END IF;
  END IF;
  IF secret IS NOT NULL AND length(secret) < 16 THEN
    RAISE EXCEPTION 'the signing secret is too short'
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use at least 16 characters, e.g. whsec_ followed by the base64 of 32 random bytes: ''whsec_'' || encode(gen_random_bytes(32), ''base64'').';
  END IF;

  INSERT INTO cdp.destination_data (name, kind, url, purpose, options, private_allowed)
  VALUES (name, kind, url, purpose, opts, private)
  RETURNING destination_id INTO id;
  IF secret IS NOT NULL THEN
    PERFORM cdp._webhook_secret_check(secret);
    INSERT INTO cdp.destination_secrets VALUES (id, secret);
  END IF;
  RETURN id;
END $$;
COMMENT ON FUNCTION cdp.create_destination(text, text, text, text, jsonb) IS
  'Create a destination: a webhook URL (http/https; private addresses only with cdp.allow_private_destinations) signed with secret, or options {"kind": "pull"} with url NULL. Options: batch_size, max_attempts, timeout_ms, rate_limit, max_in_flight, headers, identifiers, hash_identifiers, traits, min_audience_size. Returns its id.';

CREATE FUNCTION cdp.alter_destination(name text, url text DEFAULT NULL, secret text DEFAULT NULL,
                                      purpose text DEFAULT NULL, options jsonb DEFAULT NULL) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d cdp.destination_data := cdp._destination(name);
  opts jsonb := d.options;
  private boolean := d.private_allowed;
BEGIN
  IF options IS NOT NULL THEN
    IF jsonb_typeof(options) <> 'object' THEN
      PERFORM cdp._destination_options(d.kind, options);   -- raises 22023
    END IF;
    opts := cdp._destination_options(d.kind, jsonb_strip_nulls(d.options || options));
  END IF;
  IF url IS NOT NULL THEN
    IF d.kind = 'pull' THEN
      RAISE EXCEPTION 'a pull destination has no url'
        USING ERRCODE = 'invalid_parameter_value', HINT = 'Drop it and create a webhook destination instead.';
    END IF;
    private := cdp._check_destination_url(url);
  END IF;
  IF secret IS NOT NULL THEN
    IF d.kind = 'pull' THEN
      RAISE EXCEPTION 'a pull destination has no secret' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(secret) < 16 THEN
      RAISE EXCEPTION 'the signing secret is too short'
        USING ERRCODE = 'invalid_parameter_value', HINT = 'Use at least 16 characters, e.g. whsec_ followed by the base64 of 32 random bytes.';
    END IF;
    PERFORM cdp._webhook_secret_check(secret);
    INSERT INTO cdp.destination_secrets VALUES (d.destination_id, secret)
      ON CONFLICT (destination_id) DO UPDATE SET secret = excluded.secret;
  END IF;
  IF purpose IS NOT NULL THEN
    PERFORM cdp._check_purpose(purpose);
  END IF;
  UPDATE cdp.destination_data x
     SET url = coalesce(alter_destination.url, x.url), purpose = coalesce(alter_destination.purpose, x.purpose),
         options = opts, private_allowed = private
   WHERE x.destination_id = d.destination_id;
  PERFORM cdp._dispatch_wake();
END $$;
COMMENT ON FUNCTION cdp.alter_destination(text, text, text, text, jsonb) IS
  'Change a destination: NULL keeps a value; options are merged into the current ones (a key set to null returns to its default)';

CREATE FUNCTION cdp.drop_destination(name text, force boolean DEFAULT false) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d cdp.destination_data := cdp._destination(name);
  undone bigint;
BEGIN
  SELECT count(*) INTO undone FROM cdp.outbox_data o
   WHERE o.destination_id = d.destination_id AND o.status IN ('pending', 'in_flight');
  IF undone > 0 AND NOT force THEN
    RAISE EXCEPTION 'destination "%" has % undelivered messages', name, undone
      USING ERRCODE = 'object_in_use',
            HINT = 'Wait until cdp.destination_stats shows none pending, or drop it anyway with cdp.drop_destination(name, force => true).';
  END IF;
  DELETE FROM cdp.destination_data x WHERE x.destination_id = d.destination_id;
END $$;
COMMENT ON FUNCTION cdp.drop_destination(text, boolean) IS
  'Drop a destination with its activations and messages; refused (55006) while messages are undelivered unless force';

CREATE FUNCTION cdp.pause_destination(name text) RETURNS void
  LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  UPDATE cdp.destination_data x SET paused = true, paused_reason = 'paused by ' || session_user
   WHERE x.destination_id = (cdp._destination(pause_destination.name)).destination_id;
END;
COMMENT ON FUNCTION cdp.pause_destination(text) IS
  'Stop delivering to a destination: messages keep being queued (pending) until cdp.resume_destination()';

CREATE FUNCTION cdp.resume_destination(name text) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  UPDATE cdp.destination_data x SET paused = false, paused_reason = NULL
   WHERE x.destination_id = (cdp._destination(resume_destination.name)).destination_id;
  PERFORM cdp._dispatch_wake();
END $$;
COMMENT ON FUNCTION cdp.resume_destination(text) IS
  'Deliver to a paused destination again (also after the receiver answered 410 Gone)';

-- Messages --------------------------------------------------------------

CREATE FUNCTION cdp._outbox_identifiers(profile_id bigint, options jsonb) RETURNS jsonb
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
  RETURN (SELECT coalesce(jsonb_agg(CASE WHEN (options ->> 'hash_identifiers')::boolean
                                         THEN i.kind || ':' || cdp.hashed(i.identifier)
                                         ELSE i.identifier::text END ORDER BY i.identifier::text), '[]')
            FROM cdp.identity_data i
           WHERE i.profile_id = _outbox_identifiers.profile_id
             AND (options -> 'identifiers' IS NULL OR options -> 'identifiers' ? i.kind));
COMMENT ON FUNCTION cdp._outbox_identifiers(bigint, jsonb) IS
  'Internal: the profile''s identifiers as a destination gets them (kinds filtered, values hashed when configured)';

CREATE FUNCTION cdp._outbox_payload(type text, audience text, profile_id bigint, options jsonb, traits jsonb,
                                    occurred_at timestamptz) RETURNS jsonb
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
  RETURN jsonb_build_object(
    'type', type, 'audience', audience, 'profile_id', profile_id,
    'identifiers', cdp._outbox_identifiers(profile_id, options),
    'traits', CASE WHEN type = 'audience.entered' AND traits IS NOT NULL
                   THEN (SELECT coalesce(jsonb_object_agg(t.key, t.value), '{}') FROM jsonb_each(traits) t
                          WHERE options -> 'traits' ? t.key)
                   ELSE '{}' END,
    'occurred_at', occurred_at);
COMMENT ON FUNCTION cdp._outbox_payload(text, text, bigint, jsonb, jsonb, timestamptz) IS
  'Internal: a message as a destination gets it (without its id); traits only on audience.entered, only the configured keys';

-- The audiences whose messages a destination holds back (min_audience_size):
-- counting stops at the threshold.
CREATE FUNCTION cdp._held_audiences(destination_id integer, min_size integer) RETURNS integer[]
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
  RETURN CASE WHEN min_size > 0 THEN
    (SELECT coalesce(array_agg(ac.audience_id), '{}') FROM cdp.activation_data ac
      WHERE ac.destination_id = _held_audiences.destination_id
        AND (SELECT count(*) FROM (SELECT 1 FROM cdp.audience_member_data m
                                    WHERE m.audience_id = ac.audience_id LIMIT min_size) s) < min_size)
    ELSE '{}'::integer[] END;
COMMENT ON FUNCTION cdp._held_audiences(integer, integer) IS
  'Internal: audiences activated on the destination with fewer than min_size members (their messages wait)';

CREATE FUNCTION cdp._activation_stage(change_ids bigint[], consent_changed bigint[], erased bigint[]) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  n bigint;
  n_entered bigint := 0;
  n_exited bigint := 0;
  n_withdrawn bigint := 0;
  n_erased bigint := 0;
  n_cancelled bigint := 0;
  r record;
BEGIN
  change_ids := coalesce(change_ids, '{}');
  consent_changed := coalesce(consent_changed, '{}');
  erased := coalesce(erased, '{}');

  -- 1. Erased people: nothing more is sent about them but profile.erased,
  -- to each destination that received data for them, with the identifiers
  -- it was sent (so it can find the person); then their other messages
  -- lose every identifier and trait.
  IF cardinality(erased) > 0 THEN
    UPDATE cdp.outbox_data o SET status = 'cancelled', last_error = 'profile erased'
     WHERE o.profile_id = ANY (erased) AND o.status = 'pending';
    GET DIAGNOSTICS n = ROW_COUNT;
    n_cancelled := n_cancelled + n;
    INSERT INTO cdp.outbox_data (profile_id, destination_id, type, payload)
    SELECT e.profile_id, e.destination_id, 'profile.erased',
           jsonb_build_object('type', 'profile.erased', 'audience', NULL, 'profile_id', e.profile_id,
                              'identifiers', coalesce((SELECT jsonb_agg(DISTINCT x ORDER BY x)
                                                         FROM cdp.outbox_data s, jsonb_array_elements(s.payload -> 'identifiers') x
                                                        WHERE s.profile_id = e.profile_id AND s.destination_id = e.destination_id), '[]'),
                              'traits', '{}'::jsonb, 'occurred_at', now())
      FROM (SELECT DISTINCT o.profile_id, o.destination_id FROM cdp.outbox_data o
             WHERE o.profile_id = ANY (erased) AND o.status IN ('delivered', 'in_flight')
               AND o.type <> 'profile.erased') e
     ORDER BY e.profile_id, e.destination_id;
    GET DIAGNOSTICS n_erased = ROW_COUNT;
    UPDATE cdp.outbox_data o SET payload = o.payload || '{"identifiers": [], "traits": {}}'
     WHERE o.profile_id = ANY (erased) AND o.type <> 'profile.erased'
       AND (o.payload -> 'identifiers' <> '[]' OR o.payload -> 'traits' <> '{}');
  END IF;

  -- 2. Membership changes, for every destination the audience is active on.
  -- An entry needs consent for the destination's purpose (else the
  -- audience's); an exit goes only where the entry went.
  WITH ins AS (
    INSERT INTO cdp.outbox_data (profile_id, destination_id, audience_id, type, payload)
    SELECT c.profile_id, d.destination_id, c.audience_id, 'audience.' || c.change,
           cdp._outbox_payload('audience.' || c.change, a.name, c.profile_id, d.options, p.traits, c.changed_at)
      FROM cdp.audience_change_data c
      JOIN cdp.activation_data ac ON ac.audience_id = c.audience_id
      JOIN cdp.destination_data d ON d.destination_id = ac.destination_id
      JOIN cdp.audience_data a ON a.audience_id = c.audience_id
      LEFT JOIN cdp.profile_data p ON p.profile_id = c.profile_id
     WHERE c.change_id = ANY (change_ids)
       AND c.profile_id <> ALL (erased)
       AND CASE c.change
             WHEN 'entered' THEN coalesce(d.purpose, a.purpose) IS NULL
                                 OR cdp.has_consent(c.profile_id, coalesce(d.purpose, a.purpose))
             ELSE EXISTS (SELECT 1 FROM cdp.outbox_data o
                           WHERE o.profile_id = c.profile_id AND o.destination_id = d.destination_id
                             AND o.audience_id = c.audience_id AND o.type = 'audience.entered'
                             AND o.status <> 'cancelled')
           END
     ORDER BY c.changed_at, c.change_id, d.destination_id
    RETURNING type)
  SELECT count(*) FILTER (WHERE ins.type = 'audience.entered'), count(*) FILTER (WHERE ins.type = 'audience.exited')
    INTO n_entered, n_exited FROM ins;

  -- 3. Consent withdrawn: where a destination holds data about the person
  -- for a purpose they no longer consent to, cancel what is still pending
  -- and tell it to forget them (identifiers only).
  FOR r IN
    SELECT DISTINCT ON (h.profile_id, h.destination_id) h.profile_id, h.destination_id, d.options
      FROM (SELECT o.profile_id, o.destination_id, coalesce(d.purpose, a.purpose) AS purpose
              FROM cdp.outbox_data o
              JOIN cdp.destination_data d ON d.destination_id = o.destination_id
              LEFT JOIN cdp.audience_data a ON a.audience_id = o.audience_id
             WHERE o.profile_id = ANY (consent_changed) AND o.profile_id <> ALL (erased)
               AND o.type = 'audience.entered' AND o.status <> 'cancelled') h
      JOIN cdp.destination_data d ON d.destination_id = h.destination_id
     WHERE h.purpose IS NOT NULL AND NOT cdp.has_consent(h.profile_id, h.purpose)
     ORDER BY h.profile_id, h.destination_id
  LOOP
    UPDATE cdp.outbox_data o SET status = 'cancelled', last_error = 'consent withdrawn'
     WHERE o.profile_id = r.profile_id AND o.destination_id = r.destination_id
       AND o.status = 'pending' AND o.type = 'audience.entered';
    GET DIAGNOSTICS n = ROW_COUNT;
    n_cancelled := n_cancelled + n;
    -- Sent (or being sent) since the last consent.withdrawn?
    IF EXISTS (SELECT 1 FROM cdp.outbox_data o
                WHERE o.profile_id = r.profile_id AND o.destination_id = r.destination_id
                  AND o.type = 'audience.entered' AND o.status IN ('delivered', 'in_flight')
                  AND o.message_id > coalesce((SELECT max(w.message_id) FROM cdp.outbox_data w
                                                WHERE w.profile_id = r.profile_id AND w.destination_id = r.destination_id
                                                  AND w.type = 'consent.withdrawn' AND w.status <> 'cancelled'), 0)) THEN
      INSERT INTO cdp.outbox_data (profile_id, destination_id, type, payload)
      VALUES (r.profile_id, r.destination_id, 'consent.withdrawn',
              cdp._outbox_payload('consent.withdrawn', NULL, r.profile_id, r.options, NULL, now()));
      n_withdrawn := n_withdrawn + 1;
    END IF;
  END LOOP;

  IF n_entered + n_exited + n_withdrawn + n_erased > 0 THEN
    PERFORM cdp._dispatch_wake();
  END IF;
  RETURN jsonb_build_object('entered', n_entered, 'exited', n_exited, 'consent_withdrawn', n_withdrawn,
                            'profile_erased', n_erased, 'cancelled', n_cancelled);
END $$;
COMMENT ON FUNCTION cdp._activation_stage(bigint[], bigint[], bigint[]) IS
  'Internal, called by the audience pass in its transaction: turn these audience changes into messages for every destination the audience is active on, tell destinations holding data about people whose consent was withdrawn (consent.withdrawn) or who were erased (profile.erased), and cancel what those may no longer receive';

-- Activations -----------------------------------------------------------


CREATE FUNCTION cdp.activate(audience text, destination text) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  aid integer := cdp._audience_id(audience);
  d cdp.destination_data := cdp._destination(destination);
  a cdp.audience_data;
  n integer;
BEGIN
  -- No audience pass may change memberships between reading them here and
  -- this commit: its changes would find no activation yet.
  LOCK TABLE cdp.audience_member_data IN SHARE MODE;
  SELECT * INTO a FROM cdp.audience_data x WHERE x.audience_id = aid;
  INSERT INTO cdp.activation_data (audience_id, destination_id) VALUES (aid, d.destination_id)
    ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'audience "%" is already active on destination "%"', audience, destination
      USING ERRCODE = 'duplicate_object', HINT = 'cdp.deactivate() it first to send its members again.';
  END IF;
  INSERT INTO cdp.outbox_data (profile_id, destination_id, audience_id, type, payload)
  SELECT m.profile_id, d.destination_id, aid, 'audience.entered',
         cdp._outbox_payload('audience.entered', a.name, m.profile_id, d.options, p.traits, m.entered_at)
    FROM cdp.audience_member_data m
    LEFT JOIN cdp.profile_data p ON p.profile_id = m.profile_id
   WHERE m.audience_id = aid
     AND (coalesce(d.purpose, a.purpose) IS NULL OR cdp.has_consent(m.profile_id, coalesce(d.purpose, a.purpose)))
   ORDER BY m.profile_id;
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM cdp._dispatch_wake();
  RETURN n;
END $$;
COMMENT ON FUNCTION cdp.activate(text, text) IS
  'Send an audience to a destination: its current members (with consent for the destination''s purpose, else the audience''s) as audience.entered now, then every change. Returns the number of members queued.';

CREATE FUNCTION cdp.deactivate(audience text, destination text) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  aid integer := cdp._audience_id(audience);
  d cdp.destination_data := cdp._destination(destination);
  n integer;
BEGIN
  DELETE FROM cdp.activation_data ac WHERE ac.audience_id = aid AND ac.destination_id = d.destination_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'audience "%" is not active on destination "%"', audience, destination
      USING ERRCODE = 'undefined_object', HINT = 'See cdp.activations.';
  END IF;
  UPDATE cdp.outbox_data o SET status = 'cancelled', last_error = 'audience deactivated'
   WHERE o.destination_id = d.destination_id AND o.audience_id = aid AND o.status = 'pending';
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
COMMENT ON FUNCTION cdp.deactivate(text, text) IS
  'Stop sending an audience to a destination; its pending messages are cancelled (returned: how many). The destination is not told to remove the members.';

-- Pull API --------------------------------------------------------------

-- A lease costs O(batch), not O(backlog), whatever the statistics say (a
-- freshly filled outbox has none, and plpgsql soon switches to a generic
-- plan that knows no destination): it walks outbox_data_queue
-- (destination_id, message_id) in order and stops after max_messages,
-- checking each row's place in its profile's queue with one probe of
-- outbox_data_undone.  Left to its estimates the planner may instead read
-- every undone message of the destination, probe each and sort them all
-- (it did: 80 ms per cdp.read() of 100 over 50,000 pending); so the
-- function turns off the plans that read the backlog (sequential and
-- bitmap scans, sorts; a sort that is needed still happens, at a high
-- estimated cost).  What the walk visits and skips -- messages not due,
-- held, or behind an undone one of the same profile -- it still pays for.
--
-- Consent is re-checked in the same statement: a join on cdp.consent_state
-- for the profile the message's id stands for now (merged ids resolve to
-- their survivor, as cdp.has_consent() does).  Leased, cancelled and dead
-- messages are written by one UPDATE; for webhook destinations (batch_size
-- given) it also assigns batch_key to messages not sent before: the first
-- message id of each chunk of batch_size, in id order.
CREATE FUNCTION cdp._lease(dest cdp.destination_data, max_messages integer, lease interval,
                           batch_size integer DEFAULT NULL) RETURNS SETOF cdp.outbox_data
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
  SET enable_seqscan = off
  SET enable_bitmapscan = off
  SET enable_sort = off
AS $$
DECLARE
  held integer[] := cdp._held_audiences(dest.destination_id, (dest.options ->> 'min_audience_size')::integer);
  max_attempts integer := (dest.options ->> 'max_attempts')::integer;
BEGIN
  RETURN QUERY
  WITH c AS (
    -- The oldest undone message of each profile, due, not held back; rows
    -- another consumer is leasing right now are skipped.  The columns
    -- are those of the version locked.
    SELECT o.profile_id, o.message_id, o.audience_id, o.type, o.attempts, o.batch_key
      FROM cdp.outbox_data o
     WHERE o.destination_id = dest.destination_id AND o.status IN ('pending', 'in_flight')
       AND ((o.status = 'pending' AND o.next_attempt_at <= now())
            OR (o.status = 'in_flight' AND o.lease_until <= now()))
       AND (o.audience_id IS NULL OR o.audience_id <> ALL (held) OR o.type NOT LIKE 'audience.%')
       AND o.message_id = (SELECT min(e.message_id) FROM cdp.outbox_data e
                            WHERE e.destination_id = o.destination_id AND e.profile_id = o.profile_id
                              AND e.status IN ('pending', 'in_flight'))
     ORDER BY o.message_id
     LIMIT max_messages
       FOR UPDATE OF o SKIP LOCKED),
  k AS (
    -- Consent at dispatch: a withdrawal committed before this lease wins.
    -- A message leased max_attempts times without an answer is dead.
    SELECT c.profile_id, c.message_id, c.batch_key, x.purpose,
           CASE WHEN c.type = 'audience.entered' AND x.purpose IS NOT NULL
                     AND NOT coalesce(s.granted AND (s.expires_at IS NULL OR s.expires_at > now()), false)
                  THEN 'cancelled'
                WHEN c.attempts >= max_attempts THEN 'dead'
                ELSE 'in_flight' END AS status
      FROM c
      LEFT JOIN cdp.audience_data a ON a.audience_id = c.audience_id
      CROSS JOIN LATERAL (SELECT coalesce(dest.purpose, a.purpose) AS purpose) x
      LEFT JOIN cdp.profile_data p ON p.profile_id = c.profile_id AND c.type = 'audience.entered' AND x.purpose IS NOT NULL
      LEFT JOIN cdp.consent_state s ON s.profile_id = coalesce(p.merged_into, p.profile_id) AND s.purpose = x.purpose),
  b AS (
    -- New batches: chunks of batch_size, in id order, of what is leased
    -- and was not sent before.
    SELECT k.*, CASE WHEN k.status = 'in_flight' AND k.batch_key IS NULL AND batch_size IS NOT NULL
                     THEN (row_number() OVER (PARTITION BY k.status = 'in_flight' AND k.batch_key IS NULL
                                               ORDER BY k.message_id) - 1) / batch_size END AS chunk
      FROM k),
  f AS (
    SELECT b.*, CASE WHEN b.chunk IS NOT NULL THEN min(b.message_id) OVER (PARTITION BY b.chunk) END AS first_id
      FROM b),
  u AS (
    UPDATE cdp.outbox_data o
       SET status = f.status,
           lease_until = CASE WHEN f.status = 'in_flight' THEN now() + lease END,
           attempts = o.attempts + CASE WHEN f.status = 'in_flight' THEN 1 ELSE 0 END,
           batch_key = coalesce(o.batch_key, f.first_id),
           last_error = CASE f.status
                          WHEN 'cancelled' THEN format('no consent for %s when leased', f.purpose)
                          WHEN 'dead' THEN coalesce(o.last_error, format('not acknowledged after %s deliveries', o.attempts))
                          ELSE o.last_error END
      FROM f
     WHERE o.profile_id = f.profile_id AND o.message_id = f.message_id
       AND o.status IN ('pending', 'in_flight')
    RETURNING o.*)
  SELECT u.* FROM u WHERE u.status = 'in_flight' ORDER BY u.message_id;
END $$;
COMMENT ON FUNCTION cdp._lease(cdp.destination_data, integer, interval, integer) IS
  'Internal: lease up to max_messages due messages of the destination (the oldest undone one per profile; with batch_size, new ones get a batch_key), cancelling those whose consent is gone and ending those out of attempts; returns the leased rows in id order';

CREATE VIEW cdp.outbox AS
  SELECT o.message_id, d.name AS destination, o.profile_id, o.type, o.payload, o.status, o.attempts,
         o.next_attempt_at, o.created_at, o.delivered_at, o.last_status, o.last_error
    FROM cdp.outbox_data o
    JOIN cdp.destination_data d ON d.destination_id = o.destination_id;
COMMENT ON VIEW cdp.outbox IS
  'Every message for every destination and its state: pending, in_flight (leased), delivered, dead (retries exhausted or refused; last_status/last_error say why) or cancelled (consent, erasure, deactivation)';

CREATE FUNCTION cdp.read(destination text, max_messages integer DEFAULT 100,
                         visibility interval DEFAULT '30 seconds') RETURNS SETOF cdp.outbox
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d cdp.destination_data := cdp._destination(destination);
BEGIN
  IF d.kind <> 'pull' THEN
    RAISE EXCEPTION 'destination "%" is a webhook destination', destination
      USING ERRCODE = 'wrong_object_type', HINT = 'The dispatcher delivers webhook destinations; cdp.read() is for destinations created with options {"kind": "pull"}.';
  END IF;
  IF max_messages IS NULL OR max_messages NOT BETWEEN 1 AND 10000 THEN
    RAISE EXCEPTION 'max_messages must be from 1 to 10000' USING ERRCODE = 'invalid_parameter_value',
      DETAIL = format('Got %s.', coalesce(max_messages::text, 'NULL'));
  END IF;
  IF visibility IS NULL OR visibility <= interval '0' THEN
    RAISE EXCEPTION 'visibility must be a positive interval' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'How long the messages read stay leased: unacknowledged, they come back after it (default 30 seconds).';
  END IF;
  IF d.paused THEN
    RETURN;
  END IF;
  RETURN QUERY
  SELECT l.message_id, d.name, l.profile_id, l.type, l.payload, l.status, l.attempts,
         l.next_attempt_at, l.created_at, l.delivered_at, l.last_status, l.last_error
    FROM cdp._lease(d, max_messages, visibility) l ORDER BY l.message_id;
END $$;
COMMENT ON FUNCTION cdp.read(text, integer, interval) IS
  'Lease up to max_messages messages of a pull destination (oldest first, one per profile at a time, skipping those other consumers hold); unacknowledged ones come back after visibility';

-- Acknowledging costs O(ids), not O(backlog), whatever the statistics:
-- the rows are found by message id (outbox_data_message, unique) and
-- nothing else.  "In flight" is written lease_until IS NOT NULL (the same,
-- by the table's CHECK) and the destination's kind is a per-row lookup, so
-- that neither offers the planner a way into the destination's whole
-- queue (the partial indexes, or destination_id from a join), which a
-- freshly filled outbox without statistics made it take (7 ms per ack of
-- 100 over 50,000 pending); sequential scans are off for the same reason.
CREATE FUNCTION cdp.ack(message_ids bigint[]) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  SET enable_seqscan = off
AS $$
DECLARE
  n integer;
BEGIN
  UPDATE cdp.outbox_data o
     SET status = 'delivered', delivered_at = now(), lease_until = NULL, last_error = NULL,
         payload = CASE WHEN o.type = 'profile.erased' THEN o.payload || '{"identifiers": []}' ELSE o.payload END
   WHERE o.message_id = ANY (message_ids) AND o.lease_until IS NOT NULL
     AND (SELECT d.kind FROM cdp.destination_data d WHERE d.destination_id = o.destination_id) = 'pull';
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
COMMENT ON FUNCTION cdp.ack(bigint[]) IS
  'Mark messages read from a pull destination as delivered; returns how many were in flight (an id already acknowledged or unknown counts 0)';

CREATE FUNCTION cdp.nack(message_ids bigint[], delay interval DEFAULT '0') RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  SET enable_seqscan = off
AS $$
DECLARE
  n integer;
BEGIN
  IF delay IS NULL OR delay < interval '0' THEN
    RAISE EXCEPTION 'delay must not be negative' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'How long before the messages may be read again; ''0'' for at once.';
  END IF;
  -- Found as cdp.ack() finds them.
  UPDATE cdp.outbox_data o SET status = 'pending', lease_until = NULL, next_attempt_at = now() + delay
   WHERE o.message_id = ANY (message_ids) AND o.lease_until IS NOT NULL
     AND (SELECT d.kind FROM cdp.destination_data d WHERE d.destination_id = o.destination_id) = 'pull';
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
COMMENT ON FUNCTION cdp.nack(bigint[], interval) IS
  'Give messages read from a pull destination back, to be read again after delay; returns how many were in flight';

CREATE FUNCTION cdp.retry_dead(destination text) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d cdp.destination_data := cdp._destination(destination);
  n integer;
BEGIN
  UPDATE cdp.outbox_data o SET status = 'pending', attempts = 0, next_attempt_at = now(), batch_key = NULL
   WHERE o.destination_id = d.destination_id AND o.status = 'dead';
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM cdp._dispatch_wake();
  RETURN n;
END $$;
COMMENT ON FUNCTION cdp.retry_dead(text) IS
  'Queue a destination''s dead messages again with fresh attempts (after fixing the receiver); returns how many';

-- Operations ------------------------------------------------------------

CREATE VIEW cdp.destinations AS
  SELECT d.destination_id, d.name, d.kind, d.url, d.purpose,
         CASE WHEN (SELECT cdp._reader_sees_all()) OR NOT d.options ? 'headers' THEN d.options
              ELSE jsonb_set(d.options, '{headers}',
                             coalesce((SELECT jsonb_object_agg(h.key, '***') FROM jsonb_each(d.options -> 'headers') h), '{}'))
         END AS options,
         CASE WHEN s.secret IS NULL THEN NULL WHEN (SELECT cdp._reader_sees_all()) THEN s.secret ELSE '***' END AS secret,
         d.paused, d.paused_reason, d.private_allowed, d.created_at
    FROM cdp.destination_data d
    LEFT JOIN cdp.destination_secrets s ON s.destination_id = d.destination_id;
COMMENT ON VIEW cdp.destinations IS
  'Destinations with their options in force; the signing secret and header values only for cdp_admin (*** otherwise)';

CREATE VIEW cdp.activations AS
  SELECT a.name AS audience, d.name AS destination, ac.activated_at
    FROM cdp.activation_data ac
    JOIN cdp.audience_data a ON a.audience_id = ac.audience_id
    JOIN cdp.destination_data d ON d.destination_id = ac.destination_id;
COMMENT ON VIEW cdp.activations IS 'Which audience is sent to which destination, since when';

CREATE VIEW cdp.destination_stats AS
  SELECT d.name AS destination, d.kind, d.paused,
         count(o.message_id) FILTER (WHERE o.status = 'pending') AS pending,
         count(o.message_id) FILTER (WHERE o.status = 'in_flight') AS in_flight,
         count(o.message_id) FILTER (WHERE o.status = 'delivered' AND o.delivered_at > now() - interval '1 hour') AS delivered_last_hour,
         count(o.message_id) FILTER (WHERE o.status = 'dead') AS dead,
         count(o.message_id) FILTER (WHERE o.status = 'cancelled') AS cancelled,
         now() - min(o.created_at) FILTER (WHERE o.status = 'pending') AS oldest_pending_age,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY o.delivered_at - o.created_at)
           FILTER (WHERE o.status = 'delivered' AND o.delivered_at > now() - interval '1 hour') AS latency_p50,
         percentile_cont(0.99) WITHIN GROUP (ORDER BY o.delivered_at - o.created_at)
           FILTER (WHERE o.status = 'delivered' AND o.delivered_at > now() - interval '1 hour') AS latency_p99
    FROM cdp.destination_data d
    LEFT JOIN cdp.outbox_data o ON o.destination_id = d.destination_id
   GROUP BY d.destination_id, d.name, d.kind, d.paused;
COMMENT ON VIEW cdp.destination_stats IS
  'Per destination: messages pending, in flight, delivered in the last hour, dead and cancelled; age of the oldest pending one; delivery latency (created to delivered) p50/p99 over the last hour';

-- The dispatcher (src/worker/dispatcher.c) ------------------------------

CREATE FUNCTION cdp._dispatch_recover() RETURNS integer
  LANGUAGE sql
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  WITH r AS (
    UPDATE cdp.outbox_data o SET status = 'pending', lease_until = NULL, next_attempt_at = now()
      FROM cdp.destination_data d
     WHERE o.status = 'in_flight' AND d.destination_id = o.destination_id AND d.kind = 'webhook'
    RETURNING 1)
  SELECT count(*) FROM r;
END;
COMMENT ON FUNCTION cdp._dispatch_recover() IS
  'Internal: at dispatcher start, give back the webhook messages a previous dispatcher held (it died while sending them): they are sent again, in the same batches';

CREATE FUNCTION cdp._dispatch_destinations()
  RETURNS TABLE (destination_id integer, url text, secret text, batch_size integer, max_in_flight integer,
                 rate_limit double precision, timeout_ms integer, headers text[], private_allowed boolean)
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT d.destination_id, d.url, s.secret, (d.options ->> 'batch_size')::integer,
         (d.options ->> 'max_in_flight')::integer, (d.options ->> 'rate_limit')::double precision,
         (d.options ->> 'timeout_ms')::integer,
         ARRAY(SELECT h.key || ': ' || h.value FROM jsonb_each_text(d.options -> 'headers') h ORDER BY h.key),
         d.private_allowed
    FROM cdp.destination_data d
    LEFT JOIN cdp.destination_secrets s ON s.destination_id = d.destination_id
   WHERE d.kind = 'webhook' AND NOT d.paused
   ORDER BY d.destination_id;
END;
COMMENT ON FUNCTION cdp._dispatch_destinations() IS 'Internal: the webhook destinations the dispatcher serves, with what it needs to send';

CREATE FUNCTION cdp._dispatch_lease(destination_id integer, max_batches integer)
  RETURNS TABLE (webhook_id text, message_ids bigint[], body text)
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  d cdp.destination_data;
  size integer;
BEGIN
  SELECT * INTO d FROM cdp.destination_data x
   WHERE x.destination_id = _dispatch_lease.destination_id AND x.kind = 'webhook' AND NOT x.paused;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  size := (d.options ->> 'batch_size')::integer;
  -- Batches: what was sent together before goes together again (same
  -- webhook-id, by batch_key); the rest in chunks of batch_size, in id
  -- order (cdp._lease assigns their batch_key).  The webhook-id is derived
  -- from the message ids, so the same messages get the same id and
  -- different ones never share it.  The lease outlives the request's
  -- timeout; the dispatcher gives leases back when it starts, so this only
  -- matters if it hangs.
  RETURN QUERY
  WITH g AS (
    SELECT array_agg(l.message_id ORDER BY l.message_id) AS mids,
           -- Each message is {"id": ...} || payload, written as text: "id"
           -- is the key jsonb puts first, so this is the same text as the
           -- jsonb concatenation, at a third of its cost.
           '{"messages":[' || string_agg(CASE WHEN l.payload = '{}' THEN '{"id": ' || l.message_id || '}'
                                              ELSE '{"id": ' || l.message_id || ', ' || substr(l.payload::text, 2) END,
                                         ',' ORDER BY l.message_id) || ']}' AS body
      FROM cdp._lease(d, size * max_batches, make_interval(secs => (d.options ->> 'timeout_ms')::integer / 1000.0 + 60), size) l
     GROUP BY l.batch_key)
  SELECT 'msg_' || left(encode(sha256(convert_to(array_to_string(g.mids, ','), 'UTF8')), 'hex'), 32), g.mids, g.body
    FROM g ORDER BY g.mids[1];
END $$;
COMMENT ON FUNCTION cdp._dispatch_lease(integer, integer) IS
  'Internal: lease up to max_batches batches of a webhook destination; returns each batch''s webhook-id (stable across retries of the same messages), message ids and request body';

CREATE FUNCTION cdp._dispatch_next_due(destination_id integer) RETURNS timestamptz
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
  RETURN (SELECT min(o.next_attempt_at) FROM cdp.outbox_data o
           WHERE o.destination_id = _dispatch_next_due.destination_id AND o.status = 'pending'
             AND o.next_attempt_at > now());
COMMENT ON FUNCTION cdp._dispatch_next_due(integer) IS 'Internal: when the destination''s next retry is due (NULL: none waiting)';

-- The batch's messages are found by id alone, as cdp.ack() finds them.
CREATE FUNCTION cdp._dispatch_result(message_ids bigint[], http_status integer, error text,
                                     retry_after_ms bigint, response text) RETURNS text
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
  SET enable_seqscan = off
AS $$
DECLARE
  d cdp.destination_data;
  outcome text;
  delay interval;
  attempt integer;
BEGIN
  SELECT x.* INTO d FROM cdp.destination_data x
   WHERE x.destination_id = (SELECT o.destination_id FROM cdp.outbox_data o WHERE o.message_id = message_ids[1] LIMIT 1);
  IF NOT FOUND THEN
    RETURN 'gone';   -- dropped while the request ran
  END IF;
  -- 2xx delivered; 408, 429, 5xx and transport errors (0) retried; 410
  -- pauses the destination; the rest (other 4xx, 3xx: redirects are not
  -- followed; -1: refused before sending) is final.
  outcome := CASE WHEN http_status BETWEEN 200 AND 299 THEN 'delivered'
                  WHEN http_status = 0 OR http_status IN (408, 429) OR http_status >= 500 THEN 'retry'
                  ELSE 'dead' END;
  error := left(coalesce(error, CASE WHEN http_status > 0 THEN format('HTTP %s', http_status) END)
                || CASE WHEN coalesce(response, '') <> '' THEN ': ' || response ELSE '' END, 2000);

  IF outcome = 'delivered' THEN
    UPDATE cdp.outbox_data o
       SET status = 'delivered', delivered_at = now(), lease_until = NULL, last_status = http_status, last_error = NULL,
           payload = CASE WHEN o.type = 'profile.erased' THEN o.payload || '{"identifiers": []}' ELSE o.payload END
     WHERE o.message_id = ANY (message_ids) AND o.lease_until IS NOT NULL;
  ELSIF outcome = 'retry' THEN
    IF (SELECT max(o.attempts) FROM cdp.outbox_data o WHERE o.message_id = ANY (message_ids))
       >= (d.options ->> 'max_attempts')::integer THEN
      outcome := 'dead';
    END IF;
    SELECT max(o.attempts) INTO attempt FROM cdp.outbox_data o WHERE o.message_id = ANY (message_ids);
    -- Exponential backoff from 1 s, capped at 1 h, with +-25 % jitter; a
    -- longer Retry-After (capped at a day) wins.
    delay := greatest(make_interval(secs => least(3600, 2 ^ least(greatest(attempt, 1) - 1, 20)) * (0.75 + random() / 2)),
                      make_interval(secs => least(coalesce(retry_after_ms, 0), 86400000) / 1000.0));
    UPDATE cdp.outbox_data o
       SET status = CASE WHEN o.attempts >= (d.options ->> 'max_attempts')::integer THEN 'dead' ELSE 'pending' END,
           lease_until = NULL, next_attempt_at = now() + delay, last_status = nullif(http_status, 0),
           payload = CASE WHEN o.type = 'profile.erased' AND o.attempts >= (d.options ->> 'max_attempts')::integer
                          THEN o.payload || '{"identifiers": []}' ELSE o.payload END,
           last_error = CASE WHEN o.attempts >= (d.options ->> 'max_attempts')::integer
                             THEN format('gave up after %s attempts: %s', o.attempts, error) ELSE error END
     WHERE o.message_id = ANY (message_ids) AND o.lease_until IS NOT NULL;
  ELSE
    UPDATE cdp.outbox_data o
       SET status = 'dead', lease_until = NULL, last_status = nullif(http_status, -1), last_error = error,
           payload = CASE WHEN o.type = 'profile.erased' THEN o.payload || '{"identifiers": []}' ELSE o.payload END
     WHERE o.message_id = ANY (message_ids) AND o.lease_until IS NOT NULL;
    IF http_status = 410 THEN
      UPDATE cdp.destination_data x SET paused = true, paused_reason = 'the receiver answered 410 Gone at ' || now()
       WHERE x.destination_id = d.destination_id;
      outcome := 'paused';
    END IF;
  END IF;
  RETURN outcome;
END $$;
COMMENT ON FUNCTION cdp._dispatch_result(bigint[], integer, text, bigint, text) IS
  'Internal: record how sending a batch ended: 2xx delivered; 408/429/5xx/transport errors (0) retried with backoff, jitter and Retry-After until max_attempts; 410 dead and the destination paused; anything else dead with the response kept';
