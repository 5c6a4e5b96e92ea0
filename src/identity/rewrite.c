/*-------------------------------------------------------------------------
 *
 * rewrite.c
 *	  Make the stored identity graph equal to a replay's (restitch.c),
 *	  table by table, writing only the rows that differ: a rebuild that
 *	  changes nothing writes nothing.
 *
 * Each table's stored rows (all of them for a full rebuild, read with a
 * plain scan; the scope's otherwise) are compared with the replay; rows
 * that differ are upserted, rows the replay no longer has are deleted.
 * Profiles whose identifiers, events or status changed get their traits
 * recomputed and are handed to the layers above (identity_changed()).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
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

/* Does the C string a (or NULL) equal the len bytes at b (or NULL)? */
static bool
str_equal_bytes(const char *a, const char *b, int len)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strncmp(a, b, len) == 0 && a[len] == '\0';
}

/*
 * The stored rows of identity_data and profile_data usually come in the
 * order of the graph's lists, or in long runs of it (g->ident_list: the
 * order events, by id, first carry the identifiers, which is the order a
 * restitch writes them and close to the one ingestion appends them in;
 * g->profile_list: creation order, which is profile id order).  Each row is
 * therefore first compared with the entries just after the last one
 * matched -- a sequential pass over memory.  A row not there is looked up
 * in the hash table: at once when the previous row matched (it starts
 * another run, or it is a single row out of place: the next row is
 * compared at both places), otherwise a batch at a time with their memory
 * fetched ahead (the cursor moves after the batch).  Any order gives the
 * same result; the graph's order is just cheaper.
 */
#define DIFF_BATCH 64

typedef struct DiffCursor
{
	int64		next;			/* list position expected next */
	int64		alt;			/* or this one (-1: none) */
	bool		in_order;		/* the last row was found there (or none yet) */
} DiffCursor;

static void
cursor_init(DiffCursor *c)
{
	c->next = 0;
	c->alt = -1;
	c->in_order = true;
}

/* The k-th list position to compare the next row with, or -1. */
#define CURSOR_CANDIDATES 4
static inline int64
cursor_candidate(const DiffCursor *c, int k, int64 n)
{
	int64		pos = k < 2 ? c->next + k : (c->alt < 0 ? -1 : c->alt + k - 2);

	return pos < n ? pos : -1;
}

/* The row was the entry at pos. */
static inline void
cursor_matched(DiffCursor *c, int64 pos)
{
	c->next = pos + 1;
	c->alt = -1;
	c->in_order = true;
}

/* A lookup found the row's entry at list position seq: continue after it, or where we were. */
static inline void
cursor_jump(DiffCursor *c, void *const *list, int64 n, uint32 seq, const void *entry)
{
	if (seq < n && list[seq] == entry)
	{
		c->alt = c->next;
		c->next = (int64) seq + 1;
	}
}

/* identity_data: stored rows are compared with the replayed identifiers. */
typedef struct StoredIdent
{
	int			key;			/* offset in IdentDiff.bytes (batched rows) */
	int			keylen;
	uint32		hash;
	int			source;			/* offset, or -1 for NULL */
	int			sourcelen;
	int64		profile_id;
	TimestampTz first_seen;
	TimestampTz last_seen;
} StoredIdent;

typedef struct IdentDiff
{
	ArrayBuild	del;
	Diff	   *d;
	Graph	   *g;
	DiffCursor	cur;			/* in g->ident_list */
	int			n;				/* rows waiting for a lookup */
	StoredIdent rows[DIFF_BATCH];
	StringInfoData bytes;		/* their keys and sources */
} IdentDiff;

/* Compare one stored row (its key and source at the given addresses) with id, NULL when unknown. */
static void
diff_identifier(IdentDiff *idd, GraphIdent *id, const StoredIdent *row, const char *key, const char *source)
{
	int64		f;

	if (id == NULL || id->profile == NULL)
	{
		ab_add(&idd->del, PointerGetDatum(cstring_to_text_with_len(key, row->keylen)), false);
		note_changed(idd->d, row->profile_id);
		return;
	}
	id->stored = true;
	f = graph_live_id(id->profile);
	if (f != row->profile_id)
	{
		note_changed(idd->d, row->profile_id);
		note_changed(idd->d, f);
	}
	if (f != row->profile_id ||
		!str_equal_bytes(id->source, source, row->sourcelen) ||
		id->first_seen != row->first_seen ||
		id->last_seen != row->last_seen)
		id->dirty = true;
}

