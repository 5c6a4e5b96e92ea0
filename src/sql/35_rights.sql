-- Data-subject rights (GDPR Art. 15, 17, 20) and retention.

CREATE TABLE cdp.erasures (
  erasure_id        bigserial PRIMARY KEY,
  erased_at         timestamptz NOT NULL DEFAULT now(),
  reason            text NOT NULL,
  identifier_hashes text[] NOT NULL
);
COMMENT ON TABLE cdp.erasures IS
  'What is left of an erased person: when, why, and the SHA-256 of each identifier (kind:value) -- nothing that identifies them by itself';

CREATE FUNCTION cdp._identifier_sha256(cdp.identifier) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
  RETURN encode(sha256(convert_to($1::text, 'UTF8')), 'hex');
COMMENT ON FUNCTION cdp._identifier_sha256(cdp.identifier) IS
  'Internal: lower-case hex SHA-256 of an identifier''s kind:value text, as kept by erasures and suppression';

CREATE FUNCTION cdp.export_subject(subject cdp.identifier) RETURNS jsonb
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  pid bigint := cdp.profile_of(subject);
BEGIN
  IF pid IS NULL THEN
    RETURN jsonb_build_object('subject', subject::text, 'found', false, 'exported_at', now());
  END IF;
  RETURN jsonb_build_object(
    'subject', subject::text,
    'found', true,
    'exported_at', now(),
    'profile', cdp.profile(pid) - 'events' - 'requested_id',
    'events', coalesce((SELECT jsonb_agg(jsonb_build_object(
                 'event_id', e.event_id, 'type', e.type, 'event', e.event, 'properties', e.properties,
                 'identifiers', to_jsonb(e.identifiers::text[]), 'occurred_at', e.occurred_at,
                 'received_at', e.received_at, 'source', e.source, 'message_id', e.message_id)
                 ORDER BY e.occurred_at, e.event_id)
               FROM cdp.event_data e WHERE e.profile_id = pid), '[]'),
    'consent_ledger', coalesce((SELECT jsonb_agg(jsonb_build_object(
                 'id', l.id, 'subject', l.subject::text, 'purpose', l.purpose, 'granted', l.granted,
                 'source', l.source, 'proof', l.proof, 'recorded_at', l.recorded_at, 'expires_at', l.expires_at)
                 ORDER BY l.recorded_at, l.id)
               FROM cdp.consent_data l
              WHERE l.subject OPERATOR(cdp.=) ANY (SELECT i.identifier FROM cdp.identity_data i WHERE i.profile_id = pid)), '[]'),
    'consents', coalesce((SELECT jsonb_object_agg(c.purpose, jsonb_build_object('granted', c.granted, 'status', c.status,
                 'recorded_at', c.recorded_at, 'expires_at', c.expires_at))
               FROM cdp.consents c WHERE c.profile_id = pid), '{}'),
    'identity_conflicts', coalesce((SELECT jsonb_agg(jsonb_build_object('event_id', c.event_id, 'identifier', c.identifier::text,
                 'reason', c.reason, 'detail', c.detail) ORDER BY c.conflict_id)
               FROM cdp.identity_conflicts c WHERE c.profile_id = pid), '[]'));
END $$;
COMMENT ON FUNCTION cdp.export_subject(cdp.identifier) IS
  'Everything cdp holds about the person an identifier belongs to (GDPR Art. 15/20): profile, identifiers, traits, merges, events, consent ledger and decisions';

CREATE FUNCTION cdp.erase_subject(subject cdp.identifier, reason text) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  pid bigint;
  ids cdp.identifier[];
  pids bigint[];
  hashes text[];
  erasure bigint;
  n_events bigint;
  n_ledger bigint;
