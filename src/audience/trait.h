/*-------------------------------------------------------------------------
 *
 * trait.h
 *	  Computed traits: the aggregates, and the entries of a rolling window.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_TRAIT_H
#define CDP_TRAIT_H

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

/* The aggregates of cdp.create_trait (cdp.computed_traits.aggregate). */
typedef enum TraitAggregate
{
	TA_COUNT,
	TA_SUM,
	TA_AVG,
	TA_MIN,
	TA_MAX,
	TA_FIRST,
	TA_LAST,
	TA_COUNT_DISTINCT
} TraitAggregate;

/* One matching event as a trait keeps it: when, which, and its value. */
typedef struct TraitEntry
{
	TimestampTz at;
	int64		id;
	text	   *val;			/* NULL: no value */
	bool		at_null;
	bool		id_null;
} TraitEntry;

extern TraitAggregate trait_aggregate(const char *name, int len);
extern bool trait_aggregate_numeric(TraitAggregate agg);
extern int	trait_entry_cmp(const TraitEntry *a, const TraitEntry *b);
extern int	trait_text_cmp(const text *x, const text *y);
extern Numeric trait_text_numeric(const text *t);

/* qsort comparator of text pointers, by trait_text_cmp */
static inline int
trait_text_ptr_cmp(const void *a, const void *b)
{
	return trait_text_cmp(*(text *const *) a, *(text *const *) b);
}

static inline void
trait_set_numeric(JsonbValue *v, Numeric num)
{
	v->type = jbvNumeric;
	v->val.numeric = num;
}

/*
 * The value of a windowed trait over the entries after cutoff, as a jsonb
 * scalar; false when it is SQL NULL.  *oldest (when found) is the earliest
 * entry after the cutoff.
 */
extern bool window_value(TraitAggregate agg, TimestampTz cutoff,
						 const TraitEntry *entries, int n, JsonbValue *result);
extern bool window_oldest(TimestampTz cutoff, const TraitEntry *entries, int n,
						  TimestampTz *oldest);

#endif							/* CDP_TRAIT_H */
