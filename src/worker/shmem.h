/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  cdp's shared memory: state the background workers and the backends
 *	  share.  It exists only when cdp is in shared_preload_libraries.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_SHMEM_H
#define CDP_SHMEM_H

#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

/* Room for the last error of the worker (longer messages are cut). */
#define CDP_WORKER_ERROR_LEN 256

/*
 * What the cdp worker publishes about itself.  Only the worker writes it;
 * backends read it for cdp.status() and to wake the worker at commit.
 */
typedef struct CdpWorkerState
{
	pid_t		pid;			/* 0 when the worker is not running */
	Latch	   *latch;			/* set it to wake the worker; NULL if not
								 * running */
	char		database[NAMEDATALEN];
	TimestampTz started_at;
	TimestampTz last_pass_at;	/* 0 before its first pass */
	int64		passes;			/* passes attempted since it started */
	int64		inbox_processed;	/* inbox messages handled since it started */
	int64		retention_deleted;	/* events deleted by retention since it started */
	int64		audience_profiles;	/* profiles the audience pass re-evaluated */
	int			inbox_naptime;	/* settings it runs with, after its last */
	int			inbox_batch_size;	/* configuration reload */
	char		last_error[CDP_WORKER_ERROR_LEN];	/* "" if its last pass
													 * succeeded */
} CdpWorkerState;

typedef struct CdpSharedState
{
	LWLock	   *lock;			/* protects the fields below */
	TimestampTz started_at;		/* when the postmaster set this up */
	CdpWorkerState worker;
	bool		worker_connecting;	/* the worker's last attempt to connect to
									 * cdp.database did not come back */
	pg_atomic_uint32 wake_passes;	/* CDP_WAKE_* bits: what the commits that
									 * woke the worker want run */
} CdpSharedState;

/* Which pass a wakeup is for (wake.c sets them, the worker clears them). */
#define CDP_WAKE_INBOX		0x01
#define CDP_WAKE_AUDIENCE	0x02

/* NULL unless cdp was preloaded and shared memory is attached. */
extern CdpSharedState *CdpShared;

extern void CdpShmemInit(void);

#endif							/* CDP_SHMEM_H */