BEGIN
  IF reason IS NULL OR btrim(reason) = '' THEN
    RAISE EXCEPTION 'an erasure needs a reason'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. ''Art. 17 request of 2026-11-22, ticket 4711''.';
  END IF;
  -- The audience pass first (as the pass takes it, before anything else):
  -- a pass that gathered the profile before the erasure committed would
  -- otherwise still evaluate it as live and could log it entering.
  PERFORM cdp._audience_lock();
  PERFORM cdp._lock_identity();

  pid := cdp.profile_of(subject);
  IF pid IS NULL THEN
    ids := ARRAY[subject];
    pids := '{}';
  ELSE
    SELECT array_agg(i.identifier) INTO ids FROM cdp.identity_data i WHERE i.profile_id = pid;
    SELECT array_agg(p.profile_id) INTO pids FROM cdp.profile_data p WHERE p.profile_id = pid OR p.merged_into = pid;
  END IF;
  SELECT array_agg(DISTINCT cdp._identifier_sha256(x) ORDER BY cdp._identifier_sha256(x)) INTO hashes FROM unnest(ids) x;

  -- Events of other people that carried one of these identifiers (dropped
  -- there by a rule) keep the event but lose the identifier.
  UPDATE cdp.event_data e SET identifiers = (SELECT coalesce(array_agg(x), '{}') FROM unnest(e.identifiers) x
                                              WHERE NOT x OPERATOR(cdp.=) ANY (ids))
   WHERE e.event_id IN (SELECT c.event_id FROM cdp.identity_conflicts c WHERE c.identifier OPERATOR(cdp.=) ANY (ids))
     AND e.profile_id <> ALL (pids);

  DELETE FROM cdp.message_ids m USING cdp.event_data e
   WHERE e.profile_id = ANY (pids) AND m.message_id = e.message_id AND m.event_id = e.event_id;
  DELETE FROM cdp.event_data e WHERE e.profile_id = ANY (pids);
  GET DIAGNOSTICS n_events = ROW_COUNT;
  DELETE FROM cdp.identity_conflicts c WHERE c.profile_id = ANY (pids) OR c.identifier OPERATOR(cdp.=) ANY (ids);
  DELETE FROM cdp.merges m WHERE m.profile_id = ANY (pids) OR m.merged_profile_id = ANY (pids);
  DELETE FROM cdp.trait_data t WHERE t.profile_id = ANY (pids);
  DELETE FROM cdp.identity_data i WHERE i.profile_id = ANY (pids) OR i.identifier OPERATOR(cdp.=) ANY (ids);
  DELETE FROM cdp.consent_state s WHERE s.profile_id = ANY (pids);
  DELETE FROM cdp.profile_data p WHERE p.profile_id = ANY (pids);
  -- Computed traits go now; memberships leave through the audience pass,
  -- which logs the exits (destinations must hear of them).
  DELETE FROM cdp.computed_trait_values v WHERE v.profile_id = ANY (pids);
  IF cardinality(pids) > 0 THEN
    INSERT INTO cdp.journal (kind, profile_ids) VALUES ('erased', pids);
  END IF;

  -- The person's decisions are those recorded for their identifiers (the
  -- profile an entry was recorded under may since have been split).
  PERFORM set_config('cdp.erasure_in_progress', 'on', true);
  DELETE FROM cdp.consent_data l WHERE l.subject OPERATOR(cdp.=) ANY (ids);
  GET DIAGNOSTICS n_ledger = ROW_COUNT;
  PERFORM set_config('cdp.erasure_in_progress', 'off', true);

  INSERT INTO cdp.erasures (reason, identifier_hashes) VALUES (reason, hashes) RETURNING erasure_id INTO erasure;
  INSERT INTO cdp.suppressed_identifiers (identifier_hash, erasure_id)
  SELECT h, erasure FROM unnest(hashes) h ON CONFLICT (identifier_hash) DO UPDATE SET erasure_id = excluded.erasure_id;

  RETURN jsonb_build_object('erasure_id', erasure, 'profiles', cardinality(pids), 'identifiers', cardinality(ids),
                            'events', n_events, 'ledger_entries', n_ledger, 'suppressed', cardinality(hashes));
