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
#include "identity/store.h"

#define REPLAY_FETCH 10000

/* One stored event, as the replay needs it. */
typedef struct ReplayEvent
{
	int64		event_id;
	int64		old_profile;
	int64		new_profile;	/* raw engine result; resolve before use */
	TimestampTz occurred_at;
	TimestampTz received_at;
	const char *source;			/* interned */
	int			nids;
	const char **ids;			/* interned identifier keys */
} ReplayEvent;

typedef struct Replay
{
	Graph	   *g;
	bool		full;
	Datum		scope;			/* int8[]: live profiles replayed (scoped only) */
	Datum		scope_all;		/* int8[]: those and their tombstones */
	int64		nevents;
	int64		cap;
	ReplayEvent *events;		/* sorted by event_id once read */
} Replay;

typedef struct RebuildStats
{
	double		read_ms;		/* reading and replaying the events */
	double		write_ms;		/* comparing and writing the differences */
	int64		events;
	int64		events_moved;
	int64		events_removed;
	int64		profiles;
	int64		identifiers;
	int64		merges;
	int64		conflicts;
	int64		rows_written;
} RebuildStats;

static void
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
typedef void (*RowFn) (Replay *r, HeapTuple tup, TupleDesc desc, void *arg);

static void
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

static inline int64
get_int8(HeapTuple tup, TupleDesc desc, int col, bool *isnull)
{
	Datum		d = SPI_getbinval(tup, desc, col, isnull);

	return *isnull ? 0 : DatumGetInt64(d);
}

static inline TimestampTz
get_ts(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;

	return DatumGetTimestampTz(SPI_getbinval(tup, desc, col, &isnull));
}

