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
#include "storage/lwlock.h"

typedef struct CdpSharedState
{
	LWLock	   *lock;			/* protects the fields below */
	TimestampTz started_at;		/* when the postmaster set this up */
} CdpSharedState;

/* NULL unless cdp was preloaded and shared memory is attached. */
extern CdpSharedState *CdpShared;

extern void CdpShmemInit(void);

#endif							/* CDP_SHMEM_H */
