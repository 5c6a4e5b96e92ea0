/*-------------------------------------------------------------------------
 *
 * state.c
 *	  The computed-trait state of a profile: one value, folded, merged and
 *	  turned into the profile's trait values in C.
 *
 * Each profile keeps the mergeable state of all its computed traits in one
 * bytea (cdp.computed_trait_values.state), next to the values it yields.
 * An audience pass reads a changed profile's row once, folds the profile's
 * new events into the state, recomputes its values and writes the row
 * once -- where one row per profile and trait cost an index probe and an
 * upsert per event and trait, and the values another read of them all.
 *
 * Per trait the state holds what its aggregate needs:
 *
 *	without a window   n (matching events); total, lo and hi of the numbers
 *					   (sum, avg, min, max); the first / last event (at, id,
 *					   value); the distinct values (count_distinct)
 *	with a window      one entry per matching event still inside it (at,
 *					   id, value), dropped as the window passes
 *
 * which is exactly what merging two profiles needs: counts and sums add,
 * extremes and first/last compare, distinct values and entries unite.  A
 * trait the state has but cdp.computed_traits no longer lists (dropped) is
 * ignored and left out when the state is next written.
 *
 * The bytea (version 1, integers in network byte order, so that a dump
 * restores on any server):
 *
 *	uint8 version, then per trait in trait_id order:
 *	  int32 trait_id, uint16 flags, int64 n,
 *	  [numeric total] [numeric lo] [numeric hi]	(each: int32 length and the
 *						numeric's binary send form, checked when read)
 *	  [first: int64 at, int64 id, value] [last: the same]
 *	  [distinct: int32 count, values sorted by bytes, no duplicates]
 *	  [window: int32 count, entries: int64 at, int64 id, value]
 *	where a value is an int32 length (-1: NULL) and its bytes.
 *
 * SQL interface (internal):
 *	cdp._trait_state_agg(trait_id, aggregate, windowed, at, id, value)
 *		the state of a profile's matching events (an aggregate)
 *	cdp._trait_state_merge(a, b)            two states combined
 *	cdp._trait_state_apply(state, incoming, as_of, trait definitions)
 *		merge, drop what left the windows, and compute (state, vals, due)
 *	cdp._trait_state_json(state)            the state, readable
 *	cdp._trait_state_from_row(...)          0.1.0's per-trait state row (exists only
 *											while the update script converts them)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "port/pg_bswap.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "trait.h"

#define STATE_VERSION 1

#define TS_WINDOW	0x0001
#define TS_TOTAL	0x0002
#define TS_LO		0x0004
#define TS_HI		0x0008
#define TS_FIRST	0x0010
#define TS_LAST		0x0020
#define TS_DISTINCT 0x0040
#define TS_ALL		0x007F

typedef struct TraitState
{
	int32		trait_id;
	uint16		flags;
	int64		n;
	Numeric		total;
	Numeric		lo;
	Numeric		hi;
	TraitEntry	first;
	TraitEntry	last;
	int			ndistinct;
	int			maxdistinct;
	bool		distinct_sorted;	/* sorted and without duplicates */
	text	  **distinct;
	int			nentries;
	int			maxentries;
	TraitEntry *entries;
} TraitState;

typedef struct ProfileState
{
	int			n;
	int			max;
	TraitState *traits;			/* in trait_id order */
} ProfileState;

/* In-memory state ---------------------------------------------------- */

static void
state_init(ProfileState *ps)
{
	ps->n = 0;
	ps->max = 4;
	ps->traits = palloc(sizeof(TraitState) * ps->max);
}

/* The state of trait_id, added (empty) if the profile has none yet. */
static TraitState *
state_trait(ProfileState *ps, int32 trait_id)
{
	int			lo = 0,
				hi = ps->n;
	TraitState *ts;

	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (ps->traits[mid].trait_id < trait_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < ps->n && ps->traits[lo].trait_id == trait_id)
		return &ps->traits[lo];
	if (ps->n == ps->max)
	{
		ps->max *= 2;
		ps->traits = repalloc(ps->traits, sizeof(TraitState) * ps->max);
	}
	memmove(&ps->traits[lo + 1], &ps->traits[lo], sizeof(TraitState) * (ps->n - lo));
	ps->n++;
	ts = &ps->traits[lo];
	memset(ts, 0, sizeof(TraitState));
	ts->trait_id = trait_id;
	ts->distinct_sorted = true;
	return ts;
}

static void
add_entry(TraitState *ts, const TraitEntry *e)
{
	if (ts->nentries == ts->maxentries)
	{
		ts->maxentries = Max(4, ts->maxentries * 2);
		ts->entries = ts->entries ? repalloc(ts->entries, sizeof(TraitEntry) * ts->maxentries)
			: palloc(sizeof(TraitEntry) * ts->maxentries);
	}
	ts->entries[ts->nentries++] = *e;
}

static void
add_distinct(TraitState *ts, text *val)
{
	if (ts->ndistinct == ts->maxdistinct)
	{
		ts->maxdistinct = Max(4, ts->maxdistinct * 2);
		ts->distinct = ts->distinct ? repalloc(ts->distinct, sizeof(text *) * ts->maxdistinct)
			: palloc(sizeof(text *) * ts->maxdistinct);
	}
	if (ts->ndistinct > 0 && trait_text_cmp(ts->distinct[ts->ndistinct - 1], val) >= 0)
		ts->distinct_sorted = false;
	ts->distinct[ts->ndistinct++] = val;
}


