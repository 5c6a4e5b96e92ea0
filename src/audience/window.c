/*-------------------------------------------------------------------------
 *
 * window.c
 *	  The value of a rolling-window computed trait from its state.
 *
 * A trait with a window keeps one entry per matching event still inside
 * it: parallel arrays of when it occurred (ats), its event id (ids) and
 * the property value as text (vals).  Its value is the aggregate over the
 * entries after the cutoff (the pass's now() minus the window), and the
 * profile is due again when the oldest of those entries leaves the window.
 *
 * Both were SQL subqueries over unnest() of the arrays, one executor
 * subplan per state row and value; in a pass they were most of the cost of
 * recomputing a profile's values.  These functions compute exactly what
 * the subqueries did:
 *
 *	count           count(*) of the entries inside
 *	sum, avg        sum(v::numeric), avg(v::numeric)
 *	min, max        min(v::numeric), max(v::numeric)
 *	first, last     v of the entry with the least / greatest (at, id)
 *	count_distinct  count(DISTINCT v)
 *
 * NULL values are skipped as the aggregates skip them; the result is a
 * jsonb scalar as to_jsonb() makes it, or NULL (no entry, or first/last
 * whose value is NULL).
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

/* The entries of one state row, deconstructed. */
typedef struct WindowEntries
{
	int			n;
	Datum	   *ats;
	bool	   *at_nulls;
	Datum	   *vals;			/* NULL when the state has no vals array */
	bool	   *val_nulls;
	Datum	   *ids;			/* NULL when the state has no ids array */
	bool	   *id_nulls;
} WindowEntries;

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

/* The arguments (cutoff, ats, vals, ids) from argno on. */
static void
window_entries(FunctionCallInfo fcinfo, int argno, WindowEntries *w)
{
	int			nvals;
	int			nids;

	w->n = array_elements(fcinfo, argno, TIMESTAMPTZOID, &w->ats, &w->at_nulls);
	nvals = array_elements(fcinfo, argno + 1, TEXTOID, &w->vals, &w->val_nulls);
	nids = array_elements(fcinfo, argno + 2, INT8OID, &w->ids, &w->id_nulls);
	if ((w->vals && nvals != w->n) || (w->ids && nids != w->n))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("computed-trait window state has %d times but %d values and %d event ids",
						w->n, nvals, nids),
				 errhint("Rebuild the computed traits with cdp.rebuild_traits().")));
}

static inline bool
inside(const WindowEntries *w, int i, TimestampTz cutoff)
{
	return !w->at_nulls[i] && DatumGetTimestampTz(w->ats[i]) > cutoff;
}

static inline bool
has_value(const WindowEntries *w, int i)
{
	return w->vals != NULL && !w->val_nulls[i];
}

static Numeric
value_numeric(const WindowEntries *w, int i)
{
	char	   *s = TextDatumGetCString(w->vals[i]);

	return DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(s),
											   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
}

/* (at, id) of entry i compared with entry j, NULL ids last as in ORDER BY. */
static int
entry_cmp(const WindowEntries *w, int i, int j)
{
	TimestampTz a = DatumGetTimestampTz(w->ats[i]);
	TimestampTz b = DatumGetTimestampTz(w->ats[j]);
	int64		x,
				y;

	if (a != b)
		return a < b ? -1 : 1;
	if (w->ids == NULL || (w->id_nulls[i] && w->id_nulls[j]))
		return 0;
	if (w->id_nulls[i] != w->id_nulls[j])
		return w->id_nulls[i] ? 1 : -1;
	x = DatumGetInt64(w->ids[i]);
	y = DatumGetInt64(w->ids[j]);
	return x < y ? -1 : (x > y ? 1 : 0);
}

static Datum
jsonb_numeric_datum(Numeric num)
{
	JsonbValue	v;

	v.type = jbvNumeric;
	v.val.numeric = num;
	return JsonbPGetDatum(JsonbValueToJsonb(&v));
}

static Datum
jsonb_text_datum(Datum t)
{
	text	   *txt = DatumGetTextPP(t);
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = VARDATA_ANY(txt);
	v.val.string.len = VARSIZE_ANY_EXHDR(txt);
	return JsonbPGetDatum(JsonbValueToJsonb(&v));
}

/* Text values compared as count(DISTINCT) does under a deterministic collation: by bytes. */
static int
text_bytes_cmp(const void *a, const void *b)
{
	text	   *x = DatumGetTextPP(*(const Datum *) a);
	text	   *y = DatumGetTextPP(*(const Datum *) b);
	int			lx = VARSIZE_ANY_EXHDR(x);
	int			ly = VARSIZE_ANY_EXHDR(y);
	int			c = memcmp(VARDATA_ANY(x), VARDATA_ANY(y), Min(lx, ly));

	return c != 0 ? c : (lx > ly) - (lx < ly);
}

typedef enum WindowAggregate
{
	WA_COUNT,
	WA_SUM,
	WA_AVG,
	WA_MIN,
	WA_MAX,
	WA_FIRST,
	WA_LAST,
	WA_COUNT_DISTINCT
} WindowAggregate;

