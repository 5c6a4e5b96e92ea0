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
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
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
#include "identity/store.h"

#define REPLAY_FETCH 10000

typedef struct Replay
{
	Graph	   *g;
	int64		nevents;
	int64		cap;
	int64	   *event_id;
	int64	   *old_profile;
	int64	   *new_profile;	/* raw engine result; resolve before use */
} Replay;

typedef struct RebuildStats
{
	int64		events;
	int64		events_moved;
	int64		events_removed;
	int64		profiles;
	int64		identifiers;
	int64		merges;
	int64		conflicts;
} RebuildStats;

static Datum
int8_array(const int64 *v, int64 n)
{
	ArrayBuild	ab;

	ab_init(&ab, INT8OID);
	for (int64 i = 0; i < n; i++)
		ab_add(&ab, Int64GetDatum(v[i]), false);
	return ab_result(&ab);
}

/* Replay the events of the scope (NULL: all), in event-id order. */
static void
replay(Replay *r, Datum scope, bool full)
{
	Portal		portal;
	Oid			type = INT8ARRAYOID;
	MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext, "cdp replay rows",
												 ALLOCSET_DEFAULT_SIZES);
	Oid			identoid = identifier_type_oid();

	portal = SPI_cursor_open_with_args(NULL,
									   full
									   ? "SELECT event_id, profile_id, occurred_at, received_at, source, identifiers "
									   "FROM cdp.event_data ORDER BY event_id"
									   : "SELECT event_id, profile_id, occurred_at, received_at, source, identifiers "
									   "FROM cdp.event_data WHERE profile_id = ANY ($1) ORDER BY event_id",
									   full ? 0 : 1, &type, &scope, NULL, false, 0);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, REPLAY_FETCH);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			GraphMessage m;
			Datum	   *elems;
			bool	   *nulls;
			int			n;
			const char *reject;
			MemoryContext old;
			char	   *source;
			int64		pid;

			m.event_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			pid = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
			m.occurred_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
			m.received_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));

			/* sources live as long as the graph; identifiers only for this row */
			source = SPI_getvalue(tup, desc, 5);
			old = MemoryContextSwitchTo(r->g->cxt);
			m.source = source ? pstrdup(source) : NULL;
			MemoryContextSwitchTo(rowcxt);
			deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 6, &isnull)),
							  identoid, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
			m.ids = palloc(sizeof(char *) * Max(n, 1));
			m.nids = 0;
			for (int j = 0; j < n; j++)
				if (!nulls[j])
					m.ids[m.nids++] = text_to_cstring((text *) PG_DETOAST_DATUM_PACKED(elems[j]));
			MemoryContextSwitchTo(old);

			if (r->nevents == r->cap)
			{
				r->cap = Max(1024, r->cap * 2);
				r->event_id = repalloc_huge(r->event_id, r->cap * sizeof(int64));
				r->old_profile = repalloc_huge(r->old_profile, r->cap * sizeof(int64));
				r->new_profile = repalloc_huge(r->new_profile, r->cap * sizeof(int64));
			}
			r->event_id[r->nevents] = m.event_id;
			r->old_profile[r->nevents] = pid;
			r->new_profile[r->nevents] = graph_apply(r->g, &m, &reject);
			r->nevents++;
			MemoryContextReset(rowcxt);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	MemoryContextDelete(rowcxt);
}

static void
exec_args(const char *sql, int nargs, Oid *types, Datum *args)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, args, NULL, false, 0);

	if (rc < 0)
		elog(ERROR, "cdp: \"%s\" failed: %s", sql, SPI_result_code_string(rc));
}

/*
 * Replace the stored graph of the scope by the replay's.  scope_profiles:
 * the live profiles replayed; scope_all: those plus their tombstones.
 */