static void
diff_identifier_batch(IdentDiff *idd)
{
	Graph	   *g = idd->g;

	for (int i = 0; i < idd->n; i++)
		graph_prefetch_ident(g, idd->rows[i].hash);
	for (int i = 0; i < idd->n; i++)
	{
		StoredIdent *row = &idd->rows[i];
		const char *key = idd->bytes.data + row->key;
		GraphIdent *id = graph_lookup_hashed(g, key, row->keylen, row->hash);

		diff_identifier(idd, id, row, key, row->source < 0 ? NULL : idd->bytes.data + row->source);
		if (id != NULL)
			cursor_jump(&idd->cur, (void *const *) g->ident_list, g->nidents, id->seq, id);
	}
	idd->n = 0;
	idd->cur.in_order = true;
	resetStringInfo(&idd->bytes);
}

/* The identifier with this key at (or just past) the cursor, or NULL. */
static GraphIdent *
ident_at_cursor(IdentDiff *idd, const char *key, int len)
{
	Graph	   *g = idd->g;

	for (int k = 0; k < CURSOR_CANDIDATES; k++)
	{
		int64		j = cursor_candidate(&idd->cur, k, g->nidents);
		GraphIdent *id;

		if (j < 0)
			continue;
		id = g->ident_list[j];
		if (id->keylen == len && memcmp(id->key, key, len) == 0)
		{
			cursor_matched(&idd->cur, j);
			return id;
		}
	}
	return NULL;
}

/* One stored row of identity_data (identifier, profile_id, source, first_seen, last_seen). */
static void
add_stored_identifier(IdentDiff *idd, Datum *v, bool *isnull)
{
	StoredIdent row;
	const char *key;
	const char *source = NULL;
	GraphIdent *id;

	text_bytes(v[0], &key, &row.keylen);
	row.sourcelen = 0;
	if (!isnull[2])
		text_bytes(v[2], &source, &row.sourcelen);
	row.profile_id = DatumGetInt64(v[1]);
	row.first_seen = DatumGetTimestampTz(v[3]);
	row.last_seen = DatumGetTimestampTz(v[4]);

	id = ident_at_cursor(idd, key, row.keylen);
	if (id != NULL)
	{
		diff_identifier(idd, id, &row, key, source);
		return;
	}
	row.hash = graph_key_hash(key, row.keylen);
	if (idd->cur.in_order)
	{
		/* the first row out of order: look it up now, continue from there */
		idd->cur.in_order = false;
		id = graph_lookup_hashed(idd->g, key, row.keylen, row.hash);
		diff_identifier(idd, id, &row, key, source);
		if (id != NULL)
			cursor_jump(&idd->cur, (void *const *) idd->g->ident_list, idd->g->nidents, id->seq, id);
		return;
	}

	/* Copy it out of the page and look it up with the next batch. */
	row.key = idd->bytes.len;
	appendBinaryStringInfo(&idd->bytes, key, row.keylen);
	row.source = -1;
	if (source != NULL)
	{
		row.source = idd->bytes.len;
		appendBinaryStringInfo(&idd->bytes, source, row.sourcelen);
	}
	graph_prefetch_slot(idd->g, row.hash);
	idd->rows[idd->n++] = row;
	if (idd->n == DIFF_BATCH)
		diff_identifier_batch(idd);
}

static void
diff_identifier_row(Replay *r, HeapTuple tup, TupleDesc desc, void *arg)
{
	Datum		v[5];
	bool		isnull[5];

	for (int i = 0; i < 5; i++)
		v[i] = SPI_getbinval(tup, desc, i + 1, &isnull[i]);
	add_stored_identifier(arg, v, isnull);
}

static const char *const identity_columns[] =
{"identifier", "profile_id", "source", "first_seen", "last_seen"};

static void
diff_identifier_scan(void *arg, Datum *v, bool *isnull)
{
	add_stored_identifier(arg, v, isnull);
}