static const char *const aggregate_names[] = {
	[WA_COUNT] = "count", [WA_SUM] = "sum", [WA_AVG] = "avg", [WA_MIN] = "min", [WA_MAX] = "max",
	[WA_FIRST] = "first", [WA_LAST] = "last", [WA_COUNT_DISTINCT] = "count_distinct"
};

static WindowAggregate
window_aggregate(text *name)
{
	char	   *s = text_to_cstring(name);

	for (int a = 0; a < (int) lengthof(aggregate_names); a++)
		if (strcmp(s, aggregate_names[a]) == 0)
			return (WindowAggregate) a;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown computed-trait aggregate \"%s\"", s),
			 errhint("The aggregates are count, sum, avg, min, max, first, last and count_distinct.")));
	pg_unreachable();
}

/* sum, avg, min or max of the numeric values inside; NULL when there are none. */
static Numeric
numeric_aggregate(const WindowEntries *w, TimestampTz cutoff, WindowAggregate agg)
{
	Numeric		acc = NULL;
	int64		count = 0;

	for (int i = 0; i < w->n; i++)
	{
		Numeric		v;

		if (!inside(w, i, cutoff) || !has_value(w, i))
			continue;
		v = value_numeric(w, i);
		count++;
		if (acc == NULL)
			acc = v;
		else if (agg == WA_SUM || agg == WA_AVG)
			acc = DatumGetNumeric(DirectFunctionCall2(numeric_add, NumericGetDatum(acc), NumericGetDatum(v)));
		else
		{
			int			c = DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(v),
															  NumericGetDatum(acc)));

			if (agg == WA_MIN ? c < 0 : c > 0)
				acc = v;
		}
	}
	/* avg(numeric) divides the exact sum by the count with numeric_div. */
	if (acc != NULL && agg == WA_AVG)
		acc = DatumGetNumeric(DirectFunctionCall2(numeric_div, NumericGetDatum(acc),
												  NumericGetDatum(int64_to_numeric(count))));
	return acc;
}

PG_FUNCTION_INFO_V1(cdp_window_value);

/*
 * cdp._window_value(aggregate text, cutoff timestamptz, ats timestamptz[],
 *                   vals text[], ids bigint[]) RETURNS jsonb
 */
Datum
cdp_window_value(PG_FUNCTION_ARGS)
{
	WindowAggregate agg;
	TimestampTz cutoff;
	WindowEntries w;
	int64		count = 0;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	agg = window_aggregate(PG_GETARG_TEXT_PP(0));
	cutoff = PG_GETARG_TIMESTAMPTZ(1);
	window_entries(fcinfo, 2, &w);

	switch (agg)
	{
		case WA_COUNT:
			for (int i = 0; i < w.n; i++)
				count += inside(&w, i, cutoff);
			PG_RETURN_DATUM(jsonb_numeric_datum(int64_to_numeric(count)));

		case WA_SUM:
		case WA_AVG:
		case WA_MIN:
		case WA_MAX:
			{
				Numeric		result = numeric_aggregate(&w, cutoff, agg);

				if (result == NULL)
					PG_RETURN_NULL();
				PG_RETURN_DATUM(jsonb_numeric_datum(result));
			}

		case WA_FIRST:
		case WA_LAST:
			{
				int			sign = agg == WA_FIRST ? -1 : 1;
				int			pick = -1;

				for (int i = 0; i < w.n; i++)
					if (inside(&w, i, cutoff) && (pick < 0 || entry_cmp(&w, i, pick) * sign > 0))
						pick = i;
				if (pick < 0 || !has_value(&w, pick))
					PG_RETURN_NULL();
				PG_RETURN_DATUM(jsonb_text_datum(w.vals[pick]));
			}

		case WA_COUNT_DISTINCT:
			{
				Datum	   *seen = palloc(sizeof(Datum) * Max(w.n, 1));
				int			k = 0;

				for (int i = 0; i < w.n; i++)
					if (inside(&w, i, cutoff) && has_value(&w, i))
						seen[k++] = w.vals[i];
				if (k > 1)
					qsort(seen, k, sizeof(Datum), text_bytes_cmp);
				for (int i = 0; i < k; i++)
					count += (i == 0 || text_bytes_cmp(&seen[i - 1], &seen[i]) != 0);
				PG_RETURN_DATUM(jsonb_numeric_datum(int64_to_numeric(count)));
			}
	}
	pg_unreachable();
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
	TimestampTz cutoff;
	Datum	   *ats;
	bool	   *nulls;
	int			n;
	bool		found = false;
	TimestampTz oldest = 0;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	cutoff = PG_GETARG_TIMESTAMPTZ(0);
	n = array_elements(fcinfo, 1, TIMESTAMPTZOID, &ats, &nulls);
	for (int i = 0; i < n; i++)
	{
		TimestampTz at;

		if (nulls[i])
			continue;
		at = DatumGetTimestampTz(ats[i]);
		if (at > cutoff && (!found || at < oldest))
			oldest = at, found = true;
	}
	if (!found)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(oldest);
}
