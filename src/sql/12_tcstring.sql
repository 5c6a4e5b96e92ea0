-- Type cdp.tcstring: an IAB TCF v2.x TC string (src/types/tcstring.c, tcf.c).

CREATE TYPE cdp.tcstring;

CREATE FUNCTION cdp.tcstring_in(cstring) RETURNS cdp.tcstring
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tcstring_in';
CREATE FUNCTION cdp.tcstring_out(cdp.tcstring) RETURNS cstring
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tcstring_out';
CREATE FUNCTION cdp.tcstring_recv(internal) RETURNS cdp.tcstring
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tcstring_recv';
CREATE FUNCTION cdp.tcstring_send(cdp.tcstring) RETURNS bytea
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tcstring_send';

CREATE TYPE cdp.tcstring (
  INPUT = cdp.tcstring_in,
  OUTPUT = cdp.tcstring_out,
  RECEIVE = cdp.tcstring_recv,
  SEND = cdp.tcstring_send,
  INTERNALLENGTH = VARIABLE,
  STORAGE = extended
);
COMMENT ON TYPE cdp.tcstring IS
  'An IAB TCF v2.x TC string (euconsent-v2), validated on input and kept exactly as received as proof of consent';

CREATE CAST (text AS cdp.tcstring) WITH INOUT AS ASSIGNMENT;
CREATE CAST (cdp.tcstring AS text) WITH INOUT AS ASSIGNMENT;

CREATE FUNCTION cdp.tcf_decode(cdp.tcstring) RETURNS jsonb
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tcstring_decode';
COMMENT ON FUNCTION cdp.tcf_decode(cdp.tcstring) IS
  'Every field of a TC string as JSON: core fields, purpose/vendor consents and legitimate interests, publisher restrictions, and the disclosed/allowed vendors and publisher TC segments when present; id lists sorted without duplicates';

CREATE FUNCTION cdp.tcf_purpose_consent(cdp.tcstring, purpose integer) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tcstring_purpose_consent';
COMMENT ON FUNCTION cdp.tcf_purpose_consent(cdp.tcstring, integer) IS 'Does the TC string give consent for this TCF purpose (1-24)?';

CREATE FUNCTION cdp.tcf_purpose_legitimate_interest(cdp.tcstring, purpose integer) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tcstring_purpose_legitimate_interest';
COMMENT ON FUNCTION cdp.tcf_purpose_legitimate_interest(cdp.tcstring, integer) IS
  'Was legitimate interest for this TCF purpose established (the user did not object)?';

CREATE FUNCTION cdp.tcf_vendor_consent(cdp.tcstring, vendor integer) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tcstring_vendor_consent';
COMMENT ON FUNCTION cdp.tcf_vendor_consent(cdp.tcstring, integer) IS 'Does the TC string give consent to this vendor (GVL id)?';

CREATE FUNCTION cdp.tcf_vendor_legitimate_interest(cdp.tcstring, vendor integer) RETURNS boolean
  LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tcstring_vendor_legitimate_interest';
COMMENT ON FUNCTION cdp.tcf_vendor_legitimate_interest(cdp.tcstring, integer) IS
  'Was legitimate interest established for this vendor (GVL id)?';

COMMENT ON FUNCTION cdp.tcstring_in(cstring) IS 'Input function of cdp.tcstring: validates a TCF v2 TC string (22P02 with what is wrong)';
COMMENT ON FUNCTION cdp.tcstring_out(cdp.tcstring) IS 'Output function of cdp.tcstring: the string as given';
COMMENT ON FUNCTION cdp.tcstring_recv(internal) IS 'Binary input of cdp.tcstring (validated like text input)';
COMMENT ON FUNCTION cdp.tcstring_send(cdp.tcstring) IS 'Binary output of cdp.tcstring';
