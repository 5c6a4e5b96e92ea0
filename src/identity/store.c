/*-------------------------------------------------------------------------
 *
 * store.c
 *	  Incremental identity resolution of a batch of messages against the
 *	  stored graph: locking, loading what the batch can reach, running the
 *	  engine (graph.c) and writing the outcome back set-at-a-time.
 *
 * Locking (all advisory, in cdp's own namespace, held to commit):
 *	graph		shared by every ingesting transaction, exclusive for
 *				cdp.restitch() and for batches touching many identifiers;
 *	identifier	one per identifier of the batch, taken in key order;
 *	profile		one per profile the identifiers resolve to, in key order.
 * Changing which profile an identifier belongs to requires the locks of
 * both profiles.  Locks are always taken in the order graph, identifiers,
 * profiles, each class in key order; a profile discovered late (a merge
 * committed between our read and our lock) is taken without waiting, or
 * else all profile locks are released and retaken in order.  So one call
 * never deadlocks with another, and the graph a batch reads cannot change
 * under it.  (The locks last until commit: a transaction making several
 * calls orders each call's locks, not all of them; doc/identity.md.)
 * Consent decisions take the same locks for their subject
 * (identity_lock_subject), so they and ingestion take turns per profile.
 *
 * Event ids are drawn after the locks, so for any two batches that touch
 * the same identifiers or profiles the one that committed first also has
 * the smaller event ids: replaying events in id order (cdp.restitch())
 * makes the same decisions.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "lib/stringinfo.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "identity/graph.h"
#include "identity/identity.h"
#include "identity/store.h"

/* Batches reaching more identifiers than this take the graph lock exclusively. */
#define FINE_LOCK_MAX_IDENTS 64

#define CDP_LOCK_FIELD4 3		/* apart from pg_advisory_lock's 1 and 2 */

enum
{
	LOCK_GRAPH = 0,
	LOCK_IDENTIFIER = 1,
	LOCK_PROFILE = 2
};

static bool
cdp_lock(uint32 class, uint32 key, LOCKMODE mode, bool wait)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, class, key, CDP_LOCK_FIELD4);
	return LockAcquire(&tag, mode, false, !wait) != LOCKACQUIRE_NOT_AVAIL;
}

static void
cdp_unlock(uint32 class, uint32 key, LOCKMODE mode)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, class, key, CDP_LOCK_FIELD4);
	LockRelease(&tag, mode, false);
}

