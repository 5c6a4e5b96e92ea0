/*-------------------------------------------------------------------------
 *
 * graph.c
 *	  The identity engine (see graph.h): apply messages to an in-memory
 *	  identity graph under cdp.identity_rules.
 *
 * For each message:
 *	1. identifiers whose value is blocked are set aside (conflict "blocked");
 *	2. while attaching what is left would give one profile more identifiers
 *	   of a kind than the kind's max_per_profile allows, the lowest-priority
 *	   identifier taking part in the excess is dropped (conflict "limit") --
 *	   Segment's documented merge protection, narrowed to the identifiers
 *	   that actually cause the excess, so an unrelated cookie is not lost;
 *	3. no identifier known: a new profile, whose id is the message's event
 *	   id; one profile: the new identifiers attach to it; several: they
 *	   merge into the oldest (smallest id) and the others become tombstones.
 *	A message left without identifiers is rejected.
 *
 * Ties are broken by priority, then by the identifiers' byte order, so the
 * outcome depends only on the rules and the messages in event-id order.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "lib/stringinfo.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "identity/bigmem.h"
#include "identity/graph.h"

/* ---------- hash tables: simplehash over arena-allocated entries ---------- */

typedef struct IdentSlot
{
	GraphIdent *ident;
	uint32		hash;
	char		status;
} IdentSlot;

/*
 * The key stored is the identifier itself; a lookup passes NULL and sets
 * Graph.probe instead (SH_EQUAL always compares an entry with the probe).
 */
static inline bool
ident_is_probe(const Graph *g, const GraphIdent *id)
{
	return id->keylen == g->probelen && memcmp(id->key, g->probe, g->probelen) == 0;
}

static inline uint32
probe_hash(const Graph *g)
{
	return hash_bytes((const unsigned char *) g->probe, g->probelen);
}

#define SH_GROW_MAX_DIB 64
#define SH_GROW_MAX_MOVE 1000
#define SH_PREFIX graph_idents
#define SH_ELEMENT_TYPE IdentSlot
#define SH_KEY_TYPE GraphIdent *
#define SH_KEY ident
#define SH_HASH_KEY(tb, key) probe_hash((const Graph *) (tb)->private_data)
#define SH_EQUAL(tb, a, b) ident_is_probe((const Graph *) (tb)->private_data, (a))
#define SH_STORE_HASH
#define SH_GET_HASH(tb, a) ((a)->hash)
#define SH_SCOPE static inline
#define SH_USE_NONDEFAULT_ALLOCATOR
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

static inline void *
graph_idents_allocate(graph_idents_hash *tb, Size size)
{
	return bigmem_alloc(((Graph *) tb->private_data)->mem, size);
}

static inline void
graph_idents_free(graph_idents_hash *tb, void *pointer)
{
	bigmem_free(((Graph *) tb->private_data)->mem, pointer);
}

typedef struct ProfileSlot
{
	int64		id;
	GraphProfile *profile;
	char		status;
} ProfileSlot;

static inline uint32
profile_hash(int64 id)
{
	return murmurhash32((uint32) id ^ (uint32) ((uint64) id >> 32));
}

#define SH_GROW_MAX_DIB 64
#define SH_GROW_MAX_MOVE 1000
#define SH_PREFIX graph_profiles
#define SH_ELEMENT_TYPE ProfileSlot
#define SH_KEY_TYPE int64
#define SH_KEY id
#define SH_HASH_KEY(tb, key) profile_hash(key)
#define SH_EQUAL(tb, a, b) ((a) == (b))
#define SH_SCOPE static inline
#define SH_USE_NONDEFAULT_ALLOCATOR
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

static inline void *
graph_profiles_allocate(graph_profiles_hash *tb, Size size)
{
	return bigmem_alloc(((Graph *) tb->private_data)->mem, size);
}

