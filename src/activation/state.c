/*-------------------------------------------------------------------------
 *
 * state.c
 *	  The dispatcher's shared state, and waking it when a transaction that
 *	  queued messages commits.
 *
 * Activation keeps its own small shared memory struct (requested through
 * the shmem hooks, chained after the rest of cdp's) so that the dispatcher
 * is independent of the cdp worker's state.
 *
 * SQL functions that make messages due (cdp._activation_stage(),
 * cdp.activate(), cdp.resume_destination(), cdp.retry_dead() ...) call
 * cdp._dispatch_wake(), which only notes that this transaction wants the
 * dispatcher; a transaction callback sets its latch at commit, when the
 * messages are visible (a rolled-back transaction wakes nobody).  Like the
 * inbox trigger this carries latency, not correctness: the dispatcher also
 * looks every cdp.dispatch_naptime.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

#include "activation/activation.h"

int			cdp_dispatch_naptime = 1000;

CdpDispatcherState *CdpDispatcher = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static bool wake_at_commit = false;
static bool callback_registered = false;

static void
activation_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	RequestAddinShmemSpace(MAXALIGN(sizeof(CdpDispatcherState)));
	RequestNamedLWLockTranche("cdp activation", 1);
}

static void
activation_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	CdpDispatcher = ShmemInitStruct("cdp activation", sizeof(CdpDispatcherState), &found);
	if (!found)
	{
		memset(CdpDispatcher, 0, sizeof(CdpDispatcherState));
		CdpDispatcher->lock = &(GetNamedLWLockTranche("cdp activation"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Install the hooks; from _PG_init while shared_preload_libraries is processed. */
void
ActivationShmemInit(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = activation_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = activation_shmem_startup;
}

void
ActivationWakeDispatcher(void)
{
	if (CdpDispatcher == NULL)
		return;
	/* Under the lock: the latch cannot go away while it is set. */
	LWLockAcquire(CdpDispatcher->lock, LW_SHARED);
	if (CdpDispatcher->latch != NULL)
		SetLatch(CdpDispatcher->latch);
	LWLockRelease(CdpDispatcher->lock);
}

static void
wake_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (wake_at_commit)
				ActivationWakeDispatcher();
			wake_at_commit = false;
			break;
		case XACT_EVENT_PREPARE:
			/* COMMIT PREPARED runs later, elsewhere: the naptime covers it. */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = false;
			break;
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			break;
	}
}

/*
 * cdp._dispatch_wake() RETURNS void
 *
 * Wake the dispatcher when this transaction commits.  Without the library
 * preloaded there is no dispatcher: a no-op.
 */
PG_FUNCTION_INFO_V1(cdp_dispatch_wake);
Datum
cdp_dispatch_wake(PG_FUNCTION_ARGS)
{
	if (CdpDispatcher != NULL)
	{
		if (!callback_registered)
		{
			RegisterXactCallback(wake_xact_callback, NULL);
			callback_registered = true;
		}
		wake_at_commit = true;
	}
	PG_RETURN_VOID();
}
