/*-------------------------------------------------------------------------
 *
 * hooks.c
 *	  Notifying the layers above identity that profiles changed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

#include "identity/identity.h"
#include "identity/store.h"

#define MAX_HOOKS 8

static IdentityChangeHook hooks[MAX_HOOKS];
static int	nhooks = 0;

/* Called from the capabilities' XxxInit() in _PG_init. */
void
identity_add_change_hook(IdentityChangeHook hook)
{
	for (int i = 0; i < nhooks; i++)
		if (hooks[i] == hook)
			return;
	if (nhooks == MAX_HOOKS)
		elog(ERROR, "cdp: too many identity change hooks");
	hooks[nhooks++] = hook;
}

void
identity_changed(const IdentityChange *change)
{
	ArrayBuild	ids;

	if (change->nprofiles == 0)
		return;
	for (int i = 0; i < nhooks; i++)
		hooks[i] (change);

	ab_init(&ids, INT8OID);
	for (int i = 0; i < change->nprofiles; i++)
		ab_add(&ids, Int64GetDatum(change->profiles[i]), false);
	identity_journal(change->rebuilt ? "rebuilt" : "identity", ab_result(&ids), (Datum) 0, (Datum) 0);
}

/*
 * Append one entry to the change journal: these profiles changed (kind
 * "events": these events were added to them, event_ids and their
 * occurred_ats parallel to profile_ids).  One row per call, however many
 * profiles: the journal is cheap to write and the audience pass reads it
 * set-at-a-time.
 */
void
identity_journal(const char *kind, Datum profile_ids, Datum event_ids, Datum occurred_ats)
{
	Oid			types[4] = {TEXTOID, INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		args[4] = {CStringGetTextDatum(kind), profile_ids, event_ids, occurred_ats};
	char		nulls[4] = {' ', ' ', event_ids == (Datum) 0 ? 'n' : ' ', occurred_ats == (Datum) 0 ? 'n' : ' '};

	store_exec(PLAN_JOURNAL,
			   "INSERT INTO cdp.journal (kind, profile_ids, event_ids, occurred_ats) VALUES ($1, $2, $3, $4)",
			   4, types, args, nulls, false);
}