static inline void
graph_profiles_free(graph_profiles_hash *tb, void *pointer)
{
	bigmem_free(((Graph *) tb->private_data)->mem, pointer);
}

#define ARENA_FIRST_BLOCK	((Size) 16 * 1024)
#define ARENA_MAX_BLOCK		((Size) 16 * 1024 * 1024)

/*
 * Memory for profiles, identifiers and their keys: carved from blocks that
 * grow with the graph (the large ones on huge pages, see bigmem.c), freed
 * with g->cxt.  Not zeroed.
 */
void *
graph_alloc(Graph *g, Size size)
{
	void	   *p;

	size = MAXALIGN(size);
	if (size > g->arena_left)
	{
		Size		block = Max(g->arena_block, size);

		g->arena = bigmem_alloc(g->mem, block);
		g->arena_left = block;
		g->arena_block = Min(g->arena_block * 2, ARENA_MAX_BLOCK);
	}
	p = g->arena;
	g->arena += size;
	g->arena_left -= size;
	return p;
}

static uint32
cstring_hash(const void *key, Size keysize)
{
	const char *s = *(const char *const *) key;

	return hash_bytes((const unsigned char *) s, strlen(s));
}

static int
cstring_match(const void *key1, const void *key2, Size keysize)
{
	return strcmp(*(const char *const *) key1, *(const char *const *) key2);
}

/* An entry of Graph.strings. */
typedef struct StringEntry
{
	const char *s;				/* hash key */
	uint32		index;
} StringEntry;

Graph *
graph_create(IdentityRules *rules, long expected_idents, long expected_profiles)
{
	Graph	   *g = palloc0(sizeof(Graph));
	HASHCTL		ctl;

	g->cxt = CurrentMemoryContext;
	g->scratch = AllocSetContextCreate(g->cxt, "cdp identity graph scratch", ALLOCSET_SMALL_SIZES);
	g->rules = rules;
	g->arena_block = ARENA_FIRST_BLOCK;
	g->mem = bigmem_create(g->cxt);

	/* Sized for what is expected: growing copies, and fresh memory is costly. */
	expected_idents = Min(Max(expected_idents, 64), PG_INT32_MAX / 2);
	expected_profiles = Min(Max(expected_profiles, 64), PG_INT32_MAX / 2);
	g->idents = graph_idents_create(g->cxt, (uint32) expected_idents, g);
	g->profiles = graph_profiles_create(g->cxt, (uint32) expected_profiles, g);
	g->maxidents = expected_idents;
	g->ident_list = bigmem_alloc(g->mem, g->maxidents * sizeof(GraphIdent *));
	g->maxprofiles = expected_profiles;
	g->profile_list = bigmem_alloc(g->mem, g->maxprofiles * sizeof(GraphProfile *));

	g->maxstrings = 16;
	g->string_list = MemoryContextAllocZero(g->cxt, g->maxstrings * sizeof(const char *));
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(const char *);
	ctl.entrysize = sizeof(StringEntry);
	ctl.hash = cstring_hash;
	ctl.match = cstring_match;
	ctl.hcxt = g->cxt;
	g->strings = hash_create("cdp identity graph strings", 64, &ctl,
							 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	return g;
}

/*
 * One copy of each distinct string (event sources repeat a lot), numbered
 * from 1 in the order met: graph_string() maps a number back.
 */
uint32
graph_string_index(Graph *g, const char *s, int len)
{
	bool		found;
	StringEntry *e;
	char	   *copy;

	if (s == NULL)
		return 0;
	if (g->last_string != 0 && strncmp(g->string_list[g->last_string], s, len) == 0 &&
		g->string_list[g->last_string][len] == '\0')
		return g->last_string;
	copy = MemoryContextAlloc(g->cxt, len + 1);
	memcpy(copy, s, len);
	copy[len] = '\0';
	e = hash_search(g->strings, &copy, HASH_ENTER, &found);
	if (!found)
	{
		if (g->nstrings + 1 >= g->maxstrings)
		{
			g->maxstrings *= 2;
			g->string_list = repalloc_huge(g->string_list, g->maxstrings * sizeof(const char *));
		}
		e->s = copy;
		e->index = ++g->nstrings;
		g->string_list[e->index] = copy;
	}
	else
		pfree(copy);
	g->last_string = e->index;
	return e->index;
}

const char *
graph_intern_string_len(Graph *g, const char *s, int len)
{
	return graph_string(g, graph_string_index(g, s, len));
}

const char *
graph_intern_string(Graph *g, const char *s)
{
	return s == NULL ? NULL : graph_intern_string_len(g, s, strlen(s));
}

/* The audit text of a merge: {"event_id": n, "identifiers": [...linking...]}. */
char *
graph_merge_cause(const GraphMerge *mg)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"event_id\": " INT64_FORMAT ", \"identifiers\": [", mg->event_id);
	foreach(lc, mg->linking)
	{
		if (lc != list_head(mg->linking))
			appendStringInfoString(&buf, ", ");
		escape_json(&buf, (const char *) lfirst(lc));
	}
	appendStringInfoString(&buf, "]}");
	return buf.data;
}

