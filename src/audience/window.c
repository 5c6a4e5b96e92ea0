/*-------------------------------------------------------------------------
 *
 * window.c
 *	  The value of a rolling-window computed trait from its entries.
 *
 * A trait with a window keeps one entry per matching event still inside
 * it: when it occurred, its event id and the property value as text (see
 * state.c).  Its value is the aggregate over the entries after the cutoff
 * (the pass's now() minus the window), and the profile is due again when
 * the oldest of those entries leaves the window.  This computes exactly
 * what these SQL aggregates over the entries inside would:
 *
 *	count           count(*)
 *	sum, avg        sum(v::numeric), avg(v::numeric)
 *	min, max        min(v::numeric), max(v::numeric)
 *	first, last     v of the entry with the least / greatest (at, id)
 *	count_distinct  count(DISTINCT v)
 *
 * NULL values are skipped as the aggregates skip them; the result is a
 * jsonb scalar as to_jsonb() makes it, or NULL (no entry, or first/last
 * whose value is NULL).  cdp._window_value() and cdp._window_oldest()
 * expose the same code over parallel arrays, for the tests that compare it
 * with the SQL it stands for.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "trait.h"

static const char *const aggregate_names[] = {
	[TA_COUNT] = "count", [TA_SUM] = "sum", [TA_AVG] = "avg", [TA_MIN] = "min", [TA_MAX] = "max",
	[TA_FIRST] = "first", [TA_LAST] = "last", [TA_COUNT_DISTINCT] = "count_distinct"
};

TraitAggregate
trait_aggregate(const char *name, int len)
{
	for (int a = 0; a < (int) lengthof(aggregate_names); a++)
		if (strlen(aggregate_names[a]) == (size_t) len && memcmp(name, aggregate_names[a], len) == 0)
			return (TraitAggregate) a;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown computed-trait aggregate \"%.*s\"", len, name),
			 errhint("The aggregates are count, sum, avg, min, max, first, last and count_distinct.")));
	pg_unreachable();
}

/* Whether the aggregate reads its values as numbers (sum, avg, min, max). */
bool
trait_aggregate_numeric(TraitAggregate agg)
{
	return agg == TA_SUM || agg == TA_AVG || agg == TA_MIN || agg == TA_MAX;
}

/* (at, id) of a against b, NULL ids last as in ORDER BY. */
int
trait_entry_cmp(const TraitEntry *a, const TraitEntry *b)
{
	if (a->at != b->at)
		return a->at < b->at ? -1 : 1;
	if (a->id_null || b->id_null)
		return (int) a->id_null - (int) b->id_null;
	return a->id < b->id ? -1 : (a->id > b->id ? 1 : 0);
}

/* Text values compared as count(DISTINCT) does under a deterministic collation: by bytes. */
int
trait_text_cmp(const text *x, const text *y)
{
	int			lx = VARSIZE_ANY_EXHDR(x);
	int			ly = VARSIZE_ANY_EXHDR(y);
	int			c = memcmp(VARDATA_ANY(x), VARDATA_ANY(y), Min(lx, ly));

	return c != 0 ? c : (lx > ly) - (lx < ly);
}


/* A value as numeric (values of numeric aggregates were checked when folded). */
Numeric
trait_text_numeric(const text *t)
{
	char	   *s = text_to_cstring(t);

	return DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(s),
											   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
}

static inline bool
inside(const TraitEntry *e, TimestampTz cutoff)
{
	return !e->at_null && e->at > cutoff;
}


/* sum, avg, min or max of the numeric values inside; NULL when there are none. */
static Numeric
numeric_aggregate(const TraitEntry *entries, int n, TimestampTz cutoff, TraitAggregate agg)
{
	Numeric		acc = NULL;
	int64		count = 0;

	for (int i = 0; i < n; i++)
	{
		Numeric		v;

		if (!inside(&entries[i], cutoff) || entries[i].val == NULL)
			continue;
		v = trait_text_numeric(entries[i].val);
		count++;
		if (acc == NULL)
			acc = v;
		else if (agg == TA_SUM || agg == TA_AVG)
			acc = DatumGetNumeric(DirectFunctionCall2(numeric_add, NumericGetDatum(acc), NumericGetDatum(v)));
		else
		{
			int			c = DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(v),
															  NumericGetDatum(acc)));

			if (agg == TA_MIN ? c < 0 : c > 0)
				acc = v;
		}
	}
	/* avg(numeric) divides the exact sum by the count with numeric_div. */
	if (acc != NULL && agg == TA_AVG)
		acc = DatumGetNumeric(DirectFunctionCall2(numeric_div, NumericGetDatum(acc),
												  NumericGetDatum(int64_to_numeric(count))));
	return acc;
}

