/*-------------------------------------------------------------------------
 *
 * wake.c
 *	  Waking the cdp worker when a transaction that inserted into cdp.inbox
 *	  (or appended to the change journal) commits, so that ingestion (or
 *	  the audience pass) starts at once instead of after its naptime.
 *
 * A statement-level AFTER INSERT trigger (cdp._wake_worker('inbox') on
 * cdp.inbox, cdp._wake_worker('audience') on cdp.journal) only notes that
 * this transaction inserted; a transaction callback asks for the pass and
 * sets the worker's latch at commit.  Setting it earlier would let the worker
 * look before the rows are visible, and a rolled-back insert must not wake
 * it at all.
 *
 * This trigger carries no correctness, only latency: without it (a
 * prepared transaction, the trigger disabled, a commit while the worker is
 * restarting) the worker still finds the rows at its next naptime.  That is
 * what DESIGN.md allows ("correctness never depends on row triggers").
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

#include "worker/shmem.h"
#include "worker/worker.h"

/* The passes (CDP_WAKE_*) this transaction's inserts want run after commit. */
static uint32 wake_at_commit = 0;
static bool callback_registered = false;

void
CdpWorkerWake(uint32 passes)
{
	if (CdpShared == NULL)
		return;
	pg_atomic_fetch_or_u32(&CdpShared->wake_passes, passes);

	/*
	 * Under the lock, so the latch cannot be cleared (the worker exiting)
	 * between reading and setting it.  A latch whose process has gone only
	 * gets a spurious wakeup, which every latch user tolerates.
	 */
	LWLockAcquire(CdpShared->lock, LW_SHARED);
	if (CdpShared->worker.latch != NULL)
		SetLatch(CdpShared->worker.latch);
	LWLockRelease(CdpShared->lock);
}

/*
 * Wake the worker when the transaction commits; forget the flag whichever
 * way it ends.  (An insert in a subtransaction that was rolled back still
 * wakes the worker: a spurious wakeup costs one empty pass.)
 */
static void
wake_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (wake_at_commit != 0)
				CdpWorkerWake(wake_at_commit);
			wake_at_commit = 0;
			break;
		case XACT_EVENT_PREPARE:
			/* COMMIT PREPARED runs elsewhere, later: the naptime covers it. */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = 0;
			break;
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			break;
	}
}

/*
 * cdp._wake_worker() RETURNS trigger
 *
 * Statement-level AFTER INSERT trigger; its argument names the pass
 * ('inbox', the default, or 'audience').  Without the library preloaded
 * there is no worker to wake: a no-op.
 */
PG_FUNCTION_INFO_V1(cdp_wake_worker);
Datum
cdp_wake_worker(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("cdp._wake_worker() must be called as a trigger")));

	if (CdpShared != NULL)
	{
		TriggerData *trigdata = (TriggerData *) fcinfo->context;
		const char *pass = trigdata->tg_trigger->tgnargs > 0 ? trigdata->tg_trigger->tgargs[0] : "inbox";

		if (!callback_registered)
		{
			RegisterXactCallback(wake_xact_callback, NULL);
			callback_registered = true;
		}
		if (strcmp(pass, "audience") == 0)
			wake_at_commit |= CDP_WAKE_AUDIENCE;
		else
			wake_at_commit |= CDP_WAKE_INBOX;
	}
	return PointerGetDatum(NULL);
}
