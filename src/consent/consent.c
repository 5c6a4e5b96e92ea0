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
#include "identity/store.h"
#include "types/identifier.h"

char	   *cdp_purpose = NULL;
bool		cdp_erasure_in_progress = false;

static void
refresh(const int64 *profiles, int n)
{
	ArrayBuild	ids;
	Datum		arg;
	Oid			type = INT8ARRAYOID;

	if (n == 0)
		return;
	ab_init(&ids, INT8OID);
	for (int i = 0; i < n; i++)
		ab_add(&ids, Int64GetDatum(profiles[i]), false);
	arg = ab_result(&ids);
	store_exec(PLAN_CONSENT_REFRESH, "SELECT cdp._consent_refresh($1)", 1, &type, &arg, NULL, false);
}

/*
 * After ingestion only extended and merged profiles, a profile's decisions
 * can differ only if it took part in a merge or gained an identifier the
 * ledger has an entry for (an identifier forgotten after its consent was
 * recorded, now seen again): an identifier new to the graph that the
 * ledger does not know adds no decision.  So only those profiles are recomputed -- most batches
 * bring new identifiers and no consent -- and the ledger is asked about
 * the new identifiers alone, one index probe each.  Splits and rebuilds
 * recompute every profile they name.
 */
static void
consent_identity_changed(const IdentityChange *c)
{
	int64	   *profiles;
	int			n = 0;

	if (c->rebuilt)
	{
		refresh(c->profiles, c->nprofiles);
		return;
	}
	profiles = palloc(sizeof(int64) * Max(c->nmerged + c->ngained, 1));
	for (int i = 0; i < c->nmerged; i++)
		profiles[n++] = c->merged[i];
	if (c->ngained > 0)
	{
		ArrayBuild	ids,
					by;
		Oid			types[2] = {IDENTIFIER_ARRAY_PLACEHOLDER, INT8ARRAYOID};
		Datum		args[2];

		ab_init(&ids, identifier_type_oid());
		ab_init(&by, INT8OID);
		for (int i = 0; i < c->ngained; i++)
		{
			ab_add_text(&ids, c->gained[i]);
			ab_add(&by, Int64GetDatum(c->gained_by[i]), false);
		}
		args[0] = ab_result(&ids);
		args[1] = ab_result(&by);
		store_exec(PLAN_CONSENT_LEDGER_KNOWS,
				   "SELECT DISTINCT u.p FROM unnest($1, $2) AS u(i, p) "
				   "WHERE EXISTS (SELECT FROM cdp.consent_data l WHERE l.subject OPERATOR(cdp.=) u.i)",
				   2, types, args, NULL, false);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;

			profiles[n++] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		}
	}
	refresh(profiles, n);
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
 *
 * Analysts' reads mask every row they see, so this is on the hot path of
 * every BI query: the key list is parsed once per query and kept sorted in
 * jsonb's own key order (length, then bytes), the document's keys are
 * matched against it in one merge pass, and the masked document is written
 * straight in jsonb's binary format -- keys as they are, values copied or
 * replaced -- instead of being decoded and re-encoded.
 */
typedef struct MaskKeys
{
	Size		arrsize;		/* the keys array as last seen, to recognise it */
	char	   *arr;
	int			n;
	const char **key;			/* sorted like jsonb object keys, no duplicates */
	int		   *len;
} MaskKeys;

static int
mask_key_cmp(const char *a, int alen, const char *b, int blen)
{
	if (alen != blen)
		return alen < blen ? -1 : 1;
	return memcmp(a, b, alen);
}

