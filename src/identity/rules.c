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
#include "mb/pg_wchar.h"
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
 * What blocked_by() checks before comparing a value with each blocked one:
 * whether any blocked value has its length and, folded, its first byte.
 * A rebuild checks millions of identifiers, nearly all of them unblocked.
 */
static void
index_blocked_values(RuleKind *k)
{
	ListCell   *lc;

	k->blocked_lens = 0;
	memset(k->blocked_first, 0, sizeof(k->blocked_first));
	foreach(lc, k->blocked_values)
	{
		const char *b = lfirst(lc);
		unsigned char first = pg_tolower((unsigned char) b[0]);

		k->blocked_lens |= UINT64CONST(1) << Min(strlen(b), 63);
		for (int c = 0; c < 256; c++)
			if (pg_tolower((unsigned char) c) == first)
				k->blocked_first[c] = true;
	}
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

		index_blocked_values(&k);
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

	/* the first byte first: restitch looks up a kind for each of millions of identifiers */
	for (int i = 0; i < rules->nkinds; i++)
		if (rules->kinds[i].kind[0] == (len > 0 ? kind[0] : '\0') &&
			strncmp(rules->kinds[i].kind, kind, len) == 0 && rules->kinds[i].kind[len] == '\0')
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

static void
free_regex(void *arg)
{
	pg_regfree((regex_t *) arg);
}

/*
 * The pattern compiled as textregexeq() would (advanced syntax, C
 * collation), once per rules_load(): a rebuild checks millions of values.
 * The regex library allocates with malloc; free it with rules->cxt.
 */
static regex_t *
compile_pattern(IdentityRules *rules, text *pattern)
{
	int			len = VARSIZE_ANY_EXHDR(pattern);
	pg_wchar   *w = palloc((len + 1) * sizeof(pg_wchar));
	int			wlen = pg_mb2wchar_with_len(VARDATA_ANY(pattern), w, len);
	regex_t    *re = MemoryContextAlloc(rules->cxt, sizeof(regex_t));
	MemoryContextCallback *cb;
	int			rc;

	rc = pg_regcomp(re, w, wlen, REG_ADVANCED, C_COLLATION_OID);
	pfree(w);
	if (rc != REG_OKAY)
	{
		char		msg[100];

		pg_regerror(rc, re, msg, sizeof(msg));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_REGULAR_EXPRESSION),
				 errmsg("invalid regular expression: %s", msg)));
	}
	cb = MemoryContextAlloc(rules->cxt, sizeof(MemoryContextCallback));
	cb->func = free_regex;
	cb->arg = re;
	MemoryContextRegisterResetCallback(rules->cxt, cb);
	return re;
}

static bool
pattern_matches(IdentityRules *rules, RuleKind *k, const char *value, int len)
{
	int			wlen;
	int			rc;

	if (k->blocked_re == NULL)
		k->blocked_re = compile_pattern(rules, k->blocked_pattern);
	if (len + 1 > rules->wbuf_size)
	{
		rules->wbuf_size = Max(256, (len + 1) * 2);
		rules->wbuf = rules->wbuf
			? repalloc(rules->wbuf, rules->wbuf_size * sizeof(pg_wchar))
			: MemoryContextAlloc(rules->cxt, rules->wbuf_size * sizeof(pg_wchar));
	}
	wlen = pg_mb2wchar_with_len(value, rules->wbuf, len);
	rc = pg_regexec(k->blocked_re, rules->wbuf, wlen, 0, NULL, 0, NULL, 0);
	if (rc != REG_OKAY && rc != REG_NOMATCH)
	{
		char		msg[100];

		pg_regerror(rc, k->blocked_re, msg, sizeof(msg));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_REGULAR_EXPRESSION),
				 errmsg("regular expression failed: %s", msg)));
	}
	return rc == REG_OKAY;
}

static const char *
blocked_by(IdentityRules *rules, RuleKind *k, const char *value, int len)
{
	ListCell   *lc;

	/*
	 * pg_strcasecmp folds single bytes: equal strings have equal lengths and
	 * first bytes equal once folded (see index_blocked_values()).
	 */
	if ((k->blocked_lens & (UINT64CONST(1) << Min(len, 63))) != 0 &&
		k->blocked_first[(unsigned char) value[0]])
	{
		foreach(lc, k->blocked_values)
		{
			const char *b = lfirst(lc);

			if (strlen(b) == len && pg_strcasecmp(b, value) == 0)
				return psprintf("the value is blocked for %s (identity_rules.blocked_values)",
								strcmp(k->kind, "*") == 0 ? "every kind" : k->kind);
		}
	}
	if (k->blocked_pattern != NULL && pattern_matches(rules, k, value, len))
		return psprintf("the value matches the blocked pattern %s for %s",
						text_to_cstring(k->blocked_pattern),
						strcmp(k->kind, "*") == 0 ? "every kind" : k->kind);
	return NULL;
}

/* Why the value may not link (a sentence), or NULL. */
const char *
rules_blocked(IdentityRules *rules, int kind, const char *value)
{
	int			len = strlen(value);
	const char *why;

	why = blocked_by(rules, &rules->deflt, value, len);
	if (why == NULL)
		why = blocked_by(rules, &rules->kinds[kind], value, len);
	return why;
}