/*
 * With lazy_profiles set (cdp.restitch(): the replay creates hundreds of
 * thousands of profiles and looks up few), a profile whose id is above
 * every other one's -- it cannot be there yet -- is only appended to
 * profile_list; the hash table catches up on the next lookup.
 */
static void
index_profiles(Graph *g)
{
	while (g->nindexed < g->nprofiles)
	{
		GraphProfile *p = g->profile_list[g->nindexed++];
		bool		found;
		ProfileSlot *e = graph_profiles_insert(g->profiles, p->id, &found);

		Assert(!found);
		e->profile = p;
	}
}

GraphProfile *
graph_profile(Graph *g, int64 id)
{
	ProfileSlot *e;

	index_profiles(g);
	e = graph_profiles_lookup(g->profiles, id);
	return e ? e->profile : NULL;
}

/* Follow tombstones to the live profile (an unknown id stands for itself). */
int64
graph_resolve(Graph *g, int64 profile_id)
{
	GraphProfile *p;

	if (profile_id == 0)
		return 0;
	p = graph_profile(g, profile_id);
	return p ? graph_live(p)->id : profile_id;
}

/* A list of pointers (profile_list, ident_list) with room for twice as many. */
static void *
grow_list(Graph *g, void *list, int64 *max)
{
	int64		n = Max(64, *max * 2);

	list = bigmem_realloc(g->mem, list, *max * sizeof(void *), n * sizeof(void *));
	*max = n;
	return list;
}

/* A new profile at the end of profile_list (not in the hash table). */
static GraphProfile *
append_profile(Graph *g, int64 id, TimestampTz created_at, TimestampTz updated_at)
{
	GraphProfile *p = graph_alloc(g, sizeof(GraphProfile));

	memset(p, 0, sizeof(GraphProfile));
	p->id = id;
	p->created_at = created_at;
	p->updated_at = updated_at;
	if (g->nprofiles == g->maxprofiles)
		g->profile_list = grow_list(g, g->profile_list, &g->maxprofiles);
	p->seq = (uint32) g->nprofiles;
	g->profile_list[g->nprofiles++] = p;
	g->max_profile_id = Max(g->max_profile_id, id);
	return p;
}

GraphProfile *
graph_add_profile(Graph *g, int64 id, int64 survivor,
				  TimestampTz created_at, TimestampTz updated_at)
{
	bool		found;
	ProfileSlot *e;
	GraphProfile *p;

	if (g->lazy_profiles && survivor == 0 && id > g->max_profile_id)
		return append_profile(g, id, created_at, updated_at);

	index_profiles(g);
	e = graph_profiles_insert(g->profiles, id, &found);
	if (found)
		return e->profile;
	p = append_profile(g, id, created_at, updated_at);
	e->profile = p;
	g->nindexed = g->nprofiles;
	/* after the insert above: adding the survivor may move hash entries */
	if (survivor != 0)
		p->survivor = graph_add_profile(g, survivor, 0, created_at, updated_at);
	return p;
}

