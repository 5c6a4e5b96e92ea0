/*-------------------------------------------------------------------------
 *
 * identifier.c
 *	  The cdp.identifier type: input/output, binary send/receive,
 *	  comparison, hashing and accessor functions.
 *
 * The stored form is the normalised text "kind:value" (see identifier.h),
 * so output is a copy and equality is a byte comparison.  Ordering is by
 * kind, then by the value's bytes: deterministic and independent of any
 * collation, which is what a key needs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "access/htup_details.h"
#include "common/hashfn.h"
#include "funcapi.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"

#include "types/identifier.h"

#define DatumGetIdentifierP(X)		((struct varlena *) PG_DETOAST_DATUM_PACKED(X))
#define PG_GETARG_IDENTIFIER_P(n)	DatumGetIdentifierP(PG_GETARG_DATUM(n))

static void
report_invalid(const char *input, const char *detail, bool form_error)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid input syntax for type cdp.identifier: \"%s\"", input),
			 errdetail("%s.", detail),
			 form_error ? errhint("Write an identifier as kind:value, for example email:jane@example.com or phone:+4930123456.") : 0));
}

static Datum
normalized_datum(const char *kind, const char *value, int len, const char *input)
{
	StringInfoData buf;
	char	   *err;
	char	   *lkind = pstrdup(kind);

	/* A malformed kind is a malformed identifier: the hint shows the form. */
	for (char *p = lkind; *p; p++)
		*p = pg_ascii_tolower(*p);
	if ((err = identifier_kind_error(lkind)) != NULL)
		report_invalid(input, err, true);

	initStringInfo(&buf);
	err = identifier_normalize(kind, value, len, &buf);
	if (err != NULL)
		report_invalid(input, err, false);
	return PointerGetDatum(cstring_to_text_with_len(buf.data, buf.len));
}

Datum
identifier_from_cstring(const char *str)
{
	const char *colon = strchr(str, ':');
	char	   *kind;

	if (colon == NULL)
		report_invalid(str, "identifier has no kind: there is no \":\" between kind and value", true);
	kind = pnstrdup(str, colon - str);
	return normalized_datum(kind, colon + 1, strlen(colon + 1), str);
}

void
identifier_split(const struct varlena *id, const char **kind, int *kindlen,
				 const char **value, int *valuelen)
{
	const char *data = VARDATA_ANY(id);
	int			len = VARSIZE_ANY_EXHDR(id);
	const char *colon = memchr(data, ':', len);

	if (colon == NULL)
		elog(ERROR, "corrupt cdp.identifier: no ':' in stored value");
	*kind = data;
	*kindlen = colon - data;
	*value = colon + 1;
	*valuelen = len - *kindlen - 1;
}

PG_FUNCTION_INFO_V1(identifier_in);
Datum
identifier_in(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATUM(identifier_from_cstring(PG_GETARG_CSTRING(0)));
}

PG_FUNCTION_INFO_V1(identifier_out);
Datum
identifier_out(PG_FUNCTION_ARGS)
{
	PG_RETURN_CSTRING(text_to_cstring((text *) PG_GETARG_IDENTIFIER_P(0)));
}

/*
 * Binary input is text in the client encoding, normalised again: a client
 * cannot smuggle in a value that text input would have rewritten.
 */
PG_FUNCTION_INFO_V1(identifier_recv);
Datum
identifier_recv(PG_FUNCTION_ARGS)
{
	StringInfo	msg = (StringInfo) PG_GETARG_POINTER(0);
	int			nbytes;
	char	   *str = pq_getmsgtext(msg, msg->len - msg->cursor, &nbytes);

	PG_RETURN_DATUM(identifier_from_cstring(str));
}

PG_FUNCTION_INFO_V1(identifier_send);
Datum
identifier_send(PG_FUNCTION_ARGS)
{
	struct varlena *id = PG_GETARG_IDENTIFIER_P(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendtext(&buf, VARDATA_ANY(id), VARSIZE_ANY_EXHDR(id));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* cdp.identifier(kind text, value text) */
PG_FUNCTION_INFO_V1(identifier_make);
Datum
identifier_make(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	text	   *value = PG_GETARG_TEXT_PP(1);
	char	   *input = psprintf("%s:%s", kind, text_to_cstring(value));

	PG_RETURN_DATUM(normalized_datum(kind, VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value), input));
}

/*
 * cdp.parse_identifier(kind text, value text, OUT identifier, OUT error)
 *
 * The non-raising twin of cdp.identifier(): exactly one of the two columns
 * is set, so a data-quality query can list bad rows with their reason.
 */
PG_FUNCTION_INFO_V1(identifier_parse);
Datum
identifier_parse(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	text	   *value = PG_GETARG_TEXT_PP(1);
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {true, true};
	StringInfoData buf;
	char	   *err;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	initStringInfo(&buf);
	err = identifier_normalize(kind, VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value), &buf);
	if (err == NULL)
	{
		values[0] = PointerGetDatum(cstring_to_text_with_len(buf.data, buf.len));
		nulls[0] = false;
	}
	else
	{
		values[1] = CStringGetTextDatum(err);
		nulls[1] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

PG_FUNCTION_INFO_V1(identifier_kind);
Datum
identifier_kind(PG_FUNCTION_ARGS)
{
	const char *kind,
			   *value;
	int			kindlen,
				valuelen;

	identifier_split(PG_GETARG_IDENTIFIER_P(0), &kind, &kindlen, &value, &valuelen);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(kind, kindlen));
}

PG_FUNCTION_INFO_V1(identifier_value);
Datum
identifier_value(PG_FUNCTION_ARGS)
{
	const char *kind,
			   *value;
	int			kindlen,
				valuelen;

	identifier_split(PG_GETARG_IDENTIFIER_P(0), &kind, &kindlen, &value, &valuelen);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(value, valuelen));
}