END $$;
COMMENT ON FUNCTION cdp.erase_subject(cdp.identifier, text) IS
  'Erase the person an identifier belongs to (GDPR Art. 17): events, identifiers, traits, merges, consent ledger and everything derived; keeps only an erasure record (SHA-256 of the identifiers, date, reason) and suppresses the identifiers for future ingestion';

CREATE FUNCTION cdp.unsuppress(identifier cdp.identifier) RETURNS boolean
  LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  WITH d AS (DELETE FROM cdp.suppressed_identifiers s
              WHERE s.identifier_hash = cdp._identifier_sha256(unsuppress.identifier) RETURNING 1)
  SELECT count(*) > 0 FROM d;
END;
COMMENT ON FUNCTION cdp.unsuppress(cdp.identifier) IS
  'Let an erased identifier be ingested again (e.g. the person signs up anew); returns whether it was suppressed';

-- Retention.
CREATE TABLE cdp.retention (
  event text PRIMARY KEY,
  keep  interval NOT NULL CHECK (keep > interval '0')
);
COMMENT ON TABLE cdp.retention IS
  'How long events of a name are kept (cdp.set_retention); other events are kept as long as the longest cdp.purposes.retention, identify and alias events (identity evidence) for as long as their profile exists unless named here';

CREATE FUNCTION cdp.set_retention(event text, keep interval) RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF event IS NULL OR event = '' THEN
    RAISE EXCEPTION 'event must be an event name' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF keep IS NULL THEN
    DELETE FROM cdp.retention r WHERE r.event = set_retention.event;
  ELSIF keep <= interval '0' THEN
    RAISE EXCEPTION 'keep must be a positive interval' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'E.g. cdp.set_retention(''Page Viewed'', ''90 days''); NULL removes the rule.';
  ELSE
    INSERT INTO cdp.retention VALUES (event, keep) ON CONFLICT ON CONSTRAINT retention_pkey DO UPDATE SET keep = excluded.keep;
  END IF;
END $$;
COMMENT ON FUNCTION cdp.set_retention(text, interval) IS
  'Keep events of this name for this long (NULL removes the rule); applied by cdp.apply_retention() and the background worker';

CREATE FUNCTION cdp.apply_retention() RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r record;
  n bigint;
  total bigint := 0;
  per jsonb := '{}';
  deflt interval := (SELECT max(p.retention) FROM cdp.purposes p);
BEGIN
  -- Each deleted event takes its message id along (looked up by key): the
  -- ids would otherwise pile up for ever, for events no longer stored.
  FOR r IN SELECT * FROM cdp.retention ORDER BY event LOOP
    WITH gone AS (DELETE FROM cdp.event_data e WHERE e.event = r.event AND e.occurred_at < now() - r.keep
                  RETURNING e.event_id, e.message_id),
         ids AS (DELETE FROM cdp.message_ids m USING gone
                  WHERE m.message_id = gone.message_id AND m.event_id = gone.event_id)
    SELECT count(*) INTO n FROM gone;
    per := per || jsonb_build_object(r.event, n);
    total := total + n;
  END LOOP;
  IF deflt IS NOT NULL THEN
    WITH gone AS (DELETE FROM cdp.event_data e
                   WHERE e.occurred_at < now() - deflt AND e.type NOT IN ('identify', 'alias')
                     AND NOT EXISTS (SELECT 1 FROM cdp.retention x WHERE x.event = e.event)
                  RETURNING e.event_id, e.message_id),
         ids AS (DELETE FROM cdp.message_ids m USING gone
                  WHERE m.message_id = gone.message_id AND m.event_id = gone.event_id)
    SELECT count(*) INTO n FROM gone;
    per := per || jsonb_build_object('default', n);
    total := total + n;
  END IF;
  RETURN jsonb_build_object('deleted', total, 'by_rule', per, 'default_keep', deflt, 'applied_at', now());
END $$;
COMMENT ON FUNCTION cdp.apply_retention() IS
  'Delete events older than their retention: the cdp.retention rule of their name, else the longest purpose retention (identify and alias events only by an explicit rule)';
