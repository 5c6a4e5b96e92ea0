/*-------------------------------------------------------------------------
 *
 * message_ids.c
 *	  Idempotent ingestion: a message id is accepted once.  cdp.message_ids
 *	  remembers which event each message id became; a batch's re-sent
 *	  messages, and later copies of one message within the batch, are
 *	  counted as duplicates and not stored.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "identity/identity.h"
#include "identity/store.h"

static int
cmp_cstring(const void *a, const void *b)
{
	return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* A message's id and its position in the batch, sorted by both. */
typedef struct MessageRef
{
	const char *id;
	int			index;
} MessageRef;

static int
cmp_message_ref(const void *a, const void *b)
{
	const MessageRef *x = a;
	const MessageRef *y = b;
	int			c = strcmp(x->id, y->id);

	return c != 0 ? c : (x->index > y->index) - (x->index < y->index);
}

/*
 * Remember the fresh messages' ids, refs[0..n) (sorted).  A plain insert,
 * in a subtransaction: the ids were just probed, so a key can only collide
 * with a transaction that stored the same id meanwhile (two clients sending
 * the same message at once).  Then this falls back to the insert that skips
 * what exists; it returns which ids were still new, and the rest are marked
 * duplicates, as if the probe had seen them.
 */
static void
insert_message_ids(IngestMessage *msgs, MessageRef *refs, int n)
{
	ArrayBuild	ids,
				events;
	Oid			types[3] = {TEXTARRAYOID, INT8ARRAYOID, TIMESTAMPTZOID};
	Datum		args[3];
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	bool		collided = false;

	ab_init(&ids, TEXTOID);
	ab_init(&events, INT8OID);
	for (int i = 0; i < n; i++)
	{
		ab_add_text(&ids, refs[i].id);
		ab_add(&events, Int64GetDatum(msgs[refs[i].index].event_id), false);
	}
	args[0] = ab_result(&ids);
	args[1] = ab_result(&events);
	args[2] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		store_exec(PLAN_INSERT_MESSAGE_IDS,
				   "INSERT INTO cdp.message_ids (message_id, event_id, received_at) "
				   "SELECT m, e, $3 FROM unnest($1, $2) AS u(m, e)",
				   3, types, args, NULL, false);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		SPI_tuptable = NULL;	/* freed with the subtransaction */
		if (edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION)
			ReThrowError(edata);
		FreeErrorData(edata);
		collided = true;
	}
	PG_END_TRY();
	if (!collided)
		return;

	store_exec(PLAN_MESSAGE_IDS,
			   "INSERT INTO cdp.message_ids (message_id, event_id, received_at) "
			   "SELECT m, e, $3 FROM unnest($1, $2) AS u(m, e) ON CONFLICT DO NOTHING RETURNING message_id",
			   3, types, args, NULL, false);
	{
		int			nnew = (int) SPI_processed;
		char	  **inserted = palloc(sizeof(char *) * Max(nnew, 1));

		for (int i = 0; i < nnew; i++)
			inserted[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		qsort(inserted, nnew, sizeof(char *), cmp_cstring);
		for (int i = 0; i < n; i++)
			if (bsearch(&refs[i].id, inserted, nnew, sizeof(char *), cmp_cstring) == NULL)
				msgs[refs[i].index].duplicate = true;
	}
}

/*
 * Message ids seen before (or earlier in this batch) mark duplicates.  Runs
 * after the event ids are drawn: cdp.message_ids remembers which event a
 * message became.  The batch's ids are probed first and only the new ones
 * inserted: each costs an index probe and a plain insert, where an insert
 * that skips conflicts would probe, insert speculatively and then confirm
 * the row (one more WAL record each).
 */
void
message_ids_mark_duplicates(IngestMessage *msgs, int n)
{
	MessageRef *refs = palloc(sizeof(MessageRef) * Max(n, 1));
	int			nrefs = 0;
	int			nfresh = 0;
	ArrayBuild	probe;
	Oid			type = TEXTARRAYOID;
	Datum		arg;
	char	  **stored;
	int			nstored;

	for (int i = 0; i < n; i++)
		if (msgs[i].error == NULL && msgs[i].message_id != NULL)
		{
			refs[nrefs].id = msgs[i].message_id;
			refs[nrefs].index = i;
			nrefs++;
		}
	if (nrefs == 0)
		return;

	/* Later copies in this batch are duplicates of the first. */
	qsort(refs, nrefs, sizeof(MessageRef), cmp_message_ref);
	ab_init(&probe, TEXTOID);
	for (int i = 0; i < nrefs; i++)
	{
		if (nfresh > 0 && strcmp(refs[nfresh - 1].id, refs[i].id) == 0)
		{
			msgs[refs[i].index].duplicate = true;
			continue;
		}
		refs[nfresh++] = refs[i];
		ab_add_text(&probe, refs[i].id);
	}

	arg = ab_result(&probe);
	store_exec(PLAN_PROBE_MESSAGE_IDS,
			   "SELECT message_id FROM cdp.message_ids WHERE message_id = ANY ($1)",
			   1, &type, &arg, NULL, false);
	nstored = (int) SPI_processed;
	stored = palloc(sizeof(char *) * Max(nstored, 1));
	for (int i = 0; i < nstored; i++)
		stored[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
	qsort(stored, nstored, sizeof(char *), cmp_cstring);

	nrefs = nfresh;
	nfresh = 0;
	for (int i = 0; i < nrefs; i++)
	{
		if (bsearch(&refs[i].id, stored, nstored, sizeof(char *), cmp_cstring) != NULL)
			msgs[refs[i].index].duplicate = true;
		else
			refs[nfresh++] = refs[i];
	}
	if (nfresh > 0)
		insert_message_ids(msgs, refs, nfresh);
}

/* A message the engine rejected may be sent again, corrected, under its id. */
void
message_ids_forget_rejected(IngestMessage *msgs, int n)
{
	ArrayBuild	ids;
	Oid			type = TEXTARRAYOID;
	Datum		arg;

	ab_init(&ids, TEXTOID);
	for (int i = 0; i < n; i++)
		if (!msgs[i].duplicate && msgs[i].event_id != 0 && msgs[i].profile_id == 0 &&
			msgs[i].message_id != NULL)
			ab_add_text(&ids, msgs[i].message_id);
	if (ids.n == 0)
		return;
	arg = ab_result(&ids);
	store_exec(PLAN_FORGET_MESSAGE_IDS, "DELETE FROM cdp.message_ids WHERE message_id = ANY ($1)",
			   1, &type, &arg, NULL, false);
}
