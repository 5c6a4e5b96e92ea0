-- Type cdp.identifier: a normalised kind:value customer key (src/types/identifier.c).

CREATE TYPE cdp.identifier;

CREATE FUNCTION cdp.identifier_in(cstring) RETURNS cdp.identifier
  LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'identifier_in';
CREATE FUNCTION cdp.identifier_out(cdp.identifier) RETURNS cstring
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'identifier_out';
CREATE FUNCTION cdp.identifier_recv(internal) RETURNS cdp.identifier
  LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'identifier_recv';
CREATE FUNCTION cdp.identifier_send(cdp.identifier) RETURNS bytea
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'identifier_send';

-- Input is STABLE, not IMMUTABLE: phone numbers without a country code are
-- read in the session's cdp.default_phone_region.
CREATE TYPE cdp.identifier (
  INPUT = cdp.identifier_in,
  OUTPUT = cdp.identifier_out,
  RECEIVE = cdp.identifier_recv,
  SEND = cdp.identifier_send,
  INTERNALLENGTH = VARIABLE,
  STORAGE = extended
);
COMMENT ON TYPE cdp.identifier IS
  'A customer identifier as kind:value, normalised by kind (email: NFKC, lower-case, IDNA domain; phone: E.164; device_id: lower-case UUID; others: trimmed NFC)';

CREATE FUNCTION cdp.identifier(kind text, value text) RETURNS cdp.identifier
  LANGUAGE c STABLE STRICT PARALLEL SAFE
  AS 'MODULE_PATHNAME', 'identifier_make';
COMMENT ON FUNCTION cdp.identifier(text, text) IS
  'Build a normalised identifier from a kind and a raw value; raises 22P02 naming the rule the value breaks';

CREATE FUNCTION cdp.parse_identifier(kind text, value text,
                                     OUT identifier cdp.identifier, OUT error text)
  LANGUAGE c STABLE STRICT PARALLEL SAFE
  AS 'MODULE_PATHNAME', 'identifier_parse';
COMMENT ON FUNCTION cdp.parse_identifier(text, text) IS
  'Like cdp.identifier(kind, value) but never raises: returns the identifier, or NULL and the rule the value breaks';

CREATE FUNCTION cdp.identifier_kind(cdp.identifier) RETURNS text
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'identifier_kind';
COMMENT ON FUNCTION cdp.identifier_kind(cdp.identifier) IS 'The kind of an identifier, e.g. email';

CREATE FUNCTION cdp.identifier_value(cdp.identifier) RETURNS text
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'identifier_value';
COMMENT ON FUNCTION cdp.identifier_value(cdp.identifier) IS 'The normalised value of an identifier, without its kind';

CREATE FUNCTION cdp.hashed(cdp.identifier) RETURNS text
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'identifier_hashed';
COMMENT ON FUNCTION cdp.hashed(cdp.identifier) IS
  'Lower-case hex SHA-256 of the normalised value (phones in E.164 with +), as ad platforms such as Google Customer Match expect';

-- Comparison: by kind, then by the normalised value's bytes.
CREATE FUNCTION cdp.identifier_cmp(cdp.identifier, cdp.identifier) RETURNS integer
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'identifier_cmp';
CREATE FUNCTION cdp.identifier_eq(cdp.identifier, cdp.identifier) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'identifier_eq';
CREATE FUNCTION cdp.identifier_ne(cdp.identifier, cdp.identifier) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'identifier_ne';
CREATE FUNCTION cdp.identifier_lt(cdp.identifier, cdp.identifier) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'identifier_lt';
CREATE FUNCTION cdp.identifier_le(cdp.identifier, cdp.identifier) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'identifier_le';
CREATE FUNCTION cdp.identifier_gt(cdp.identifier, cdp.identifier) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'identifier_gt';
CREATE FUNCTION cdp.identifier_ge(cdp.identifier, cdp.identifier) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF AS 'MODULE_PATHNAME', 'identifier_ge';
CREATE FUNCTION cdp.identifier_hash(cdp.identifier) RETURNS integer
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'identifier_hash';
CREATE FUNCTION cdp.identifier_hash_extended(cdp.identifier, bigint) RETURNS bigint
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'identifier_hash_extended';

CREATE OPERATOR cdp.= (
  LEFTARG = cdp.identifier, RIGHTARG = cdp.identifier, FUNCTION = cdp.identifier_eq,
  COMMUTATOR = OPERATOR(cdp.=), NEGATOR = OPERATOR(cdp.<>),
  RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES);
