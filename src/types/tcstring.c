/*-------------------------------------------------------------------------
 *
 * tcstring.c
 *	  The cdp.tcstring type: an IAB TCF v2.x TC string, validated on input
 *	  by the bounds-checked decoder in tcf.c, and SQL functions to read it.
 *
 * The stored form is the string exactly as received: it is the proof of
 * consent (GDPR Art. 7(1)) and must be reproducible byte for byte.  It is
 * decoded again when read; decoding a string is a few microseconds.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "types/tcf.h"

static void *
tcf_palloc(void *ctx, size_t size)
{
	return palloc_extended(size, MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
}

/* Decode or raise 22P02 naming what is wrong. */
static void
decode_or_raise(const char *str, int len, TcfDecoded *out)
{
	char		err[256];

	if (!tcf_decode(str, len, out, tcf_palloc, NULL, err, sizeof(err)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type cdp.tcstring: \"%.*s\"", Min(len, 80), str),
				 errdetail("%s.", err),
				 errhint("A TC string is the base64url value a TCF v2 CMP stores in the euconsent-v2 cookie or passes as gdpr_consent.")));
}

static Datum
tcstring_from(const char *str, int len)
{
	TcfDecoded	d;

	decode_or_raise(str, len, &d);
	return PointerGetDatum(cstring_to_text_with_len(str, len));
}

static void
decode_datum(Datum datum, TcfDecoded *out)
{
	text	   *t = (text *) PG_DETOAST_DATUM_PACKED(datum);

	decode_or_raise(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), out);
}

PG_FUNCTION_INFO_V1(tcstring_in);
Datum
tcstring_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);

	PG_RETURN_DATUM(tcstring_from(str, strlen(str)));
}

PG_FUNCTION_INFO_V1(tcstring_out);
Datum
tcstring_out(PG_FUNCTION_ARGS)
{
	PG_RETURN_CSTRING(text_to_cstring((text *) PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(0))));
}

PG_FUNCTION_INFO_V1(tcstring_recv);
Datum
tcstring_recv(PG_FUNCTION_ARGS)
{
	StringInfo	msg = (StringInfo) PG_GETARG_POINTER(0);
	int			nbytes;
	char	   *str = pq_getmsgtext(msg, msg->len - msg->cursor, &nbytes);

	PG_RETURN_DATUM(tcstring_from(str, nbytes));
}