/* Sort the distinct values and drop duplicates. */
static void
normalize_distinct(TraitState *ts)
{
	int			k = 0;

	if (ts->distinct_sorted)
		return;
	qsort(ts->distinct, ts->ndistinct, sizeof(text *), trait_text_ptr_cmp);
	for (int i = 0; i < ts->ndistinct; i++)
		if (k == 0 || trait_text_cmp(ts->distinct[k - 1], ts->distinct[i]) != 0)
			ts->distinct[k++] = ts->distinct[i];
	ts->ndistinct = k;
	ts->distinct_sorted = true;
}

static Numeric
numeric_plus(Numeric a, Numeric b)
{
	return DatumGetNumeric(DirectFunctionCall2(numeric_add, NumericGetDatum(a), NumericGetDatum(b)));
}

static int
numeric_compare(Numeric a, Numeric b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(a), NumericGetDatum(b)));
}

static text *
copy_text(MemoryContext keep, const text *t)
{
	Size		len = VARSIZE_ANY_EXHDR(t);
	text	   *copy = MemoryContextAlloc(keep, len + VARHDRSZ);

	SET_VARSIZE(copy, len + VARHDRSZ);
	memcpy(VARDATA(copy), VARDATA_ANY(t), len);
	return copy;
}

/* *slot = a copy of v in keep, the value it had freed. */
static void
keep_numeric(Numeric *slot, bool had, Numeric v, MemoryContext keep)
{
	Numeric		copy = MemoryContextAlloc(keep, VARSIZE(v));

	memcpy(copy, v, VARSIZE(v));
	if (had)
		pfree(*slot);
	*slot = copy;
}

/*
 * Keep e as first (sign -1) or last (sign 1) if it comes before / after.
 * With keep, its value is copied there and the one it replaces freed;
 * without, it is referenced as it is (merging states in one context).
 */
static void
pick(TraitState *ts, uint16 flag, TraitEntry *kept, const TraitEntry *e, int sign, MemoryContext keep)
{
	if ((ts->flags & flag) && trait_entry_cmp(e, kept) * sign <= 0)
		return;
	if (keep && (ts->flags & flag) && kept->val)
		pfree(kept->val);
	*kept = *e;
	if (keep && e->val)
		kept->val = copy_text(keep, e->val);
	ts->flags |= flag;
}

/*
 * Fold one matching event into the state of a trait.  Only what the state
 * keeps is copied into keep (the aggregate's context, where ps lives), and
 * what it replaces is freed there: a backfill folds millions of events.
 * The numeric and distinct aggregates fold only events with a value: one
 * without leaves no trace (not even an empty state, which would give the
 * trait a key).
 */
static void
fold_entry(ProfileState *ps, MemoryContext keep, int32 trait_id, TraitAggregate agg, bool windowed,
		   const TraitEntry *e)
{
	TraitState *ts;
	MemoryContext old;

	if ((trait_aggregate_numeric(agg) || agg == TA_COUNT_DISTINCT) && e->val == NULL)
		return;
	ts = state_trait(ps, trait_id);
	if (windowed)
	{
		TraitEntry	kept = *e;

		kept.val = e->val ? copy_text(keep, e->val) : NULL;
		ts->flags |= TS_WINDOW;
		old = MemoryContextSwitchTo(keep);
		add_entry(ts, &kept);
		MemoryContextSwitchTo(old);
		return;
	}
	ts->n++;
	switch (agg)
	{
		case TA_COUNT:
			break;
		case TA_SUM:
		case TA_AVG:
		case TA_MIN:
		case TA_MAX:
			{
				Numeric		v = trait_text_numeric(e->val);
				bool		had = (ts->flags & TS_TOTAL) != 0;

				keep_numeric(&ts->total, had, had ? numeric_plus(ts->total, v) : v, keep);
				if (!had || numeric_compare(v, ts->lo) < 0)
					keep_numeric(&ts->lo, had, v, keep);
				if (!had || numeric_compare(v, ts->hi) > 0)
					keep_numeric(&ts->hi, had, v, keep);
				ts->flags |= TS_TOTAL | TS_LO | TS_HI;
				break;
			}
		case TA_FIRST:
			pick(ts, TS_FIRST, &ts->first, e, -1, keep);
			break;
		case TA_LAST:
			pick(ts, TS_LAST, &ts->last, e, 1, keep);
			break;
		case TA_COUNT_DISTINCT:
			{
				/* kept sorted and without duplicates: a repeated value costs nothing */
				int			lo = 0,
							hi;

				normalize_distinct(ts);
				hi = ts->ndistinct;
				while (lo < hi)
				{
					int			mid = (lo + hi) / 2;
					int			c = trait_text_cmp(ts->distinct[mid], e->val);

					if (c == 0)
						return;
					if (c < 0)
						lo = mid + 1;
					else
						hi = mid;
				}
				{
					text	   *v = copy_text(keep, e->val);

					ts->flags |= TS_DISTINCT;
					old = MemoryContextSwitchTo(keep);
					add_distinct(ts, v);	/* appended: moved to its place below */
					MemoryContextSwitchTo(old);
					memmove(&ts->distinct[lo + 1], &ts->distinct[lo], sizeof(text *) * (ts->ndistinct - 1 - lo));
					ts->distinct[lo] = v;
					ts->distinct_sorted = true;
				}
				break;
			}
	}
}

