/*-------------------------------------------------------------------------
 *
 * dispatcher.h
 *	  The cdp dispatcher background worker, which delivers the outbox of
 *	  webhook destinations (dispatcher.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_DISPATCHER_H
#define CDP_DISPATCHER_H

#include "fmgr.h"

/* Register the dispatcher; only while shared_preload_libraries is processed. */
extern void CdpDispatcherRegister(void);

/* Entry point the postmaster starts the dispatcher with. */
extern PGDLLEXPORT void cdp_dispatcher_main(Datum main_arg);

#endif							/* CDP_DISPATCHER_H */
