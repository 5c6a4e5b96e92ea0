-- cdp.identifier: normalisation by kind, rejections, comparison, hashing,
-- indexes, arrays and binary I/O.

-- Operators live in schema cdp, like everything else: put it on the path.
SET search_path = public, cdp;

-- try(input): 'ok <normalised>' or '<SQLSTATE> <detail>' without aborting.
CREATE FUNCTION pg_temp.try(input text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  state text;
  detail text;
BEGIN
  RETURN 'ok ' || input::cdp.identifier::text;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL;
  RETURN state || ' ' || detail;
END $$;

-- shown(input): long inputs abbreviated.
CREATE FUNCTION pg_temp.shown(input text) RETURNS text LANGUAGE sql AS $$
  SELECT CASE WHEN length(input) > 48 THEN left(input, 30) || '... (' || length(input) || ' chars)' ELSE input END
$$;

-- Kinds: case-insensitive, stored lower-case; any well-formed kind is allowed.
SELECT pg_temp.shown(input) AS input, pg_temp.try(input) FROM (VALUES
  ('EMAIL:jane@example.com'),
  ('Crm_Id:K-0001'),
  ('loyalty_card:4711 0815'),
  ('a:x'),
  ('a2345678901234567890123456789012:x'),     -- 32 characters: the limit
  ('a23456789012345678901234567890123:x'),    -- 33
  ('1email:jane@example.com'),
  ('e-mail:jane@example.com'),
  (':jane@example.com'),
  ('jane@example.com')
) v(input);

-- The error itself: SQLSTATE 22P02, the input, and the rule in DETAIL.
SELECT 'email:jane.example.com'::cdp.identifier;
SELECT 'jane@example.com'::cdp.identifier;

-- email: trim, NFKC, lower-case (root locale), IDNA (UTS #46) domain.
SELECT pg_temp.shown(input) AS input, pg_temp.try(input) FROM (VALUES
  ('email:  Jane.Doe@Example.COM  '),           -- trim and case
  (E'email:\tjane@example.com\n'),              -- ASCII whitespace around
  ('email:　jane@example.com　'),                -- ideographic spaces (U+3000) around
  ('email:ＪＡＮＥ@ｅｘａｍｐｌｅ.ｃｏｍ'),           -- full-width letters
  ('email:ﬁnance@example.com'),                 -- ligature fi (U+FB01)
  ('email:jürgen@example.com'),                 -- umlaut in the local part
  ('email:JÜRGEN@EXAMPLE.COM'),                 -- upper-case umlaut
  ('email:Straße@example.com'),                 -- ß stays ß (lower-case, not case folding)
  ('email:STRASSE@example.com'),
  ('email:info@müller.de'),                     -- IDN domain to punycode
  ('email:info@MÜLLER.DE'),
  ('email:info@xn--mller-kva.de'),              -- already ASCII: unchanged
  ('email:info@XN--MLLER-KVA.DE'),
  ('email:info@straße.de'),                     -- non-transitional: ß kept in the domain
  ('email:jane+news@gmail.com'),                -- no provider rewriting: plus tag kept
  ('email:j.a.n.e@gmail.com'),                  -- dots kept
  ('email:o''brien@example.ie')
) v(input);

-- Combining marks compose (NFKC): e + U+0301 becomes U+00E9.
SELECT cdp.identifier('email', E'rene\u0301@example.com') = cdp.identifier('email', E'ren\u00e9@example.com') AS composed,
       encode(convert_to(cdp.identifier_value(cdp.identifier('email', E'rene\u0301@example.com')), 'UTF8'), 'hex') AS utf8;

-- email rejections, each with its rule.
SELECT pg_temp.shown(input) AS input, pg_temp.try(input) FROM (VALUES
  ('email:'),
  ('email:   '),
  ('email:jane.example.com'),
  ('email:jane@doe@example.com'),
  ('email:@example.com'),
  ('email:jane@'),
  ('email:jane@localhost'),
  ('email:jane doe@example.com'),
  (E'email:jane\u0007@example.com'),
  ('email:jane@.example.com'),
  ('email:jane@example..com'),
  ('email:jane@example.com.'),
  ('email:jane@-example.com'),
  ('email:jane@exa_mple.com'),
  ('email:jane@[192.168.0.1]'),
  ('email:' || repeat('a', 65) || '@example.com'),
  ('email:jane@' || repeat('a', 64) || '.com'),
  ('email:jane@' || repeat('abcdefgh.', 30) || 'com')
) v(input);
SELECT pg_temp.try('email:' || repeat('a', 64) || '@example.com') LIKE 'ok %' AS local_part_of_64_is_fine;

-- phone: E.164; numbers without a country code are read in cdp.default_phone_region.
SHOW cdp.default_phone_region;
SELECT pg_temp.shown(input) AS input, pg_temp.try(input) FROM (VALUES
  ('phone:030 1234567'),                         -- DE, national format
  ('phone:(030) 123 45 67'),
  ('phone:0151 23456789'),                       -- DE mobile
  ('phone:+49 30 1234567'),
  ('phone:0049 30 1234567'),                     -- international prefix 00
  ('phone:+1 (415) 555-2671'),                   -- US
  ('phone:+44 20 7946 0958'),                    -- GB
  ('phone:+33 1 42 68 53 00'),                   -- FR
  ('phone:+41 44 668 18 00'),                    -- CH
  ('phone:+43 1 5879694'),                       -- AT
  ('phone:+81 3-3224-9999'),                     -- JP
  ('phone:＋４９ ３０ １２３４５６７')                -- full-width digits
) v(input);

-- phone rejections.
SELECT pg_temp.shown(input) AS input, pg_temp.try(input) FROM (VALUES
  ('phone:'),
  ('phone:   '),
  ('phone:hello'),
  ('phone:12'),
  ('phone:+49 30'),
  ('phone:+999 1234567'),
  ('phone:00999 1234567'),
  ('phone:+1 555 0100'),                         -- too short for the US plan
  ('phone:+1 123 456 7890'),                     -- US area codes never start with 1
  ('phone:030 1234567 1234567 1234567')
) v(input);

-- The default region is per session; it is validated and upper-cased.
SET cdp.default_phone_region = 'us';
SHOW cdp.default_phone_region;
SELECT 'phone:(415) 555-2671'::cdp.identifier;
-- A German national number is not a US number.
SELECT 'phone:030 1234567'::cdp.identifier;
SET cdp.default_phone_region = 'gb';
SELECT 'phone:020 7946 0958'::cdp.identifier;
SET cdp.default_phone_region = 'XX';
SET cdp.default_phone_region = 'Germany';
RESET cdp.default_phone_region;
SHOW cdp.default_phone_region;
-- The cdp prefix is reserved: a typo is an error, not a silently created setting.
SET cdp.default_phone_regoin = 'US';

-- device_id: UUID, lower-case, canonical hyphens.
SELECT pg_temp.shown(input) AS input, pg_temp.try(input) FROM (VALUES
  ('device_id:6D92078A-8246-4BA4-AE5B-76104861E7DC'),
  ('device_id:{6d92078a-8246-4ba4-ae5b-76104861e7dc}'),
  ('device_id:6d92078a82464ba4ae5b76104861e7dc'),
  ('device_id: 6d92078a-8246-4ba4-ae5b-76104861e7dc '),
  ('device_id:'),
  ('device_id:6d92078a-8246-4ba4-ae5b'),
  ('device_id:6d92078a-8246-4ba4-ae5b-76104861e7dz'),
  ('device_id:6d92078a8-246-4ba4-ae5b-76104861e7dc'),
  ('device_id:6d92078a-8246-4ba4-ae5b-76104861e7dc0')
) v(input);

-- user_id, anonymous_id, crm_id and any other kind: trim and NFC only.
SELECT pg_temp.shown(input) AS input, pg_temp.try(input) FROM (VALUES
  ('user_id:  abc123  '),
  ('user_id:ABC123'),                            -- case is kept
  ('anonymous_id:a1b2-c3d4'),
  ('crm_id:K 0001'),                             -- inner space is kept
  ('crm_id:ＫＬ１'),                              -- NFC does not fold full-width (NFKC would)
  ('user_id:'),
  ('user_id:   '),
  (E'user_id:ab\u0001c'),
  ('user_id:' || repeat('x', 1025))
) v(input);
SELECT cdp.identifier('user_id', E'Rene\u0301') = cdp.identifier('user_id', E'Ren\u00e9') AS nfc_composes;

-- Constructor, accessors and the non-raising parser.
SELECT cdp.identifier('Email', ' Jane@Example.com ') AS id,
       cdp.identifier_kind(cdp.identifier('email', 'jane@example.com')) AS kind,
       cdp.identifier_value(cdp.identifier('email', 'jane@example.com')) AS value;
SELECT * FROM cdp.parse_identifier('email', ' Jane@Example.com ');
SELECT * FROM cdp.parse_identifier('email', 'jane@');
SELECT * FROM cdp.parse_identifier('no way', 'x');
SELECT cdp.identifier('e:mail', 'x');

-- Strict: NULL in, NULL out.
SELECT cdp.identifier(NULL, 'x') IS NULL AS a, cdp.identifier('email', NULL) IS NULL AS b,
       cdp.identifier_kind(NULL) IS NULL AS c, cdp.hashed(NULL) IS NULL AS d,
       NULL::text::cdp.identifier IS NULL AS e, (cdp.parse_identifier(NULL, 'x')).error IS NULL AS f;

-- hashed: lower-case hex SHA-256 of the normalised value; phones with '+'.
SELECT cdp.hashed('email: Jane.Doe@Example.com'),
       cdp.hashed('email: Jane.Doe@Example.com') = encode(sha256('jane.doe@example.com'::bytea), 'hex') AS email_ok,
       cdp.hashed('phone:+1 (415) 555-2671'),
       cdp.hashed('phone:+1 (415) 555-2671') = encode(sha256('+14155552671'::bytea), 'hex') AS phone_ok,
       cdp.hashed('email:info@müller.de') = encode(sha256('info@xn--mller-kva.de'::bytea), 'hex') AS idn_ok,
       cdp.hashed('user_id:Jürgen') = encode(sha256(convert_to('Jürgen', 'UTF8')), 'hex') AS utf8_ok;

-- Equality, ordering and hashing use the normalised form.
SELECT 'email:Jane@Example.com'::cdp.identifier = 'email: jane@EXAMPLE.com'::cdp.identifier AS eq,
       'email:jane@example.com'::cdp.identifier <> 'user_id:jane@example.com'::cdp.identifier AS kinds_differ,
       'email:a@example.com'::cdp.identifier < 'email:b@example.com'::cdp.identifier AS lt,
       'email:z@example.com'::cdp.identifier < 'phone:+49301234567'::cdp.identifier AS kind_first,
       'a:z'::cdp.identifier < 'a0:a'::cdp.identifier AS shorter_kind_first,
       cdp.identifier_hash('email:Jane@Example.com') = cdp.identifier_hash('email:jane@example.com') AS same_hash;

CREATE TABLE ids (id cdp.identifier, source text);
INSERT INTO ids VALUES
  ('email:Jane@Example.com', 'crm'), ('email: jane@example.com', 'shop'), ('EMAIL:JANE@EXAMPLE.COM', 'newsletter'),
  ('phone:030 1234567', 'crm'), ('phone:+49 30 1234567', 'pos'), ('user_id:u1', 'shop'),
  ('device_id:6D92078A-8246-4BA4-AE5B-76104861E7DC', 'app'), ('crm_id:K-1', 'crm'), ('anonymous_id:c-1', 'web');
SELECT id, count(*), string_agg(source, ',' ORDER BY source) FROM ids GROUP BY id ORDER BY id;
SET enable_hashagg = off;
SELECT id, count(*) FROM ids GROUP BY id ORDER BY id DESC;
RESET enable_hashagg;
SELECT count(DISTINCT id) FROM ids;
SELECT a.source, b.source FROM ids a JOIN ids b USING (id) WHERE a.source < b.source ORDER BY 1, 2;

-- Indexes: btree and hash are used for equality, btree for ranges.
CREATE TABLE lookup AS
  SELECT cdp.identifier('email', 'user' || g || '@example.com') AS id, g FROM generate_series(1, 2000) g;
CREATE UNIQUE INDEX lookup_btree ON lookup (id);
ANALYZE lookup;
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT g FROM lookup WHERE id = 'email:User42@Example.com';
SELECT g FROM lookup WHERE id = 'email:User42@Example.com';
EXPLAIN (COSTS OFF) SELECT g FROM lookup WHERE id BETWEEN 'email:user10@example.com' AND 'email:user11@example.com';
SELECT count(*) FROM lookup WHERE id BETWEEN 'email:user10@example.com' AND 'email:user11@example.com';
DROP INDEX lookup_btree;
CREATE INDEX lookup_hash ON lookup USING hash (id);
EXPLAIN (COSTS OFF) SELECT g FROM lookup WHERE id = 'email:user42@example.com';
SELECT g FROM lookup WHERE id = 'email:user42@example.com';
RESET enable_seqscan;
RESET enable_bitmapscan;
-- The unique index enforces identity on the normalised form.
CREATE UNIQUE INDEX lookup_unique ON lookup (id);
INSERT INTO lookup VALUES ('email: USER7@example.com', 0);

-- Arrays.
SELECT ARRAY['email:Jane@Example.com', 'phone:030 1234567']::cdp.identifier[] AS ids;
SELECT unnest('{email:Jane@Example.com,"user_id: u 1 "}'::cdp.identifier[]);
SELECT 'email:jane@example.com'::cdp.identifier = ANY ('{email:JANE@example.com,phone:+49301234567}'::cdp.identifier[]) AS found;
SELECT array_agg(id ORDER BY id) FROM ids WHERE source IN ('crm', 'pos');

-- Casts: text to identifier normalises; identifier to text is its kind:value form.
SELECT 'Email:Jane@Example.com'::text::cdp.identifier::text;
INSERT INTO ids (id) SELECT 'user_id: from text '::text;
SELECT id FROM ids WHERE source IS NULL;

-- Binary COPY round trip.
\copy ids TO 'results/identifier.bin' WITH (FORMAT binary)
CREATE TABLE ids_copy (LIKE ids);
\copy ids_copy FROM 'results/identifier.bin' WITH (FORMAT binary)
SELECT count(*) AS rows, count(*) FILTER (WHERE a.id = b.id) AS equal
  FROM (SELECT row_number() OVER (ORDER BY id, source) n, * FROM ids) a
  JOIN (SELECT row_number() OVER (ORDER BY id, source) n, * FROM ids_copy) b USING (n);
-- Binary input is normalised again: text sent in binary cannot bypass the rules.
CREATE TABLE raw (id text, source text);
INSERT INTO raw VALUES ('EMAIL: Mixed@Case.Example ', 'binary');
\copy raw TO 'results/identifier_raw.bin' WITH (FORMAT binary)
\copy ids_copy FROM 'results/identifier_raw.bin' WITH (FORMAT binary)
SELECT id FROM ids_copy WHERE source = 'binary';
UPDATE raw SET id = 'email:not-an-email';
\copy raw TO 'results/identifier_raw.bin' WITH (FORMAT binary)
\copy ids_copy FROM 'results/identifier_raw.bin' WITH (FORMAT binary)

-- The library is preloaded here, so the shared-state function answers
-- (the refusal without preload is tested in t/001_preload.pl).
SELECT cdp.status() ?& ARRAY['library_version', 'shared_state_since'] AS has_keys,
       cdp.status()->>'library_version' = (SELECT extversion FROM pg_extension WHERE extname = 'cdp') AS versions_match;

DROP TABLE ids, ids_copy, raw, lookup;