/* b's state of one trait combined into a's. */
static void
merge_trait(TraitState *a, const TraitState *b)
{
	a->n += b->n;
	if (b->flags & TS_TOTAL)
		a->total = (a->flags & TS_TOTAL) ? numeric_plus(a->total, b->total) : b->total;
	if ((b->flags & TS_LO) && (!(a->flags & TS_LO) || numeric_compare(b->lo, a->lo) < 0))
		a->lo = b->lo;
	if ((b->flags & TS_HI) && (!(a->flags & TS_HI) || numeric_compare(b->hi, a->hi) > 0))
		a->hi = b->hi;
	if (b->flags & TS_FIRST)
		pick(a, TS_FIRST, &a->first, &b->first, -1, NULL);
	if (b->flags & TS_LAST)
		pick(a, TS_LAST, &a->last, &b->last, 1, NULL);
	for (int i = 0; i < b->ndistinct; i++)
		add_distinct(a, b->distinct[i]);
	for (int i = 0; i < b->nentries; i++)
		add_entry(a, &b->entries[i]);
	a->flags |= b->flags & (TS_WINDOW | TS_TOTAL | TS_LO | TS_HI | TS_DISTINCT);
}

static void
merge_state(ProfileState *a, const ProfileState *b)
{
	for (int i = 0; i < b->n; i++)
		merge_trait(state_trait(a, b->traits[i].trait_id), &b->traits[i]);
}

/* Serialised form ---------------------------------------------------- */

static void
put_bytes(StringInfo buf, const void *p, int len)
{
	appendBinaryStringInfoNT(buf, p, len);
}

static void
put_int16(StringInfo buf, uint16 v)
{
	v = pg_hton16(v);
	put_bytes(buf, &v, sizeof(v));
}

static void
put_int32(StringInfo buf, int32 v)
{
	uint32		n = pg_hton32((uint32) v);

	put_bytes(buf, &n, sizeof(n));
}

static void
put_int64(StringInfo buf, int64 v)
{
	uint64		n = pg_hton64((uint64) v);

	put_bytes(buf, &n, sizeof(n));
}

static void
put_value(StringInfo buf, const text *val)
{
	put_int32(buf, val ? VARSIZE_ANY_EXHDR(val) : -1);
	if (val)
		put_bytes(buf, VARDATA_ANY(val), VARSIZE_ANY_EXHDR(val));
}

static void
put_entry(StringInfo buf, const TraitEntry *e)
{
	put_int64(buf, e->at);
	put_int64(buf, e->id);
	put_value(buf, e->val);
}

/* A numeric in its send form (what numeric_recv checks when it is read). */
static void
put_numeric(StringInfo buf, Numeric num)
{
	bytea	   *sent = DatumGetByteaPP(DirectFunctionCall1(numeric_send, NumericGetDatum(num)));

	put_int32(buf, VARSIZE_ANY_EXHDR(sent));
	put_bytes(buf, VARDATA_ANY(sent), VARSIZE_ANY_EXHDR(sent));
}

/* The state as a bytea; NULL when no trait has any. */
static bytea *
state_serialize(ProfileState *ps)
{
	StringInfoData buf;
	uint8		version = STATE_VERSION;
	bytea	   *result;

	if (ps->n == 0)
		return NULL;
	initStringInfo(&buf);
	appendStringInfoSpaces(&buf, VARHDRSZ);
	put_bytes(&buf, &version, 1);
	for (int t = 0; t < ps->n; t++)
	{
		TraitState *ts = &ps->traits[t];

		put_int32(&buf, ts->trait_id);
		put_int16(&buf, ts->flags);
		put_int64(&buf, ts->n);
		if (ts->flags & TS_TOTAL)
			put_numeric(&buf, ts->total);
		if (ts->flags & TS_LO)
			put_numeric(&buf, ts->lo);
		if (ts->flags & TS_HI)
			put_numeric(&buf, ts->hi);
		if (ts->flags & TS_FIRST)
			put_entry(&buf, &ts->first);
		if (ts->flags & TS_LAST)
			put_entry(&buf, &ts->last);
		if (ts->flags & TS_DISTINCT)
		{
			normalize_distinct(ts);
			put_int32(&buf, ts->ndistinct);
			for (int i = 0; i < ts->ndistinct; i++)
				put_value(&buf, ts->distinct[i]);
		}
		if (ts->flags & TS_WINDOW)
		{
			put_int32(&buf, ts->nentries);
			for (int i = 0; i < ts->nentries; i++)
				put_entry(&buf, &ts->entries[i]);
		}
	}
	result = (bytea *) buf.data;
	SET_VARSIZE(result, buf.len);
	return result;
}

typedef struct Reader
{
	const char *p;
	const char *end;
} Reader;

static void
corrupt(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("computed-trait state is corrupt"),
			 errhint("Recompute it from the events with cdp.rebuild_traits().")));
}