static void
write_identifiers(Replay *r, Diff *changes, RebuildStats *st)
{
	Graph	   *g = r->g;
	IdentDiff  *d = palloc0(sizeof(IdentDiff));
	ArrayBuild	a1,
				a2,
				a3,
				a4,
				a5,
				a6;
	Oid			identarr = get_array_type(identifier_type_oid());
	Oid			t1[1] = {INT8ARRAYOID};

	/* The engine's flags describe its own run; here they mean "stored" and "differs". */
	for (int64 i = 0; i < g->nidents; i++)
		g->ident_list[i]->stored = g->ident_list[i]->dirty = false;

	d->d = changes;
	d->g = g;
	cursor_init(&d->cur);
	initStringInfo(&d->bytes);
	ab_init(&d->del, identifier_type_oid());
	if (r->full)
		scan_storage("identity_data", lengthof(identity_columns), identity_columns, diff_identifier_scan, d);
	else
		for_each_row(r, "SELECT identifier, profile_id, source, first_seen, last_seen FROM cdp.identity_data "
					 "WHERE profile_id = ANY ($1)",
					 1, t1, &r->scope_all, diff_identifier_row, d);
	diff_identifier_batch(d);
	if (d->del.n > 0)
	{
		Datum		arg = ab_result(&d->del);

		exec_args("DELETE FROM cdp.identity_data WHERE identifier OPERATOR(cdp.=) ANY ($1)", 1, &identarr, &arg);
	}

	/*
	 * In the graph's order, not sorted: the next restitch then compares in
	 * one pass.  Rows are therefore locked in no fixed order; that cannot
	 * deadlock only because every caller holds the identity graph lock
	 * exclusively (identity_lock_graph(true)).
	 */
	ab_init(&a1, identifier_type_oid());
	ab_init(&a2, TEXTOID);
	ab_init(&a3, INT8OID);
	ab_init(&a4, TEXTOID);
	ab_init(&a5, TIMESTAMPTZOID);
	ab_init(&a6, TIMESTAMPTZOID);
	for (int64 i = 0; i < g->nidents; i++)
	{
		GraphIdent *id = g->ident_list[i];

		if (id->profile == NULL)
			continue;
		st->identifiers++;
		if (id->stored && !id->dirty)
			continue;
		if (!id->stored)
			note_changed(changes, graph_live_id(id->profile));
		ab_add_text(&a1, id->key);
		ab_add(&a2, PointerGetDatum(cstring_to_text_with_len(id->key, strchr(id->key, ':') - id->key)), false);
		ab_add(&a3, Int64GetDatum(graph_live_id(id->profile)), false);
		ab_add_text(&a4, id->source);
		ab_add(&a5, TimestampTzGetDatum(id->first_seen), false);
		ab_add(&a6, TimestampTzGetDatum(id->last_seen), false);
	}
	st->rows_written += d->del.n + a1.n;
	if (a1.n > 0)
	{
		Oid			types[6] = {identarr, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID,
		TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
		Datum		args[6] = {ab_result(&a1), ab_result(&a2), ab_result(&a3), ab_result(&a4),
		ab_result(&a5), ab_result(&a6)};

		exec_args("INSERT INTO cdp.identity_data AS i (identifier, kind, profile_id, source, first_seen, last_seen) "
				  "SELECT * FROM unnest($1, $2, $3, $4, $5, $6) "
				  "ON CONFLICT (identifier) DO UPDATE SET profile_id = excluded.profile_id, "
				  "source = excluded.source, first_seen = excluded.first_seen, last_seen = excluded.last_seen",
				  6, types, args);
	}
}

/* profile_data: live profiles and tombstones, batched like identity_data. */
typedef struct StoredProfile
{
	int64		profile_id;
	int64		merged_into;	/* 0: live */
	TimestampTz created_at;
	TimestampTz updated_at;
} StoredProfile;

typedef struct ProfileDiff
{
	Diff	   *d;
	Graph	   *g;
	DiffCursor	cur;			/* in g->profile_list */
	int			n;				/* rows waiting for a lookup */
	StoredProfile rows[DIFF_BATCH];
} ProfileDiff;

/* Compare one stored row with p, NULL when the replay has no such profile. */
static void
diff_profile(ProfileDiff *pd, GraphProfile *p, const StoredProfile *row)
{
	int64		id = row->profile_id;
	int64		f;

	if (p == NULL)
	{
		ab_add(&pd->d->del, Int64GetDatum(id), false);
		note_changed(pd->d, id);
		return;
	}
	p->is_new = false;			/* stored: compare rather than insert */
	f = graph_live_id(p);
	p->touched = (f == id ? 0 : f) != row->merged_into ||
		p->created_at != row->created_at ||
		p->updated_at != row->updated_at;
	if ((f == id ? 0 : f) != row->merged_into)
		note_changed(pd->d, id);
}

static void
diff_profile_batch(ProfileDiff *pd)
{
	Graph	   *g = pd->g;

	for (int i = 0; i < pd->n; i++)
		graph_prefetch_profile(g, pd->rows[i].profile_id);
	for (int i = 0; i < pd->n; i++)
	{
		GraphProfile *p = graph_profile(g, pd->rows[i].profile_id);

		diff_profile(pd, p, &pd->rows[i]);
		if (p != NULL)
			cursor_jump(&pd->cur, (void *const *) g->profile_list, g->nprofiles, p->seq, p);
	}
	pd->n = 0;
	pd->cur.in_order = true;
}

/* The profile with this id at (or just past) the cursor, or NULL. */
static GraphProfile *
profile_at_cursor(ProfileDiff *pd, int64 id)
{
	Graph	   *g = pd->g;

	for (int k = 0; k < CURSOR_CANDIDATES; k++)
	{
		int64		j = cursor_candidate(&pd->cur, k, g->nprofiles);

		if (j >= 0 && g->profile_list[j]->id == id)
		{
			cursor_matched(&pd->cur, j);
			return g->profile_list[j];
		}
	}
	return NULL;
}

/* One stored row of profile_data (profile_id, merged_into, created_at, updated_at). */
static void
add_stored_profile(ProfileDiff *pd, Datum *v, bool *isnull)
{
	StoredProfile row;
	GraphProfile *p;

	row.profile_id = DatumGetInt64(v[0]);
	row.merged_into = isnull[1] ? 0 : DatumGetInt64(v[1]);
	row.created_at = DatumGetTimestampTz(v[2]);
	row.updated_at = DatumGetTimestampTz(v[3]);
	p = profile_at_cursor(pd, row.profile_id);
	if (p != NULL)
	{
		diff_profile(pd, p, &row);
		return;
	}
	if (pd->cur.in_order)
	{
		/* the first row out of order: look it up now, continue from there */
		pd->cur.in_order = false;
		p = graph_profile(pd->g, row.profile_id);
		diff_profile(pd, p, &row);
		if (p != NULL)
			cursor_jump(&pd->cur, (void *const *) pd->g->profile_list, pd->g->nprofiles, p->seq, p);
		return;
	}
	graph_prefetch_profile_slot(pd->g, row.profile_id);
	pd->rows[pd->n++] = row;
	if (pd->n == DIFF_BATCH)
		diff_profile_batch(pd);
}

static void
diff_profile_row(Replay *r, HeapTuple tup, TupleDesc desc, void *arg)
{
	Datum		v[4];
	bool		isnull[4];

	for (int i = 0; i < 4; i++)
		v[i] = SPI_getbinval(tup, desc, i + 1, &isnull[i]);
	add_stored_profile(arg, v, isnull);
}

static const char *const profile_columns[] = {"profile_id", "merged_into", "created_at", "updated_at"};

static void
diff_profile_scan(void *arg, Datum *v, bool *isnull)
{
	add_stored_profile(arg, v, isnull);
}

static void
write_profiles(Replay *r, Diff *d, RebuildStats *st)
{
	Graph	   *g = r->g;
	ProfileDiff *pd = palloc0(sizeof(ProfileDiff));
	ArrayBuild	a1,
				a2,
				a3,
				a4;
	Oid			t1[1] = {INT8ARRAYOID};

	pd->d = d;
	pd->g = g;
	cursor_init(&pd->cur);
	ab_init(&d->del, INT8OID);
	if (r->full)
		scan_storage("profile_data", lengthof(profile_columns), profile_columns, diff_profile_scan, pd);
	else
		for_each_row(r, "SELECT profile_id, merged_into, created_at, updated_at FROM cdp.profile_data "
					 "WHERE profile_id = ANY ($1)",
					 1, t1, &r->scope_all, diff_profile_row, pd);
	diff_profile_batch(pd);
	if (d->del.n > 0)
	{
		Datum		arg = ab_result(&d->del);

		exec_args("DELETE FROM cdp.profile_data WHERE profile_id = ANY ($1)", 1, t1, &arg);
	}

	ab_init(&a1, INT8OID);
	ab_init(&a2, INT8OID);
	ab_init(&a3, TIMESTAMPTZOID);
	ab_init(&a4, TIMESTAMPTZOID);
	for (int64 i = 0; i < g->nprofiles; i++)
	{
		GraphProfile *p = g->profile_list[i];
		int64		f = graph_live_id(p);

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
		int64		f = graph_live_id(e->u.new_profile);

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
void
write_rebuild(Replay *r, RebuildStats *st)
{
	Diff		d = {0};
	Diff		idchanges = {0};
	int64	   *ids;
	int			n = 0;
	ListCell   *lc;

	write_identifiers(r, &idchanges, st);
	phase_end(st, PHASE_IDENTIFIERS);
	write_profiles(r, &d, st);
	phase_end(st, PHASE_PROFILES);
	write_events(r, &d, st);
	write_traits(r, &d);
	write_merges(r, st);
	write_conflicts(r, st);

	ids = palloc(sizeof(int64) * Max(list_length(idchanges.changed_profiles) + list_length(d.changed_profiles), 1));
	foreach(lc, idchanges.changed_profiles)
		ids[n++] = *(int64 *) lfirst(lc);
	foreach(lc, d.changed_profiles)
		ids[n++] = *(int64 *) lfirst(lc);
	{
		IdentityChange change = {.profiles = ids, .nprofiles = n, .rebuilt = true};

		identity_changed(&change);
	}
	phase_end(st, PHASE_REST);
}