static int32
profile_count(const GraphProfile *p, int kind)
{
	return kind < p->ncounts ? p->counts[kind] : 0;
}

static void
profile_add_count(Graph *g, GraphProfile *p, int kind, int32 delta)
{
	if (kind >= p->ncounts)
	{
		int			n = Max(kind + 1, Max(8, p->ncounts * 2));
		int32	   *c = graph_alloc(g, n * sizeof(int32));

		memset(c, 0, n * sizeof(int32));
		if (p->ncounts > 0)
			memcpy(c, p->counts, p->ncounts * sizeof(int32));
		p->counts = c;
		p->ncounts = n;
	}
	p->counts[kind] += delta;
}

void
graph_add_count(Graph *g, int64 profile_id, const char *kind, int count)
{
	GraphProfile *p = graph_profile(g, profile_id);

	if (p == NULL)
		elog(ERROR, "cdp identity graph: counts for unknown profile " INT64_FORMAT, profile_id);
	profile_add_count(g, p, rules_kind_index(g->rules, kind, strlen(kind)), count);
}

/* The identifier with this key, or NULL when the graph does not know it. */
GraphIdent *
graph_lookup(Graph *g, const char *key, int len)
{
	IdentSlot  *e;

	g->probe = key;
	g->probelen = len;
	e = graph_idents_lookup_hash(g->idents, NULL, hash_bytes((const unsigned char *) key, len));
	return e ? e->ident : NULL;
}

/*
 * Batched lookups (rewrite.c compares millions of stored rows, in an order
 * unrelated to the graph's): hash a batch of keys and let the CPU fetch
 * their hash slots, then their identifiers, before looking them up, instead
 * of waiting for two cache misses per row.
 */
#if defined(__GNUC__) || defined(__clang__)
#define graph_prefetch(p) __builtin_prefetch(p)
#else
#define graph_prefetch(p) ((void) (p))
#endif

uint32
graph_key_hash(const char *key, int len)
{
	return hash_bytes((const unsigned char *) key, len);
}

/* Stage 1: the hash slot where the key's probe starts. */
void
graph_prefetch_slot(Graph *g, uint32 hash)
{
	graph_prefetch(&g->idents->data[hash & g->idents->sizemask]);
}

/* Stage 2: the identifier of the first slot with the same hash (the slot is cached now). */
void
graph_prefetch_ident(Graph *g, uint32 hash)
{
	uint32		i = hash & g->idents->sizemask;

	for (int n = 0; n < 8; n++)
	{
		IdentSlot  *e = &g->idents->data[i];

		if (e->status != graph_idents_SH_IN_USE)
			return;
		if (e->hash == hash)
		{
			graph_prefetch(e->ident);
			return;
		}
		i = (i + 1) & g->idents->sizemask;
	}
}

/* Stage 3: graph_lookup() with the hash already computed. */
GraphIdent *
graph_lookup_hashed(Graph *g, const char *key, int len, uint32 hash)
{
	IdentSlot  *e;

	g->probe = key;
	g->probelen = len;
	e = graph_idents_lookup_hash(g->idents, NULL, hash);
	return e ? e->ident : NULL;
}

void
graph_prefetch_profile_slot(Graph *g, int64 id)
{
	index_profiles(g);
	graph_prefetch(&g->profiles->data[profile_hash(id) & g->profiles->sizemask]);
}