static void
get_bytes(Reader *r, void *dst, int len)
{
	if (len < 0 || r->end - r->p < len)
		corrupt();
	memcpy(dst, r->p, len);
	r->p += len;
}

static uint16
get_int16(Reader *r)
{
	uint16		v;

	get_bytes(r, &v, sizeof(v));
	return pg_ntoh16(v);
}

static int32
get_int32(Reader *r)
{
	uint32		v;

	get_bytes(r, &v, sizeof(v));
	return (int32) pg_ntoh32(v);
}

static int64
get_int64(Reader *r)
{
	uint64		v;

	get_bytes(r, &v, sizeof(v));
	return (int64) pg_ntoh64(v);
}

static text *
get_value(Reader *r)
{
	int32		len = get_int32(r);
	text	   *val;

	if (len == -1)
		return NULL;
	if (len < 0 || r->end - r->p < len)
		corrupt();
	val = (text *) palloc(len + VARHDRSZ);
	SET_VARSIZE(val, len + VARHDRSZ);
	get_bytes(r, VARDATA(val), len);
	return val;
}

static void
get_entry(Reader *r, TraitEntry *e)
{
	e->at = get_int64(r);
	e->id = get_int64(r);
	e->val = get_value(r);
	e->at_null = e->id_null = false;
}

static Numeric
get_numeric(Reader *r)
{
	int32		len = get_int32(r);
	StringInfoData sent;
	Numeric		num;
	uint16		ndigits;

	/* ndigits, weight, sign, dscale (int16 each), then the digits */
	if (len < 8 || r->end - r->p < len)
		corrupt();
	memcpy(&ndigits, r->p, sizeof(ndigits));
	if (len != 8 + 2 * (int) pg_ntoh16(ndigits))
		corrupt();
	/* numeric_recv checks sign, weight, scale and every digit */
	initStringInfo(&sent);
	appendBinaryStringInfo(&sent, r->p, len);
	r->p += len;
	num = DatumGetNumeric(DirectFunctionCall3(numeric_recv, PointerGetDatum(&sent),
											  ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
	if (sent.cursor != sent.len)
		corrupt();
	pfree(sent.data);
	return num;
}

static int32
get_count(Reader *r)
{
	int32		n = get_int32(r);

	/* each element takes at least 4 bytes */
	if (n < 0 || n > (r->end - r->p) / 4)
		corrupt();
	return n;
}

static void
state_deserialize(bytea *raw, ProfileState *ps)
{
	Reader		r;
	uint8		version;
	int32		last_id = PG_INT32_MIN;

	state_init(ps);
	if (raw == NULL)
		return;
	r.p = VARDATA_ANY(raw);
	r.end = r.p + VARSIZE_ANY_EXHDR(raw);
	get_bytes(&r, &version, 1);
	if (version != STATE_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("computed-trait state has version %d, this cdp reads version %d", version, STATE_VERSION),
				 errhint("Recompute it from the events with cdp.rebuild_traits().")));
	while (r.p < r.end)
	{
		int32		trait_id = get_int32(&r);
		TraitState *ts;

		if (trait_id <= last_id)
			corrupt();
		last_id = trait_id;
		ts = state_trait(ps, trait_id);
		ts->flags = get_int16(&r);
		if (ts->flags & ~TS_ALL)
			corrupt();
		ts->n = get_int64(&r);
		if (ts->flags & TS_TOTAL)
			ts->total = get_numeric(&r);
		if (ts->flags & TS_LO)
			ts->lo = get_numeric(&r);
		if (ts->flags & TS_HI)
			ts->hi = get_numeric(&r);
		if (ts->flags & TS_FIRST)
			get_entry(&r, &ts->first);
		if (ts->flags & TS_LAST)
			get_entry(&r, &ts->last);
		if (ts->flags & TS_DISTINCT)
		{
			int32		n = get_count(&r);

			ts->maxdistinct = Max(n, 1);
			ts->distinct = palloc(sizeof(text *) * ts->maxdistinct);
			for (int i = 0; i < n; i++)
				ts->distinct[i] = get_value(&r);
			ts->ndistinct = n;
		}
		if (ts->flags & TS_WINDOW)
		{
			int32		n = get_count(&r);

			ts->maxentries = Max(n, 1);
			ts->entries = palloc(sizeof(TraitEntry) * ts->maxentries);
			for (int i = 0; i < n; i++)
				get_entry(&r, &ts->entries[i]);
			ts->nentries = n;
		}
	}
}

static void
state_from_arg(FunctionCallInfo fcinfo, int argno, ProfileState *ps)
{
	state_deserialize(PG_ARGISNULL(argno) ? NULL : PG_GETARG_BYTEA_PP(argno), ps);
}

/* Folding events: an aggregate --------------------------------------- */

PG_FUNCTION_INFO_V1(cdp_trait_state_fold);

/*
 * cdp._trait_state_fold(internal, trait_id integer, aggregate text,
 *                       windowed boolean, at timestamptz, id bigint,
 *                       value text): the transition of
 * cdp._trait_state_agg(), one matching event of one trait at a time.
 */
Datum
cdp_trait_state_fold(PG_FUNCTION_ARGS)
{
	MemoryContext aggcontext;
	ProfileState *ps;
	TraitEntry	e = {0};
	text	   *agg;

	if (!AggCheckCallContext(fcinfo, &aggcontext))
		elog(ERROR, "cdp._trait_state_fold called in a non-aggregate context");
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3) || PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a folded computed-trait event needs its trait, aggregate, window flag and time")));
	if (PG_ARGISNULL(0))
	{
		MemoryContext old = MemoryContextSwitchTo(aggcontext);

		ps = palloc(sizeof(ProfileState));
		state_init(ps);
		MemoryContextSwitchTo(old);
	}
	else
		ps = (ProfileState *) PG_GETARG_POINTER(0);
	agg = PG_GETARG_TEXT_PP(2);
	e.at = PG_GETARG_TIMESTAMPTZ(4);
	e.id_null = PG_ARGISNULL(5);
	if (!e.id_null)
		e.id = PG_GETARG_INT64(5);
	/* (in this call's memory: fold_entry copies what it keeps) */
	e.val = PG_ARGISNULL(6) ? NULL : PG_GETARG_TEXT_PP(6);
	fold_entry(ps, aggcontext, PG_GETARG_INT32(1), trait_aggregate(VARDATA_ANY(agg), VARSIZE_ANY_EXHDR(agg)),
			   PG_GETARG_BOOL(3), &e);
	PG_RETURN_POINTER(ps);
}

