/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  cdp's shared memory segment and the preload check.
 *
 * The segment is requested through shmem_request_hook (PostgreSQL 15) and
 * attached in shmem_startup_hook.  Functions that depend on it (and, later,
 * on the background workers) call cdp_require_preload() first, so that a
 * database where cdp was merely CREATEd, not preloaded, gets a clear error
 * instead of a silent no-op.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "cdp.h"
#include "worker/shmem.h"

CdpSharedState *CdpShared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
cdp_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	RequestAddinShmemSpace(MAXALIGN(sizeof(CdpSharedState)));
	RequestNamedLWLockTranche("cdp", 1);
}

static void
cdp_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	CdpShared = ShmemInitStruct("cdp", sizeof(CdpSharedState), &found);
	if (!found)
	{
		memset(CdpShared, 0, sizeof(CdpSharedState));
		CdpShared->lock = &(GetNamedLWLockTranche("cdp"))->lock;
		CdpShared->started_at = GetCurrentTimestamp();
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Install the hooks.  Called from _PG_init only while
 * shared_preload_libraries is being processed.
 */
void
CdpShmemInit(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = cdp_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = cdp_shmem_startup;
}

void
cdp_require_preload(const char *what)
{
	if (CdpShared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s requires cdp to be loaded via shared_preload_libraries", what),
				 errhint("Add cdp to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/*
 * cdp.status() RETURNS jsonb
 *
 * What this server's cdp library is and since when its shared state exists.
 */
PG_FUNCTION_INFO_V1(cdp_status);
Datum
cdp_status(PG_FUNCTION_ARGS)
{
	StringInfoData buf;
	TimestampTz started_at;

	cdp_require_preload("cdp.status()");

	LWLockAcquire(CdpShared->lock, LW_SHARED);
	started_at = CdpShared->started_at;
	LWLockRelease(CdpShared->lock);

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"library_version\": ");
	escape_json(&buf, CDP_VERSION);
	appendStringInfoString(&buf, ", \"preloaded\": true, \"shared_state_since\": ");
	escape_json(&buf, JsonEncodeDateTime(NULL, TimestampTzGetDatum(started_at),
									 TIMESTAMPTZOID, NULL));
	appendStringInfoString(&buf, ", \"default_phone_region\": ");
	escape_json(&buf, GetConfigOption("cdp.default_phone_region", false, false));
	appendStringInfoChar(&buf, '}');

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