void
graph_prefetch_profile(Graph *g, int64 id)
{
	uint32		i;

	index_profiles(g);
	i = profile_hash(id) & g->profiles->sizemask;
	for (int n = 0; n < 8; n++)
	{
		ProfileSlot *e = &g->profiles->data[i];

		if (e->status != graph_profiles_SH_IN_USE)
			return;
		if (e->id == id)
		{
			graph_prefetch(e->profile);
			return;
		}
		i = (i + 1) & g->profiles->sizemask;
	}
}

/* The identifier with this key (len bytes, not NUL-terminated), added when new. */
GraphIdent *
graph_intern_len(Graph *g, const char *key, int len)
{
	return graph_intern_hashed(g, key, len, hash_bytes((const unsigned char *) key, len));
}

/* graph_intern_len() with the hash already computed (graph_key_hash()). */
GraphIdent *
graph_intern_hashed(Graph *g, const char *key, int len, uint32 hash)
{
	IdentSlot  *e;
	bool		found;
	int			kind;

	g->probe = key;
	g->probelen = len;
	e = graph_idents_insert_hash(g->idents, NULL, hash, &found);
	if (!found)
	{
		GraphIdent *id = graph_alloc(g, offsetof(GraphIdent, key) + len + 1);
		const char *colon = memchr(key, ':', len);

		memset(id, 0, offsetof(GraphIdent, key));
		memcpy(id->key, key, len);
		id->key[len] = '\0';
		id->keylen = len;
		kind = rules_kind_index(g->rules, id->key, colon ? colon - key : len);
		if (kind > PG_INT16_MAX)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("too many identifier kinds"),
					 errdetail("The identity engine handles at most %d kinds.", PG_INT16_MAX + 1)));
		id->kind = (int16) kind;
		id->blocked = '?';
		e->ident = id;
		if (g->nidents == g->maxidents)
			g->ident_list = grow_list(g, g->ident_list, &g->maxidents);
		id->seq = (uint32) g->nidents;
		g->ident_list[g->nidents++] = id;
	}
	return e->ident;
}

GraphIdent *
graph_intern(Graph *g, const char *key)
{
	return graph_intern_len(g, key, strlen(key));
}

static void
add_conflict(Graph *g, int64 event_id, const char *identifier, const char *reason, char *detail)
{
	GraphConflict *c = MemoryContextAlloc(g->cxt, sizeof(GraphConflict));
	MemoryContext old = MemoryContextSwitchTo(g->cxt);

	c->event_id = event_id;
	c->profile_id = 0;			/* filled in once the message has landed */
	c->identifier = identifier;
	c->reason = reason;
	c->detail = detail;
	g->conflicts = lappend(g->conflicts, c);
	MemoryContextSwitchTo(old);
}

/* Is ident a better candidate to drop than best?  Lowest priority first. */
static bool
drop_before(IdentityRules *rules, GraphIdent *ident, GraphIdent *best)
{
	int			pi = rules->kinds[ident->kind].priority;
	int			pb = rules->kinds[best->kind].priority;

	if (pi != pb)
		return pi > pb;
	return strcmp(ident->key, best->key) > 0;
}

/*
 * The kinds whose limit the message would break: attaching kept[] would give
 * one profile more identifiers of the kind than its max, and more than any
 * of the profiles involved has already (a profile already over a limit that
 * was lowered later is not punished for it; cdp.restitch() applies the new
 * limit).  Returns the number of such kinds; their indexes go to over[].
 */
static int
kinds_over_limit(Graph *g, GraphIdent **kept, int nkept, GraphProfile **profs, int nprofs,
				 int *over, int32 *totals)
{
	IdentityRules *rules = g->rules;
	int			nover = 0;

	for (int k = 0; k < rules->nkinds; k++)
	{
		int			max = rules->kinds[k].max_per_profile;
		int32		total = 0;
		int32		largest = 0;

		if (max <= 0)
			continue;
		for (int i = 0; i < nprofs; i++)
		{
			int32		c = profile_count(profs[i], k);

			total += c;
			largest = Max(largest, c);
		}
		for (int i = 0; i < nkept; i++)
			if (kept[i]->kind == k && kept[i]->profile == NULL)
				total++;
		if (total > max && total > largest)
		{
			totals[nover] = total;
			over[nover++] = k;
		}
	}
	return nover;
}