PG_FUNCTION_INFO_V1(cdp_trait_state_final);

Datum
cdp_trait_state_final(PG_FUNCTION_ARGS)
{
	bytea	   *result;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	result = state_serialize((ProfileState *) PG_GETARG_POINTER(0));
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(result);
}

/* Merging ------------------------------------------------------------ */

PG_FUNCTION_INFO_V1(cdp_trait_state_merge);

/* cdp._trait_state_merge(a bytea, b bytea) RETURNS bytea */
Datum
cdp_trait_state_merge(PG_FUNCTION_ARGS)
{
	ProfileState a,
				b;
	bytea	   *result;

	if (PG_ARGISNULL(0) && PG_ARGISNULL(1))
		PG_RETURN_NULL();
	if (PG_ARGISNULL(1))
		PG_RETURN_DATUM(PG_GETARG_DATUM(0));
	if (PG_ARGISNULL(0))
		PG_RETURN_DATUM(PG_GETARG_DATUM(1));
	state_from_arg(fcinfo, 0, &a);
	state_from_arg(fcinfo, 1, &b);
	merge_state(&a, &b);
	result = state_serialize(&a);
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(result);
}

/* Values ------------------------------------------------------------- */

typedef struct TraitDef
{
	int32		trait_id;
	char	   *name;
	int			name_len;
	TraitAggregate agg;
	bool		windowed;
	Interval   *window;
} TraitDef;

/*
 * The definitions, parsed once per statement (fn_extra): from copies of the
 * four arrays in a context of their own, reused while the arguments are
 * equal (the pass gives the same arrays for every row).
 */
typedef struct TraitDefs
{
	MemoryContext cxt;
	Datum		args[4];
	int			n;
	TraitDef   *defs;			/* in trait_id order */
} TraitDefs;

static int
def_cmp(const void *a, const void *b)
{
	int32		x = ((const TraitDef *) a)->trait_id;
	int32		y = ((const TraitDef *) b)->trait_id;

	return (x > y) - (x < y);
}

static Datum *
def_array(Datum arr, Oid elmtype, int16 len, bool byval, char align, bool **nulls, int *n)
{
	Datum	   *elems;

	deconstruct_array(DatumGetArrayTypeP(arr), elmtype, len, byval, align, &elems, nulls, n);
	return elems;
}

static TraitDefs *
trait_defs(FunctionCallInfo fcinfo, int argno)
{
	TraitDefs  *td = (TraitDefs *) fcinfo->flinfo->fn_extra;
	Datum		cur[4];
	MemoryContext cxt;
	MemoryContext old;
	Datum	   *ids,
			   *names,
			   *aggs,
			   *windows;
	bool	   *id_nulls,
			   *name_nulls,
			   *agg_nulls,
			   *window_nulls;
	int			nids,
				nnames,
				naggs,
				nwindows;

	for (int i = 0; i < 4; i++)
	{
		if (PG_ARGISNULL(argno + i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("computed-trait definitions need trait ids, names, aggregates and windows")));
		cur[i] = PointerGetDatum(PG_DETOAST_DATUM(PG_GETARG_DATUM(argno + i)));
	}
	if (td != NULL)
	{
		bool		same = true;

		for (int i = 0; i < 4 && same; i++)
			same = datumIsEqual(td->args[i], cur[i], false, -1);
		if (same)
			return td;
		MemoryContextDelete(td->cxt);
		fcinfo->flinfo->fn_extra = NULL;
	}

	cxt = AllocSetContextCreate(fcinfo->flinfo->fn_mcxt, "cdp trait definitions", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	td = palloc0(sizeof(TraitDefs));
	td->cxt = cxt;
	for (int i = 0; i < 4; i++)
		td->args[i] = datumCopy(cur[i], false, -1);
	/* the definitions point into these copies */
	ids = def_array(td->args[0], INT4OID, 4, true, TYPALIGN_INT, &id_nulls, &nids);
	names = def_array(td->args[1], TEXTOID, -1, false, TYPALIGN_INT, &name_nulls, &nnames);
	aggs = def_array(td->args[2], TEXTOID, -1, false, TYPALIGN_INT, &agg_nulls, &naggs);
	windows = def_array(td->args[3], INTERVALOID, sizeof(Interval), false, TYPALIGN_DOUBLE,
						&window_nulls, &nwindows);
	if (nnames != nids || naggs != nids || nwindows != nids)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("computed-trait definitions need as many names, aggregates and windows as trait ids")));
	td->n = nids;
	td->defs = palloc0(sizeof(TraitDef) * Max(nids, 1));
	for (int i = 0; i < nids; i++)
	{
		TraitDef   *d = &td->defs[i];
		text	   *name,
				   *agg;

		if (id_nulls[i] || name_nulls[i] || agg_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("a computed-trait definition has no id, name or aggregate")));
		d->trait_id = DatumGetInt32(ids[i]);
		name = DatumGetTextPP(names[i]);
		d->name = VARDATA_ANY(name);
		d->name_len = VARSIZE_ANY_EXHDR(name);
		agg = DatumGetTextPP(aggs[i]);
		d->agg = trait_aggregate(VARDATA_ANY(agg), VARSIZE_ANY_EXHDR(agg));
		d->windowed = !window_nulls[i];
		d->window = d->windowed ? DatumGetIntervalP(windows[i]) : NULL;
	}
	qsort(td->defs, td->n, sizeof(TraitDef), def_cmp);
	MemoryContextSwitchTo(old);
	fcinfo->flinfo->fn_extra = td;
	return td;
}

