/*-------------------------------------------------------------------------
 *
 * restitch.c
 *	  cdp.restitch() and cdp.forget_identifier(): rebuild (part of) the
 *	  identity graph by replaying stored events through the engine.
 *
 * Events are replayed in event-id order, the order in which ingestion made
 * its decisions (see store.c), with the rules as they are now.  A full
 * rebuild therefore reproduces the incremental result exactly, or applies
 * changed rules everywhere.
 *
 * Forgetting an identifier removes it from the graph and from every event
 * that carried it, then replays the events of the profiles that can be
 * affected: the closure of the identifier's profile under "an event carries
 * an identifier that belongs to, or was dropped on, another profile".
 * Events outside the closure share no identifier with events inside it, so
 * replaying the closure alone gives what a full rebuild would.  A profile
 * whose identifiers are no longer connected splits; the part holding its
 * oldest event keeps its id, and events follow the identifiers they carry.
 * An event left with no identifier at all is removed with the identifier:
 * nothing ties it to a person any more.
 *
 * Both take the graph lock exclusively: ingestion waits while they run.
 * This file reads and replays; rewrite.c writes what the replay changed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "portability/instr_time.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "identity/graph.h"
#include "identity/identity.h"
#include "identity/replay.h"
#include "identity/store.h"

#define REPLAY_FETCH 10000

void
exec_args(const char *sql, int nargs, Oid *types, Datum *args)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, args, NULL, false, 0);

	if (rc < 0)
		elog(ERROR, "cdp: \"%s\" failed: %s", sql, SPI_result_code_string(rc));
}

/*
 * Run a query through a cursor and hand every row to fn: the stored graph
 * can hold millions of rows and SPI would otherwise materialise them all.
 */
void
for_each_row(Replay *r, const char *sql, int nargs, Oid *types, Datum *args, RowFn fn, void *arg)
{
	Portal		portal = SPI_cursor_open_with_args(NULL, sql, nargs, types, args, NULL, false, 0);

	for (;;)
	{
		SPI_cursor_fetch(portal, true, REPLAY_FETCH);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
			fn(r, SPI_tuptable->vals[i], SPI_tuptable->tupdesc, arg);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
}

static void
read_event(Replay *r, HeapTuple tup, TupleDesc desc, void *arg)
{
	Graph	   *g = r->g;
	MemoryContext old = MemoryContextSwitchTo(g->cxt);
	ReplayEvent *e;
	bool		isnull;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	char	   *source;

	if (r->nevents == r->cap)
	{
		r->cap = Max(1024, r->cap * 2);
		r->events = r->events ? repalloc_huge(r->events, r->cap * sizeof(ReplayEvent))
			: palloc(r->cap * sizeof(ReplayEvent));
	}
	e = &r->events[r->nevents++];
	e->event_id = get_int8(tup, desc, 1, &isnull);
	e->old_profile = get_int8(tup, desc, 2, &isnull);
	e->new_profile = 0;
	e->occurred_at = get_ts(tup, desc, 3);
	e->received_at = get_ts(tup, desc, 4);
	source = get_cstring(tup, desc, 5);
	e->source = graph_intern_string(g, source);

	deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 6, &isnull)),
					  *(Oid *) arg, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	e->ids = palloc(sizeof(char *) * Max(n, 1));
	e->nids = 0;
	for (int j = 0; j < n; j++)
	{
		char	   *key;

		if (nulls[j])
			continue;
		MemoryContextSwitchTo(g->scratch);
		key = text_to_cstring((text *) PG_DETOAST_DATUM_PACKED(elems[j]));
		MemoryContextSwitchTo(g->cxt);
		e->ids[e->nids++] = graph_intern(g, key)->key;
	}
	MemoryContextReset(g->scratch);
	MemoryContextSwitchTo(old);
}

static int
cmp_event(const void *a, const void *b)
{
	int64		x = ((const ReplayEvent *) a)->event_id;
	int64		y = ((const ReplayEvent *) b)->event_id;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/*
 * Read the events of the scope (all, when full), order them by event id in
 * memory -- cheaper than asking the executor to sort rows with arrays --
 * and replay them.
 */
static void
replay(Replay *r)
{
	Oid			identoid = identifier_type_oid();
	Oid			type = INT8ARRAYOID;

	for_each_row(r,
				 r->full
				 ? "SELECT event_id, profile_id, occurred_at, received_at, source, identifiers FROM cdp.event_data"
				 : "SELECT event_id, profile_id, occurred_at, received_at, source, identifiers "
				 "FROM cdp.event_data WHERE profile_id = ANY ($1)",
				 r->full ? 0 : 1, &type, &r->scope, read_event, &identoid);
	qsort(r->events, r->nevents, sizeof(ReplayEvent), cmp_event);

	for (int64 i = 0; i < r->nevents; i++)
	{
		ReplayEvent *e = &r->events[i];
		GraphMessage m;
		const char *reject;

		m.event_id = e->event_id;
		m.occurred_at = e->occurred_at;
		m.received_at = e->received_at;
		m.source = e->source;
		m.nids = e->nids;
		m.ids = e->ids;
		e->new_profile = graph_apply(r->g, &m, &reject);
	}
}

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : (x > y ? 1 : 0);
}