/* The distinct live profiles the kept identifiers point to, smallest id first. */
static int
live_profiles(Graph *g, GraphIdent **kept, int nkept, GraphProfile **profs)
{
	int			n = 0;

	for (int i = 0; i < nkept; i++)
	{
		GraphProfile *p = graph_live(kept[i]->profile);
		int			j;

		if (p == NULL)
			continue;
		for (j = 0; j < n && profs[j] != p; j++)
			;
		if (j < n)
			continue;
		/* insertion sort by id: n is small */
		for (j = n; j > 0 && profs[j - 1]->id > p->id; j--)
			profs[j] = profs[j - 1];
		profs[j] = p;
		n++;
	}
	return n;
}

static bool
kind_in(int kind, const int *kinds, int n)
{
	for (int i = 0; i < n; i++)
		if (kinds[i] == kind)
			return true;
	return false;
}

/* Messages with at most this many identifiers (and rules with as many kinds) need no allocation. */
#define APPLY_LOCAL 16

GraphProfile *
graph_apply(Graph *g, const GraphMessage *m, const char **reject)
{
	IdentityRules *rules = g->rules;
	MemoryContext old;
	GraphIdent **kept;
	GraphProfile **profs;
	int		   *over;
	int32	   *totals;
	int			nkept = 0;
	int			nprofs;
	int			first_conflict = list_length(g->conflicts);
	GraphProfile *target;
	ListCell   *lc;
	GraphIdent *kept_local[APPLY_LOCAL];
	GraphProfile *profs_local[APPLY_LOCAL];
	int			over_local[APPLY_LOCAL];
	int32		totals_local[APPLY_LOCAL];

	g->nmessages++;
	*reject = NULL;

	/* Temporaries live on the stack or in scratch; conflicts, merges and profiles in cxt. */
	MemoryContextReset(g->scratch);
	old = MemoryContextSwitchTo(g->scratch);
	kept = m->nids <= APPLY_LOCAL ? kept_local : palloc(sizeof(GraphIdent *) * m->nids);
	profs = m->nids <= APPLY_LOCAL ? profs_local : palloc(sizeof(GraphProfile *) * m->nids);

	/* 1. Intern, deduplicate, set blocked values aside. */
	for (int i = 0; i < m->nids; i++)
	{
		GraphIdent *id = m->idents ? m->idents[i] : graph_intern(g, m->ids[i]);
		int			j;

		for (j = 0; j < nkept && kept[j] != id; j++)
			;
		if (j < nkept)
			continue;
		if (id->blocked != 'n')
		{
			/*
			 * Checked once per identifier; the sentence is made again for
			 * each message that carries a blocked one (rare, and it keeps
			 * the identifier small).  Rules may have grown: re-read the
			 * index after interning.
			 */
			const char *why = rules_blocked(rules, id->kind, strchr(id->key, ':') + 1);

			id->blocked = why ? 'y' : 'n';
			if (why != NULL)
			{
				add_conflict(g, m->event_id, id->key, "blocked", MemoryContextStrdup(g->cxt, why));
				continue;
			}
		}
		kept[nkept++] = id;
	}

	/* 2. Merge protection (kinds are all known now: size per kind). */
	over = rules->nkinds <= APPLY_LOCAL ? over_local : palloc(sizeof(int) * rules->nkinds);
	totals = rules->nkinds <= APPLY_LOCAL ? totals_local : palloc(sizeof(int32) * rules->nkinds);
	for (;;)
	{
		int			nover;
		GraphIdent *drop = NULL;
		int			dropat = -1;
		StringInfoData detail;

		nprofs = live_profiles(g, kept, nkept, profs);
		nover = kinds_over_limit(g, kept, nkept, profs, nprofs, over, totals);
		if (nover == 0)
			break;

		for (int i = 0; i < nkept; i++)
		{
			GraphIdent *id = kept[i];
			bool		candidate = kind_in(id->kind, over, nover);

			if (!candidate && id->profile != NULL)
			{
				GraphProfile *p = graph_live(id->profile);

				for (int k = 0; k < nover && !candidate; k++)
					candidate = profile_count(p, over[k]) > 0;
			}
			if (candidate && (drop == NULL || drop_before(rules, id, drop)))
			{
				drop = id;
				dropat = i;
			}
		}
		Assert(drop != NULL);

		initStringInfo(&detail);
		appendStringInfo(&detail, "%s limit: the profile would have %d (max %d)",
						 rules->kinds[over[0]].kind, totals[0], rules->kinds[over[0]].max_per_profile);
		if (nprofs > 1)
		{
			appendStringInfoString(&detail, " merging profiles");
			for (int i = 0; i < nprofs; i++)
				appendStringInfo(&detail, "%s " INT64_FORMAT, i ? "," : "", profs[i]->id);
		}
		add_conflict(g, m->event_id, drop->key, "limit", MemoryContextStrdup(g->cxt, detail.data));
		kept[dropat] = kept[--nkept];
	}

	if (nkept == 0)
	{
		g->nrejected++;
		*reject = (m->nids == 0) ? "message has no identifier" :
			"message has no usable identifier: every identifier it carries was blocked or dropped by a limit";
		MemoryContextSwitchTo(old);
		return NULL;
	}

	/* 3. Land on a profile: new, existing, or the oldest of several. */
	if (nprofs == 0)
	{
		target = graph_add_profile(g, m->event_id, 0, m->received_at, m->received_at);
		target->is_new = true;
		g->nnew_profiles++;
	}
	else
	{
		target = profs[0];
		for (int i = 1; i < nprofs; i++)
		{
			GraphProfile *p = profs[i];
			GraphMerge *mg = MemoryContextAllocZero(g->cxt, sizeof(GraphMerge));
			MemoryContext prev = MemoryContextSwitchTo(g->cxt);

			mg->into = target->id;
			mg->merged = p->id;
			mg->event_id = m->event_id;
			mg->merged_at = m->received_at;
			for (int j = 0; j < nkept; j++)
				if (graph_live(kept[j]->profile) == p)
					mg->linking = lappend(mg->linking, (void *) kept[j]->key);
			g->merges = lappend(g->merges, mg);
			MemoryContextSwitchTo(prev);

			for (int k = 0; k < p->ncounts; k++)
				if (p->counts[k] != 0)
					profile_add_count(g, target, k, p->counts[k]);
			p->survivor = target;
			p->touched = true;
			p->ids_changed = target->ids_changed = true;
		}
	}
	if (m->received_at > target->updated_at)
	{
		target->updated_at = m->received_at;
		target->touched = true;
	}

	for (int i = 0; i < nkept; i++)
	{
		GraphIdent *id = kept[i];

		if (id->profile == NULL)
		{
			id->profile = target;
			id->first_seen = id->last_seen = m->occurred_at;
			id->source = m->source;
			id->dirty = true;
			profile_add_count(g, target, id->kind, 1);
			target->ids_changed = true;
		}
		else
		{
			if (m->occurred_at < id->first_seen)
			{
				id->first_seen = m->occurred_at;
				id->dirty = true;
			}
			if (m->occurred_at > id->last_seen)
			{
				id->last_seen = m->occurred_at;
				id->dirty = true;
			}
		}
	}

	for_each_from(lc, g->conflicts, first_conflict)
		((GraphConflict *) lfirst(lc))->profile_id = target->id;

	MemoryContextSwitchTo(old);
	return target;
}
