/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  identity_process(): resolve a batch of parsed messages against the
 *	  stored identity graph and write the outcome, set-at-a-time.
 *
 *	1. drop re-sent messages (cdp.message_ids, message_ids.c);
 *	2. lock the identifiers the batch carries (store.c), read which
 *	   profiles they belong to and lock those; seed the engine with them;
 *	3. draw event ids in batch order and apply each message (graph.c);
 *	4. create the event partitions the batch needs, then write new
 *	   profiles, merges, identifiers, events, traits and conflicts, each
 *	   with one statement over arrays.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"

#include "identity/graph.h"
#include "identity/identity.h"
#include "identity/store.h"

static int
cmp_cstring(const void *a, const void *b)
{
	return strcmp(*(const char *const *) a, *(const char *const *) b);
}

static bool
accepted(const IngestMessage *m)
{
	return m->error == NULL && !m->duplicate;
}

/*
 * The stored profiles whose identifier counts the engine may consult, into
 * ab: a limit is checked only when a message attaches a new identifier or
 * joins profiles (with one profile and known identifiers, no total can
 * exceed what the profile already has).  So only the profiles of messages
 * that carry an identifier not stored, or stored identifiers of two or more
 * profiles, need their counts; a profile reached later in the batch through
 * a new identifier or a merge is one of those too.  Most messages carry
 * identifiers seen before, all on one profile.
 */
static void
at_risk_profiles(Graph *g, IngestMessage *msgs, int n, ArrayBuild *ab)
{
	bool	   *risk = palloc0(sizeof(bool) * Max(g->nprofiles, 1));

	for (int i = 0; i < n; i++)
	{
		IngestMessage *m = &msgs[i];
		GraphProfile *first = NULL;
		bool		needs = false;

		if (m->error != NULL)
			continue;
		for (int j = 0; j < m->nids && !needs; j++)
		{
			GraphIdent *id = graph_lookup(g, m->ids[j], strlen(m->ids[j]));

			if (id == NULL || !id->stored || id->profile == NULL)
				needs = true;
			else if (first == NULL)
				first = id->profile;
			else if (id->profile != first)
				needs = true;
		}
		if (!needs)
			continue;
		for (int j = 0; j < m->nids; j++)
		{
			GraphIdent *id = graph_lookup(g, m->ids[j], strlen(m->ids[j]));

			if (id != NULL && id->stored && id->profile != NULL && !risk[id->profile->seq])
			{
				risk[id->profile->seq] = true;
				ab_add(ab, Int64GetDatum(id->profile->id), false);
			}
		}
	}
	pfree(risk);
}

/* 2. Lock, read and seed the part of the graph the batch can reach. */
static void
load_graph(Graph *g, const char **keys, int nkeys, IngestMessage *msgs, int n)
{
	Oid			identarr[1] = {IDENTIFIER_ARRAY_PLACEHOLDER};
	Oid			int8arr[1] = {INT8ARRAYOID};
	ArrayBuild	ab;
	Datum		arg;
	bool		fine;
	ProfileLocks pl = {0};
	GraphIdent **idents;
	int64	   *pids = NULL;
	int			npids = 0;

	fine = identity_lock_identifiers(keys, nkeys);

	ab_init(&ab, identifier_type_oid());
	for (int i = 0; i < nkeys; i++)
		ab_add_text(&ab, keys[i]);
	arg = ab_result(&ab);

	for (;;)
	{
		store_exec(PLAN_LOAD_IDENTS,
				   "SELECT identifier::text, profile_id, source, first_seen, last_seen "
				   "FROM cdp.identity_data WHERE identifier OPERATOR(cdp.=) ANY ($1)",
				   1, identarr, &arg, NULL, false);
		pids = palloc(sizeof(int64) * Max(SPI_processed, 1));
		npids = 0;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;

			pids[npids++] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														SPI_tuptable->tupdesc, 2, &isnull));
		}
		/* A stable read: every profile it names was already locked. */
		if (!fine || profile_locks_take(&pl, pids, npids))
			break;
	}

	idents = palloc(sizeof(GraphIdent *) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *key = SPI_getvalue(tup, desc, 1);
		GraphIdent *id;
		MemoryContext old = MemoryContextSwitchTo(g->cxt);

		id = graph_intern(g, key);
		id->source = SPI_getvalue(tup, desc, 3);
		id->first_seen = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
		id->last_seen = DatumGetTimestampTz(SPI_getbinval(tup, desc, 5, &isnull));
		id->stored = true;
		idents[i] = id;
		MemoryContextSwitchTo(old);
	}
	if (npids == 0)
		return;

	ab_init(&ab, INT8OID);
	for (int i = 0; i < npids; i++)
		ab_add(&ab, Int64GetDatum(pids[i]), false);
	arg = ab_result(&ab);

	store_exec(PLAN_LOAD_PROFILES,
			   "SELECT profile_id, coalesce(merged_into, 0), created_at, updated_at "
			   "FROM cdp.profile_data WHERE profile_id = ANY ($1)",
			   1, int8arr, &arg, NULL, false);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		graph_add_profile(g,
						  DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)),
						  DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull)),
						  DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull)),
						  DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull)));
	}

	/* Attach the identifiers (a profile row missing would stand for itself). */
	for (int i = 0; i < npids; i++)
		idents[i]->profile = graph_add_profile(g, pids[i], 0, 0, 0);

	/* Counts of identifiers per kind, for the profiles that may need them. */
	ab_init(&ab, INT8OID);
	at_risk_profiles(g, msgs, n, &ab);
	if (ab.n == 0)
		return;
	arg = ab_result(&ab);
	store_exec(PLAN_LOAD_COUNTS,
			   "SELECT profile_id, kind, count(*)::int4 FROM cdp.identity_data "
			   "WHERE profile_id = ANY ($1) GROUP BY 1, 2",
			   1, int8arr, &arg, NULL, false);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext old = MemoryContextSwitchTo(g->cxt);

		graph_add_count(g,
						DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)),
						SPI_getvalue(tup, desc, 2),
						DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull)));
		MemoryContextSwitchTo(old);
	}
}

