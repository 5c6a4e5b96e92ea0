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

#include "miscadmin.h"

#include "access/detoast.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "portability/instr_time.h"
#include "utils/array.h"
#include "utils/arrayaccess.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "identity/bigmem.h"
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

/*
 * An identifier array as stored, without a copy when it can be read in
 * place: a short varlena header (unaligned data) is copied to r->arraybuf,
 * a compressed or out-of-line array is detoasted (into the scratch context).
 */
static ArrayType *
stored_array(Replay *r, Datum d)
{
	struct varlena *v = (struct varlena *) DatumGetPointer(d);

	if (VARATT_IS_SHORT(v))
	{
		Size		len = VARSIZE_SHORT(v) - VARHDRSZ_SHORT;

		if (len + VARHDRSZ > r->arraybuf_size)
		{
			r->arraybuf_size = Max(1024, (len + VARHDRSZ) * 2);
			r->arraybuf = MemoryContextAlloc(r->g->cxt, r->arraybuf_size);
		}
		SET_VARSIZE(r->arraybuf, len + VARHDRSZ);
		memcpy(VARDATA(r->arraybuf), VARDATA_SHORT(v), len);
		return (ArrayType *) r->arraybuf;
	}
	if (VARATT_IS_EXTENDED(v))
		return (ArrayType *) detoast_attr(v);
	return (ArrayType *) v;
}

/*
 * Identifiers are interned a batch at a time, their hash slots and entries
 * fetched ahead (see graph_prefetch_slot()), in the order read.  The same
 * identifier usually comes back within a few events (a person's events are
 * close together): a small cache of the identifiers read last, by hash,
 * resolves those without the hash table, or ties them to the copy already
 * waiting in the batch.
 */
#define PENDING_MAX 256
#define RECENT_SIZE 4096		/* a power of 2 */

typedef struct PendingIdent
{
	int64		event;			/* index in r->events */
	int			pos;			/* in its ids[] */
	int			key;			/* offset in r->pending_keys */
	int			keylen;
	uint32		hash;
	int			same;			/* an earlier entry with the same key, or -1 */
	GraphIdent *ident;			/* once interned */
} PendingIdent;

typedef struct RecentIdent
{
	uint32		hash;
	int			pending;		/* 1 + its PendingIdent while waiting, else 0 */
	GraphIdent *ident;			/* once interned */
} RecentIdent;

/*
 * The identifier read lately with this key, or NULL; then *same is the
 * pending entry waiting with it, or -1.
 */
static GraphIdent *
recent_ident(Replay *r, const char *key, int len, uint32 hash, int *same)
{
	RecentIdent *c = &r->recent[hash & (RECENT_SIZE - 1)];

	*same = -1;
	if (c->hash != hash)
		return NULL;
	if (c->ident != NULL)
		return c->ident->keylen == len && memcmp(c->ident->key, key, len) == 0 ? c->ident : NULL;
	if (c->pending > 0)
	{
		PendingIdent *p = &r->pending[c->pending - 1];

		if (p->keylen == len && memcmp(r->pending_keys.data + p->key, key, len) == 0)
			*same = c->pending - 1;
	}
	return NULL;
}

static void
intern_pending(Replay *r)
{
	Graph	   *g = r->g;

	for (int i = 0; i < r->npending; i++)
		if (r->pending[i].same < 0)
			graph_prefetch_ident(g, r->pending[i].hash);
	for (int i = 0; i < r->npending; i++)
	{
		PendingIdent *p = &r->pending[i];
		RecentIdent *c = &r->recent[p->hash & (RECENT_SIZE - 1)];

		p->ident = p->same >= 0 ? r->pending[p->same].ident
			: graph_intern_hashed(g, r->pending_keys.data + p->key, p->keylen, p->hash);
		r->events[p->event].ids[p->pos] = p->ident;
		if (c->pending == i + 1)
		{
			c->pending = 0;
			c->ident = p->ident;
		}
	}
	r->npending = 0;
	if (r->pending != NULL)
		resetStringInfo(&r->pending_keys);
}

/* The identifier at position pos of event ev: resolved now, or queued. */
static void
read_ident(Replay *r, int64 ev, int pos, const char *key, int len)
{
	uint32		hash = graph_key_hash(key, len);
	int			same;
	GraphIdent *id = recent_ident(r, key, len, hash, &same);
	PendingIdent *p;

	if (id != NULL)
	{
		r->events[ev].ids[pos] = id;
		return;
	}
	p = &r->pending[r->npending];
	p->event = ev;
	p->pos = pos;
	p->keylen = len;
	p->hash = hash;
	p->same = same;
	if (same >= 0)
		p->key = r->pending[same].key;
	else
	{
		RecentIdent *c = &r->recent[hash & (RECENT_SIZE - 1)];

		p->key = r->pending_keys.len;
		appendBinaryStringInfo(&r->pending_keys, key, len);
		graph_prefetch_slot(r->g, hash);
		c->hash = hash;
		c->pending = r->npending + 1;
		c->ident = NULL;
	}
	r->npending++;
}

