/*-------------------------------------------------------------------------
 *
 * value.c
 *	  The numbers computed traits aggregate, read from event properties.
 *
 * sum, avg, min and max fold a property of every matching event, once per
 * event and trait in each audience pass.  Properties come from many
 * sources: a JSON number, or a string holding one ("49.90" from a form or
 * a CSV export).  Anything else -- other strings, booleans, objects, and
 * the spellings numeric_in would also take but a person rarely means as an
 * amount (NaN, Infinity) -- counts as no value.
 *
 * This was an SQL function with a regular expression; called several
 * times per event (the filter, then each aggregate), and never inlined
 * because of its search_path setting, it was the largest single cost of
 * folding a batch of order events.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

/* [[:space:]] as PostgreSQL's regular expressions read \s. */
static inline bool
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static inline bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/*
 * Does s[0..len) read as a decimal number:
 *   \s* [-+]? ( digits [.] digits? | . digits ) ( [eE] [-+]? digits )? \s*
 */
static bool
decimal_text(const char *s, int len)
{
	int			i = 0;
	int			before = 0;
	int			after = 0;

	while (i < len && is_space(s[i]))
		i++;
	if (i < len && (s[i] == '-' || s[i] == '+'))
		i++;
	while (i < len && is_digit(s[i]))
		i++, before++;
	if (i < len && s[i] == '.')
	{
		i++;
		while (i < len && is_digit(s[i]))
			i++, after++;
	}
	if (before == 0 && after == 0)
		return false;
	if (i < len && (s[i] == 'e' || s[i] == 'E'))
	{
		int			exponent = 0;

		i++;
		if (i < len && (s[i] == '-' || s[i] == '+'))
			i++;
		while (i < len && is_digit(s[i]))
			i++, exponent++;
		if (exponent == 0)
			return false;
	}
	while (i < len && is_space(s[i]))
		i++;
	return i == len;
}

PG_FUNCTION_INFO_V1(cdp_jsonb_numeric);

/*
 * cdp._jsonb_numeric(jsonb) RETURNS numeric: a JSON number, or a string
 * holding a decimal number, as numeric; NULL for anything else.
 */
Datum
cdp_jsonb_numeric(PG_FUNCTION_ARGS)
{
	Jsonb	   *jb = PG_GETARG_JSONB_P(0);
	JsonbValue	v;
	char	   *text;

	/* Properties are looked up with ->, so the value is a scalar document. */
	if (!JsonbExtractScalar(&jb->root, &v))
		PG_RETURN_NULL();

	switch (v.type)
	{
		case jbvNumeric:
			/* a copy: v points into the argument */
			PG_RETURN_DATUM(datumCopy(NumericGetDatum(v.val.numeric), false, -1));
		case jbvString:
			if (!decimal_text(v.val.string.val, v.val.string.len))
				PG_RETURN_NULL();
			text = pnstrdup(v.val.string.val, v.val.string.len);
			PG_RETURN_DATUM(DirectFunctionCall3(numeric_in, CStringGetDatum(text),
												ObjectIdGetDatum(InvalidOid),
												Int32GetDatum(-1)));
		default:
			PG_RETURN_NULL();
	}
}