/* A text-like column as a C string in the caller's context, or NULL. */
static char *
get_cstring(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : text_to_cstring((text *) PG_DETOAST_DATUM_PACKED(d));
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

static bool
replayed_event(Replay *r, int64 event_id)
{
	ReplayEvent key;

	key.event_id = event_id;
	return bsearch(&key, r->events, r->nevents, sizeof(ReplayEvent), cmp_event) != NULL;
}

/* ---------- the differences, table by table ---------- */

typedef struct Diff
{
	ArrayBuild	del;			/* keys of stored rows to delete */
	List	   *changed_profiles;	/* int64 * whose traits must be recomputed */
} Diff;

static void
note_changed(Diff *d, int64 profile_id)
{
	int64	   *p = palloc(sizeof(int64));

	*p = profile_id;
	d->changed_profiles = lappend(d->changed_profiles, p);
}

static bool
str_equal(const char *a, const char *b)
{
	return (a == NULL) ? (b == NULL) : (b != NULL && strcmp(a, b) == 0);
}

/* identity_data: stored rows are compared with the replayed identifiers. */
typedef struct IdentDiff
{
	ArrayBuild	del;
	Diff	   *d;
} IdentDiff;

static void
diff_identifier(Replay *r, HeapTuple tup, TupleDesc desc, void *arg)
{
	IdentDiff  *idd = arg;
	Graph	   *g = r->g;
	char	   *key = get_cstring(tup, desc, 1);
	GraphIdentEntry *e = hash_search(g->idents, &key, HASH_FIND, NULL);
	bool		isnull;
	int64		stored_profile = get_int8(tup, desc, 2, &isnull);
	int64		f;

	if (e == NULL || e->ident->profile_id == 0)
	{
		ab_add_text(&idd->del, key);
		note_changed(idd->d, stored_profile);
		return;
	}
	e->ident->stored = true;
	f = graph_resolve(g, e->ident->profile_id);
	if (f != stored_profile)
	{
		note_changed(idd->d, stored_profile);
		note_changed(idd->d, f);
	}
	if (f != stored_profile ||
		!str_equal(e->ident->source, get_cstring(tup, desc, 3)) ||
		e->ident->first_seen != get_ts(tup, desc, 4) ||
		e->ident->last_seen != get_ts(tup, desc, 5))
		e->ident->dirty = true;
}

static void
write_identifiers(Replay *r, Diff *changes, RebuildStats *st)
{
	Graph	   *g = r->g;
	IdentDiff	d = {.d = changes};
	HASH_SEQ_STATUS seq;
	GraphIdentEntry *ie;
	ArrayBuild	a1,
				a2,
				a3,
				a4,
				a5,
				a6;
	Oid			identarr = get_array_type(identifier_type_oid());
	Oid			t1[1] = {INT8ARRAYOID};

	/* The engine's flags describe its own run; here they mean "stored" and "differs". */
	hash_seq_init(&seq, g->idents);
	while ((ie = hash_seq_search(&seq)) != NULL)
		ie->ident->stored = ie->ident->dirty = false;

	ab_init(&d.del, identifier_type_oid());
	for_each_row(r,
				 r->full
				 ? "SELECT identifier, profile_id, source, first_seen, last_seen FROM cdp.identity_data"
				 : "SELECT identifier, profile_id, source, first_seen, last_seen FROM cdp.identity_data "
				 "WHERE profile_id = ANY ($1)",
				 r->full ? 0 : 1, t1, &r->scope_all, diff_identifier, &d);
	if (d.del.n > 0)
	{
		Datum		arg = ab_result(&d.del);

		exec_args("DELETE FROM cdp.identity_data WHERE identifier OPERATOR(cdp.=) ANY ($1)", 1, &identarr, &arg);
	}

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
		st->identifiers++;
		if (id->stored && !id->dirty)
			continue;
		if (!id->stored)
			note_changed(changes, graph_resolve(g, id->profile_id));
		ab_add_text(&a1, id->key);
		ab_add(&a2, PointerGetDatum(cstring_to_text_with_len(id->key, strchr(id->key, ':') - id->key)), false);
		ab_add(&a3, Int64GetDatum(graph_resolve(g, id->profile_id)), false);
		ab_add_text(&a4, id->source);
		ab_add(&a5, TimestampTzGetDatum(id->first_seen), false);
		ab_add(&a6, TimestampTzGetDatum(id->last_seen), false);
	}
	st->rows_written += d.del.n + a1.n;
	if (a1.n > 0)
	{
		Oid			types[6] = {identarr, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID,
		TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
		Datum		args[6] = {ab_result(&a1), ab_result(&a2), ab_result(&a3), ab_result(&a4),
		ab_result(&a5), ab_result(&a6)};

		exec_args("INSERT INTO cdp.identity_data AS i (identifier, kind, profile_id, source, first_seen, last_seen) "
				  "SELECT * FROM unnest($1, $2, $3, $4, $5, $6) ORDER BY 1 "
				  "ON CONFLICT (identifier) DO UPDATE SET profile_id = excluded.profile_id, "
				  "source = excluded.source, first_seen = excluded.first_seen, last_seen = excluded.last_seen",
				  6, types, args);
	}
}

/* profile_data: live profiles and tombstones. */
static void
diff_profile(Replay *r, HeapTuple tup, TupleDesc desc, void *arg)
{
	Diff	   *d = arg;
	Graph	   *g = r->g;
	bool		isnull;
	int64		id = get_int8(tup, desc, 1, &isnull);
	int64		merged_into = get_int8(tup, desc, 2, &isnull);
	GraphProfile *p = graph_profile(g, id);
	int64		f;

	if (p == NULL)
	{
		ab_add(&d->del, Int64GetDatum(id), false);
		note_changed(d, id);
		return;
	}
	p->is_new = false;			/* stored: compare rather than insert */
	f = graph_resolve(g, id);
	p->touched = (f == id ? 0 : f) != merged_into ||
		p->created_at != get_ts(tup, desc, 3) ||
		p->updated_at != get_ts(tup, desc, 4);
	if ((f == id ? 0 : f) != merged_into)
		note_changed(d, id);
}

static void
write_profiles(Replay *r, Diff *d, RebuildStats *st)
{
	Graph	   *g = r->g;
	HASH_SEQ_STATUS seq;
	GraphProfileEntry *pe;
	ArrayBuild	a1,
				a2,
				a3,
				a4;
	Oid			t1[1] = {INT8ARRAYOID};

	ab_init(&d->del, INT8OID);
	for_each_row(r,
				 r->full
				 ? "SELECT profile_id, merged_into, created_at, updated_at FROM cdp.profile_data"
				 : "SELECT profile_id, merged_into, created_at, updated_at FROM cdp.profile_data "
				 "WHERE profile_id = ANY ($1)",
				 r->full ? 0 : 1, t1, &r->scope_all, diff_profile, d);
	if (d->del.n > 0)
	{
		Datum		arg = ab_result(&d->del);

		exec_args("DELETE FROM cdp.profile_data WHERE profile_id = ANY ($1)", 1, t1, &arg);
	}

	ab_init(&a1, INT8OID);
	ab_init(&a2, INT8OID);
	ab_init(&a3, TIMESTAMPTZOID);
	ab_init(&a4, TIMESTAMPTZOID);
	hash_seq_init(&seq, g->profiles);
	while ((pe = hash_seq_search(&seq)) != NULL)
	{
		GraphProfile *p = pe->profile;
		int64		f = graph_resolve(g, p->id);

		if (f == p->id)
			st->profiles++;
		if (!p->is_new && !p->touched)
			continue;
		if (p->is_new)
			note_changed(d, p->id);
		ab_add(&a1, Int64GetDatum(p->id), false);
		ab_add(&a2, Int64GetDatum(f), f == p->id);
		ab_add(&a3, TimestampTzGetDatum(p->created_at), false);
		ab_add(&a4, TimestampTzGetDatum(p->updated_at), false);
	}
	st->rows_written += d->del.n + a1.n;
	if (a1.n > 0)
	{
		Oid			types[4] = {INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
		Datum		args[4] = {ab_result(&a1), ab_result(&a2), ab_result(&a3), ab_result(&a4)};

		exec_args("INSERT INTO cdp.profile_data AS p (profile_id, merged_into, created_at, updated_at) "
				  "SELECT * FROM unnest($1, $2, $3, $4) ORDER BY 1 "
				  "ON CONFLICT (profile_id) DO UPDATE SET merged_into = excluded.merged_into, "
				  "created_at = excluded.created_at, updated_at = excluded.updated_at, "
				  "traits = CASE WHEN excluded.merged_into IS NULL THEN p.traits ELSE '{}' END",
				  4, types, args);
	}
}

/* event_data: move events whose profile changed, remove the rejected. */
static void
write_events(Replay *r, Diff *d, RebuildStats *st)
{
	Graph	   *g = r->g;
	ArrayBuild	ev,
				to,
				gone;
	Oid			t1[1] = {INT8ARRAYOID};

	ab_init(&ev, INT8OID);
	ab_init(&to, INT8OID);
	ab_init(&gone, INT8OID);
	for (int64 i = 0; i < r->nevents; i++)
	{
		ReplayEvent *e = &r->events[i];
		int64		f = graph_resolve(g, e->new_profile);

		if (f == e->old_profile)
			continue;
		note_changed(d, e->old_profile);
		if (f == 0)
			ab_add(&gone, Int64GetDatum(e->event_id), false);
		else
		{
			ab_add(&ev, Int64GetDatum(e->event_id), false);
			ab_add(&to, Int64GetDatum(f), false);
			note_changed(d, f);
		}
	}
	st->events = r->nevents;
	st->events_moved = ev.n;
	st->events_removed = gone.n;
	st->rows_written += ev.n + gone.n;
	if (ev.n > 0)
	{
		Oid			types[2] = {INT8ARRAYOID, INT8ARRAYOID};
		Datum		args[2] = {ab_result(&ev), ab_result(&to)};

		exec_args("UPDATE cdp.event_data e SET profile_id = u.p FROM unnest($1, $2) AS u(e, p) "
				  "WHERE e.event_id = u.e", 2, types, args);
	}
	if (gone.n > 0)
	{
		Datum		arg = ab_result(&gone);

		exec_args("DELETE FROM cdp.message_ids WHERE event_id = ANY ($1)", 1, t1, &arg);
		exec_args("DELETE FROM cdp.event_data WHERE event_id = ANY ($1)", 1, t1, &arg);
	}
}

/* trait_data and the snapshot, for the profiles whose events or status changed. */
static void
write_traits(Replay *r, Diff *d)
{
	ArrayBuild	ab;
	ListCell   *lc;
	Datum		arg;
	Oid			t1[1] = {INT8ARRAYOID};

	if (d->changed_profiles == NIL)
		return;
	ab_init(&ab, INT8OID);
	foreach(lc, d->changed_profiles)
		ab_add(&ab, Int64GetDatum(*(int64 *) lfirst(lc)), false);
	arg = ab_result(&ab);

	exec_args("DELETE FROM cdp.trait_data WHERE profile_id = ANY ($1)", 1, t1, &arg);
	exec_args("INSERT INTO cdp.trait_data (profile_id, key, value, occurred_at, event_id) "
			  "SELECT DISTINCT ON (e.profile_id, j.key) e.profile_id, j.key, j.value, e.occurred_at, e.event_id "
			  "FROM cdp.event_data e, jsonb_each(e.properties) AS j "
			  "WHERE e.type = 'identify' AND e.profile_id = ANY ($1) "
			  "ORDER BY e.profile_id, j.key, e.occurred_at DESC, e.event_id DESC", 1, t1, &arg);
	exec_args("UPDATE cdp.profile_data p SET traits = coalesce((SELECT jsonb_object_agg(t.key, t.value) "
			  "FROM cdp.trait_data t WHERE t.profile_id = p.profile_id), '{}') "
			  "WHERE p.profile_id = ANY ($1) AND p.merged_into IS NULL", 1, t1, &arg);
}

/* merges: keyed by (profile_id, merged_profile_id). */
typedef struct MergeKey
{
	int64		into;
	int64		merged;
} MergeKey;

typedef struct MergeEntry
{
	MergeKey	key;
	char	   *row;			/* event_id|merged_at|cause, canonical */
	bool		matched;
} MergeEntry;

static char *
merge_row_text(int64 event_id, TimestampTz at, const char *cause_canonical)
{
	return psprintf(INT64_FORMAT "|" INT64_FORMAT "|%s", event_id, (int64) at, cause_canonical);
}

static void
load_merge(Replay *r, HeapTuple tup, TupleDesc desc, void *arg)
{
	HTAB	   *h = arg;
	bool		isnull;
	MergeKey	k;
	MergeEntry *e;

	k.into = get_int8(tup, desc, 1, &isnull);
	k.merged = get_int8(tup, desc, 2, &isnull);
	e = hash_search(h, &k, HASH_ENTER, NULL);
	e->row = merge_row_text(get_int8(tup, desc, 3, &isnull), get_ts(tup, desc, 4), get_cstring(tup, desc, 5));
	e->matched = false;
}

static void
write_merges(Replay *r, RebuildStats *st)
{
	Graph	   *g = r->g;
	HASHCTL		ctl;
	HTAB	   *stored;
	HASH_SEQ_STATUS seq;
	MergeEntry *me;
	ListCell   *lc;
	ArrayBuild	di,
				dm,
				a1,
				a2,
				a3,
				a4,
				a5;
	Oid			t1[1] = {INT8ARRAYOID};

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(MergeKey);
	ctl.entrysize = sizeof(MergeEntry);
	ctl.hcxt = CurrentMemoryContext;
	stored = hash_create("cdp stored merges", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for_each_row(r,
				 r->full
				 ? "SELECT profile_id, merged_profile_id, event_id, merged_at, cause::text FROM cdp.merges"
				 : "SELECT profile_id, merged_profile_id, event_id, merged_at, cause::text FROM cdp.merges "
				 "WHERE profile_id = ANY ($1) OR merged_profile_id = ANY ($1)",
				 r->full ? 0 : 1, t1, &r->scope_all, load_merge, stored);

	ab_init(&a1, INT8OID);
	ab_init(&a2, INT8OID);
	ab_init(&a3, INT8OID);
	ab_init(&a4, TIMESTAMPTZOID);
	ab_init(&a5, JSONBOID);
	foreach(lc, g->merges)
	{
		GraphMerge *mg = lfirst(lc);
		MergeKey	k = {mg->into, mg->merged};
		Datum		cause = DirectFunctionCall1(jsonb_in, CStringGetDatum(graph_merge_cause(mg)));
		char	   *row = merge_row_text(mg->event_id, mg->merged_at,
										 DatumGetCString(DirectFunctionCall1(jsonb_out, cause)));
		bool		found;

		st->merges++;
		me = hash_search(stored, &k, HASH_FIND, &found);
		if (found && strcmp(me->row, row) == 0)
		{
			me->matched = true;
			continue;
		}
		ab_add(&a1, Int64GetDatum(mg->into), false);
		ab_add(&a2, Int64GetDatum(mg->merged), false);
		ab_add(&a3, Int64GetDatum(mg->event_id), false);
		ab_add(&a4, TimestampTzGetDatum(mg->merged_at), false);
		ab_add(&a5, cause, false);
	}

	/* Stored merges the replay did not make, or made differently, go. */
	ab_init(&di, INT8OID);
	ab_init(&dm, INT8OID);
	hash_seq_init(&seq, stored);
	while ((me = hash_seq_search(&seq)) != NULL)
		if (!me->matched)
		{
			ab_add(&di, Int64GetDatum(me->key.into), false);
			ab_add(&dm, Int64GetDatum(me->key.merged), false);
		}
	st->rows_written += di.n + a1.n;
	if (di.n > 0)
	{
		Oid			types[2] = {INT8ARRAYOID, INT8ARRAYOID};
		Datum		args[2] = {ab_result(&di), ab_result(&dm)};

		exec_args("DELETE FROM cdp.merges m USING unnest($1, $2) AS u(i, d) "
				  "WHERE m.profile_id = u.i AND m.merged_profile_id = u.d", 2, types, args);
	}
	if (a1.n > 0)
	{
		Oid			types[5] = {INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, JSONBARRAYOID};
		Datum		args[5] = {ab_result(&a1), ab_result(&a2), ab_result(&a3), ab_result(&a4), ab_result(&a5)};

		exec_args("INSERT INTO cdp.merges (profile_id, merged_profile_id, event_id, merged_at, cause) "
				  "SELECT * FROM unnest($1, $2, $3, $4, $5)", 5, types, args);
	}
}

/*
 * identity_conflicts of the replayed events (reason blocked or limit; the
 * "invalid" ones describe raw input that events do not keep, so they stay).
 */
typedef struct ConflictEntry
{
	char	   *key;			/* event_id|identifier|reason */
	char	   *row;			/* profile_id|detail */
	int64		conflict_id;
	bool		matched;
} ConflictEntry;

static char *
conflict_key(int64 event_id, const char *identifier, const char *reason)
{
	return psprintf(INT64_FORMAT "|%s|%s", event_id, identifier ? identifier : "", reason);
}

static void
load_conflict(Replay *r, HeapTuple tup, TupleDesc desc, void *arg)
{
	HTAB	   *h = arg;
	bool		isnull;
	int64		event_id = get_int8(tup, desc, 2, &isnull);
	char	   *key;
	ConflictEntry *e;

	if (!replayed_event(r, event_id))
		return;					/* a rejected message's, not replayed */
	key = conflict_key(event_id, get_cstring(tup, desc, 4), get_cstring(tup, desc, 5));
	e = hash_search(h, &key, HASH_ENTER, NULL);
	e->key = key;
	e->conflict_id = get_int8(tup, desc, 1, &isnull);
	e->row = psprintf(INT64_FORMAT "|%s", get_int8(tup, desc, 3, &isnull), get_cstring(tup, desc, 6));
	e->matched = false;
}

static uint32
cstring_hash(const void *key, Size keysize)
{
	const char *s = *(const char *const *) key;

	return hash_bytes((const unsigned char *) s, strlen(s));
}

static int
cstring_match(const void *a, const void *b, Size keysize)
{
	return strcmp(*(const char *const *) a, *(const char *const *) b);
}

static void
write_conflicts(Replay *r, RebuildStats *st)
{
	Graph	   *g = r->g;
	HASHCTL		ctl;
	HTAB	   *stored;
	HASH_SEQ_STATUS seq;
	ConflictEntry *ce;
	ListCell   *lc;
	ArrayBuild	del,
				a1,
				a2,
				a3,
				a4,
				a5;
	Oid			t1[1] = {INT8ARRAYOID};
	ArrayBuild	evs;
	Datum		evarg;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(char *);
	ctl.entrysize = sizeof(ConflictEntry);
	ctl.hash = cstring_hash;
	ctl.match = cstring_match;
	ctl.hcxt = CurrentMemoryContext;
	stored = hash_create("cdp stored conflicts", 1024, &ctl,
						 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	if (r->full)
		for_each_row(r, "SELECT conflict_id, event_id, profile_id, identifier::text, reason, detail "
					 "FROM cdp.identity_conflicts WHERE reason NOT IN ('invalid', 'suppressed')",
					 0, NULL, NULL, load_conflict, stored);
	else
	{
		ab_init(&evs, INT8OID);
		for (int64 i = 0; i < r->nevents; i++)
			ab_add(&evs, Int64GetDatum(r->events[i].event_id), false);
		evarg = ab_result(&evs);
		for_each_row(r, "SELECT conflict_id, event_id, profile_id, identifier::text, reason, detail "
					 "FROM cdp.identity_conflicts WHERE reason NOT IN ('invalid', 'suppressed') AND event_id = ANY ($1)",
					 1, t1, &evarg, load_conflict, stored);
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
		char	   *key;
		bool		found;

		if (p == 0)
			continue;			/* its event is removed */
		st->conflicts++;
		key = conflict_key(c->event_id, c->identifier, c->reason);
		ce = hash_search(stored, &key, HASH_FIND, &found);
		if (found && strcmp(ce->row, psprintf(INT64_FORMAT "|%s", p, c->detail)) == 0)
		{
			ce->matched = true;
			continue;
		}
		ab_add(&a1, Int64GetDatum(c->event_id), false);
		ab_add(&a2, Int64GetDatum(p), false);
		ab_add_text(&a3, c->identifier);
		ab_add_text(&a4, c->reason);
		ab_add_text(&a5, c->detail);
	}

	ab_init(&del, INT8OID);
	hash_seq_init(&seq, stored);
	while ((ce = hash_seq_search(&seq)) != NULL)
		if (!ce->matched)
			ab_add(&del, Int64GetDatum(ce->conflict_id), false);
	st->rows_written += del.n + a1.n;
	if (del.n > 0)
	{
		Datum		arg = ab_result(&del);

		exec_args("DELETE FROM cdp.identity_conflicts WHERE conflict_id = ANY ($1)", 1, t1, &arg);
	}
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

/*
 * Make the stored graph of the scope equal to the replay's, writing only
 * what differs: a rebuild that changes nothing writes nothing.
 */
static void
write_rebuild(Replay *r, RebuildStats *st)
{
	Diff		d = {0};
	Diff		idchanges = {0};
	int64	   *ids;
	int			n = 0;
	ListCell   *lc;

	write_identifiers(r, &idchanges, st);
	write_profiles(r, &d, st);
	write_events(r, &d, st);
	write_traits(r, &d);
	write_merges(r, st);
	write_conflicts(r, st);

	ids = palloc(sizeof(int64) * Max(list_length(idchanges.changed_profiles) + list_length(d.changed_profiles), 1));
	foreach(lc, idchanges.changed_profiles)
		ids[n++] = *(int64 *) lfirst(lc);
	foreach(lc, d.changed_profiles)
		ids[n++] = *(int64 *) lfirst(lc);
	identity_changed(ids, n);
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