static int
cmp_uint32(const void *a, const void *b)
{
	uint32		x = *(const uint32 *) a;
	uint32		y = *(const uint32 *) b;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/* Sort and deduplicate; returns the new length. */
static int
sort_unique_uint32(uint32 *keys, int n)
{
	int			m = 0;

	qsort(keys, n, sizeof(uint32), cmp_uint32);
	for (int i = 0; i < n; i++)
		if (m == 0 || keys[m - 1] != keys[i])
			keys[m++] = keys[i];
	return m;
}

void
identity_lock_graph(bool exclusive)
{
	cdp_lock(LOCK_GRAPH, 0, exclusive ? ExclusiveLock : ShareLock, true);
}

static uint32
profile_lock_key(int64 id)
{
	return (uint32) id ^ (uint32) (id >> 32);
}

/*
 * Lock the graph for a batch reaching these identifiers: shared plus one
 * lock per identifier, in key order, or exclusively when there are many
 * (the lock table is finite).  Returns true when fine-grained.
 */
bool
identity_lock_identifiers(const char **keys, int n)
{
	uint32	   *hashes;
	int			m;

	if (n > FINE_LOCK_MAX_IDENTS)
	{
		identity_lock_graph(true);
		return false;
	}
	identity_lock_graph(false);
	hashes = palloc(sizeof(uint32) * Max(n, 1));
	for (int i = 0; i < n; i++)
		hashes[i] = hash_bytes((const unsigned char *) keys[i], strlen(keys[i]));
	m = sort_unique_uint32(hashes, n);
	for (int i = 0; i < m; i++)
		cdp_lock(LOCK_IDENTIFIER, hashes[i], ExclusiveLock, true);
	pfree(hashes);
	return true;
}

static bool
profile_locks_hold(ProfileLocks *pl, uint32 key)
{
	return bsearch(&key, pl->keys, pl->n, sizeof(uint32), cmp_uint32) != NULL;
}

/*
 * Make sure the locks of the profiles in ids[] are held.  Returns true if
 * nothing had to be taken (the read that produced ids[] is then stable).
 */
bool
profile_locks_take(ProfileLocks *pl, const int64 *ids, int n)
{
	uint32	   *want = palloc(sizeof(uint32) * Max(n, 1));
	int			nwant = 0;
	bool		all_free = true;

	for (int i = 0; i < n; i++)
	{
		uint32		k = profile_lock_key(ids[i]);

		if (!profile_locks_hold(pl, k))
			want[nwant++] = k;
	}
	if (nwant == 0)
		return true;
	nwant = sort_unique_uint32(want, nwant);

	/* Late additions must not wait while we hold larger keys. */
	if (pl->n > 0)
	{
		int			got = 0;

		for (; got < nwant; got++)
			if (!cdp_lock(LOCK_PROFILE, want[got], ExclusiveLock, false))
			{
				all_free = false;
				break;
			}
		if (!all_free)
		{
			for (int i = 0; i < got; i++)
				cdp_unlock(LOCK_PROFILE, want[i], ExclusiveLock);
			for (int i = 0; i < pl->n; i++)
				cdp_unlock(LOCK_PROFILE, pl->keys[i], ExclusiveLock);
		}
	}

	/* Merge want into the held set, sorted. */
	if (pl->n + nwant > pl->cap)
	{
		pl->cap = Max(16, (pl->n + nwant) * 2);
		pl->keys = pl->keys ? repalloc(pl->keys, pl->cap * sizeof(uint32))
			: palloc(pl->cap * sizeof(uint32));
	}
	memcpy(pl->keys + pl->n, want, nwant * sizeof(uint32));
	pl->n = sort_unique_uint32(pl->keys, pl->n + nwant);

	if (pl->n == nwant || !all_free)
	{
		/* first acquisition, or retaking everything: in order, waiting */
		for (int i = 0; i < pl->n; i++)
			cdp_lock(LOCK_PROFILE, pl->keys[i], ExclusiveLock, true);
	}
	return false;
}

/*
 * Lock one identifier and the profile it belongs to the way a batch does
 * (graph shared, identifier, profile), for callers outside ingestion that
 * derive state from a profile's identifiers (consent decisions).  Returns
 * the profile, read after the locks so that it is stable until commit, or
 * 0 when the identifier is unknown (its lock keeps it so).
 */
int64
identity_lock_subject(const char *key)
{
	Oid			type = IDENTIFIER_PLACEHOLDER;
	Datum		arg = CStringGetTextDatum(key);
	ProfileLocks pl = {0};

	identity_lock_identifiers(&key, 1);
	for (;;)
	{
		int64		pid;
		bool		isnull;

		store_exec(PLAN_LOCK_SUBJECT,
				   "SELECT profile_id FROM cdp.identity_data WHERE identifier OPERATOR(cdp.=) $1",
				   1, &type, &arg, NULL, false);
		if (SPI_processed == 0)
			return 0;
		pid = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (profile_locks_take(&pl, &pid, 1))
			return pid;
	}
}

/* ---------- cached SPI plans ---------- */

static Oid	cached_identifier_oid = InvalidOid;
static SPIPlanPtr plans[STORE_NPLANS];

/* The relation cdp.<name> (a table or a sequence); an error when it is missing. */
Oid
cdp_relid(const char *name)
{
	Oid			relid = get_relname_relid(name, get_namespace_oid("cdp", false));

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation cdp.%s does not exist", name),
				 errhint("Bring the extension up to date (ALTER EXTENSION cdp UPDATE), or reinstall it.")));
	return relid;
}

Oid
identifier_type_oid(void)
{
	Oid			nsp = get_namespace_oid("cdp", false);
	Oid			typ = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
									  CStringGetDatum("identifier"), ObjectIdGetDatum(nsp));

	if (!OidIsValid(typ))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("type cdp.identifier does not exist"),
				 errhint("Run CREATE EXTENSION cdp in this database.")));
	if (typ != cached_identifier_oid)
	{
		/* The extension was re-created: plans refer to old types. */
		for (int i = 0; i < STORE_NPLANS; i++)
			if (plans[i] != NULL)
			{
				SPI_freeplan(plans[i]);
				plans[i] = NULL;
			}
		cached_identifier_oid = typ;
	}
	return typ;
}

/*
 * Execute a cached plan; argtypes may name cdp.identifier as
 * IDENTIFIER_PLACEHOLDER.
 *
 * Every statement here reads or writes the rows of a batch's keys (arrays
 * joined with a table, or "= ANY"): the right plan is always a lookup per
 * key in an index, whose cost grows with the batch, not with the table.
 * The planner is told so (sequential scans, hash and merge joins off while
 * it plans), and the plan is generic, made once.  Left to choose, it took
 * hash joins over whole-table scans: without statistics (a new month's
 * event partition, or any table before autovacuum has analysed it; a long
 * ingestion outruns autovacuum) it assumes 200 distinct values, so one
 * profile id would match 0.5 % of cdp.event_data, and a merge of a few
 * profiles read every event; the generic plan kept that choice while the
 * table grew.  (Custom plans, made per execution, would see the arrays but
 * copy them, megabytes per batch, into every plan.)
 */
