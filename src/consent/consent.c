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