static const TraitDef *
find_def(const TraitDefs *td, int32 trait_id)
{
	TraitDef	key = {.trait_id = trait_id};

	return bsearch(&key, td->defs, td->n, sizeof(TraitDef), def_cmp);
}

static TimestampTz
shift(TimestampTz t, Interval *window, bool back)
{
	return DatumGetTimestampTz(DirectFunctionCall2(back ? timestamptz_mi_interval : timestamptz_pl_interval,
												   TimestampTzGetDatum(t), IntervalPGetDatum(window)));
}


/* The value of a trait without a window; false when it is SQL NULL. */
static bool
plain_value(const TraitDef *d, TraitState *ts, JsonbValue *v)
{
	const TraitEntry *e;

	switch (d->agg)
	{
		case TA_COUNT:
			trait_set_numeric(v, int64_to_numeric(ts->n));
			return true;
		case TA_SUM:
			if (!(ts->flags & TS_TOTAL))
				return false;
			trait_set_numeric(v, ts->total);
			return true;
		case TA_AVG:
			if (!(ts->flags & TS_TOTAL) || ts->n == 0)
				return false;
			trait_set_numeric(v, DatumGetNumeric(DirectFunctionCall2(numeric_div, NumericGetDatum(ts->total),
															   NumericGetDatum(int64_to_numeric(ts->n)))));
			return true;
		case TA_MIN:
		case TA_MAX:
			if (!(ts->flags & (d->agg == TA_MIN ? TS_LO : TS_HI)))
				return false;
			trait_set_numeric(v, d->agg == TA_MIN ? ts->lo : ts->hi);
			return true;
		case TA_FIRST:
		case TA_LAST:
			if (!(ts->flags & (d->agg == TA_FIRST ? TS_FIRST : TS_LAST)))
				return false;
			e = d->agg == TA_FIRST ? &ts->first : &ts->last;
			if (e->val == NULL)
				return false;
			v->type = jbvString;
			v->val.string.val = VARDATA_ANY(e->val);
			v->val.string.len = VARSIZE_ANY_EXHDR(e->val);
			return true;
		case TA_COUNT_DISTINCT:
			if (!(ts->flags & TS_DISTINCT))
				return false;
			normalize_distinct(ts);
			trait_set_numeric(v, int64_to_numeric(ts->ndistinct));
			return true;
	}
	pg_unreachable();
}

PG_FUNCTION_INFO_V1(cdp_trait_state_apply);

/*
 * cdp._trait_state_apply(state bytea, incoming bytea, as_of timestamptz,
 *                        trait_ids integer[], names text[], aggregates text[],
 *                        windows interval[],
 *                        OUT state bytea, OUT vals jsonb, OUT due timestamptz)
 *
 * incoming merged into state; entries that have left their window as of
 * as_of dropped (a windowed trait left with none is gone), as are traits
 * no longer defined; then the values (an object of every trait the state
 * has, by name) and when they next change on their own (the oldest entry
 * leaving its window).
 */
