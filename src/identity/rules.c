/*-------------------------------------------------------------------------
 *
 * rules.c
 *	  cdp.identity_rules in memory: priorities, limits and blocked values
 *	  per identifier kind.
 *
 * The row '*' gives the blocked values and pattern every kind shares, and
 * the priority and limit of kinds without a row of their own.  Kinds met
 * while ingesting are appended with those defaults, so every identifier
 * has a kind index.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_collation.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "identity/graph.h"

static void
add_kind(IdentityRules *rules, const RuleKind *k)
{
	if (rules->nkinds == rules->maxkinds)
	{
		rules->maxkinds = Max(16, rules->maxkinds * 2);
		rules->kinds = rules->kinds
			? repalloc(rules->kinds, rules->maxkinds * sizeof(RuleKind))
			: MemoryContextAlloc(rules->cxt, rules->maxkinds * sizeof(RuleKind));
	}
	rules->kinds[rules->nkinds++] = *k;
}

/*
 * Read cdp.identity_rules.  Must be called while connected to SPI; the
 * result is allocated in the caller's memory context (the one current
 * before SPI_connect is not reachable here, so pass it in via
 * CurrentMemoryContext at call time: we copy into it).
 */
IdentityRules *
rules_load(void)
{
	MemoryContext target = CurrentMemoryContext;
	IdentityRules *rules = palloc0(sizeof(IdentityRules));
	int			rc;

	rules->cxt = target;
	rules->deflt.kind = "*";
	rules->deflt.priority = 10;

	rc = SPI_execute("SELECT kind, priority, coalesce(max_per_profile, 0), blocked_values, blocked_pattern "
					 "FROM cdp.identity_rules ORDER BY kind", true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "cdp: reading cdp.identity_rules failed: %s", SPI_result_code_string(rc));

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		RuleKind	k;
		Datum		d;
		MemoryContext old = MemoryContextSwitchTo(target);

		memset(&k, 0, sizeof(k));
		k.kind = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
		k.priority = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		k.max_per_profile = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		d = SPI_getbinval(tup, desc, 4, &isnull);
		if (!isnull)
		{
			Datum	   *elems;
			bool	   *nulls;
			int			n;

			deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
							  &elems, &nulls, &n);
			for (int j = 0; j < n; j++)
				if (!nulls[j])
					k.blocked_values = lappend(k.blocked_values, TextDatumGetCString(elems[j]));
		}
		d = SPI_getbinval(tup, desc, 5, &isnull);
		if (!isnull)
			k.blocked_pattern = DatumGetTextPCopy(d);

		if (strcmp(k.kind, "*") == 0)
			rules->deflt = k;
		else
			add_kind(rules, &k);
		MemoryContextSwitchTo(old);
	}
	return rules;
}

int
rules_kind_index(IdentityRules *rules, const char *kind, int len)
{
	RuleKind	k;

	for (int i = 0; i < rules->nkinds; i++)
		if (strncmp(rules->kinds[i].kind, kind, len) == 0 && rules->kinds[i].kind[len] == '\0')
			return i;

	/* A kind without a row: the '*' priority and limit, no blocks of its own. */
	memset(&k, 0, sizeof(k));
	k.kind = MemoryContextAlloc(rules->cxt, len + 1);
	memcpy(k.kind, kind, len);
	k.kind[len] = '\0';
	k.priority = rules->deflt.priority;
	k.max_per_profile = rules->deflt.max_per_profile;
	add_kind(rules, &k);
	return rules->nkinds - 1;
}

static const char *
blocked_by(const RuleKind *k, const char *value, text *valtext)
{
	ListCell   *lc;

	foreach(lc, k->blocked_values)
	{
		if (pg_strcasecmp((const char *) lfirst(lc), value) == 0)
			return psprintf("the value is blocked for %s (identity_rules.blocked_values)",
							strcmp(k->kind, "*") == 0 ? "every kind" : k->kind);
	}
	if (k->blocked_pattern != NULL &&
		DatumGetBool(DirectFunctionCall2Coll(textregexeq, C_COLLATION_OID,
											 PointerGetDatum(valtext),
											 PointerGetDatum(k->blocked_pattern))))
		return psprintf("the value matches the blocked pattern %s for %s",
						text_to_cstring(k->blocked_pattern),
						strcmp(k->kind, "*") == 0 ? "every kind" : k->kind);
	return NULL;
}

/* Why the value may not link (a sentence), or NULL. */
const char *
rules_blocked(IdentityRules *rules, int kind, const char *value)
{
	text	   *valtext = cstring_to_text(value);
	const char *why;

	why = blocked_by(&rules->deflt, value, valtext);
	if (why == NULL)
		why = blocked_by(&rules->kinds[kind], value, valtext);
	pfree(valtext);
	return why;
}