bool
replayed_event(Replay *r, int64 event_id)
{
	ReplayEvent key;

	key.event_id = event_id;
	return bsearch(&key, r->events, r->nevents, sizeof(ReplayEvent), cmp_event) != NULL;
}

static Replay *
replay_create(IdentityRules *rules, long expected, bool full)
{
	Replay	   *r = palloc0(sizeof(Replay));

	r->g = graph_create(rules, expected);
	r->full = full;
	return r;
}

static void
append_stats(StringInfo buf, RebuildStats *st)
{
	appendStringInfo(buf, "\"events\": " INT64_FORMAT ", \"events_moved\": " INT64_FORMAT
					 ", \"events_removed\": " INT64_FORMAT ", \"profiles\": " INT64_FORMAT
					 ", \"identifiers\": " INT64_FORMAT ", \"merges\": " INT64_FORMAT
					 ", \"conflicts\": " INT64_FORMAT ", \"rows_written\": " INT64_FORMAT,
					 st->events, st->events_moved, st->events_removed, st->profiles,
					 st->identifiers, st->merges, st->conflicts, st->rows_written);
}

static double
ms_since(instr_time start)
{
	instr_time	now;

	INSTR_TIME_SET_CURRENT(now);
	INSTR_TIME_SUBTRACT(now, start);
	return INSTR_TIME_GET_MILLISEC(now);
}

/* cdp.restitch() RETURNS jsonb */
PG_FUNCTION_INFO_V1(cdp_restitch);
Datum
cdp_restitch(PG_FUNCTION_ARGS)
{
	instr_time	start;
	RebuildStats st = {0};
	Replay	   *r;
	StringInfoData buf;
	MemoryContext work = AllocSetContextCreate(CurrentMemoryContext, "cdp restitch",
											   ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;
	int64		expected;
	bool		isnull;

	INSTR_TIME_SET_CURRENT(start);
	identity_lock_graph(true);

	SPI_connect();
	old = MemoryContextSwitchTo(work);
	SPI_execute("SELECT count(*) FROM cdp.identity_data", false, 0);
	expected = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	r = replay_create(rules_load(), (long) Min(expected + 1024, 100000000), true);
	replay(r);
	st.read_ms = ms_since(start);
	write_rebuild(r, &st);
	st.write_ms = ms_since(start) - st.read_ms;
	MemoryContextSwitchTo(old);
	SPI_finish();

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	append_stats(&buf, &st);
	appendStringInfo(&buf, ", \"replay_ms\": %.1f, \"write_ms\": %.1f, \"duration_ms\": %.1f}",
					 st.read_ms, st.write_ms, ms_since(start));
	MemoryContextDelete(work);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/* Profiles (live) reachable from the given ones through shared identifiers. */
static Datum
closure(Datum start)
{
	Oid			t1[1] = {INT8ARRAYOID};
	Datum		scope = start;
	int64		n = ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(start)), ARR_DIMS(DatumGetArrayTypeP(start)));

	for (;;)
	{
		int64		m;
		bool		isnull;

		exec_args("WITH ids AS (SELECT DISTINCT unnest(identifiers) AS i FROM cdp.event_data WHERE profile_id = ANY ($1)) "
				  "SELECT coalesce(array_agg(DISTINCT p), '{}') FROM ("
				  "  SELECT unnest($1) AS p"
				  "  UNION SELECT d.profile_id FROM cdp.identity_data d JOIN ids ON d.identifier OPERATOR(cdp.=) ids.i"
				  "  UNION SELECT coalesce(pr.merged_into, pr.profile_id) FROM cdp.identity_conflicts c"
				  "    JOIN ids ON c.identifier OPERATOR(cdp.=) ids.i JOIN cdp.profile_data pr ON pr.profile_id = c.profile_id"
				  ") s",
				  1, t1, &scope);
		scope = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		scope = PointerGetDatum(DatumGetArrayTypePCopy(scope));
		m = ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(scope)), ARR_DIMS(DatumGetArrayTypeP(scope)));
		if (m == n)
			return scope;
		n = m;
	}
}