/*
 * 3. Event ids, drawn after the locks, one per parsed message, in the
 * batch's order.  (Straight from the sequence: a statement drawing them
 * cost more than drawing them.)
 */
static void
draw_event_ids(IngestMessage *msgs, int n)
{
	Oid			seq = cdp_relid("event_id_seq");

	for (int i = 0; i < n; i++)
		if (msgs[i].error == NULL)
			msgs[i].event_id = nextval_internal(seq, true);
}

/* 4. Write-back. */

static void
write_profiles_and_merges(Graph *g)
{
	ArrayBuild	id,
				merged_into,
				created,
				updated;
	ListCell   *lc;

	ab_init(&id, INT8OID);
	ab_init(&merged_into, INT8OID);
	ab_init(&created, TIMESTAMPTZOID);
	ab_init(&updated, TIMESTAMPTZOID);
	for (int64 i = 0; i < g->nprofiles; i++)
	{
		GraphProfile *p = g->profile_list[i];
		int64		f;

		if (!p->is_new)
			continue;
		f = graph_live_id(p);
		ab_add(&id, Int64GetDatum(p->id), false);
		ab_add(&merged_into, Int64GetDatum(f), f == p->id);
		ab_add(&created, TimestampTzGetDatum(p->created_at), false);
		ab_add(&updated, TimestampTzGetDatum(p->updated_at), false);
	}
	if (id.n > 0)
	{
		Oid			types[4] = {INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
		Datum		args[4] = {ab_result(&id), ab_result(&merged_into), ab_result(&created), ab_result(&updated)};

		store_exec(PLAN_INSERT_PROFILES,
				   "INSERT INTO cdp.profile_data (profile_id, merged_into, created_at, updated_at) "
				   "SELECT * FROM unnest($1, $2, $3, $4)",
				   4, types, args, NULL, false);
	}

	if (g->merges != NIL)
	{
		ArrayBuild	m,
					f,
					into,
					ev,
					at,
					cause;
		Oid			types2[2] = {INT8ARRAYOID, INT8ARRAYOID};
		Oid			types1[1] = {INT8ARRAYOID};
		Oid			types6[5] = {INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, JSONBARRAYOID};
		Datum		args2[2];
		Datum		args6[5];

		ab_init(&m, INT8OID);
		ab_init(&f, INT8OID);
		ab_init(&into, INT8OID);
		ab_init(&ev, INT8OID);
		ab_init(&at, TIMESTAMPTZOID);
		ab_init(&cause, JSONBOID);
		foreach(lc, g->merges)
		{
			GraphMerge *mg = lfirst(lc);

			ab_add(&m, Int64GetDatum(mg->merged), false);
			ab_add(&f, Int64GetDatum(graph_resolve(g, mg->merged)), false);
			ab_add(&into, Int64GetDatum(mg->into), false);
			ab_add(&ev, Int64GetDatum(mg->event_id), false);
			ab_add(&at, TimestampTzGetDatum(mg->merged_at), false);
			ab_add(&cause, DirectFunctionCall1(jsonb_in, CStringGetDatum(graph_merge_cause(mg))), false);
		}
		args2[0] = ab_result(&m);
		args2[1] = ab_result(&f);

		store_exec(PLAN_MERGE_IDENTS,
				   "UPDATE cdp.identity_data i SET profile_id = m.f "
				   "FROM unnest($1, $2) AS m(m, f) WHERE i.profile_id = m.m",
				   2, types2, args2, NULL, false);
		store_exec(PLAN_MERGE_EVENTS,
				   "UPDATE cdp.event_data e SET profile_id = m.f "
				   "FROM unnest($1, $2) AS m(m, f) WHERE e.profile_id = m.m",
				   2, types2, args2, NULL, false);
		store_exec(PLAN_MERGE_CONFLICTS,
				   "UPDATE cdp.identity_conflicts c SET profile_id = m.f "
				   "FROM unnest($1, $2) AS m(m, f) WHERE c.profile_id = m.m",
				   2, types2, args2, NULL, false);
		store_exec(PLAN_MERGE_TRAITS,
				   "INSERT INTO cdp.trait_data AS t (profile_id, key, value, occurred_at, event_id) "
				   "SELECT DISTINCT ON (m.f, d.key) m.f, d.key, d.value, d.occurred_at, d.event_id "
				   "FROM cdp.trait_data d JOIN unnest($1, $2) AS m(m, f) ON d.profile_id = m.m "
				   "ORDER BY m.f, d.key, d.occurred_at DESC, d.event_id DESC "
				   "ON CONFLICT (profile_id, key) DO UPDATE SET value = excluded.value, "
				   "occurred_at = excluded.occurred_at, event_id = excluded.event_id "
				   "WHERE (excluded.occurred_at, excluded.event_id) > (t.occurred_at, t.event_id)",
				   2, types2, args2, NULL, false);
		store_exec(PLAN_MERGE_TRAITS_DELETE,
				   "DELETE FROM cdp.trait_data d USING unnest($1) AS m(m) WHERE d.profile_id = m.m",
				   1, types1, args2, NULL, false);
		store_exec(PLAN_MERGE_PROFILES,
				   "UPDATE cdp.profile_data p SET merged_into = m.f, traits = '{}' "
				   "FROM unnest($1, $2) AS m(m, f) WHERE p.profile_id = m.m OR p.merged_into = m.m",
				   2, types2, args2, NULL, false);

		args6[0] = ab_result(&into);
		args6[1] = args2[0];
		args6[2] = ab_result(&ev);
		args6[3] = ab_result(&at);
		args6[4] = ab_result(&cause);
		store_exec(PLAN_INSERT_MERGES,
				   "INSERT INTO cdp.merges (profile_id, merged_profile_id, event_id, merged_at, cause) "
				   "SELECT * FROM unnest($1, $2, $3, $4, $5)",
				   5, types6, args6, NULL, false);
	}
}

/*
 * Identifiers whose row must change: new ones are inserted, stored ones
 * updated, each with a plain statement.  (An upsert would probe the key
 * index once more per row and insert speculatively.)  The identifier locks
 * (or the exclusive graph lock) held since load_graph() keep the split
 * true: no other transaction can insert or remove these keys meanwhile,
 * and load_graph() read them after taking the locks.  Not so under
 * REPEATABLE READ or SERIALIZABLE, where it read them with the
 * transaction's snapshot, perhaps older than a row committed while it
 * waited for the locks: there every row goes through the upsert, which
 * fails such a transaction with a serialization error (the client retries)
 * instead of a duplicate key.
 */
static void
write_identifiers(Graph *g)
{
	ArrayBuild	ident[2],
				kind,
				pid[2],
				source[2],
				first[2],
				last[2];
	bool		upsert = IsolationUsesXactSnapshot();

	for (int k = 0; k < 2; k++)
	{
		ab_init(&ident[k], identifier_type_oid());
		ab_init(&pid[k], INT8OID);
		ab_init(&source[k], TEXTOID);
		ab_init(&first[k], TIMESTAMPTZOID);
		ab_init(&last[k], TIMESTAMPTZOID);
	}
	ab_init(&kind, TEXTOID);
	for (int64 i = 0; i < g->nidents; i++)
	{
		GraphIdent *id = g->ident_list[i];
		int			k = id->stored && !upsert ? 1 : 0;

		if (!id->dirty || id->profile == NULL)
			continue;
		ab_add_text(&ident[k], id->key);
		if (k == 0)
			ab_add(&kind, PointerGetDatum(cstring_to_text_with_len(id->key, strchr(id->key, ':') - id->key)), false);
		ab_add(&pid[k], Int64GetDatum(graph_live_id(id->profile)), false);
		ab_add_text(&source[k], id->source);
		ab_add(&first[k], TimestampTzGetDatum(id->first_seen), false);
		ab_add(&last[k], TimestampTzGetDatum(id->last_seen), false);
	}
	if (ident[0].n > 0)
	{
		Oid			types[6] = {IDENTIFIER_ARRAY_PLACEHOLDER, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID,
		TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
		Datum		args[6] = {ab_result(&ident[0]), ab_result(&kind), ab_result(&pid[0]), ab_result(&source[0]),
		ab_result(&first[0]), ab_result(&last[0])};

		if (upsert)
			store_exec(PLAN_UPSERT_IDENTS,
					   "INSERT INTO cdp.identity_data AS i (identifier, kind, profile_id, source, first_seen, last_seen) "
					   "SELECT * FROM unnest($1, $2, $3, $4, $5, $6) "
					   "ON CONFLICT (identifier) DO UPDATE SET profile_id = excluded.profile_id, "
					   "source = excluded.source, first_seen = excluded.first_seen, last_seen = excluded.last_seen",
					   6, types, args, NULL, false);
		else
			store_exec(PLAN_INSERT_IDENTS,
					   "INSERT INTO cdp.identity_data (identifier, kind, profile_id, source, first_seen, last_seen) "
					   "SELECT * FROM unnest($1, $2, $3, $4, $5, $6)",
					   6, types, args, NULL, false);
	}
	if (ident[1].n > 0)
	{
		Oid			types[5] = {IDENTIFIER_ARRAY_PLACEHOLDER, INT8ARRAYOID, TEXTARRAYOID,
		TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
		Datum		args[5] = {ab_result(&ident[1]), ab_result(&pid[1]), ab_result(&source[1]),
		ab_result(&first[1]), ab_result(&last[1])};

		store_exec(PLAN_UPDATE_IDENTS,
				   "UPDATE cdp.identity_data i SET profile_id = u.p, source = u.s, first_seen = u.f, last_seen = u.l "
				   "FROM unnest($1, $2, $3, $4, $5) AS u(i, p, s, f, l) WHERE i.identifier OPERATOR(cdp.=) u.i",
				   5, types, args, NULL, false);
	}
}

/*
 * The traits a batch wrote, per profile: the keys whose trait rows changed,
 * with their new values, as one object (NULL when a merge brought traits in
 * and the snapshot must be rebuilt from all of them).
 */
typedef struct ProfileTraits
{
	int64		profile_id;		/* hash key */
	Datum		changed;
	List	   *rows;			/* while collecting: row numbers in SPI_tuptable */
} ProfileTraits;

static HTAB *
profile_traits_create(void)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(ProfileTraits);
	ctl.hcxt = CurrentMemoryContext;
	return hash_create("cdp traits written", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * The trait upsert's returned rows (profile_id, key, value), one object of
 * the changed keys per profile.  (Aggregating them in SQL, through a CTE,
 * cost more than the snapshot rebuild it saves.)
 */
static void
collect_changed_traits(HTAB *traits)
{
	SPITupleTable *tt = SPI_tuptable;
	HASH_SEQ_STATUS seq;
	ProfileTraits *pt;

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		p = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		bool		found;

		pt = hash_search(traits, &p, HASH_ENTER, &found);
		if (!found)
			pt->rows = NIL;
		pt->rows = lappend_int(pt->rows, (int) i);
	}

	hash_seq_init(&seq, traits);
	while ((pt = hash_seq_search(&seq)) != NULL)
	{
		JsonbParseState *state = NULL;
		JsonbValue *res;
		ListCell   *lc;

		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		foreach(lc, pt->rows)
		{
			HeapTuple	tup = tt->vals[lfirst_int(lc)];
			bool		isnull;
			text	   *key = DatumGetTextPP(SPI_getbinval(tup, tt->tupdesc, 2, &isnull));
			Jsonb	   *value = DatumGetJsonbP(SPI_getbinval(tup, tt->tupdesc, 3, &isnull));
			JsonbValue	k,
						v;

			k.type = jbvString;
			k.val.string.val = VARDATA_ANY(key);
			k.val.string.len = VARSIZE_ANY_EXHDR(key);
			pushJsonbValue(&state, WJB_KEY, &k);
			if (JB_ROOT_IS_SCALAR(value))
				JsonbExtractScalar(&value->root, &v);
			else
			{
				v.type = jbvBinary;
				v.val.binary.data = &value->root;
				v.val.binary.len = VARSIZE(value) - VARHDRSZ;
			}
			pushJsonbValue(&state, WJB_VALUE, &v);
		}
		res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
		pt->changed = JsonbPGetDatum(JsonbValueToJsonb(res));
		list_free(pt->rows);
		pt->rows = NIL;
	}
}

/*
 * The events go in as one array of cdp.event_data rows, each with its own
 * identifier array.  (Parallel arrays would carry the identifiers flat, to
 * be sliced per event, and slicing an array of variable-length elements
 * walks it from its start: quadratic in the batch.)
 */
typedef enum EventColumn
{
	EV_PROFILE_ID,
	EV_EVENT_ID,
	EV_OCCURRED_AT,
	EV_TYPE,
	EV_EVENT,
	EV_PROPERTIES,
	EV_IDENTIFIERS,
	EV_RECEIVED_AT,
	EV_SOURCE,
	EV_MESSAGE_ID,
	EV_NCOLUMNS
} EventColumn;

static const char *const event_columns[EV_NCOLUMNS] = {
	"profile_id", "event_id", "occurred_at", "type", "event", "properties",
	"identifiers", "received_at", "source", "message_id"
};

/* Count each message once: a duplicate, rejected (it has an error) or accepted. */
static void
tally_messages(IngestStats *stats, const IngestMessage *msgs, int n)
{
	for (int i = 0; i < n; i++)
	{
		if (msgs[i].duplicate)
			stats->duplicates++;
		else if (msgs[i].error != NULL)
			stats->rejected++;
		else
			stats->accepted++;
	}
}

typedef struct EventRows
{
	Oid			rowtype;
	TupleDesc	desc;
	int			attno[EV_NCOLUMNS];	/* 0-based position in the row type */
	Datum	   *values;
	bool	   *nulls;
	ArrayBuild	rows;
} EventRows;

static void
event_rows_init(EventRows *er)
{
	Oid			rel = cdp_relid("event_data");

	er->rowtype = get_rel_type_id(rel);
	er->desc = lookup_rowtype_tupdesc_copy(er->rowtype, -1);
	er->values = palloc(sizeof(Datum) * er->desc->natts);
	er->nulls = palloc(sizeof(bool) * er->desc->natts);
	for (int c = 0; c < EV_NCOLUMNS; c++)
	{
		AttrNumber	attnum = get_attnum(rel, event_columns[c]);

		if (attnum == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("table cdp.event_data has no column \"%s\"", event_columns[c]),
					 errhint("Bring the extension up to date: ALTER EXTENSION cdp UPDATE.")));
		er->attno[c] = attnum - 1;
	}
	ab_init(&er->rows, er->rowtype);
}

static void
event_rows_add(EventRows *er, const IngestMessage *m, Oid identifier_type)
{
	ArrayBuild	ids;
	HeapTuple	row;

#define SET(col, datum, isnull) \
	(er->values[er->attno[col]] = (datum), er->nulls[er->attno[col]] = (isnull))

	for (int a = 0; a < er->desc->natts; a++)
		er->nulls[a] = true;
	ab_init(&ids, identifier_type);
	for (int j = 0; j < m->nids; j++)
		ab_add_text(&ids, m->ids[j]);
	SET(EV_PROFILE_ID, Int64GetDatum(m->profile_id), false);
	SET(EV_EVENT_ID, Int64GetDatum(m->event_id), false);
	SET(EV_OCCURRED_AT, TimestampTzGetDatum(m->occurred_at), false);
	SET(EV_TYPE, CStringGetTextDatum(m->type), false);
	SET(EV_EVENT, m->event ? CStringGetTextDatum(m->event) : (Datum) 0, m->event == NULL);
	SET(EV_PROPERTIES, JsonbPGetDatum(m->properties), false);
	SET(EV_IDENTIFIERS, ab_result(&ids), false);
	SET(EV_RECEIVED_AT, TimestampTzGetDatum(m->received_at), false);
	SET(EV_SOURCE, m->source ? CStringGetTextDatum(m->source) : (Datum) 0, m->source == NULL);
	SET(EV_MESSAGE_ID, m->message_id ? CStringGetTextDatum(m->message_id) : (Datum) 0, m->message_id == NULL);
#undef SET
	row = heap_form_tuple(er->desc, er->values, er->nulls);
	ab_add(&er->rows, HeapTupleGetDatum(row), false);
}

static void
write_events_and_traits(Graph *g, IngestMessage *msgs, int n, HTAB *traits)
{
	Oid			identifier_type = identifier_type_oid();
	EventRows	er;
	ArrayBuild	pid,
				eid,
				occurred;
	ArrayBuild	tp,
				tt,
				to,
				te;

	event_rows_init(&er);
	ab_init(&pid, INT8OID);
	ab_init(&eid, INT8OID);
	ab_init(&occurred, TIMESTAMPTZOID);
	ab_init(&tp, INT8OID);
	ab_init(&tt, JSONBOID);
	ab_init(&to, TIMESTAMPTZOID);
	ab_init(&te, INT8OID);

	for (int i = 0; i < n; i++)
	{
		IngestMessage *m = &msgs[i];

		if (!accepted(m) || m->profile_id == 0)
			continue;
		m->profile_id = graph_resolve(g, m->profile_id);
		event_rows_add(&er, m, identifier_type);
		ab_add(&pid, Int64GetDatum(m->profile_id), false);
		ab_add(&eid, Int64GetDatum(m->event_id), false);
		ab_add(&occurred, TimestampTzGetDatum(m->occurred_at), false);
		if (m->traits != NULL)
		{
			ab_add(&tp, Int64GetDatum(m->profile_id), false);
			ab_add(&tt, JsonbPGetDatum(m->traits), false);
			ab_add(&to, TimestampTzGetDatum(m->occurred_at), false);
			ab_add(&te, Int64GetDatum(m->event_id), false);
		}
	}
	if (pid.n == 0)
		return;

	{
		Oid			type = get_array_type(er.rowtype);
		Datum		arg = ab_result(&er.rows);

		store_exec(PLAN_INSERT_EVENTS,
				   "INSERT INTO cdp.event_data (profile_id, event_id, occurred_at, type, event, properties, "
				   "identifiers, received_at, source, message_id) "
				   "SELECT u.profile_id, u.event_id, u.occurred_at, u.type, u.event, u.properties, "
				   "u.identifiers, u.received_at, u.source, u.message_id FROM unnest($1) AS u",
				   1, &type, &arg, NULL, false);
		identity_journal("events", ab_result(&pid), ab_result(&eid), ab_result(&occurred));
	}
	if (tp.n > 0)
	{
		Oid			types[4] = {INT8ARRAYOID, JSONBARRAYOID, TIMESTAMPTZARRAYOID, INT8ARRAYOID};
		Datum		args[4] = {ab_result(&tp), ab_result(&tt), ab_result(&to), ab_result(&te)};

		store_exec(PLAN_UPSERT_TRAITS,
				   "INSERT INTO cdp.trait_data AS t (profile_id, key, value, occurred_at, event_id) "
				   "SELECT DISTINCT ON (u.p, j.key) u.p, j.key, j.value, u.o, u.e "
				   "FROM unnest($1, $2, $3, $4) AS u(p, tr, o, e), jsonb_each(u.tr) AS j "
				   "ORDER BY u.p, j.key, u.o DESC, u.e DESC "
				   "ON CONFLICT (profile_id, key) DO UPDATE SET value = excluded.value, "
				   "occurred_at = excluded.occurred_at, event_id = excluded.event_id "
				   "WHERE (excluded.occurred_at, excluded.event_id) > (t.occurred_at, t.event_id) "
				   "RETURNING t.profile_id, t.key, t.value",
				   4, types, args, NULL, false);
		collect_changed_traits(traits);
	}
}

/*
 * The event partitions the batch needs, created before anything is written:
 * creating one locks cdp.event_data ACCESS EXCLUSIVE, so it must not happen
 * while this transaction already holds a lock on it (a merge updates its
 * rows), or two batches doing so at once wait for each other.
 */
static void
ensure_partitions(IngestMessage *msgs, int n)
{
	TimestampTz *months = palloc(sizeof(TimestampTz) * Max(n, 1));
	int			nmonths = 0;

	for (int i = 0; i < n; i++)
		if (accepted(&msgs[i]) && msgs[i].profile_id != 0)
			months[nmonths++] = msgs[i].occurred_at;
	ensure_event_partitions(months, nmonths);
}

/*
 * Live profiles whose row changes: updated_at where it moved, and the
 * traits snapshot where trait rows changed.  The snapshot is the object of
 * the profile's trait rows: the keys that changed are merged into it, and
 * it is rebuilt from the rows when a merge brought the traits of another
 * profile in.  A profile the batch touched without moving either (its
 * updated_at already is this batch's received_at, and no trait it carried
 * won) is not written at all.
 */
static void
write_profile_updates(Graph *g, HTAB *traits)
{
	ArrayBuild	ids,
				upd,
				rebuild,
				changed;
	ListCell   *lc;

	foreach(lc, g->merges)
	{
		int64		f = graph_resolve(g, ((GraphMerge *) lfirst(lc))->merged);
		ProfileTraits *pt = hash_search(traits, &f, HASH_ENTER, NULL);

		pt->changed = (Datum) 0;
		pt->rows = NIL;
	}

	ab_init(&ids, INT8OID);
	ab_init(&upd, TIMESTAMPTZOID);
	ab_init(&rebuild, BOOLOID);
	ab_init(&changed, JSONBOID);
	for (int64 i = 0; i < g->nprofiles; i++)
	{
		GraphProfile *p = g->profile_list[i];
		ProfileTraits *pt;

		if (p->survivor != NULL)
			continue;
		pt = hash_search(traits, &p->id, HASH_FIND, NULL);
		if (pt == NULL && (!p->touched || p->is_new))
			continue;			/* unchanged, or inserted with the right values already */
		ab_add(&ids, Int64GetDatum(p->id), false);
		ab_add(&upd, TimestampTzGetDatum(p->updated_at), false);
		ab_add(&rebuild, BoolGetDatum(pt != NULL && pt->changed == (Datum) 0), false);
		ab_add(&changed, pt != NULL ? pt->changed : (Datum) 0, pt == NULL || pt->changed == (Datum) 0);
	}
	if (ids.n > 0)
	{
		Oid			types[4] = {INT8ARRAYOID, TIMESTAMPTZARRAYOID, BOOLARRAYOID, JSONBARRAYOID};
		Datum		args[4] = {ab_result(&ids), ab_result(&upd), ab_result(&rebuild), ab_result(&changed)};

		store_exec(PLAN_UPDATE_PROFILES,
				   "UPDATE cdp.profile_data p SET updated_at = greatest(p.updated_at, u.t), "
				   "traits = CASE WHEN u.r THEN coalesce((SELECT jsonb_object_agg(t.key, t.value) "
				   "FROM cdp.trait_data t WHERE t.profile_id = p.profile_id), '{}') "
				   "WHEN u.c IS NOT NULL THEN p.traits || u.c ELSE p.traits END "
				   "FROM unnest($1, $2, $3, $4) AS u(id, t, r, c) WHERE p.profile_id = u.id",
				   4, types, args, NULL, false);
	}
}

static void
write_conflicts(Graph *g, IngestMessage *msgs, int n)
{
	ArrayBuild	ev,
				pid,
				ident,
				reason,
				detail;
	ListCell   *lc;

	ab_init(&ev, INT8OID);
	ab_init(&pid, INT8OID);
	ab_init(&ident, identifier_type_oid());
	ab_init(&reason, TEXTOID);
	ab_init(&detail, TEXTOID);
	foreach(lc, g->conflicts)
	{
		GraphConflict *c = lfirst(lc);
		int64		p = graph_resolve(g, c->profile_id);

		ab_add(&ev, Int64GetDatum(c->event_id), false);
		ab_add(&pid, Int64GetDatum(p), p == 0);
		ab_add_text(&ident, c->identifier);
		ab_add_text(&reason, c->reason);
		ab_add_text(&detail, c->detail);
	}
	for (int i = 0; i < n; i++)
	{
		IngestMessage *m = &msgs[i];

		if (!accepted(m))
			continue;
		if (m->nsuppressed > 0)
		{
			ab_add(&ev, Int64GetDatum(m->event_id), false);
			ab_add(&pid, Int64GetDatum(m->profile_id), m->profile_id == 0);
			ab_add_text(&ident, NULL);
			ab_add_text(&reason, "suppressed");
			ab_add_text(&detail, psprintf("%d erased identifier%s dropped (suppressed until cdp.unsuppress())",
										  m->nsuppressed, m->nsuppressed == 1 ? "" : "s"));
		}
		foreach(lc, m->invalid)
		{
			InvalidIdentifier *inv = lfirst(lc);

			ab_add(&ev, Int64GetDatum(m->event_id), false);
			ab_add(&pid, Int64GetDatum(m->profile_id), m->profile_id == 0);
			ab_add_text(&ident, NULL);
			ab_add_text(&reason, "invalid");
			ab_add_text(&detail, psprintf("%s \"%s\": %s", inv->kind, inv->raw, inv->why));
		}
	}
	if (ev.n > 0)
	{
		Oid			types[6] = {INT8ARRAYOID, INT8ARRAYOID, IDENTIFIER_ARRAY_PLACEHOLDER, TEXTARRAYOID,
		TEXTARRAYOID, TIMESTAMPTZOID};
		Datum		args[6] = {ab_result(&ev), ab_result(&pid), ab_result(&ident), ab_result(&reason),
		ab_result(&detail), TimestampTzGetDatum(GetCurrentTransactionStartTimestamp())};

		store_exec(PLAN_INSERT_CONFLICTS,
				   "INSERT INTO cdp.identity_conflicts (event_id, profile_id, identifier, reason, detail, recorded_at) "
				   "SELECT e, p, i, r, d, $6 FROM unnest($1, $2, $3, $4, $5) AS u(e, p, i, r, d)",
				   6, types, args, NULL, false);
	}
}

/*
 * Tell the layers above which profiles' identifiers changed, and how: both
 * sides of each merge, and the identifiers new to the graph with the
 * profile each joined (graph_apply() moves a stored identifier only by
 * merging its profile).
 */
static void
notify_changes(Graph *g)
{
	IdentityChange change = {0};
	int64	   *ids = palloc(sizeof(int64) * Max(g->nprofiles, 1));
	int64	   *merged = palloc(sizeof(int64) * Max(2 * list_length(g->merges), 1));
	const char **gained = palloc(sizeof(char *) * Max(g->nidents, 1));
	int64	   *gained_by = palloc(sizeof(int64) * Max(g->nidents, 1));
	ListCell   *lc;

	for (int64 i = 0; i < g->nprofiles; i++)
		if (g->profile_list[i]->ids_changed)
			ids[change.nprofiles++] = g->profile_list[i]->id;
	foreach(lc, g->merges)
	{
		GraphMerge *mg = lfirst(lc);

		merged[change.nmerged++] = mg->merged;
		merged[change.nmerged++] = graph_resolve(g, mg->merged);
	}
	for (int64 i = 0; i < g->nidents; i++)
	{
		GraphIdent *id = g->ident_list[i];

		if (id->dirty && !id->stored && id->profile != NULL)
		{
			gained[change.ngained] = id->key;
			gained_by[change.ngained++] = graph_live_id(id->profile);
		}
	}
	change.profiles = ids;
	change.merged = merged;
	change.gained = gained;
	change.gained_by = gained_by;
	identity_changed(&change);
}

void
identity_process(IngestMessage *msgs, int n, IngestStats *stats)
{
	const char **keys;
	int			nkeys = 0;
	int			nparsed = 0;
	IdentityRules *rules;
	Graph	   *g;
	HTAB	   *traits;

	identity_drop_suppressed(msgs, n);

	/* Every distinct identifier the parsed messages carry. */
	for (int i = 0; i < n; i++)
		if (msgs[i].error == NULL)
		{
			nparsed++;
			nkeys += msgs[i].nids;
		}
	if (nparsed == 0)
	{
		tally_messages(stats, msgs, n);	/* none parsed: each has its error */
		return;
	}

	keys = palloc(sizeof(char *) * Max(nkeys, 1));
	nkeys = 0;
	for (int i = 0; i < n; i++)
		if (msgs[i].error == NULL)
			for (int j = 0; j < msgs[i].nids; j++)
				keys[nkeys++] = msgs[i].ids[j];
	qsort(keys, nkeys, sizeof(char *), cmp_cstring);
	{
		int			m = 0;

		for (int i = 0; i < nkeys; i++)
			if (m == 0 || strcmp(keys[m - 1], keys[i]) != 0)
				keys[m++] = keys[i];
		nkeys = m;
	}

	rules = rules_load();
	g = graph_create(rules, nkeys * 2, nkeys);
	load_graph(g, keys, nkeys, msgs, n);
	draw_event_ids(msgs, n);
	message_ids_mark_duplicates(msgs, n);

	for (int i = 0; i < n; i++)
	{
		IngestMessage *m = &msgs[i];
		GraphMessage gm;
		const char *reject;

		if (!accepted(m))
			continue;
		gm.event_id = m->event_id;
		gm.occurred_at = m->occurred_at;
		gm.received_at = m->received_at;
		gm.source = m->source;
		gm.nids = m->nids;
		gm.ids = m->ids;
		gm.idents = NULL;
		m->profile_id = graph_live_id(graph_apply(g, &gm, &reject));
		if (m->profile_id == 0)
			m->error = pstrdup(reject);
	}

	ensure_partitions(msgs, n);
	write_profiles_and_merges(g);
	write_identifiers(g);
	traits = profile_traits_create();
	write_events_and_traits(g, msgs, n, traits);
	write_profile_updates(g, traits);
	write_conflicts(g, msgs, n);
	message_ids_forget_rejected(msgs, n);
	notify_changes(g);

	tally_messages(stats, msgs, n);
	stats->new_profiles += g->nnew_profiles;
	stats->merges += list_length(g->merges);
	stats->conflicts += list_length(g->conflicts);
}