static void
plan_for_keys(void)
{
	static const char *const off[] = {"enable_seqscan", "enable_hashjoin", "enable_mergejoin"};

	for (int i = 0; i < lengthof(off); i++)
		(void) set_config_option(off[i], "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
}

int
store_exec(int slot, const char *sql, int nargs, const Oid *argtypes,
		   Datum *values, const char *nulls, bool read_only)
{
	int			rc;
	int			guc_level;

	/* Callers are done with the previous result: do not let them pile up. */
	if (SPI_tuptable != NULL)
		SPI_freetuptable(SPI_tuptable);
	if (plans[slot] == NULL)
	{
		Oid			types[16];
		Oid			ident = identifier_type_oid();
		Oid			identarr = get_array_type(ident);
		SPIPlanPtr	plan;

		Assert(nargs <= 16);
		for (int i = 0; i < nargs; i++)
			types[i] = argtypes[i] == IDENTIFIER_PLACEHOLDER ? ident :
				argtypes[i] == IDENTIFIER_ARRAY_PLACEHOLDER ? identarr : argtypes[i];
		plan = SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
		if (plan == NULL)
			elog(ERROR, "cdp: SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "cdp: SPI_keepplan failed");
		plans[slot] = plan;
	}
	/* Planned (or replanned) here: the settings hold for this statement only. */
	guc_level = NewGUCNestLevel();
	plan_for_keys();
	rc = SPI_execute_plan(plans[slot], values, nulls, read_only, 0);
	AtEOXact_GUC(true, guc_level);
	if (rc < 0)
		elog(ERROR, "cdp: executing \"%s\" failed: %s", sql, SPI_result_code_string(rc));
	return rc;
}

/* ---------- array building ---------- */

void
ab_init(ArrayBuild *ab, Oid elemtype)
{
	memset(ab, 0, sizeof(*ab));
	ab->elemtype = elemtype;
}

void
ab_add(ArrayBuild *ab, Datum d, bool isnull)
{
	if (ab->n == ab->cap)
	{
		ab->cap = Max(16, ab->cap * 2);
		ab->values = ab->values ? repalloc(ab->values, ab->cap * sizeof(Datum)) : palloc(ab->cap * sizeof(Datum));
		ab->nulls = ab->nulls ? repalloc(ab->nulls, ab->cap * sizeof(bool)) : palloc(ab->cap * sizeof(bool));
	}
	ab->values[ab->n] = d;
	ab->nulls[ab->n] = isnull;
	ab->n++;
}

void
ab_add_text(ArrayBuild *ab, const char *s)
{
	ab_add(ab, s ? PointerGetDatum(cstring_to_text(s)) : (Datum) 0, s == NULL);
}

Datum
ab_result(ArrayBuild *ab)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1];
	int			lbs[1] = {1};

	get_typlenbyvalalign(ab->elemtype, &typlen, &typbyval, &typalign);
	dims[0] = ab->n;
	if (ab->n == 0)
		return PointerGetDatum(construct_empty_array(ab->elemtype));
	return PointerGetDatum(construct_md_array(ab->values, ab->nulls, 1, dims, lbs,
											  ab->elemtype, typlen, typbyval, typalign));
}

/* ---------- partitions ---------- */

/*
 * Make sure cdp.event_data has a partition for the month of every
 * timestamp: a syscache probe per distinct month, SQL only when missing.
 */
void
ensure_event_partitions(const TimestampTz *ts, int n)
{
	Oid			nsp = get_namespace_oid("cdp", false);
	int			done[64];
	int			ndone = 0;

	for (int i = 0; i < n; i++)
	{
		struct pg_tm tm;
		fsec_t		fsec;
		int			month;
		char		name[NAMEDATALEN];
		bool		seen = false;

		if (timestamp2tm(ts[i], NULL, &tm, &fsec, NULL, NULL) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("event timestamp out of range")));
		month = tm.tm_year * 12 + tm.tm_mon;
		for (int j = 0; j < ndone && !seen; j++)
			seen = done[j] == month;
		if (seen)
			continue;
		if (ndone < lengthof(done))
			done[ndone++] = month;

		snprintf(name, sizeof(name), "event_data_%04d_%02d", tm.tm_year, tm.tm_mon);
		if (!OidIsValid(get_relname_relid(name, nsp)))
		{
			Datum		arg;
			Oid			argtype = TIMESTAMPTZOID;
			struct pg_tm start = {0};
			TimestampTz start_ts;

			start.tm_year = tm.tm_year;
			start.tm_mon = tm.tm_mon;
			start.tm_mday = 1;
			if (tm2timestamp(&start, 0, NULL, &start_ts) != 0)
				elog(ERROR, "cdp: month start out of range");
			arg = TimestampTzGetDatum(start_ts);
			store_exec(PLAN_CREATE_PARTITION, "SELECT cdp._create_event_partition($1)",
					   1, &argtype, &arg, NULL, false);
		}
	}
}

/*
 * cdp._lock_identity() RETURNS void: take the identity graph lock
 * exclusively for the rest of the transaction (cdp.erase_subject() and
 * other SQL-level operations that rewrite identities).
 */
PG_FUNCTION_INFO_V1(cdp_lock_identity);
Datum
cdp_lock_identity(PG_FUNCTION_ARGS)
{
	identity_lock_graph(true);
	PG_RETURN_VOID();
}