/* cdp.forget_identifier(identifier) RETURNS jsonb */
PG_FUNCTION_INFO_V1(cdp_forget_identifier);
Datum
cdp_forget_identifier(PG_FUNCTION_ARGS)
{
	Datum		ident = PG_GETARG_DATUM(0);
	char	   *key = text_to_cstring((text *) PG_DETOAST_DATUM_PACKED(ident));
	Oid			tid[1];
	Oid			t1[1] = {INT8ARRAYOID};
	Oid			t2[2];
	Datum		args2[2];
	Datum		start,
				scope,
				scope_all,
				profiles_after;
	bool		isnull;
	int64		profile_id;
	RebuildStats st = {0};
	Replay	   *r;
	StringInfoData buf;
	MemoryContext work = AllocSetContextCreate(CurrentMemoryContext, "cdp forget",
											   ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;

	identity_lock_graph(true);
	SPI_connect();
	old = MemoryContextSwitchTo(work);
	tid[0] = identifier_type_oid();

	/* Where does the identifier appear: its profile, and events that dropped it. */
	exec_args("SELECT (SELECT profile_id FROM cdp.identity_data WHERE identifier OPERATOR(cdp.=) $1), "
			  "coalesce((SELECT array_agg(DISTINCT coalesce(p.merged_into, p.profile_id)) "
			  "  FROM cdp.identity_conflicts c JOIN cdp.profile_data p ON p.profile_id = c.profile_id "
			  "  WHERE c.identifier OPERATOR(cdp.=) $1), '{}')",
			  1, tid, &ident);
	{
		Datum		p = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		Datum		others = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		Oid			t[2] = {INT8OID, INT8ARRAYOID};
		Datum		a[2];

		profile_id = isnull ? 0 : DatumGetInt64(p);
		a[0] = p;
		a[1] = others;
		SPI_execute_with_args("SELECT array_remove(array_prepend($1, $2), NULL)", 2, t, a,
							  profile_id == 0 ? "n " : "  ", true, 1);
		start = PointerGetDatum(DatumGetArrayTypePCopy(SPI_getbinval(SPI_tuptable->vals[0],
																	SPI_tuptable->tupdesc, 1, &isnull)));
	}

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"identifier\": ");
	escape_json(&buf, key);

	if (ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(start)), ARR_DIMS(DatumGetArrayTypeP(start))) == 0)
	{
		appendStringInfoString(&buf, ", \"found\": false}");
		MemoryContextSwitchTo(old);
		SPI_finish();
		PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
	}

	scope = closure(start);

	/* Remove the identifier and every link through it. */
	t2[0] = tid[0];
	t2[1] = INT8ARRAYOID;
	args2[0] = ident;
	args2[1] = scope;
	exec_args("DELETE FROM cdp.identity_data WHERE identifier OPERATOR(cdp.=) $1", 1, tid, &ident);
	exec_args("DELETE FROM cdp.identity_conflicts WHERE identifier OPERATOR(cdp.=) $1", 1, tid, &ident);
	exec_args("UPDATE cdp.event_data SET identifiers = array_remove(identifiers, $1) "
			  "WHERE profile_id = ANY ($2) AND $1 OPERATOR(cdp.=) ANY (identifiers)", 2, t2, args2);

	exec_args("SELECT array_agg(profile_id) FROM cdp.profile_data "
			  "WHERE profile_id = ANY ($1) OR merged_into = ANY ($1)", 1, t1, &scope);
	scope_all = PointerGetDatum(DatumGetArrayTypePCopy(SPI_getbinval(SPI_tuptable->vals[0],
																	 SPI_tuptable->tupdesc, 1, &isnull)));

	r = replay_create(rules_load(), 1024, false);
	r->scope = scope;
	r->scope_all = scope_all;
	replay(r);
	write_rebuild(r, &st);

	/* The live profiles the replay left, including ones a split created. */
	{
		HASH_SEQ_STATUS seq;
		GraphProfileEntry *pe;
		int64	   *live = palloc(sizeof(int64) * Max(hash_get_num_entries(r->g->profiles), 1));
		int			nlive = 0;
		ArrayBuild	ab;

		hash_seq_init(&seq, r->g->profiles);
		while ((pe = hash_seq_search(&seq)) != NULL)
			if (pe->profile->survivor == 0)
				live[nlive++] = pe->profile->id;
		qsort(live, nlive, sizeof(int64), cmp_int64);
		ab_init(&ab, INT8OID);
		for (int i = 0; i < nlive; i++)
			ab_add(&ab, Int64GetDatum(live[i]), false);
		profiles_after = ab_result(&ab);
	}

	appendStringInfo(&buf, ", \"found\": true, \"profile_id\": ");
	if (profile_id != 0)
		appendStringInfo(&buf, INT64_FORMAT, profile_id);
	else
		appendStringInfoString(&buf, "null");
	appendStringInfo(&buf, ", \"profiles_after\": %s, ",
					 TextDatumGetCString(DirectFunctionCall1(array_to_json, profiles_after)));
	append_stats(&buf, &st);
	appendStringInfoChar(&buf, '}');

	MemoryContextSwitchTo(old);
	SPI_finish();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