Datum
cdp_trait_state_apply(PG_FUNCTION_ARGS)
{
	ProfileState ps,
				incoming;
	TraitDefs  *td;
	TimestampTz as_of;
	TimestampTz due = 0;
	bool		has_due = false;
	JsonbParseState *parse = NULL;
	JsonbValue *obj;
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	bytea	   *state;
	int			k = 0;

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("computed-trait values need the time they are computed as of")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "cdp._trait_state_apply must return a composite");
	as_of = PG_GETARG_TIMESTAMPTZ(2);
	td = trait_defs(fcinfo, 3);
	state_from_arg(fcinfo, 0, &ps);
	if (!PG_ARGISNULL(1))
	{
		state_from_arg(fcinfo, 1, &incoming);
		merge_state(&ps, &incoming);
	}

	pushJsonbValue(&parse, WJB_BEGIN_OBJECT, NULL);
	for (int t = 0; t < ps.n; t++)
	{
		TraitState *ts = &ps.traits[t];
		const TraitDef *d = find_def(td, ts->trait_id);
		JsonbValue	key,
					v;

		if (d == NULL)
			continue;			/* dropped */
		if (d->windowed)
		{
			TimestampTz cutoff = shift(as_of, d->window, true);
			TimestampTz oldest;
			int			kept = 0;

			for (int i = 0; i < ts->nentries; i++)
				if (ts->entries[i].at > cutoff)
					ts->entries[kept++] = ts->entries[i];
			ts->nentries = kept;
			if (kept == 0)
				continue;		/* nothing left inside: as if never seen */
			if (window_oldest(cutoff, ts->entries, kept, &oldest))
			{
				oldest = shift(oldest, d->window, false);
				if (!has_due || oldest < due)
					due = oldest, has_due = true;
			}
			if (!window_value(d->agg, cutoff, ts->entries, kept, &v))
				v.type = jbvNull;
		}
		else if (!plain_value(d, ts, &v))
			v.type = jbvNull;
		key.type = jbvString;
		key.val.string.val = d->name;
		key.val.string.len = d->name_len;
		pushJsonbValue(&parse, WJB_KEY, &key);
		pushJsonbValue(&parse, WJB_VALUE, &v);
		ps.traits[k++] = *ts;
	}
	obj = pushJsonbValue(&parse, WJB_END_OBJECT, NULL);
	ps.n = k;

	state = state_serialize(&ps);
	if (state == NULL)
		nulls[0] = true;
	else
		values[0] = PointerGetDatum(state);
	values[1] = JsonbPGetDatum(JsonbValueToJsonb(obj));
	if (has_due)
		values[2] = TimestampTzGetDatum(due);
	else
		nulls[2] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* Inspection --------------------------------------------------------- */

static void
push_key(JsonbParseState **parse, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(parse, WJB_KEY, &k);
}

static void
push_scalar(JsonbParseState **parse, JsonbIteratorToken tok, JsonbValue *v)
{
	pushJsonbValue(parse, tok, v);
}

static void
push_numeric(JsonbParseState **parse, const char *key, Numeric num)
{
	JsonbValue	v;

	trait_set_numeric(&v, num);
	if (key)
		push_key(parse, key);
	push_scalar(parse, key ? WJB_VALUE : WJB_ELEM, &v);
}

static void
push_text(JsonbParseState **parse, const char *key, const text *t)
{
	JsonbValue	v;

	if (t == NULL)
		v.type = jbvNull;
	else
	{
		v.type = jbvString;
		v.val.string.val = VARDATA_ANY(t);
		v.val.string.len = VARSIZE_ANY_EXHDR(t);
	}
	if (key)
		push_key(parse, key);
	push_scalar(parse, key ? WJB_VALUE : WJB_ELEM, &v);
}

static void
push_time(JsonbParseState **parse, const char *key, TimestampTz at)
{
	text	   *t = cstring_to_text(timestamptz_to_str(at));

	push_text(parse, key, t);
}

static void
push_entry(JsonbParseState **parse, const char *key, const TraitEntry *e)
{
	if (key)
		push_key(parse, key);
	pushJsonbValue(parse, WJB_BEGIN_OBJECT, NULL);
	push_time(parse, "at", e->at);
	push_numeric(parse, "id", int64_to_numeric(e->id));
	push_text(parse, "value", e->val);
	pushJsonbValue(parse, WJB_END_OBJECT, NULL);
}

static int
entry_order(const void *a, const void *b)
{
	return trait_entry_cmp((const TraitEntry *) a, (const TraitEntry *) b);
}

PG_FUNCTION_INFO_V1(cdp_trait_state_json);

/*
 * cdp._trait_state_json(state bytea) RETURNS jsonb: the state readable,
 * one member per trait id (window entries in time order).
 */
Datum
cdp_trait_state_json(PG_FUNCTION_ARGS)
{
	ProfileState ps;
	JsonbParseState *parse = NULL;
	JsonbValue *obj;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	state_from_arg(fcinfo, 0, &ps);
	pushJsonbValue(&parse, WJB_BEGIN_OBJECT, NULL);
	for (int t = 0; t < ps.n; t++)
	{
		TraitState *ts = &ps.traits[t];

		/* (the key is kept by reference until the end: one string each) */
		push_key(&parse, psprintf("%d", ts->trait_id));
		pushJsonbValue(&parse, WJB_BEGIN_OBJECT, NULL);
		if (!(ts->flags & TS_WINDOW))
			push_numeric(&parse, "n", int64_to_numeric(ts->n));
		if (ts->flags & TS_TOTAL)
			push_numeric(&parse, "total", ts->total);
		if (ts->flags & TS_LO)
			push_numeric(&parse, "lo", ts->lo);
		if (ts->flags & TS_HI)
			push_numeric(&parse, "hi", ts->hi);
		if (ts->flags & TS_FIRST)
			push_entry(&parse, "first", &ts->first);
		if (ts->flags & TS_LAST)
			push_entry(&parse, "last", &ts->last);
		if (ts->flags & TS_DISTINCT)
		{
			push_key(&parse, "distinct");
			pushJsonbValue(&parse, WJB_BEGIN_ARRAY, NULL);
			for (int i = 0; i < ts->ndistinct; i++)
				push_text(&parse, NULL, ts->distinct[i]);
			pushJsonbValue(&parse, WJB_END_ARRAY, NULL);
		}
		if (ts->flags & TS_WINDOW)
		{
			if (ts->nentries > 1)
				qsort(ts->entries, ts->nentries, sizeof(TraitEntry), entry_order);
			push_key(&parse, "window");
			pushJsonbValue(&parse, WJB_BEGIN_ARRAY, NULL);
			for (int i = 0; i < ts->nentries; i++)
				push_entry(&parse, NULL, &ts->entries[i]);
			pushJsonbValue(&parse, WJB_END_ARRAY, NULL);
		}
		pushJsonbValue(&parse, WJB_END_OBJECT, NULL);
	}
	obj = pushJsonbValue(&parse, WJB_END_OBJECT, NULL);
	PG_RETURN_JSONB_P(JsonbValueToJsonb(obj));
}

