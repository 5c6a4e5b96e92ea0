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

#include "identity/graph.h"

static uint32
ident_hash(const void *key, Size keysize)
{
	const char *s = *(const char *const *) key;

	return hash_bytes((const unsigned char *) s, strlen(s));
}

static int
ident_match(const void *key1, const void *key2, Size keysize)
{
	return strcmp(*(const char *const *) key1, *(const char *const *) key2);
}

Graph *
graph_create(IdentityRules *rules, long expected_idents)
{
	Graph	   *g = palloc0(sizeof(Graph));
	HASHCTL		ctl;

	g->cxt = CurrentMemoryContext;
	g->scratch = AllocSetContextCreate(g->cxt, "cdp identity graph scratch", ALLOCSET_SMALL_SIZES);
	g->rules = rules;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(const char *);
	ctl.entrysize = sizeof(GraphIdentEntry);
	ctl.hash = ident_hash;
	ctl.match = ident_match;
	ctl.hcxt = g->cxt;
	g->idents = hash_create("cdp identity graph identifiers", Max(expected_idents, 64), &ctl,
							HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(GraphProfileEntry);
	ctl.hcxt = g->cxt;
	g->profiles = hash_create("cdp identity graph profiles", Max(expected_idents / 2, 64), &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(const char *);
	ctl.entrysize = sizeof(const char *);
	ctl.hash = ident_hash;
	ctl.match = ident_match;
	ctl.hcxt = g->cxt;
	g->strings = hash_create("cdp identity graph strings", 64, &ctl,
							 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	return g;
}

/* One copy of each distinct string (event sources repeat a lot). */
const char *
graph_intern_string(Graph *g, const char *s)
{
	bool		found;
	const char **e;

	if (s == NULL)
		return NULL;
	e = hash_search(g->strings, &s, HASH_ENTER, &found);
	if (!found)
		*e = MemoryContextStrdup(g->cxt, s);
	return *e;
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

GraphProfile *
graph_profile(Graph *g, int64 id)
{
	GraphProfileEntry *e = hash_search(g->profiles, &id, HASH_FIND, NULL);

	return e ? e->profile : NULL;
}

/* Follow tombstones to the live profile, compressing the path. */
int64
graph_resolve(Graph *g, int64 profile_id)
{
	GraphProfile *p;
	int64		root = profile_id;

	if (profile_id == 0)
		return 0;
	while ((p = graph_profile(g, root)) != NULL && p->survivor != 0)
		root = p->survivor;
	while ((p = graph_profile(g, profile_id)) != NULL && p->survivor != 0 && p->survivor != root)
	{
		profile_id = p->survivor;
		p->survivor = root;
	}
	return root;
}

GraphProfile *
graph_add_profile(Graph *g, int64 id, int64 survivor,
				  TimestampTz created_at, TimestampTz updated_at)
{
	bool		found;
	GraphProfileEntry *e = hash_search(g->profiles, &id, HASH_ENTER, &found);

	if (!found)
	{
		GraphProfile *p = MemoryContextAllocZero(g->cxt, sizeof(GraphProfile));

		p->id = id;
		p->survivor = survivor;
		p->created_at = created_at;
		p->updated_at = updated_at;
		e->profile = p;
	}
	return e->profile;
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
		int32	   *c = MemoryContextAllocZero(g->cxt, n * sizeof(int32));

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

GraphIdent *
graph_intern(Graph *g, const char *key)
{
	bool		found;
	GraphIdentEntry *e = hash_search(g->idents, &key, HASH_ENTER, &found);

	if (!found)
	{
		GraphIdent *id = MemoryContextAllocZero(g->cxt, sizeof(GraphIdent));
		const char *colon = strchr(key, ':');

		id->key = MemoryContextStrdup(g->cxt, key);
		id->kind = rules_kind_index(g->rules, key, colon - key);
		id->blocked = '?';
		e->key = id->key;		/* the hash key must outlive the caller's */
		e->ident = id;
	}
	return e->ident;
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
			if (kept[i]->kind == k && kept[i]->profile_id == 0)
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
		int64		pid = graph_resolve(g, kept[i]->profile_id);
		GraphProfile *p;
		int			j;

		if (pid == 0)
			continue;
		p = graph_profile(g, pid);
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

int64
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

	g->nmessages++;
	*reject = NULL;

	/* Temporaries live in scratch; conflicts, merges and profiles in cxt. */
	MemoryContextReset(g->scratch);
	old = MemoryContextSwitchTo(g->scratch);
	kept = palloc(sizeof(GraphIdent *) * Max(m->nids, 1));
	profs = palloc(sizeof(GraphProfile *) * Max(m->nids, 1));

	/* 1. Intern, deduplicate, set blocked values aside. */
	for (int i = 0; i < m->nids; i++)
	{
		GraphIdent *id = graph_intern(g, m->ids[i]);
		int			j;

		for (j = 0; j < nkept && kept[j] != id; j++)
			;
		if (j < nkept)
			continue;
		if (id->blocked == '?')
		{
			/* rules may have grown: re-read the index after interning */
			const char *why = rules_blocked(rules, id->kind, strchr(id->key, ':') + 1);

			id->blocked_detail = why ? MemoryContextStrdup(g->cxt, why) : NULL;
			id->blocked = why ? 'y' : 'n';
		}
		if (id->blocked == 'y')
		{
			add_conflict(g, m->event_id, id->key, "blocked", MemoryContextStrdup(g->cxt, id->blocked_detail));
			continue;
		}
		kept[nkept++] = id;
	}

	/* 2. Merge protection (kinds are all known now: size per kind). */
	over = palloc(sizeof(int) * rules->nkinds);
	totals = palloc(sizeof(int32) * rules->nkinds);
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

			if (!candidate && id->profile_id != 0)
			{
				GraphProfile *p = graph_profile(g, graph_resolve(g, id->profile_id));

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
		return 0;
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
				if (graph_resolve(g, kept[j]->profile_id) == p->id)
					mg->linking = lappend(mg->linking, (void *) kept[j]->key);
			g->merges = lappend(g->merges, mg);
			MemoryContextSwitchTo(prev);

			for (int k = 0; k < p->ncounts; k++)
				if (p->counts[k] != 0)
					profile_add_count(g, target, k, p->counts[k]);
			p->survivor = target->id;
			p->touched = true;
			p->ids_changed = target->ids_changed = true;
		}
	}
	target->updated_at = Max(target->updated_at, m->received_at);
	target->touched = true;

	for (int i = 0; i < nkept; i++)
	{
		GraphIdent *id = kept[i];

		if (id->profile_id == 0)
		{
			id->profile_id = target->id;
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
	return target->id;
}