/* One stored event into r->events; its identifiers are interned later. */
static void
add_event(Replay *r, int64 event_id, int64 profile_id, TimestampTz occurred_at,
		  TimestampTz received_at, Datum source, bool source_null, Datum identifiers)
{
	Graph	   *g = r->g;
	ReplayEvent *e;
	ArrayType  *arr;
	array_iter	it;
	int			n;

	if (r->nevents == r->cap)
	{
		int64		cap = Max(1024, r->cap * 2);

		r->events = bigmem_realloc(g->mem, r->events, r->cap * sizeof(ReplayEvent), cap * sizeof(ReplayEvent));
		r->cap = cap;
	}
	e = &r->events[r->nevents++];
	e->event_id = event_id;
	e->old_profile = profile_id;
	e->occurred_at = occurred_at;
	e->u.received_at = received_at;
	e->source = 0;
	if (!source_null)
	{
		const char *s;
		int			len;

		text_bytes(source, &s, &len);
		e->source = graph_string_index(g, s, len);
	}

	arr = stored_array(r, identifiers);
	n = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
	if (r->pending == NULL)
	{
		r->pending_cap = PENDING_MAX;
		r->pending = MemoryContextAlloc(g->cxt, sizeof(PendingIdent) * r->pending_cap);
		initStringInfo(&r->pending_keys);
		r->recent = MemoryContextAllocZero(g->cxt, sizeof(RecentIdent) * RECENT_SIZE);
	}
	if (r->npending + n > r->pending_cap)
	{
		intern_pending(r);
		if (n > r->pending_cap)
		{
			r->pending_cap = n;
			r->pending = repalloc_huge(r->pending, sizeof(PendingIdent) * r->pending_cap);
		}
	}
	e->ids = graph_alloc(g, sizeof(GraphIdent *) * Max(n, 1));
	e->nids = 0;
	array_iter_setup(&it, (AnyArrayType *) arr);
	for (int j = 0; j < n; j++)
	{
		bool		isnull;
		Datum		el = array_iter_next(&it, &isnull, j, -1, false, TYPALIGN_INT);

		if (isnull)
			continue;
		read_ident(r, r->nevents - 1, e->nids++, VARDATA_ANY(DatumGetPointer(el)),
				   VARSIZE_ANY_EXHDR(DatumGetPointer(el)));
	}
	if (r->npending >= PENDING_MAX)
		intern_pending(r);
	if ((Pointer) arr != DatumGetPointer(identifiers) && (char *) arr != r->arraybuf)
		pfree(arr);
}

static void
read_event_row(Replay *r, HeapTuple tup, TupleDesc desc, void *arg)
{
	bool		isnull;
	bool		source_null;
	Datum		source = SPI_getbinval(tup, desc, 5, &source_null);

	add_event(r, get_int8(tup, desc, 1, &isnull), get_int8(tup, desc, 2, &isnull),
			  get_ts(tup, desc, 3), get_ts(tup, desc, 4), source, source_null,
			  SPI_getbinval(tup, desc, 6, &isnull));
}

static const char *const event_columns[] =
{"event_id", "profile_id", "occurred_at", "received_at", "source", "identifiers"};

static void
scan_event(void *arg, Datum *v, bool *isnull)
{
	add_event((Replay *) arg, DatumGetInt64(v[0]), DatumGetInt64(v[1]), DatumGetTimestampTz(v[2]),
			  DatumGetTimestampTz(v[3]), v[4], isnull[4], v[5]);
}

#define ST_SORT sort_events
#define ST_ELEMENT_TYPE ReplayEvent
#define ST_COMPARE(a, b) ((a)->event_id < (b)->event_id ? -1 : (a)->event_id > (b)->event_id ? 1 : 0)
#define ST_SCOPE static
#define ST_DECLARE
#define ST_DEFINE
#include "lib/sort_template.h"