static void
write_rebuild(Replay *r, bool full, Datum scope_all, RebuildStats *st)
{
	Graph	   *g = r->g;
	HASH_SEQ_STATUS seq;
	GraphProfileEntry *pe;
	GraphIdentEntry *ie;
	ListCell   *lc;
	ArrayBuild	a1,
				a2,
				a3,
				a4,
				a5,
				a6;
	Datum		events_arg;
	Oid			t1[1] = {INT8ARRAYOID};

	st->events = r->nevents;
	events_arg = int8_array(r->event_id, r->nevents);

	/* 1. Clear the scope. */
	if (full)
	{
		/*
		 * DELETE, not TRUNCATE: TRUNCATE's ACCESS EXCLUSIVE lock, taken while
		 * we hold the graph lock, waits for any transaction that has read
		 * these tables, and deadlocks when that transaction then ingests
		 * (it waits for the graph lock); it would also empty the tables for
		 * snapshots taken before it (TRUNCATE is not MVCC-safe).
		 */
		exec_args("DELETE FROM cdp.identity_data", 0, NULL, NULL);
		exec_args("DELETE FROM cdp.profile_data", 0, NULL, NULL);
		exec_args("DELETE FROM cdp.trait_data", 0, NULL, NULL);
		exec_args("DELETE FROM cdp.merges", 0, NULL, NULL);
		exec_args("DELETE FROM cdp.identity_conflicts c USING cdp.event_data e WHERE e.event_id = c.event_id",
				  0, NULL, NULL);
	}
	else
	{
		exec_args("DELETE FROM cdp.identity_data WHERE profile_id = ANY ($1)", 1, t1, &scope_all);
		exec_args("DELETE FROM cdp.trait_data WHERE profile_id = ANY ($1)", 1, t1, &scope_all);
		exec_args("DELETE FROM cdp.merges WHERE profile_id = ANY ($1) OR merged_profile_id = ANY ($1)",
				  1, t1, &scope_all);
		exec_args("DELETE FROM cdp.profile_data WHERE profile_id = ANY ($1)", 1, t1, &scope_all);
		exec_args("DELETE FROM cdp.identity_conflicts WHERE event_id = ANY ($1)", 1, t1, &events_arg);
	}

	/* 2. Profiles, live and tombstones. */
	ab_init(&a1, INT8OID);
	ab_init(&a2, INT8OID);
	ab_init(&a3, TIMESTAMPTZOID);
	ab_init(&a4, TIMESTAMPTZOID);
	hash_seq_init(&seq, g->profiles);
	while ((pe = hash_seq_search(&seq)) != NULL)
	{
		GraphProfile *p = pe->profile;
		int64		f = graph_resolve(g, p->id);

		ab_add(&a1, Int64GetDatum(p->id), false);
		ab_add(&a2, Int64GetDatum(f), f == p->id);
		ab_add(&a3, TimestampTzGetDatum(p->created_at), false);
		ab_add(&a4, TimestampTzGetDatum(p->updated_at), false);
		if (f == p->id)
			st->profiles++;
	}
	{
		Oid			types[4] = {INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
		Datum		args[4] = {ab_result(&a1), ab_result(&a2), ab_result(&a3), ab_result(&a4)};

		exec_args("INSERT INTO cdp.profile_data (profile_id, merged_into, created_at, updated_at) "
				  "SELECT * FROM unnest($1, $2, $3, $4)", 4, types, args);
	}

	/* 3. Identifiers. */
	ab_init(&a1, identifier_type_oid());
	ab_init(&a2, TEXTOID);
	ab_init(&a3, INT8OID);
	ab_init(&a4, TEXTOID);
	ab_init(&a5, TIMESTAMPTZOID);
	ab_init(&a6, TIMESTAMPTZOID);
	hash_seq_init(&seq, g->idents);
	while ((ie = hash_seq_search(&seq)) != NULL)
	{
		GraphIdent *id = ie->ident;

		if (id->profile_id == 0)
			continue;
		ab_add_text(&a1, id->key);
		ab_add(&a2, PointerGetDatum(cstring_to_text_with_len(id->key, strchr(id->key, ':') - id->key)), false);
		ab_add(&a3, Int64GetDatum(graph_resolve(g, id->profile_id)), false);
		ab_add_text(&a4, id->source);
		ab_add(&a5, TimestampTzGetDatum(id->first_seen), false);
		ab_add(&a6, TimestampTzGetDatum(id->last_seen), false);
	}
	st->identifiers = a1.n;
	{
		Oid			types[6] = {get_array_type(identifier_type_oid()), TEXTARRAYOID, INT8ARRAYOID,
		TEXTARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
		Datum		args[6] = {ab_result(&a1), ab_result(&a2), ab_result(&a3), ab_result(&a4),
		ab_result(&a5), ab_result(&a6)};

		exec_args("INSERT INTO cdp.identity_data (identifier, kind, profile_id, source, first_seen, last_seen) "
				  "SELECT * FROM unnest($1, $2, $3, $4, $5, $6)", 6, types, args);
	}

	/* 4. Events: move the ones whose profile changed, remove the rejected. */
	ab_init(&a1, INT8OID);
	ab_init(&a2, INT8OID);
	ab_init(&a3, INT8OID);
	for (int64 i = 0; i < r->nevents; i++)
	{
		int64		f = graph_resolve(g, r->new_profile[i]);

		if (f == 0)
			ab_add(&a3, Int64GetDatum(r->event_id[i]), false);
		else if (f != r->old_profile[i])
		{
			ab_add(&a1, Int64GetDatum(r->event_id[i]), false);
			ab_add(&a2, Int64GetDatum(f), false);
		}
	}
	st->events_moved = a1.n;
	st->events_removed = a3.n;
	if (a1.n > 0)
	{
		Oid			types[2] = {INT8ARRAYOID, INT8ARRAYOID};
		Datum		args[2] = {ab_result(&a1), ab_result(&a2)};

		exec_args("UPDATE cdp.event_data e SET profile_id = u.p FROM unnest($1, $2) AS u(e, p) "
				  "WHERE e.event_id = u.e", 2, types, args);
	}
	if (a3.n > 0)
	{
		Datum		arg = ab_result(&a3);

		exec_args("DELETE FROM cdp.message_ids WHERE event_id = ANY ($1)", 1, t1, &arg);
		exec_args("DELETE FROM cdp.event_data WHERE event_id = ANY ($1)", 1, t1, &arg);
	}

	/* 5. Traits from the identify events, last write wins; the snapshot. */
	{
		const char *traits_sql =
			"INSERT INTO cdp.trait_data (profile_id, key, value, occurred_at, event_id) "
			"SELECT DISTINCT ON (e.profile_id, j.key) e.profile_id, j.key, j.value, e.occurred_at, e.event_id "
			"FROM cdp.event_data e, jsonb_each(e.properties) AS j "
			"WHERE e.type = 'identify' %s "
			"ORDER BY e.profile_id, j.key, e.occurred_at DESC, e.event_id DESC";
		const char *snapshot_sql =
			"UPDATE cdp.profile_data p SET traits = t.traits FROM ("
			"SELECT profile_id, jsonb_object_agg(key, value) AS traits FROM cdp.trait_data %s GROUP BY profile_id) t "
			"WHERE p.profile_id = t.profile_id";

		if (full)
		{
			exec_args(psprintf(traits_sql, ""), 0, NULL, NULL);
			exec_args(psprintf(snapshot_sql, ""), 0, NULL, NULL);
		}
		else
		{
			Datum		live;

			ab_init(&a1, INT8OID);
			hash_seq_init(&seq, g->profiles);
			while ((pe = hash_seq_search(&seq)) != NULL)
				if (pe->profile->survivor == 0)
					ab_add(&a1, Int64GetDatum(pe->profile->id), false);
			live = ab_result(&a1);
			exec_args(psprintf(traits_sql, "AND e.profile_id = ANY ($1)"), 1, t1, &live);
			exec_args(psprintf(snapshot_sql, "WHERE profile_id = ANY ($1)"), 1, t1, &live);
		}
	}

	/* 6. Merges and conflicts as the replay made them. */
	ab_init(&a1, INT8OID);
	ab_init(&a2, INT8OID);
	ab_init(&a3, INT8OID);
	ab_init(&a4, TIMESTAMPTZOID);
	ab_init(&a5, JSONBOID);
	foreach(lc, g->merges)
	{
		GraphMerge *mg = lfirst(lc);
		StringInfoData buf;
		ListCell   *lc2;

		ab_add(&a1, Int64GetDatum(mg->into), false);
		ab_add(&a2, Int64GetDatum(mg->merged), false);
		ab_add(&a3, Int64GetDatum(mg->event_id), false);
		ab_add(&a4, TimestampTzGetDatum(mg->merged_at), false);
		initStringInfo(&buf);
		appendStringInfo(&buf, "{\"event_id\": " INT64_FORMAT ", \"identifiers\": [", mg->event_id);
		foreach(lc2, mg->linking)
		{
			if (lc2 != list_head(mg->linking))
				appendStringInfoString(&buf, ", ");
			escape_json(&buf, (const char *) lfirst(lc2));
		}
		appendStringInfoString(&buf, "]}");
		ab_add(&a5, DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)), false);
	}
	st->merges = a1.n;
	if (a1.n > 0)
	{
		Oid			types[5] = {INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, JSONBARRAYOID};
		Datum		args[5] = {ab_result(&a1), ab_result(&a2), ab_result(&a3), ab_result(&a4), ab_result(&a5)};

		exec_args("INSERT INTO cdp.merges (profile_id, merged_profile_id, event_id, merged_at, cause) "
				  "SELECT * FROM unnest($1, $2, $3, $4, $5)", 5, types, args);
	}

	ab_init(&a1, INT8OID);
	ab_init(&a2, INT8OID);
	ab_init(&a3, identifier_type_oid());
	ab_init(&a4, TEXTOID);
	ab_init(&a5, TEXTOID);
	foreach(lc, g->conflicts)
	{
		GraphConflict *c = lfirst(lc);
		int64		p = graph_resolve(g, c->profile_id);

		if (p == 0)
			continue;			/* its event is removed */
		ab_add(&a1, Int64GetDatum(c->event_id), false);
		ab_add(&a2, Int64GetDatum(p), false);
		ab_add_text(&a3, c->identifier);
		ab_add_text(&a4, c->reason);
		ab_add_text(&a5, c->detail);
	}
	st->conflicts = a1.n;
	if (a1.n > 0)
	{
		Oid			types[5] = {INT8ARRAYOID, INT8ARRAYOID, get_array_type(identifier_type_oid()),
		TEXTARRAYOID, TEXTARRAYOID};
		Datum		args[5] = {ab_result(&a1), ab_result(&a2), ab_result(&a3), ab_result(&a4), ab_result(&a5)};

		exec_args("INSERT INTO cdp.identity_conflicts (event_id, profile_id, identifier, reason, detail, recorded_at) "
				  "SELECT u.e, u.p, u.i, u.r, u.d, now() FROM unnest($1, $2, $3, $4, $5) AS u(e, p, i, r, d)",
				  5, types, args);
	}
}

