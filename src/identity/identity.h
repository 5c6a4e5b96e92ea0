/*-------------------------------------------------------------------------
 *
 * identity.h
 *	  Identity stitching: messages in, profiles out.
 *
 * A message (from cdp.identify(), cdp.track(), cdp.ingest() or the inbox)
 * is parsed into an IngestMessage; identity_process() resolves a batch of
 * them against the stored identity graph and writes events, identifiers,
 * profiles, merges and conflicts in the caller's transaction.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_IDENTITY_H
#define CDP_IDENTITY_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"

typedef struct IngestMessage
{
	/* input */
	int			index;			/* position in the caller's batch (0-based) */
	int64		inbox_id;		/* cdp.inbox row, or 0 */
	const char *type;			/* track, identify, page, screen, group, alias */
	char	   *event;			/* event name: track's event, else the type */
	Jsonb	   *properties;		/* what cdp.events shows as properties */
	Jsonb	   *traits;			/* profile traits to write (identify), or NULL */
	int			nids;
	const char **ids;			/* normalised identifiers, "kind:value" */
	List	   *invalid;		/* InvalidIdentifier *: values that did not normalise */
	int			nsuppressed;	/* erased identifiers dropped (see suppress.c) */
	TimestampTz occurred_at;
	TimestampTz received_at;
	char	   *source;
	char	   *message_id;

	/* outcome */
	char	   *error;			/* rejected: why */
	bool		duplicate;		/* message id seen before */
	int64		event_id;
	int64		profile_id;
} IngestMessage;

typedef struct InvalidIdentifier
{
	char	   *kind;
	char	   *raw;
	char	   *why;
} InvalidIdentifier;

typedef struct IngestStats
{
	int64		accepted;
	int64		rejected;
	int64		duplicates;
	int64		new_profiles;
	int64		merges;
	int64		conflicts;
} IngestStats;

/*
 * Upper layers (consent, audiences) keep state derived from which
 * identifiers a profile has.  Identity never calls up into them: they
 * register a hook at load time, and identity calls it, in the same
 * transaction and connected to SPI, with what changed:
 *
 * profiles: every profile whose identifiers changed (new identifiers,
 *	merges, splits, rebuilds; tombstones included);
 * rebuilt: the profiles were rebuilt from their events (a split or a
 *	restitch): anything may have moved, every profile counts as changed.
 *	Otherwise ingestion only added identifiers and merged profiles, and
 *	says exactly how, so that a hook can look again at just the profiles
 *	its state can differ for: merged lists both sides of every merge, and
 *	each of the other profiles only gained identifiers new to the graph,
 *	gained[i] now on the live profile gained_by[i].
 *
 * Identity also appends what changed to the change journal (cdp.journal),
 * which the audience pass drains later, in batches.
 */
typedef struct IdentityChange
{
	const int64 *profiles;
	int			nprofiles;
	bool		rebuilt;
	const int64 *merged;
	int			nmerged;
	const char *const *gained;
	const int64 *gained_by;
	int			ngained;
} IdentityChange;

typedef void (*IdentityChangeHook) (const IdentityChange *change);
extern void identity_add_change_hook(IdentityChangeHook hook);
extern void identity_changed(const IdentityChange *change);
extern void identity_journal(const char *kind, Datum profile_ids, Datum event_ids, Datum occurred_ats);

/* message.c */
extern void message_from_jsonb(IngestMessage *m, Jsonb *payload, List *mappings,
							   const char *default_source);
extern void message_keep(IngestMessage *m);
extern List *mappings_load(void);
extern void message_add_identifier(IngestMessage *m, const char *kind, const char *raw, int len);

/* suppress.c: drop identifiers erased by cdp.erase_subject() */
extern void identity_drop_suppressed(IngestMessage *msgs, int n);

/* store.c: must be called connected to SPI */
extern void identity_process(IngestMessage *msgs, int n, IngestStats *stats);
extern int64 identity_lock_subject(const char *key);

#endif							/* CDP_IDENTITY_H */
