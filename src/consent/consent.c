/*-------------------------------------------------------------------------
 *
 * consent.c
 *	  Keeping cdp.consent_state in step with identity, and the masking used
 *	  by consent-aware reads.
 *
 * A profile's decision for a purpose is the latest ledger entry among all
 * of its identifiers.  When identity moves identifiers between profiles
 * (merges, splits, rebuilds) the decisions of those profiles are
 * recomputed in the same transaction, through the hook identity offers:
 * a withdrawal recorded for an identifier that merges into another profile
 * applies to the merged profile at once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "consent/consent.h"
#include "identity/identity.h"
#include "types/identifier.h"

char	   *cdp_purpose = NULL;
bool		cdp_erasure_in_progress = false;

static void
consent_identity_changed(const int64 *profiles, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * n);
	Datum		arg;
	Oid			type = INT8ARRAYOID;
	int			rc;

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(profiles[i]);
	arg = PointerGetDatum(construct_array(d, n, INT8OID, 8, true, TYPALIGN_DOUBLE));
	rc = SPI_execute_with_args("SELECT cdp._consent_refresh($1)", 1, &type, &arg, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "cdp: refreshing consent state failed: %s", SPI_result_code_string(rc));
}

void
ConsentInit(void)
{
	identity_add_change_hook(consent_identity_changed);
}

/*
 * cdp._consent_lock_subject(cdp.identifier): before a decision is recorded,
 * wait for whatever changes the subject's profile (ingestion merging or
 * splitting it, another decision for it) and lock it until commit, so that
 * the decision in force is recomputed from every committed ledger entry of
 * every identifier the profile has.  Returns the profile, NULL if the
 * subject is unknown.
 */
PG_FUNCTION_INFO_V1(cdp_consent_lock_subject);
Datum
cdp_consent_lock_subject(PG_FUNCTION_ARGS)
{
	char	   *key = text_to_cstring((text *) PG_GETARG_VARLENA_PP(0));
	int64		pid;

	SPI_connect();
	pid = identity_lock_subject(key);
	SPI_finish();
	if (pid == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(pid);
}

/*
 * cdp._mask_identifier(cdp.identifier): the kind with the value hidden,
 * "email:***", for readers who may not see personal data.
 */
PG_FUNCTION_INFO_V1(cdp_mask_identifier);
Datum
cdp_mask_identifier(PG_FUNCTION_ARGS)
{
	struct varlena *id = PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(0));
	const char *kind,
			   *value;
	int			kindlen,
				valuelen;
	text	   *result;

	identifier_split(id, &kind, &kindlen, &value, &valuelen);
	result = (text *) palloc(VARHDRSZ + kindlen + 4);
	SET_VARSIZE(result, VARHDRSZ + kindlen + 4);
	memcpy(VARDATA(result), kind, kindlen);
	memcpy(VARDATA(result) + kindlen, ":***", 4);
	PG_RETURN_TEXT_P(result);
}

/*
 * cdp._mask_identifiers(cdp.identifier[]): each element masked.
 */
PG_FUNCTION_INFO_V1(cdp_mask_identifiers);
Datum
cdp_mask_identifiers(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	Oid			elemtype = ARR_ELEMTYPE(arr);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			dims[1];
	int			lbs[1] = {1};

	deconstruct_array(arr, elemtype, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			elems[i] = DirectFunctionCall1(cdp_mask_identifier, elems[i]);
	dims[0] = n;
	if (n == 0)
		PG_RETURN_ARRAYTYPE_P(arr);
	PG_RETURN_ARRAYTYPE_P(construct_md_array(elems, nulls, 1, dims, lbs, elemtype, -1, false, TYPALIGN_INT));
}

/*
 * cdp._mask_traits(doc jsonb, keys text[]): doc with the value of every
 * top-level key in keys replaced by "***".  Documents without such keys
 * (most event properties) are returned as they are, without copying.
 */
PG_FUNCTION_INFO_V1(cdp_mask_traits);
Datum
cdp_mask_traits(PG_FUNCTION_ARGS)
{
	Jsonb	   *doc = PG_GETARG_JSONB_P(0);
	ArrayType  *keys = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *kd;
	bool	   *kn;
	int			nk;
	bool		any = false;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	JsonbParseState *state = NULL;
	JsonbValue *res = NULL;
	JsonbValue	masked;

	if (!JB_ROOT_IS_OBJECT(doc) || JB_ROOT_IS_SCALAR(doc))
		PG_RETURN_JSONB_P(doc);
	deconstruct_array(keys, TEXTOID, -1, false, TYPALIGN_INT, &kd, &kn, &nk);
	for (int i = 0; i < nk && !any; i++)
	{
		JsonbValue	found;

		if (!kn[i])
			any = getKeyJsonValueFromContainer(&doc->root, VARDATA_ANY(kd[i]),
											   VARSIZE_ANY_EXHDR(kd[i]), &found) != NULL;
	}
	if (!any)
		PG_RETURN_JSONB_P(doc);

	masked.type = jbvString;
	masked.val.string.val = "***";
	masked.val.string.len = 3;

	it = JsonbIteratorInit(&doc->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			bool		pii = false;
			JsonbValue	value;

			for (int i = 0; i < nk && !pii; i++)
				pii = !kn[i] && VARSIZE_ANY_EXHDR(kd[i]) == v.val.string.len &&
					memcmp(VARDATA_ANY(kd[i]), v.val.string.val, v.val.string.len) == 0;
			pushJsonbValue(&state, WJB_KEY, &v);
			tok = JsonbIteratorNext(&it, &value, true);
			res = pushJsonbValue(&state, WJB_VALUE, pii ? &masked : &value);
		}
		else
			res = pushJsonbValue(&state, tok, tok < WJB_BEGIN_ARRAY ? &v : NULL);
	}
	PG_RETURN_JSONB_P(JsonbValueToJsonb(res));
}
