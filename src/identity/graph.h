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
	uint64		blocked_lens;	/* bit n: a blocked value of n bytes (63: or more) */
	bool		blocked_first[256]; /* a blocked value starts with this byte (any case) */
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

/*
 * Profiles and identifiers are allocated in large blocks and never move, so
 * they point at each other directly: resolving an identifier to its live
 * profile follows pointers instead of probing a hash table.
 */
typedef struct GraphProfile
{
	int64		id;				/* hash key */
	struct GraphProfile *survivor;	/* NULL while live, else the profile merged
									 * into (itself perhaps merged since) */
	TimestampTz created_at;
	TimestampTz updated_at;
	int			ncounts;
	uint32		seq;			/* index in Graph.profile_list (in padding) */
	int32	   *counts;			/* identifiers attached, per kind index */
	bool		is_new;			/* created by this engine run */
	bool		touched;		/* updated_at changed */
	bool		ids_changed;	/* identifiers attached, merged in or away */
} GraphProfile;

typedef struct GraphIdent
{
	GraphProfile *profile;		/* NULL: not attached; may be a tombstone */
	TimestampTz first_seen;
	TimestampTz last_seen;
	const char *source;
	int			keylen;			/* strlen(key) */
	uint32		seq;			/* index in Graph.ident_list */
	int16		kind;			/* index into rules->kinds */
	char		blocked;		/* '?' not checked yet, 'n' no, 'y' yes */
	bool		stored;			/* a row exists in cdp.identity_data */
	bool		dirty;			/* must be written back */
	char		key[FLEXIBLE_ARRAY_MEMBER]; /* hash key: "kind:value", NUL-terminated */
} GraphIdent;

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
	GraphIdent **idents;		/* or, when not NULL, the same already interned */
} GraphMessage;

struct graph_idents_hash;
struct graph_profiles_hash;

typedef struct Graph
{
	MemoryContext cxt;			/* everything that outlives one message */
	MemoryContext scratch;		/* reset by every graph_apply() */
	struct BigMem *mem;			/* large blocks, see bigmem.c */
	char	   *arena;			/* free space of the current block */
	Size		arena_left;
	Size		arena_block;	/* size of the next block */
	HTAB	   *strings;		/* interned sources */
	const char **string_list;	/* by number, from 1 */
	uint32		nstrings;
	uint32		maxstrings;
	uint32		last_string;	/* the one interned last */
	IdentityRules *rules;
	struct graph_idents_hash *idents;	/* key -> GraphIdent */
	const char *probe;			/* the key being looked up there */
	int			probelen;
	struct graph_profiles_hash *profiles;	/* id -> GraphProfile */
	bool		lazy_profiles;	/* index new profiles on the next lookup */
	int64		nindexed;		/* profile_list entries in profiles */
	int64		max_profile_id;
	GraphIdent **ident_list;	/* every identifier, in the order interned */
	int64		nidents;
	int64		maxidents;
	GraphProfile **profile_list;	/* every profile, in the order added */
	int64		nprofiles;
	int64		maxprofiles;
	List	   *merges;			/* GraphMerge *, in the order they happened */
	List	   *conflicts;		/* GraphConflict * */
	int64		nmessages;
	int64		nrejected;
	int64		nnew_profiles;
} Graph;

extern IdentityRules *rules_load(void);
extern int	rules_kind_index(IdentityRules *rules, const char *kind, int len);
extern const char *rules_blocked(IdentityRules *rules, int kind, const char *value);

extern Graph *graph_create(IdentityRules *rules, long expected_idents, long expected_profiles);
extern void *graph_alloc(Graph *g, Size size);

/* Seeding from the stored graph (store.c). */
extern GraphProfile *graph_add_profile(Graph *g, int64 id, int64 survivor,
									   TimestampTz created_at, TimestampTz updated_at);
extern void graph_add_count(Graph *g, int64 profile_id, const char *kind, int count);
extern GraphIdent *graph_intern(Graph *g, const char *key);
extern GraphIdent *graph_intern_len(Graph *g, const char *key, int len);
extern GraphIdent *graph_lookup(Graph *g, const char *key, int len);
extern uint32 graph_key_hash(const char *key, int len);
extern void graph_prefetch_slot(Graph *g, uint32 hash);
extern void graph_prefetch_ident(Graph *g, uint32 hash);
extern GraphIdent *graph_lookup_hashed(Graph *g, const char *key, int len, uint32 hash);
extern GraphIdent *graph_intern_hashed(Graph *g, const char *key, int len, uint32 hash);
extern void graph_prefetch_profile_slot(Graph *g, int64 id);
extern void graph_prefetch_profile(Graph *g, int64 id);
extern const char *graph_intern_string(Graph *g, const char *s);
extern const char *graph_intern_string_len(Graph *g, const char *s, int len);
extern uint32 graph_string_index(Graph *g, const char *s, int len);

/* An interned string by its number; 0 is NULL. */
static inline const char *
graph_string(Graph *g, uint32 index)
{
	return g->string_list[index];
}

/*
 * Apply one message.  Returns the live profile it lands on, or NULL when no
 * usable identifier remains; then *reject says why.
 */
extern GraphProfile *graph_apply(Graph *g, const GraphMessage *m, const char **reject);

extern GraphProfile *graph_profile(Graph *g, int64 id);
extern char *graph_merge_cause(const GraphMerge *mg);
extern int64 graph_resolve(Graph *g, int64 profile_id);

/* The live profile p stands for (NULL for NULL), compressing the path. */
static inline GraphProfile *
graph_live(GraphProfile *p)
{
	GraphProfile *root = p;

	if (p == NULL || p->survivor == NULL)
		return p;
	while (root->survivor != NULL)
		root = root->survivor;
	while (p->survivor != root)
	{
		GraphProfile *next = p->survivor;

		p->survivor = root;
		p = next;
	}
	return root;
}

/* Its id, 0 for NULL. */
static inline int64
graph_live_id(GraphProfile *p)
{
	p = graph_live(p);
	return p ? p->id : 0;
}

#endif							/* CDP_IDENTITY_GRAPH_H */