static Replay *
replay_create(IdentityRules *rules, long expected)
{
	Replay	   *r = palloc0(sizeof(Replay));

	r->g = graph_create(rules, expected);
	r->cap = 1024;
	r->event_id = palloc(r->cap * sizeof(int64));
	r->old_profile = palloc(r->cap * sizeof(int64));
	r->new_profile = palloc(r->cap * sizeof(int64));
	return r;
}

static void
append_stats(StringInfo buf, RebuildStats *st)
{
	appendStringInfo(buf, "\"events\": " INT64_FORMAT ", \"events_moved\": " INT64_FORMAT
					 ", \"events_removed\": " INT64_FORMAT ", \"profiles\": " INT64_FORMAT
					 ", \"identifiers\": " INT64_FORMAT ", \"merges\": " INT64_FORMAT
					 ", \"conflicts\": " INT64_FORMAT,
					 st->events, st->events_moved, st->events_removed, st->profiles,
					 st->identifiers, st->merges, st->conflicts);
}

/* cdp.restitch() RETURNS jsonb */
PG_FUNCTION_INFO_V1(cdp_restitch);
Datum
cdp_restitch(PG_FUNCTION_ARGS)
{
	instr_time	start,
				duration;
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
	SPI_execute("SELECT count(*) FROM cdp.identity_data", true, 0);
	expected = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	r = replay_create(rules_load(), (long) Min(expected + 1024, 100000000));
	replay(r, (Datum) 0, true);
	write_rebuild(r, true, (Datum) 0, &st);
	MemoryContextSwitchTo(old);
	SPI_finish();

	INSTR_TIME_SET_CURRENT(duration);
	INSTR_TIME_SUBTRACT(duration, start);
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	append_stats(&buf, &st);
	appendStringInfo(&buf, ", \"duration_ms\": %.1f}", INSTR_TIME_GET_MILLISEC(duration));
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

	r = replay_create(rules_load(), 1024);
	replay(r, scope, false);
	write_rebuild(r, false, scope_all, &st);

	exec_args("SELECT coalesce(array_agg(DISTINCT coalesce(p.merged_into, p.profile_id) ORDER BY coalesce(p.merged_into, p.profile_id)), '{}') "
			  "FROM cdp.profile_data p WHERE p.profile_id = ANY ($1)", 1, t1, &scope_all);
	profiles_after = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

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