/* Upgrade from 0.1.0 ------------------------------------------------- */

PG_FUNCTION_INFO_V1(cdp_trait_state_from_row);

/*
 * cdp._trait_state_from_row(trait_id integer, n bigint, total numeric,
 *     lo numeric, hi numeric, first_at timestamptz, first_id bigint,
 *     first_val text, last_at timestamptz, last_id bigint, last_val text,
 *     vals text[], ats timestamptz[], ids bigint[]) RETURNS bytea
 *
 * One row of 0.1.0's cdp.computed_trait_state as the state of one trait
 * (the upgrade script combines a profile's rows with
 * cdp._trait_state_merge).  A row with ats kept window entries (vals and
 * ids alongside); otherwise vals were the distinct values.
 */
Datum
cdp_trait_state_from_row(PG_FUNCTION_ARGS)
{
	ProfileState ps;
	TraitState *ts;
	bytea	   *result;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	state_init(&ps);
	ts = state_trait(&ps, PG_GETARG_INT32(0));
	if (!PG_ARGISNULL(12))
	{
		Datum	   *ats,
				   *vals = NULL,
				   *ids = NULL;
		bool	   *at_nulls,
				   *val_nulls = NULL,
				   *id_nulls = NULL;
		int			n,
					nvals = 0,
					nids = 0;

		deconstruct_array(PG_GETARG_ARRAYTYPE_P(12), TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
						  &ats, &at_nulls, &n);
		if (!PG_ARGISNULL(11))
			deconstruct_array(PG_GETARG_ARRAYTYPE_P(11), TEXTOID, -1, false, TYPALIGN_INT,
							  &vals, &val_nulls, &nvals);
		if (!PG_ARGISNULL(13))
			deconstruct_array(PG_GETARG_ARRAYTYPE_P(13), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
							  &ids, &id_nulls, &nids);
		if ((vals && nvals != n) || (ids && nids != n))
			corrupt();
		ts->flags |= TS_WINDOW;
		for (int i = 0; i < n; i++)
		{
			TraitEntry	e = {0};

			if (at_nulls[i] || ids == NULL || id_nulls[i])
				continue;		/* never written so: every entry is an event */
			e.at = DatumGetTimestampTz(ats[i]);
			e.id = DatumGetInt64(ids[i]);
			e.val = (vals && !val_nulls[i]) ? DatumGetTextPCopy(vals[i]) : NULL;
			add_entry(ts, &e);
		}
	}
	else
	{
		ts->n = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1);
		if (!PG_ARGISNULL(2))
			ts->total = PG_GETARG_NUMERIC(2), ts->flags |= TS_TOTAL;
		if (!PG_ARGISNULL(3))
			ts->lo = PG_GETARG_NUMERIC(3), ts->flags |= TS_LO;
		if (!PG_ARGISNULL(4))
			ts->hi = PG_GETARG_NUMERIC(4), ts->flags |= TS_HI;
		for (int which = 0; which < 2; which++)
		{
			int			base = which == 0 ? 5 : 8;
			TraitEntry *e = which == 0 ? &ts->first : &ts->last;

			if (PG_ARGISNULL(base))
				continue;
			e->at = PG_GETARG_TIMESTAMPTZ(base);
			e->id_null = PG_ARGISNULL(base + 1);
			if (!e->id_null)
				e->id = PG_GETARG_INT64(base + 1);
			e->val = PG_ARGISNULL(base + 2) ? NULL : PG_GETARG_TEXT_PP(base + 2);
			ts->flags |= which == 0 ? TS_FIRST : TS_LAST;
		}
		if (!PG_ARGISNULL(11))
		{
			Datum	   *vals;
			bool	   *nulls;
			int			n;

			deconstruct_array(PG_GETARG_ARRAYTYPE_P(11), TEXTOID, -1, false, TYPALIGN_INT, &vals, &nulls, &n);
			ts->flags |= TS_DISTINCT;
			for (int i = 0; i < n; i++)
				if (!nulls[i])
					add_distinct(ts, DatumGetTextPP(vals[i]));
		}
	}
	result = state_serialize(&ps);
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(result);
}