static MaskKeys *
mask_keys(FunctionCallInfo fcinfo, ArrayType *keys)
{
	MaskKeys   *mk = (MaskKeys *) fcinfo->flinfo->fn_extra;
	Size		size = VARSIZE(keys);
	MemoryContext old;
	Datum	   *kd;
	bool	   *kn;
	int			nk;

	if (mk != NULL && mk->arrsize == size && memcmp(mk->arr, keys, size) == 0)
		return mk;

	old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	mk = palloc0(sizeof(MaskKeys));
	mk->arrsize = size;
	mk->arr = palloc(size);
	memcpy(mk->arr, keys, size);
	/* the keys point into our copy of the array, which outlives the call */
	deconstruct_array((ArrayType *) mk->arr, TEXTOID, -1, false, TYPALIGN_INT, &kd, &kn, &nk);
	mk->key = palloc(sizeof(char *) * Max(nk, 1));
	mk->len = palloc(sizeof(int) * Max(nk, 1));
	for (int i = 0; i < nk; i++)
	{
		int			j;
		const char *k;
		int			klen;

		if (kn[i])
			continue;
		k = VARDATA_ANY(kd[i]);
		klen = VARSIZE_ANY_EXHDR(kd[i]);
		/* insertion sort: a handful of keys */
		for (j = mk->n; j > 0 && mask_key_cmp(k, klen, mk->key[j - 1], mk->len[j - 1]) < 0; j--)
		{
			mk->key[j] = mk->key[j - 1];
			mk->len[j] = mk->len[j - 1];
		}
		if (j > 0 && mask_key_cmp(k, klen, mk->key[j - 1], mk->len[j - 1]) == 0)
		{
			/* a duplicate: close the gap again */
			for (; j < mk->n; j++)
			{
				mk->key[j] = mk->key[j + 1];
				mk->len[j] = mk->len[j + 1];
			}
			continue;
		}
		mk->key[j] = k;
		mk->len[j] = klen;
		mk->n++;
	}
	pfree(kd);
	pfree(kn);
	MemoryContextSwitchTo(old);
	if (fcinfo->flinfo->fn_extra != NULL)
	{
		MaskKeys   *prev = (MaskKeys *) fcinfo->flinfo->fn_extra;

		pfree(prev->arr);
		pfree(prev->key);
		pfree(prev->len);
		pfree(prev);
	}
	fcinfo->flinfo->fn_extra = mk;
	return mk;
}

PG_FUNCTION_INFO_V1(cdp_mask_traits);
Datum
cdp_mask_traits(PG_FUNCTION_ARGS)
{
	Jsonb	   *doc = PG_GETARG_JSONB_P(0);
	MaskKeys   *mk = mask_keys(fcinfo, PG_GETARG_ARRAYTYPE_P(1));
	JsonbContainer *jc = &doc->root;
	int			n = JsonContainerSize(jc);
	const char *base = (const char *) &jc->children[2 * n];
	bool	   *masked;
	int			nmasked = 0;
	Size		cap;
	Jsonb	   *res;
	char	   *out;
	uint32		off;

	if (!JB_ROOT_IS_OBJECT(doc) || JB_ROOT_IS_SCALAR(doc) || n == 0 || mk->n == 0)
		PG_RETURN_JSONB_P(doc);

	/* Keys are stored sorted by (length, bytes): merge with the key list. */
	masked = palloc0(sizeof(bool) * n);
	for (int i = 0, k = 0; i < n && k < mk->n;)
	{
		int			c = mask_key_cmp(base + getJsonbOffset(jc, i), getJsonbLength(jc, i),
									 mk->key[k], mk->len[k]);

		if (c == 0)
		{
			masked[i++] = true;
			nmasked++;
			k++;
		}
		else if (c < 0)
			i++;
		else
			k++;
	}
	if (nmasked == 0)
		PG_RETURN_JSONB_P(doc);

	/*
	 * The result: the same header and key entries and bytes; each value
	 * copied, or replaced by the string "***".  Numerics and containers
	 * start int-aligned relative to the data area, so they are re-padded
	 * where their offset changes.  Every JB_OFFSET_STRIDE'th entry holds
	 * the end offset instead of the length.
	 */
	cap = VARSIZE(doc) + (Size) n * 6;	/* "***" and new padding: 3 + 3 a value at most */
	res = palloc0(cap);
	res->root.header = jc->header;
	memcpy(res->root.children, jc->children, sizeof(JEntry) * n);
	out = (char *) &res->root.children[2 * n];
	off = getJsonbOffset(jc, n);	/* the keys' bytes, unchanged */
	memcpy(out, base, off);
	for (int i = 0; i < n; i++)
	{
		int			idx = n + i;
		JEntry		je = jc->children[idx];
		uint32		type = je & JENTRY_TYPEMASK;
		uint32		start = off;

		if (masked[i])
		{
			type = JENTRY_ISSTRING;
			memcpy(out + off, "***", 3);
			off += 3;
		}
		else
		{
			uint32		voff = getJsonbOffset(jc, idx);
			uint32		vlen = getJsonbLength(jc, idx);

			if (JBE_ISNUMERIC(je) || JBE_ISCONTAINER(je))
			{
				uint32		skip = INTALIGN(voff) - voff;

				off = INTALIGN(off);	/* padding stays zero */
				memcpy(out + off, base + voff + skip, vlen - skip);
				off += vlen - skip;
			}
			else
			{
				memcpy(out + off, base + voff, vlen);
				off += vlen;
			}
		}
		if (off > JENTRY_OFFLENMASK)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("masked jsonb object is too large")));
		res->root.children[idx] = (idx % JB_OFFSET_STRIDE) == 0 ?
			type | JENTRY_HAS_OFF | off : type | (off - start);
	}
	Assert((Size) (out + off - (char *) res) <= cap);
	SET_VARSIZE(res, out + off - (char *) res);
	PG_RETURN_JSONB_P(res);
}
