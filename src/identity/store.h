/*-------------------------------------------------------------------------
 *
 * store.h
 *	  Helpers shared by the parts of identity that talk to the database:
 *	  cdp's advisory locks, cached SPI plans, array building, partitions.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_IDENTITY_STORE_H
#define CDP_IDENTITY_STORE_H

#include "datatype/timestamp.h"

/* Stand-ins for cdp.identifier and its array type in plan argument lists. */
#define IDENTIFIER_PLACEHOLDER			((Oid) 1)
#define IDENTIFIER_ARRAY_PLACEHOLDER	((Oid) 2)

typedef enum StorePlan
{
	PLAN_CREATE_PARTITION,
	PLAN_MESSAGE_IDS,
	PLAN_PROBE_MESSAGE_IDS,
	PLAN_INSERT_MESSAGE_IDS,
	PLAN_LOAD_IDENTS,
	PLAN_LOAD_PROFILES,
	PLAN_LOAD_COUNTS,
	PLAN_INSERT_PROFILES,
	PLAN_MERGE_IDENTS,
	PLAN_MERGE_EVENTS,
	PLAN_MERGE_CONFLICTS,
	PLAN_MERGE_TRAITS,
	PLAN_MERGE_TRAITS_DELETE,
	PLAN_MERGE_PROFILES,
	PLAN_INSERT_MERGES,
	PLAN_UPSERT_IDENTS,
	PLAN_INSERT_IDENTS,
	PLAN_UPDATE_IDENTS,
	PLAN_INSERT_EVENTS,
	PLAN_UPSERT_TRAITS,
	PLAN_UPDATE_PROFILES,
	PLAN_INSERT_CONFLICTS,
	PLAN_FORGET_MESSAGE_IDS,
	PLAN_INBOX_FETCH,
	PLAN_ANY_SUPPRESSED,
	PLAN_SUPPRESSED,
	PLAN_INBOX_REJECT,
	PLAN_INBOX_DELETE,
	PLAN_LOCK_SUBJECT,
	PLAN_JOURNAL,
	PLAN_CONSENT_LEDGER_KNOWS,
	PLAN_CONSENT_REFRESH,
	STORE_NPLANS
} StorePlan;

typedef struct ArrayBuild
{
	Oid			elemtype;
	int			n;
	int			cap;
	Datum	   *values;
	bool	   *nulls;
} ArrayBuild;

extern void ab_init(ArrayBuild *ab, Oid elemtype);
extern void ab_add(ArrayBuild *ab, Datum d, bool isnull);
extern void ab_add_text(ArrayBuild *ab, const char *s);
extern Datum ab_result(ArrayBuild *ab);

extern Oid	identifier_type_oid(void);
extern Oid	cdp_relid(const char *name);
extern int	store_exec(int slot, const char *sql, int nargs, const Oid *argtypes,
					   Datum *values, const char *nulls, bool read_only);

/* The profile locks a batch holds (sorted keys), see store.c. */
typedef struct ProfileLocks
{
	int			n;
	int			cap;
	uint32	   *keys;
} ProfileLocks;

extern void identity_lock_graph(bool exclusive);
extern bool identity_lock_identifiers(const char **keys, int n);
extern bool profile_locks_take(ProfileLocks *pl, const int64 *ids, int n);
extern void ensure_event_partitions(const TimestampTz *ts, int n);

/* message_ids.c: idempotency by message id (see identity_process()) */
struct IngestMessage;
extern void message_ids_mark_duplicates(struct IngestMessage *msgs, int n);
extern void message_ids_forget_rejected(struct IngestMessage *msgs, int n);

/* scan.c: whole-table reads for cdp.restitch() */
#define SCAN_MAX_COLUMNS 8
typedef void (*ScanRowFn) (void *arg, Datum *values, bool *isnull);
extern void scan_storage(const char *table, int ncols, const char *const *columns,
						 ScanRowFn fn, void *arg);

#endif							/* CDP_IDENTITY_STORE_H */
