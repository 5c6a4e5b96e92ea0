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
#include "activation/activation.h"
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
		pg_atomic_init_u32(&CdpShared->wake_passes, 0);
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

/* A timestamp as a JSON value: null for 0 (never happened). */
static void
append_json_timestamp(StringInfo buf, TimestampTz ts)
{
	if (ts == 0)
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, JsonEncodeDateTime(NULL, TimestampTzGetDatum(ts), TIMESTAMPTZOID, NULL));
}

/* A last error as a JSON value: null for "" (none). */
static void
append_json_error(StringInfo buf, const char *error)
{
	if (error[0] == '\0')
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, error);
}

/* The "workers" array of cdp.status(): empty when the worker is not running. */
static void
append_workers(StringInfo buf, const CdpWorkerState *w)
{
	appendStringInfoString(buf, "[");
	if (w->pid != 0)
	{
		appendStringInfoString(buf, "{\"name\": \"cdp worker\", \"pid\": ");
		appendStringInfo(buf, "%d, \"database\": ", (int) w->pid);
		escape_json(buf, w->database);
		appendStringInfoString(buf, ", \"started_at\": ");
		append_json_timestamp(buf, w->started_at);
		appendStringInfoString(buf, ", \"last_pass_at\": ");
		append_json_timestamp(buf, w->last_pass_at);
		appendStringInfo(buf, ", \"passes\": " INT64_FORMAT
						 ", \"inbox_processed\": " INT64_FORMAT
						 ", \"retention_deleted\": " INT64_FORMAT
						 ", \"audience_profiles\": " INT64_FORMAT
						 ", \"inbox_naptime_ms\": %d, \"inbox_batch_size\": %d, \"last_error\": ",
						 w->passes, w->inbox_processed, w->retention_deleted, w->audience_profiles,
						 w->inbox_naptime, w->inbox_batch_size);
		append_json_error(buf, w->last_error);
		appendStringInfoChar(buf, '}');
	}
	appendStringInfoChar(buf, ']');
}

/*
 * The "dispatcher" object of cdp.status(): null when it is not running.
 * Its own key, not a second "workers" element: monitoring written against
 * 0.1.0 reads the cdp worker as "workers"->0.
 */
static void
append_dispatcher(StringInfo buf, const CdpDispatcherState *d)
{
	if (d->pid == 0)
	{
		appendStringInfoString(buf, "null");
		return;
	}
	appendStringInfo(buf, "{\"name\": \"cdp dispatcher\", \"pid\": %d, \"database\": ", (int) d->pid);
	/* cdp.database is set at server start: the one it connected to. */
	escape_json(buf, GetConfigOption("cdp.database", false, false));
	appendStringInfoString(buf, ", \"started_at\": ");
	append_json_timestamp(buf, d->started_at);
	appendStringInfoString(buf, ", \"last_round_at\": ");
	append_json_timestamp(buf, d->last_round_at);
	appendStringInfo(buf, ", \"requests\": " INT64_FORMAT ", \"delivered\": " INT64_FORMAT
					 ", \"failed_requests\": " INT64_FORMAT ", \"in_flight\": %d, \"last_error\": ",
					 d->requests, d->delivered, d->failed, d->in_flight);
	append_json_error(buf, d->last_error);
	appendStringInfoChar(buf, '}');
}

/*
 * cdp.status() RETURNS jsonb
 *
 * What this server's cdp library is, since when its shared state exists and
 * what its background workers (the cdp worker, the dispatcher) are doing.
 */
PG_FUNCTION_INFO_V1(cdp_status);
Datum
cdp_status(PG_FUNCTION_ARGS)
{
	StringInfoData buf;
	TimestampTz started_at;
	CdpWorkerState worker;
	CdpDispatcherState dispatcher;

	cdp_require_preload("cdp.status()");

	/* Copy under the locks, format after releasing them. */
	LWLockAcquire(CdpShared->lock, LW_SHARED);
	started_at = CdpShared->started_at;
	worker = CdpShared->worker;
	LWLockRelease(CdpShared->lock);
	if (CdpDispatcher != NULL)
	{
		LWLockAcquire(CdpDispatcher->lock, LW_SHARED);
		dispatcher = *CdpDispatcher;
		LWLockRelease(CdpDispatcher->lock);
	}
	else
		memset(&dispatcher, 0, sizeof(dispatcher));

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"library_version\": ");
	escape_json(&buf, CDP_VERSION);
	appendStringInfoString(&buf, ", \"preloaded\": true, \"shared_state_since\": ");
	append_json_timestamp(&buf, started_at);
	appendStringInfoString(&buf, ", \"default_phone_region\": ");
	escape_json(&buf, GetConfigOption("cdp.default_phone_region", false, false));
	appendStringInfoString(&buf, ", \"workers\": ");
	append_workers(&buf, &worker);
	appendStringInfoString(&buf, ", \"dispatcher\": ");
	append_dispatcher(&buf, &dispatcher);
	appendStringInfoChar(&buf, '}');

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
