/*-------------------------------------------------------------------------
 *
 * graph.h
 *	  The identity engine: an in-memory identity graph that applies one
 *	  message at a time under the merge rules.
 *
 * The same engine serves incremental ingestion (seeded with the part of
 * the stored graph a batch can reach), cdp.restitch() (started empty and
 * fed every stored event in event-id order) and splits after
 * cdp.forget_identifier() (fed one connected component).  Because all three
 * run the same decisions on the same inputs in the same order, a rebuild
 * reproduces the incremental result exactly.
 *
 * The engine does no I/O; store.c loads and writes the graph.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_IDENTITY_GRAPH_H
#define CDP_IDENTITY_GRAPH_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"
#include "regex/regex.h"
#include "utils/hsearch.h"

/* One row of cdp.identity_rules, or a kind that has none (takes '*'). */
typedef struct RuleKind
{
	char	   *kind;
	int			priority;
	int			max_per_profile;	/* 0: no limit */
	List	   *blocked_values; /* char *, compared case-insensitively */
	text	   *blocked_pattern;	/* NULL: none */
	regex_t    *blocked_re;		/* blocked_pattern compiled, on first use */
} RuleKind;

typedef struct IdentityRules
{
	MemoryContext cxt;			/* where kinds met later are added */
	RuleKind	deflt;			/* the '*' row */
	int			nkinds;
	int			maxkinds;
	RuleKind   *kinds;			/* rows of cdp.identity_rules, then kinds seen */
	pg_wchar   *wbuf;			/* a value being matched against a pattern */
	int			wbuf_size;
} IdentityRules;

typedef struct GraphProfile
{
	int64		id;				/* hash key */
	int64		survivor;		/* 0 while live, else the profile merged into */
	TimestampTz created_at;
	TimestampTz updated_at;
	int			ncounts;
	int32	   *counts;			/* identifiers attached, per kind index */
	bool		is_new;			/* created by this engine run */
	bool		touched;		/* updated_at changed */
	bool		ids_changed;	/* identifiers attached, merged in or away */
} GraphProfile;

typedef struct GraphIdent
{
	const char *key;			/* hash key: "kind:value", NUL-terminated */
	int			kind;			/* index into rules->kinds */
	int64		profile_id;		/* 0: not attached; may be a tombstone */
	char		blocked;		/* '?' not checked yet, 'n' no, 'y' yes */
	const char *blocked_detail;
	bool		stored;			/* a row exists in cdp.identity_data */
	bool		dirty;			/* must be written back */
	TimestampTz first_seen;
	TimestampTz last_seen;
	const char *source;
} GraphIdent;

/* Hash entries of Graph.idents and Graph.profiles (stable addresses). */
typedef struct GraphIdentEntry
{
	const char *key;
	GraphIdent *ident;
} GraphIdentEntry;

typedef struct GraphProfileEntry
{
	int64		id;
	GraphProfile *profile;
} GraphProfileEntry;

/* Something the engine records for the write-back. */
typedef struct GraphMerge
{
	int64		into;
	int64		merged;
	int64		event_id;
	TimestampTz merged_at;
	List	   *linking;		/* const char * keys that pulled merged in */
} GraphMerge;

typedef struct GraphConflict
{
	int64		event_id;
	int64		profile_id;		/* where the message landed; 0 if rejected */
	const char *identifier;		/* key, or NULL */
	const char *reason;			/* "blocked", "limit", "invalid" */
	char	   *detail;
} GraphConflict;

typedef struct GraphMessage
{
	int64		event_id;
	TimestampTz occurred_at;
	TimestampTz received_at;
	const char *source;
	int			nids;
	const char **ids;			/* normalised identifiers, "kind:value" */
} GraphMessage;

typedef struct Graph
{
	MemoryContext cxt;			/* everything that outlives one message */
	MemoryContext scratch;		/* reset by every graph_apply() */
	HTAB	   *strings;		/* interned sources */
	IdentityRules *rules;
	HTAB	   *idents;			/* const char * -> GraphIdent */
	HTAB	   *profiles;		/* int64 -> GraphProfile */
	List	   *merges;			/* GraphMerge *, in the order they happened */
	List	   *conflicts;		/* GraphConflict * */
	int64		nmessages;
	int64		nrejected;
	int64		nnew_profiles;
} Graph;

extern IdentityRules *rules_load(void);
extern int	rules_kind_index(IdentityRules *rules, const char *kind, int len);
extern const char *rules_blocked(IdentityRules *rules, int kind, const char *value);

extern Graph *graph_create(IdentityRules *rules, long expected_idents);

/* Seeding from the stored graph (store.c). */
extern GraphProfile *graph_add_profile(Graph *g, int64 id, int64 survivor,
									   TimestampTz created_at, TimestampTz updated_at);
extern void graph_add_count(Graph *g, int64 profile_id, const char *kind, int count);
extern GraphIdent *graph_intern(Graph *g, const char *key);
extern const char *graph_intern_string(Graph *g, const char *s);

/*
 * Apply one message.  Returns the live profile it lands on, or 0 when no
 * usable identifier remains; then *reject says why.
 */
extern int64 graph_apply(Graph *g, const GraphMessage *m, const char **reject);

extern GraphProfile *graph_profile(Graph *g, int64 id);
extern char *graph_merge_cause(const GraphMerge *mg);
extern int64 graph_resolve(Graph *g, int64 profile_id);

#endif							/* CDP_IDENTITY_GRAPH_H */