CREATE OPERATOR cdp.<> (
  LEFTARG = cdp.identifier, RIGHTARG = cdp.identifier, FUNCTION = cdp.identifier_ne,
  COMMUTATOR = OPERATOR(cdp.<>), NEGATOR = OPERATOR(cdp.=),
  RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR cdp.< (
  LEFTARG = cdp.identifier, RIGHTARG = cdp.identifier, FUNCTION = cdp.identifier_lt,
  COMMUTATOR = OPERATOR(cdp.>), NEGATOR = OPERATOR(cdp.>=),
  RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR cdp.<= (
  LEFTARG = cdp.identifier, RIGHTARG = cdp.identifier, FUNCTION = cdp.identifier_le,
  COMMUTATOR = OPERATOR(cdp.>=), NEGATOR = OPERATOR(cdp.>),
  RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR cdp.> (
  LEFTARG = cdp.identifier, RIGHTARG = cdp.identifier, FUNCTION = cdp.identifier_gt,
  COMMUTATOR = OPERATOR(cdp.<), NEGATOR = OPERATOR(cdp.<=),
  RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR cdp.>= (
  LEFTARG = cdp.identifier, RIGHTARG = cdp.identifier, FUNCTION = cdp.identifier_ge,
  COMMUTATOR = OPERATOR(cdp.<=), NEGATOR = OPERATOR(cdp.<),
  RESTRICT = scalargesel, JOIN = scalargejoinsel);

CREATE OPERATOR CLASS cdp.identifier_ops
  DEFAULT FOR TYPE cdp.identifier USING btree AS
    OPERATOR 1 cdp.<,
    OPERATOR 2 cdp.<=,
    OPERATOR 3 cdp.=,
    OPERATOR 4 cdp.>=,
    OPERATOR 5 cdp.>,
    FUNCTION 1 cdp.identifier_cmp(cdp.identifier, cdp.identifier);

CREATE OPERATOR CLASS cdp.identifier_hash_ops
  DEFAULT FOR TYPE cdp.identifier USING hash AS
    OPERATOR 1 cdp.=,
    FUNCTION 1 cdp.identifier_hash(cdp.identifier),
    FUNCTION 2 cdp.identifier_hash_extended(cdp.identifier, bigint);

CREATE CAST (text AS cdp.identifier) WITH INOUT AS ASSIGNMENT;
CREATE CAST (cdp.identifier AS text) WITH INOUT AS ASSIGNMENT;

COMMENT ON FUNCTION cdp.identifier_in(cstring) IS 'Input function of cdp.identifier: parses and normalises kind:value';
COMMENT ON FUNCTION cdp.identifier_out(cdp.identifier) IS 'Output function of cdp.identifier: kind:value';
COMMENT ON FUNCTION cdp.identifier_recv(internal) IS 'Binary input of cdp.identifier (re-normalised)';
COMMENT ON FUNCTION cdp.identifier_send(cdp.identifier) IS 'Binary output of cdp.identifier';
COMMENT ON FUNCTION cdp.identifier_cmp(cdp.identifier, cdp.identifier) IS 'Btree support: order of identifiers (kind, then value, bytewise)';
COMMENT ON FUNCTION cdp.identifier_eq(cdp.identifier, cdp.identifier) IS 'Implements = for cdp.identifier';
COMMENT ON FUNCTION cdp.identifier_ne(cdp.identifier, cdp.identifier) IS 'Implements <> for cdp.identifier';
COMMENT ON FUNCTION cdp.identifier_lt(cdp.identifier, cdp.identifier) IS 'Implements < for cdp.identifier';
COMMENT ON FUNCTION cdp.identifier_le(cdp.identifier, cdp.identifier) IS 'Implements <= for cdp.identifier';
COMMENT ON FUNCTION cdp.identifier_gt(cdp.identifier, cdp.identifier) IS 'Implements > for cdp.identifier';
COMMENT ON FUNCTION cdp.identifier_ge(cdp.identifier, cdp.identifier) IS 'Implements >= for cdp.identifier';
COMMENT ON FUNCTION cdp.identifier_hash(cdp.identifier) IS 'Hash support for cdp.identifier (hash joins, hash indexes)';
COMMENT ON FUNCTION cdp.identifier_hash_extended(cdp.identifier, bigint) IS 'Seeded hash support for cdp.identifier (hash partitioning)';
