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

static void
append_ids(StringInfo buf, const char *key, const TcfIdSet *set)
{
	appendStringInfo(buf, "%s\"%s\": [", buf->data[buf->len - 1] == '{' ? "" : ", ", key);
	for (int i = 0; i < set->count; i++)
		appendStringInfo(buf, i ? ", %d" : "%d", set->ids[i]);
	appendStringInfoChar(buf, ']');
}

static void
append_bool(StringInfo buf, const char *key, bool value)
{
	appendStringInfo(buf, ", \"%s\": %s", key, value ? "true" : "false");
}

static void
append_string(StringInfo buf, const char *key, const char *value)
{
	appendStringInfo(buf, ", \"%s\": ", key);
	escape_json(buf, value);
}

/* Deciseconds since the Unix epoch as an ISO 8601 timestamp. */
static void
append_time(StringInfo buf, const char *key, int64 ds)
{
	TimestampTz ts = ds * 100000 -
		((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
	int			utc = 0;		/* the string encodes UTC: show it so, whatever TimeZone is */

	appendStringInfo(buf, ", \"%s\": ", key);
	escape_json(buf, JsonEncodeDateTime(NULL, TimestampTzGetDatum(ts), TIMESTAMPTZOID, &utc));
}

PG_FUNCTION_INFO_V1(tcstring_decode);
Datum
tcstring_decode(PG_FUNCTION_ARGS)
{
	TcfDecoded	d;
	StringInfoData buf;

	decode_datum(PG_GETARG_DATUM(0), &d);

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"version\": %d", d.version);
	append_time(&buf, "created", d.created_ds);
	append_time(&buf, "last_updated", d.last_updated_ds);
	appendStringInfo(&buf, ", \"cmp_id\": %d, \"cmp_version\": %d, \"consent_screen\": %d",
					 d.cmp_id, d.cmp_version, d.consent_screen);
	append_string(&buf, "consent_language", d.consent_language);
	appendStringInfo(&buf, ", \"vendor_list_version\": %d, \"policy_version\": %d",
					 d.vendor_list_version, d.policy_version);
	append_bool(&buf, "is_service_specific", d.is_service_specific);
	append_bool(&buf, "use_non_standard_texts", d.use_non_standard_texts);
	append_ids(&buf, "special_feature_optins", &d.special_feature_optins);
	append_ids(&buf, "purpose_consents", &d.purpose_consents);
	append_ids(&buf, "purpose_legitimate_interests", &d.purpose_legitimate_interests);
	append_bool(&buf, "purpose_one_treatment", d.purpose_one_treatment);
	append_string(&buf, "publisher_cc", d.publisher_cc);
	append_ids(&buf, "vendor_consents", &d.vendor_consents);
	append_ids(&buf, "vendor_legitimate_interests", &d.vendor_legitimate_interests);

	appendStringInfoString(&buf, ", \"publisher_restrictions\": [");
	for (int i = 0; i < d.n_restrictions; i++)
	{
		appendStringInfo(&buf, "%s{\"purpose\": %d, \"type\": %d", i ? ", " : "",
						 d.restrictions[i].purpose, d.restrictions[i].type);
		append_ids(&buf, "vendors", &d.restrictions[i].vendors);
		appendStringInfoChar(&buf, '}');
	}
	appendStringInfoChar(&buf, ']');

	if (d.has_disclosed_vendors)
		append_ids(&buf, "disclosed_vendors", &d.disclosed_vendors);
	if (d.has_allowed_vendors)
		append_ids(&buf, "allowed_vendors", &d.allowed_vendors);
	if (d.has_publisher_tc)
	{
		appendStringInfoString(&buf, ", \"publisher_tc\": {");
		append_ids(&buf, "purpose_consents", &d.pub_purpose_consents);
		append_ids(&buf, "purpose_legitimate_interests", &d.pub_purpose_legitimate_interests);
		append_ids(&buf, "custom_purpose_consents", &d.pub_custom_purpose_consents);
		append_ids(&buf, "custom_purpose_legitimate_interests", &d.pub_custom_purpose_legitimate_interests);
		appendStringInfoChar(&buf, '}');
	}
	appendStringInfoChar(&buf, '}');

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
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