/*
 * cdp.hashed(cdp.identifier): lower-case hex SHA-256 of the normalised value
 * in UTF-8, the form Google Customer Match and Meta custom audiences take.
 */
PG_FUNCTION_INFO_V1(identifier_hashed);
Datum
identifier_hashed(PG_FUNCTION_ARGS)
{
	const char *kind,
			   *value;
	int			kindlen,
				valuelen;
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digestlen;
	char		hex[EVP_MAX_MD_SIZE * 2 + 1];
	char	   *utf8;

	identifier_split(PG_GETARG_IDENTIFIER_P(0), &kind, &kindlen, &value, &valuelen);
	utf8 = pg_server_to_any(value, valuelen, PG_UTF8);
	if (utf8 != value)
		valuelen = strlen(utf8);

	if (EVP_Digest(utf8, valuelen, digest, &digestlen, EVP_sha256(), NULL) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("OpenSSL could not compute a SHA-256 digest")));
	hex_encode((const char *) digest, digestlen, hex);
	hex[digestlen * 2] = '\0';
	PG_RETURN_TEXT_P(cstring_to_text(hex));
}

/* Order by kind, then by the value's bytes. */
static int
identifier_cmp_internal(struct varlena *a, struct varlena *b)
{
	const char *ka,
			   *va,
			   *kb,
			   *vb;
	int			kla,
				vla,
				klb,
				vlb;
	int			r;

	identifier_split(a, &ka, &kla, &va, &vla);
	identifier_split(b, &kb, &klb, &vb, &vlb);

	r = memcmp(ka, kb, Min(kla, klb));
	if (r == 0 && kla != klb)
		r = (kla < klb) ? -1 : 1;
	if (r == 0)
	{
		r = memcmp(va, vb, Min(vla, vlb));
		if (r == 0 && vla != vlb)
			r = (vla < vlb) ? -1 : 1;
	}
	return r;
}

static bool
identifier_eq_internal(struct varlena *a, struct varlena *b)
{
	int			la = VARSIZE_ANY_EXHDR(a);

	return la == VARSIZE_ANY_EXHDR(b) && memcmp(VARDATA_ANY(a), VARDATA_ANY(b), la) == 0;
}

PG_FUNCTION_INFO_V1(identifier_cmp);
Datum
identifier_cmp(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(identifier_cmp_internal(PG_GETARG_IDENTIFIER_P(0), PG_GETARG_IDENTIFIER_P(1)));
}

PG_FUNCTION_INFO_V1(identifier_eq);
Datum
identifier_eq(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(identifier_eq_internal(PG_GETARG_IDENTIFIER_P(0), PG_GETARG_IDENTIFIER_P(1)));
}

PG_FUNCTION_INFO_V1(identifier_ne);
Datum
identifier_ne(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(!identifier_eq_internal(PG_GETARG_IDENTIFIER_P(0), PG_GETARG_IDENTIFIER_P(1)));
}

PG_FUNCTION_INFO_V1(identifier_lt);
Datum
identifier_lt(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(identifier_cmp_internal(PG_GETARG_IDENTIFIER_P(0), PG_GETARG_IDENTIFIER_P(1)) < 0);
}

PG_FUNCTION_INFO_V1(identifier_le);
Datum
identifier_le(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(identifier_cmp_internal(PG_GETARG_IDENTIFIER_P(0), PG_GETARG_IDENTIFIER_P(1)) <= 0);
}

PG_FUNCTION_INFO_V1(identifier_gt);
Datum
identifier_gt(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(identifier_cmp_internal(PG_GETARG_IDENTIFIER_P(0), PG_GETARG_IDENTIFIER_P(1)) > 0);
}

PG_FUNCTION_INFO_V1(identifier_ge);
Datum
identifier_ge(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(identifier_cmp_internal(PG_GETARG_IDENTIFIER_P(0), PG_GETARG_IDENTIFIER_P(1)) >= 0);
}

PG_FUNCTION_INFO_V1(identifier_hash);
Datum
identifier_hash(PG_FUNCTION_ARGS)
{
	struct varlena *id = PG_GETARG_IDENTIFIER_P(0);

	return hash_any((unsigned char *) VARDATA_ANY(id), VARSIZE_ANY_EXHDR(id));
}

PG_FUNCTION_INFO_V1(identifier_hash_extended);
Datum
identifier_hash_extended(PG_FUNCTION_ARGS)
{
	struct varlena *id = PG_GETARG_IDENTIFIER_P(0);

	return hash_any_extended((unsigned char *) VARDATA_ANY(id), VARSIZE_ANY_EXHDR(id),
							 PG_GETARG_INT64(1));
}