bool
window_value(TraitAggregate agg, TimestampTz cutoff, const TraitEntry *entries, int n, JsonbValue *result)
{
	int64		count = 0;

	switch (agg)
	{
		case TA_COUNT:
			for (int i = 0; i < n; i++)
				count += inside(&entries[i], cutoff);
			trait_set_numeric(result, int64_to_numeric(count));
			return true;

		case TA_SUM:
		case TA_AVG:
		case TA_MIN:
		case TA_MAX:
			{
				Numeric		num = numeric_aggregate(entries, n, cutoff, agg);

				if (num == NULL)
					return false;
				trait_set_numeric(result, num);
				return true;
			}

		case TA_FIRST:
		case TA_LAST:
			{
				int			sign = agg == TA_FIRST ? -1 : 1;
				const TraitEntry *pick = NULL;

				for (int i = 0; i < n; i++)
					if (inside(&entries[i], cutoff) &&
						(pick == NULL || trait_entry_cmp(&entries[i], pick) * sign > 0))
						pick = &entries[i];
				if (pick == NULL || pick->val == NULL)
					return false;
				result->type = jbvString;
				result->val.string.val = VARDATA_ANY(pick->val);
				result->val.string.len = VARSIZE_ANY_EXHDR(pick->val);
				return true;
			}

		case TA_COUNT_DISTINCT:
			{
				text	  **seen = palloc(sizeof(text *) * Max(n, 1));
				int			k = 0;

				for (int i = 0; i < n; i++)
					if (inside(&entries[i], cutoff) && entries[i].val != NULL)
						seen[k++] = entries[i].val;
				if (k > 1)
					qsort(seen, k, sizeof(text *), trait_text_ptr_cmp);
				for (int i = 0; i < k; i++)
					count += (i == 0 || trait_text_cmp(seen[i - 1], seen[i]) != 0);
				pfree(seen);
				trait_set_numeric(result, int64_to_numeric(count));
				return true;
			}
	}
	pg_unreachable();
}

bool
window_oldest(TimestampTz cutoff, const TraitEntry *entries, int n, TimestampTz *oldest)
{
	bool		found = false;

	for (int i = 0; i < n; i++)
		if (inside(&entries[i], cutoff) && (!found || entries[i].at < *oldest))
		{
			*oldest = entries[i].at;
			found = true;
		}
	return found;
}

/* SQL access over parallel arrays ------------------------------------ */

/* Deconstruct one of the arrays; a NULL array is an empty one. */
static int
array_elements(FunctionCallInfo fcinfo, int argno, Oid elmtype, Datum **elems, bool **nulls)
{
	ArrayType  *arr;
	int			n;

	*elems = NULL;
	*nulls = NULL;
	if (PG_ARGISNULL(argno))
		return 0;
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("computed-trait window state must be one-dimensional arrays")));
	if (ARR_ELEMTYPE(arr) != elmtype)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("computed-trait window state array %d has the wrong element type", argno + 1)));
	/* timestamptz and bigint: 8 bytes, by value where Datums are; text: varlena */
	if (elmtype == TEXTOID)
		deconstruct_array(arr, elmtype, -1, false, TYPALIGN_INT, elems, nulls, &n);
	else
		deconstruct_array(arr, elmtype, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, elems, nulls, &n);
	return n;
}

/* The entries from the arrays (ats, vals, ids) from argno on. */
static TraitEntry *
array_entries(FunctionCallInfo fcinfo, int argno, int *n)
{
	Datum	   *ats,
			   *vals,
			   *ids;
	bool	   *at_nulls,
			   *val_nulls,
			   *id_nulls;
	int			nvals,
				nids;
	TraitEntry *entries;

	*n = array_elements(fcinfo, argno, TIMESTAMPTZOID, &ats, &at_nulls);
	nvals = array_elements(fcinfo, argno + 1, TEXTOID, &vals, &val_nulls);
	nids = array_elements(fcinfo, argno + 2, INT8OID, &ids, &id_nulls);
	if ((vals && nvals != *n) || (ids && nids != *n))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("computed-trait window state has %d times but %d values and %d event ids",
						*n, nvals, nids),
				 errhint("Rebuild the computed traits with cdp.rebuild_traits().")));
	entries = palloc0(sizeof(TraitEntry) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
	{
		entries[i].at_null = at_nulls[i];
		if (!at_nulls[i])
			entries[i].at = DatumGetTimestampTz(ats[i]);
		entries[i].val = (vals && !val_nulls[i]) ? DatumGetTextPP(vals[i]) : NULL;
		entries[i].id_null = ids == NULL || id_nulls[i];
		if (!entries[i].id_null)
			entries[i].id = DatumGetInt64(ids[i]);
	}
	return entries;
}

PG_FUNCTION_INFO_V1(cdp_window_value);

/*
 * cdp._window_value(aggregate text, cutoff timestamptz, ats timestamptz[],
 *                   vals text[], ids bigint[]) RETURNS jsonb
 */
Datum
cdp_window_value(PG_FUNCTION_ARGS)
{
	text	   *name;
	TraitEntry *entries;
	int			n;
	JsonbValue	v;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	name = PG_GETARG_TEXT_PP(0);
	entries = array_entries(fcinfo, 2, &n);
	if (!window_value(trait_aggregate(VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name)),
					  PG_GETARG_TIMESTAMPTZ(1), entries, n, &v))
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(JsonbValueToJsonb(&v));
}

PG_FUNCTION_INFO_V1(cdp_window_oldest);

/*
 * cdp._window_oldest(cutoff timestamptz, ats timestamptz[]) RETURNS
 * timestamptz: the earliest time after the cutoff (NULL when none), from
 * which the profile's next due time follows.
 */
Datum
cdp_window_oldest(PG_FUNCTION_ARGS)
{
	TraitEntry *entries;
	int			n;
	Datum	   *ats;
	bool	   *nulls;
	TimestampTz oldest;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	n = array_elements(fcinfo, 1, TIMESTAMPTZOID, &ats, &nulls);
	entries = palloc0(sizeof(TraitEntry) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		entries[i].at_null = nulls[i];
		if (!nulls[i])
			entries[i].at = DatumGetTimestampTz(ats[i]);
	}
	if (!window_oldest(PG_GETARG_TIMESTAMPTZ(0), entries, n, &oldest))
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(oldest);
}