PG_FUNCTION_INFO_V1(tcstring_send);
Datum
tcstring_send(PG_FUNCTION_ARGS)
{
	text	   *t = (text *) PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(0));
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendtext(&buf, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/*
 * cdp.tcf_decode() builds its jsonb value by value (pushJsonbValue), the
 * way jsonb_in() would from the equivalent JSON text, without printing
 * that text and parsing it back: a long TC string names thousands of
 * vendors, and printing and parsing them cost far more than the decode.
 */
static void
push_key(JsonbParseState **st, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.len = strlen(key);
	k.val.string.val = (char *) key;
	pushJsonbValue(st, WJB_KEY, &k);
}

static void
push_int(JsonbParseState **st, const char *key, int value)
{
	JsonbValue	v;

	push_key(st, key);
	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(value);
	pushJsonbValue(st, WJB_VALUE, &v);
}

static void
push_bool(JsonbParseState **st, const char *key, bool value)
{
	JsonbValue	v;

	push_key(st, key);
	v.type = jbvBool;
	v.val.boolean = value;
	pushJsonbValue(st, WJB_VALUE, &v);
}

static void
push_string(JsonbParseState **st, const char *key, const char *value)
{
	JsonbValue	v;

	push_key(st, key);
	v.type = jbvString;
	v.val.string.len = strlen(value);
	v.val.string.val = (char *) value;
	pushJsonbValue(st, WJB_VALUE, &v);
}

/* Deciseconds since the Unix epoch as an ISO 8601 timestamp. */
static void
push_time(JsonbParseState **st, const char *key, int64 ds)
{
	TimestampTz ts = ds * 100000 -
		((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
	int			utc = 0;		/* the string encodes UTC: show it so, whatever TimeZone is */

	push_string(st, key, JsonEncodeDateTime(NULL, TimestampTzGetDatum(ts), TIMESTAMPTZOID, &utc));
}

static void
push_ids(JsonbParseState **st, const char *key, const TcfIdSet *set)
{
	JsonbValue	v;

	push_key(st, key);
	pushJsonbValue(st, WJB_BEGIN_ARRAY, NULL);
	v.type = jbvNumeric;
	for (int i = 0; i < set->count; i++)
	{
		v.val.numeric = int64_to_numeric(set->ids[i]);
		pushJsonbValue(st, WJB_ELEM, &v);
	}
	pushJsonbValue(st, WJB_END_ARRAY, NULL);
}

PG_FUNCTION_INFO_V1(tcstring_decode);
Datum
tcstring_decode(PG_FUNCTION_ARGS)
{
	TcfDecoded	d;
	JsonbParseState *st = NULL;
	JsonbValue *res;

	decode_datum(PG_GETARG_DATUM(0), &d);

	pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
	push_int(&st, "version", d.version);
	push_time(&st, "created", d.created_ds);
	push_time(&st, "last_updated", d.last_updated_ds);
	push_int(&st, "cmp_id", d.cmp_id);
	push_int(&st, "cmp_version", d.cmp_version);
	push_int(&st, "consent_screen", d.consent_screen);
	push_string(&st, "consent_language", d.consent_language);
	push_int(&st, "vendor_list_version", d.vendor_list_version);
	push_int(&st, "policy_version", d.policy_version);
	push_bool(&st, "is_service_specific", d.is_service_specific);
	push_bool(&st, "use_non_standard_texts", d.use_non_standard_texts);
	push_ids(&st, "special_feature_optins", &d.special_feature_optins);
	push_ids(&st, "purpose_consents", &d.purpose_consents);
	push_ids(&st, "purpose_legitimate_interests", &d.purpose_legitimate_interests);
	push_bool(&st, "purpose_one_treatment", d.purpose_one_treatment);
	push_string(&st, "publisher_cc", d.publisher_cc);
	push_ids(&st, "vendor_consents", &d.vendor_consents);
	push_ids(&st, "vendor_legitimate_interests", &d.vendor_legitimate_interests);

	push_key(&st, "publisher_restrictions");
	pushJsonbValue(&st, WJB_BEGIN_ARRAY, NULL);
	for (int i = 0; i < d.n_restrictions; i++)
	{
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		push_int(&st, "purpose", d.restrictions[i].purpose);
		push_int(&st, "type", d.restrictions[i].type);
		push_ids(&st, "vendors", &d.restrictions[i].vendors);
		pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	}
	pushJsonbValue(&st, WJB_END_ARRAY, NULL);

	if (d.has_disclosed_vendors)
		push_ids(&st, "disclosed_vendors", &d.disclosed_vendors);
	if (d.has_allowed_vendors)
		push_ids(&st, "allowed_vendors", &d.allowed_vendors);
	if (d.has_publisher_tc)
	{
		push_key(&st, "publisher_tc");
		pushJsonbValue(&st, WJB_BEGIN_OBJECT, NULL);
		push_ids(&st, "purpose_consents", &d.pub_purpose_consents);
		push_ids(&st, "purpose_legitimate_interests", &d.pub_purpose_legitimate_interests);
		push_ids(&st, "custom_purpose_consents", &d.pub_custom_purpose_consents);
		push_ids(&st, "custom_purpose_legitimate_interests", &d.pub_custom_purpose_legitimate_interests);
		pushJsonbValue(&st, WJB_END_OBJECT, NULL);
	}
	res = pushJsonbValue(&st, WJB_END_OBJECT, NULL);

	PG_RETURN_JSONB_P(JsonbValueToJsonb(res));
}

PG_FUNCTION_INFO_V1(tcstring_purpose_consent);
Datum
tcstring_purpose_consent(PG_FUNCTION_ARGS)
{
	TcfDecoded	d;

	decode_datum(PG_GETARG_DATUM(0), &d);
	PG_RETURN_BOOL(tcf_idset_contains(&d.purpose_consents, PG_GETARG_INT32(1)));
}

PG_FUNCTION_INFO_V1(tcstring_purpose_legitimate_interest);
Datum
tcstring_purpose_legitimate_interest(PG_FUNCTION_ARGS)
{
	TcfDecoded	d;

	decode_datum(PG_GETARG_DATUM(0), &d);
	PG_RETURN_BOOL(tcf_idset_contains(&d.purpose_legitimate_interests, PG_GETARG_INT32(1)));
}

PG_FUNCTION_INFO_V1(tcstring_vendor_consent);
Datum
tcstring_vendor_consent(PG_FUNCTION_ARGS)
{
	TcfDecoded	d;

	decode_datum(PG_GETARG_DATUM(0), &d);
	PG_RETURN_BOOL(tcf_idset_contains(&d.vendor_consents, PG_GETARG_INT32(1)));
}

PG_FUNCTION_INFO_V1(tcstring_vendor_legitimate_interest);
Datum
tcstring_vendor_legitimate_interest(PG_FUNCTION_ARGS)
{
	TcfDecoded	d;

	decode_datum(PG_GETARG_DATUM(0), &d);
	PG_RETURN_BOOL(tcf_idset_contains(&d.vendor_legitimate_interests, PG_GETARG_INT32(1)));
}
