/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The cdp background worker: its settings, its registration and how a
 *	  backend wakes it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_WORKER_H
#define CDP_WORKER_H

#include "fmgr.h"

/* Settings (defined as GUCs in cdp.c). */
extern char *cdp_database;
extern int	cdp_inbox_naptime;
extern int	cdp_inbox_batch_size;
extern int	cdp_retention_naptime;
extern int	cdp_audience_naptime;
extern int	cdp_audience_batch_size;

/* Register the worker; only while shared_preload_libraries is processed. */
extern void CdpWorkerRegister(void);

/* Entry point the postmaster starts the worker with. */
extern PGDLLEXPORT void cdp_worker_main(Datum main_arg);

/* Ask for these passes (CDP_WAKE_*) and set the worker's latch now (no-op when it is not running). */
extern void CdpWorkerWake(uint32 passes);

#endif							/* CDP_WORKER_H */
