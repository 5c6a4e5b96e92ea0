/*-------------------------------------------------------------------------
 *
 * replay.h
 *	  Shared by restitch.c (reading and replaying stored events) and
 *	  rewrite.c (writing what the replay changed): the replay's state.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_IDENTITY_REPLAY_H
#define CDP_IDENTITY_REPLAY_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "portability/instr_time.h"
#include "utils/builtins.h"

#include "identity/graph.h"

/* One stored event, as the replay needs it (48 bytes: there are millions). */
typedef struct ReplayEvent
{
	int64		event_id;
	int64		old_profile;
	TimestampTz occurred_at;
	union
	{
		TimestampTz received_at;	/* until replayed */
		GraphProfile *new_profile;	/* then: the raw engine result; resolve
									 * before use */
	}			u;
	GraphIdent **ids;			/* the identifiers it carries, interned */
	int32		nids;
	uint32		source;			/* graph_string() number */
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
	char	   *arraybuf;		/* an identifier array copied out of a page */
	Size		arraybuf_size;
	int			npending;		/* identifiers read, not interned yet */
	int			pending_cap;
	struct PendingIdent *pending;
	StringInfoData pending_keys;
	struct RecentIdent *recent; /* identifiers read lately, by hash */
} Replay;

/* Where a rebuild's time goes (cdp.restitch() reports it as phases_ms). */
typedef enum RebuildPhase
{
	PHASE_READ,					/* reading the events, interning identifiers */
	PHASE_SORT,					/* ordering them by event id */
	PHASE_APPLY,				/* replaying them through the engine */
	PHASE_IDENTIFIERS,			/* comparing (and writing) identity_data */
	PHASE_PROFILES,				/* profile_data */
	PHASE_REST,					/* events, traits, merges, conflicts, journal */
	REBUILD_NPHASES
} RebuildPhase;

typedef struct RebuildStats
{
	double		read_ms;		/* reading and replaying the events */
	double		write_ms;		/* comparing and writing the differences */
	double		phase_ms[REBUILD_NPHASES];
	instr_time	phase_start;	/* when the current phase began */
	int64		events;
	int64		events_moved;
	int64		events_removed;
	int64		profiles;
	int64		identifiers;
	int64		merges;
	int64		conflicts;
	int64		rows_written;
} RebuildStats;

/* The current phase ends now (and the next begins). */
static inline void
phase_end(RebuildStats *st, RebuildPhase phase)
{
	instr_time	now;
	instr_time	elapsed;

	INSTR_TIME_SET_CURRENT(now);
	elapsed = now;
	INSTR_TIME_SUBTRACT(elapsed, st->phase_start);
	st->phase_ms[phase] += INSTR_TIME_GET_MILLISEC(elapsed);
	st->phase_start = now;
}

/* restitch.c */
typedef void (*RowFn) (Replay *r, HeapTuple tup, TupleDesc desc, void *arg);
extern void for_each_row(Replay *r, const char *sql, int nargs, Oid *types, Datum *args,
						 RowFn fn, void *arg);
extern void exec_args(const char *sql, int nargs, Oid *types, Datum *args);
extern bool replayed_event(Replay *r, int64 event_id);

/* rewrite.c */
extern void write_rebuild(Replay *r, RebuildStats *st);

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
static inline char *
get_cstring(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : text_to_cstring((text *) PG_DETOAST_DATUM_PACKED(d));
}

/*
 * The bytes of a text-like datum without copying it, unless it is
 * compressed or stored out of line.
 */
static inline void
text_bytes(Datum d, const char **data, int *len)
{
	struct varlena *v = (struct varlena *) DatumGetPointer(d);

	if (VARATT_IS_EXTENDED(v) && !VARATT_IS_SHORT(v))
		v = pg_detoast_datum_packed(v);
	*data = VARDATA_ANY(v);
	*len = VARSIZE_ANY_EXHDR(v);
}

#endif							/* CDP_IDENTITY_REPLAY_H */