static int
cmp_event(const void *a, const void *b)
{
	int64		x = ((const ReplayEvent *) a)->event_id;
	int64		y = ((const ReplayEvent *) b)->event_id;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/*
 * Put id next in g->ident_list, unless it is there already.  The replay
 * lists every identifier in the order the events, by id, first carry it:
 * the order does not depend on where the events are stored, and it is the
 * order restitch writes identity_data in (and close to the one ingestion
 * does), so that rewrite.c compares the stored rows in one pass.  Interning
 * listed them in the order read; the list is rewritten in place ahead of
 * that order.  GraphIdent.stored marks the listed ones meanwhile (it means
 * "has a row" only once rewrite.c sets it).
 */
static inline void
list_in_event_order(Graph *g, GraphIdent *id, int64 *n)
{
	if (id->stored)
		return;
	id->stored = true;
	id->seq = (uint32) *n;
	g->ident_list[(*n)++] = id;
}

/*
 * Read the events of the scope (all, when full), order them by event id in
 * memory -- cheaper than asking the executor to sort rows with arrays --
 * and replay them.
 */
static void
replay(Replay *r, RebuildStats *st)
{
	int64		nlisted = 0;

	if (r->full)
		scan_storage("event_data", lengthof(event_columns), event_columns, scan_event, r);
	else
	{
		Oid			type = INT8ARRAYOID;

		for_each_row(r,
					 "SELECT event_id, profile_id, occurred_at, received_at, source, identifiers "
					 "FROM cdp.event_data WHERE profile_id = ANY ($1)",
					 1, &type, &r->scope, read_event_row, NULL);
	}
	intern_pending(r);
	phase_end(st, PHASE_READ);
	sort_events(r->events, r->nevents);
	phase_end(st, PHASE_SORT);

	for (int64 i = 0; i < r->nevents; i++)
	{
		ReplayEvent *e = &r->events[i];
		GraphMessage m;
		const char *reject;

		if ((i & 8191) == 0)
			CHECK_FOR_INTERRUPTS();	/* millions of events: stay cancellable */
		m.event_id = e->event_id;
		m.occurred_at = e->occurred_at;
		m.received_at = e->u.received_at;
		m.source = graph_string(r->g, e->source);
		m.nids = e->nids;
		m.ids = NULL;
		m.idents = e->ids;
		for (int j = 0; j < e->nids; j++)
			list_in_event_order(r->g, e->ids[j], &nlisted);
		e->u.new_profile = graph_apply(r->g, &m, &reject);
	}
	if (nlisted != r->g->nidents)
		elog(ERROR, "cdp: replay listed " INT64_FORMAT " of " INT64_FORMAT " identifiers", nlisted, r->g->nidents);
	phase_end(st, PHASE_APPLY);
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
replay_create(IdentityRules *rules, int64 idents, int64 profiles, int64 events, bool full)
{
	Replay	   *r = palloc0(sizeof(Replay));

	r->g = graph_create(rules, (long) Min(idents, 100000000), (long) Min(profiles, 100000000));
	r->g->lazy_profiles = true; /* events come in id order: new profiles too */
	r->full = full;
	r->cap = Min(Max(events, 1024), 1000000000);
	r->events = bigmem_alloc(r->g->mem, r->cap * sizeof(ReplayEvent));
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
	int64		expected[3];
	bool		isnull;

	INSTR_TIME_SET_CURRENT(start);
	st.phase_start = start;
	identity_lock_graph(true);

	SPI_connect();
	old = MemoryContextSwitchTo(work);
	/*
	 * Size the graph for the stored one (the planner's row estimates, a few
	 * percent over): growing it later copies, and fresh memory is costly.
	 */
	SPI_execute("SELECT (coalesce(sum(greatest(c.reltuples, 0)) FILTER (WHERE c.relname = 'identity_data'), 0) * 1.02 + 1024)::int8, "
				"(coalesce(sum(greatest(c.reltuples, 0)) FILTER (WHERE c.relname = 'profile_data'), 0) * 1.02 + 1024)::int8, "
				"(coalesce(sum(greatest(c.reltuples, 0)) FILTER (WHERE c.relname LIKE 'event\\_data\\_%'), 0) * 1.02 + 1024)::int8 "
				"FROM pg_catalog.pg_class c WHERE c.relnamespace = 'cdp'::pg_catalog.regnamespace "
				"AND c.relkind = 'r'", false, 0);
	for (int i = 0; i < 3; i++)
		expected[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &isnull));
	r = replay_create(rules_load(), expected[0], expected[1], expected[2], true);
	replay(r, &st);
	st.read_ms = ms_since(start);
	write_rebuild(r, &st);
	st.write_ms = ms_since(start) - st.read_ms;
	MemoryContextSwitchTo(old);
	SPI_finish();

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	append_stats(&buf, &st);
	appendStringInfo(&buf, ", \"replay_ms\": %.1f, \"write_ms\": %.1f, \"duration_ms\": %.1f, "
					 "\"phases_ms\": {\"read\": %.1f, \"sort\": %.1f, \"apply\": %.1f, "
					 "\"identifiers\": %.1f, \"profiles\": %.1f, \"rest\": %.1f}}",
					 st.read_ms, st.write_ms, ms_since(start),
					 st.phase_ms[PHASE_READ], st.phase_ms[PHASE_SORT], st.phase_ms[PHASE_APPLY],
					 st.phase_ms[PHASE_IDENTIFIERS], st.phase_ms[PHASE_PROFILES], st.phase_ms[PHASE_REST]);
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

	r = replay_create(rules_load(), 1024, 1024, 1024, false);
	r->scope = scope;
	r->scope_all = scope_all;
	INSTR_TIME_SET_CURRENT(st.phase_start);
	replay(r, &st);
	write_rebuild(r, &st);

	/* The live profiles the replay left, including ones a split created. */
	{
		int64	   *live = palloc(sizeof(int64) * Max(r->g->nprofiles, 1));
		int			nlive = 0;
		ArrayBuild	ab;

		for (int64 i = 0; i < r->g->nprofiles; i++)
			if (r->g->profile_list[i]->survivor == NULL)
				live[nlive++] = r->g->profile_list[i]->id;
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

