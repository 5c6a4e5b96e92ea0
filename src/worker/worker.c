/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The cdp background worker: one process per server, connected to the
 *	  database named by cdp.database, that runs cdp's passes.
 *
 * A pass is one batch of work in its own transaction: the inbox pass
 * (ingestion), the audience pass (computed traits, audiences and, in the
 * same transaction, the activation stage) and retention (which also
 * creates the coming months' event partitions).  Each pass has
 * its own naptime.  The loop runs every pass that is due, then sleeps on
 * its latch until the next one is due or a backend wakes it (wake.c: a
 * commit that inserted into cdp.inbox or cdp.journal asks for the pass
 * concerned).  A pass that handled a full batch is due again at once, so
 * a backlog is drained without sleeping.
 *
 * The worker does not give up on errors: a pass that fails (cdp not
 * installed yet, or dropped; a function missing after a half-done upgrade;
 * a cancelled statement) is rolled back, logged once per distinct error and
 * retried after its naptime.  Anything worse (FATAL, a crash) ends the
 * process and the postmaster starts it again after bgw_restart_time.  As
 * every pass is one transaction, nothing a dead or failed pass touched is
 * lost: an inbox row is deleted by the transaction that ingests it.
 *
 * A cdp.database that does not exist (a typo, or dropped WITH (FORCE)) would
 * make every restart fail with FATAL, every few seconds.  So when the last
 * attempt to connect did not come back, the worker connects to no database,
 * waits quietly until cdp.database can be connected to, and then exits to be
 * started again (a process cannot connect twice).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "worker/shmem.h"
#include "worker/worker.h"

/* Seconds before the postmaster starts the worker again after it died. */
#define WORKER_RESTART_SECONDS 5

char	   *cdp_database = NULL;
int			cdp_inbox_naptime = 1000;
int			cdp_inbox_batch_size = 5000;
int			cdp_retention_naptime = 3600 * 1000;
int			cdp_audience_naptime = 1000;
int			cdp_audience_batch_size = 1000;

typedef struct WorkerPass
{
	const char *name;			/* for the log */
	int		   *naptime;		/* its setting, in milliseconds */
	size_t		counter;		/* offset of its int64 counter in
								 * CdpWorkerState */
	uint32		wake;			/* the CDP_WAKE_* bit that asks for it; 0 if
								 * only its naptime does */

	/*
	 * One batch, run inside a transaction with SPI connected and a snapshot
	 * pushed.  Returns how many items it handled and sets *more when that
	 * was a full batch (so more is probably waiting).
	 */
	int64		(*run) (bool *more);
} WorkerPass;

static int64 inbox_pass(bool *more);
static int64 retention_pass(bool *more);
static int64 audience_pass(bool *more);

/* In this order: what the inbox ingests, the audience pass sees next. */
static const WorkerPass passes[] = {
	{"inbox", &cdp_inbox_naptime, offsetof(CdpWorkerState, inbox_processed), CDP_WAKE_INBOX, inbox_pass},
	{"audience", &cdp_audience_naptime, offsetof(CdpWorkerState, audience_profiles), CDP_WAKE_AUDIENCE, audience_pass},
	{"retention", &cdp_retention_naptime, offsetof(CdpWorkerState, retention_deleted), 0, retention_pass},
};

#define NPASSES ((int) lengthof(passes))

typedef enum PassOutcome
{
	PASS_DONE,					/* committed, nothing more waiting */
	PASS_MORE,					/* committed a full batch: run again at once */
	PASS_FAILED,				/* rolled back: retry after the naptime */
	PASS_NO_EXTENSION			/* cdp is not installed: nothing to run */
} PassOutcome;

typedef struct PassResult
{
	PassOutcome outcome;
	int64		count;
	bool		more;
} PassResult;

/* The worker's own bookkeeping of each pass. */
typedef struct PassState
{
	TimestampTz due;			/* run it at or after this time */
	bool		failing;		/* its last run failed: a wakeup does not
								 * shorten the back-off */
	char		logged[CDP_WORKER_ERROR_LEN];	/* its error already in the
												 * log; "" if none */
} PassState;

static PassState pass_state[NPASSES];

/* "extension cdp is not installed" is in the log (until it is installed). */
static bool waiting_logged = false;

/* Whatever a round of passes allocates outside transactions; reset per round. */
static MemoryContext round_context = NULL;

/* Copy src into a CDP_WORKER_ERROR_LEN buffer, cut at a character boundary. */
static void
copy_clipped(char *dst, const char *src)
{
	int			len = pg_mbcliplen(src, strlen(src), CDP_WORKER_ERROR_LEN - 1);

	memcpy(dst, src, len);
	dst[len] = '\0';
}

static void
publish_settings(void)
{
	LWLockAcquire(CdpShared->lock, LW_EXCLUSIVE);
	CdpShared->worker.inbox_naptime = cdp_inbox_naptime;
	CdpShared->worker.inbox_batch_size = cdp_inbox_batch_size;
	LWLockRelease(CdpShared->lock);
}

/*
 * Record that a pass ended: what it handled (it committed) or why it did
 * not (error).  The error shown is cleared once no pass is failing.
 */
static void
publish_pass(const WorkerPass *pass, int64 count, const char *error)
{
	CdpWorkerState *w = &CdpShared->worker;
	bool		any_failing = false;

	for (int i = 0; i < NPASSES; i++)
		any_failing |= pass_state[i].failing;

	LWLockAcquire(CdpShared->lock, LW_EXCLUSIVE);
	w->last_pass_at = GetCurrentTimestamp();
	w->passes++;
	if (pass != NULL)
		*(int64 *) ((char *) w + pass->counter) += count;
	if (error != NULL)
		copy_clipped(w->last_error, error);
	else if (!any_failing)
		w->last_error[0] = '\0';
	LWLockRelease(CdpShared->lock);
}

/* before_shmem_exit: the worker is gone, nobody may set its latch. */
static void
worker_detach(int code, Datum arg)
{
	LWLockAcquire(CdpShared->lock, LW_EXCLUSIVE);
	if (CdpShared->worker.pid == MyProcPid)
	{
		CdpShared->worker.pid = 0;
		CdpShared->worker.latch = NULL;
	}
	LWLockRelease(CdpShared->lock);
}

static void
worker_attach(void)
{
	CdpWorkerState *w = &CdpShared->worker;

	LWLockAcquire(CdpShared->lock, LW_EXCLUSIVE);
	memset(w, 0, sizeof(*w));
	w->pid = MyProcPid;
	w->latch = MyLatch;
	strlcpy(w->database, cdp_database, NAMEDATALEN);
	w->started_at = GetCurrentTimestamp();
	w->inbox_naptime = cdp_inbox_naptime;
	w->inbox_batch_size = cdp_inbox_batch_size;
	LWLockRelease(CdpShared->lock);

	before_shmem_exit(worker_detach, (Datum) 0);
}

static void
reload_configuration(void)
{
	int			old_naptime = cdp_inbox_naptime;
	int			old_batch_size = cdp_inbox_batch_size;
	bool		changed;

	ProcessConfigFile(PGC_SIGHUP);
	publish_settings();
	changed = old_naptime != cdp_inbox_naptime || old_batch_size != cdp_inbox_batch_size;
	ereport(changed ? LOG : DEBUG1,
			(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
			 errmsg("cdp worker: configuration reloaded"),
			 errdetail("cdp.inbox_naptime = %d ms, cdp.inbox_batch_size = %d.",
					   cdp_inbox_naptime, cdp_inbox_batch_size)));

	/* Apply a shorter naptime (or retry after a fix) at once. */
	for (int i = 0; i < NPASSES; i++)
		pass_state[i].due = 0;
}

static void
pass_error_context(void *arg)
{
	errcontext("cdp worker %s pass", (const char *) arg);
}

/* One pass in its own transaction; errors propagate to run_pass(). */
static void
run_pass_transaction(const WorkerPass *pass, PassResult *r)
{
	ErrorContextCallback errcallback;

	errcallback.callback = pass_error_context;
	errcallback.arg = unconstify(char *, pass->name);
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());

	/* A catalog lookup is cheaper than failing on a missing function. */
	if (!OidIsValid(get_extension_oid("cdp", true)))
		r->outcome = PASS_NO_EXTENSION;
	else
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "cdp worker: SPI_connect failed");
		r->count = pass->run(&r->more);
		SPI_finish();
		r->outcome = r->more ? PASS_MORE : PASS_DONE;
	}

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);

	error_context_stack = errcallback.previous;
}

/*
 * Run pass i and record the outcome.  An error is caught here: the pass is
 * rolled back and its error logged, unless it is the same error it logged
 * last time (a pass failing every naptime must not flood the log).
 */
static PassOutcome
run_pass(int i)
{
	const WorkerPass *pass = &passes[i];
	PassState  *state = &pass_state[i];
	ResourceOwner owner = CurrentResourceOwner;
	PassResult	r = {PASS_FAILED, 0, false};

	PG_TRY();
	{
		run_pass_transaction(pass, &r);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		char		error[CDP_WORKER_ERROR_LEN];

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(round_context);
		edata = CopyErrorData();
		copy_clipped(error, psprintf("%s pass: %s", pass->name,
									 edata->message ? edata->message : "unknown error"));
		if (strcmp(error, state->logged) != 0)
		{
			EmitErrorReport();
			strlcpy(state->logged, error, sizeof(state->logged));
		}
		FlushErrorState();
		AbortCurrentTransaction();
		CurrentResourceOwner = owner;
		MemoryContextSwitchTo(round_context);
		pgstat_report_activity(STATE_IDLE, NULL);
		RESUME_INTERRUPTS();

		state->failing = true;
		publish_pass(pass, 0, error);
		r.outcome = PASS_FAILED;
	}
	PG_END_TRY();

	if (r.outcome == PASS_NO_EXTENSION)
	{
		char	   *error = psprintf("extension cdp is not installed in database \"%s\"",
									 cdp_database);

		if (!waiting_logged)
			ereport(LOG,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cdp worker: %s; waiting", error),
					 errhint("Run CREATE EXTENSION cdp in database \"%s\", or set cdp.database to the database where it is installed.",
							 cdp_database)));
		waiting_logged = true;
		publish_pass(NULL, 0, error);
	}
	else if (r.outcome != PASS_FAILED)
	{
		if (waiting_logged)
			ereport(LOG,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg("cdp worker: extension cdp is installed in database \"%s\"; processing",
							cdp_database)));
		waiting_logged = false;
		if (state->logged[0] != '\0')
			ereport(LOG,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg("cdp worker: %s pass succeeded again", pass->name)));
		state->logged[0] = '\0';
		state->failing = false;
		publish_pass(pass, r.count, NULL);
	}
	return r.outcome;
}

/*
 * Run the passes that are due (and those a wakeup asked for, unless they
 * are backing off after a failure) and return how long to sleep until the
 * next one is due, in milliseconds.
 */
static long
run_due_passes(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = DT_NOEND;
	uint32		asked = pg_atomic_exchange_u32(&CdpShared->wake_passes, 0);

	for (int i = 0; i < NPASSES; i++)
	{
		PassState  *state = &pass_state[i];
		PassOutcome outcome;

		if (now < state->due && !((asked & passes[i].wake) && !state->failing))
			continue;
		outcome = run_pass(i);
		now = GetCurrentTimestamp();
		if (outcome == PASS_NO_EXTENSION)
		{
			/* No pass can run: look again after each one's naptime. */
			for (int j = 0; j < NPASSES; j++)
				pass_state[j].due = TimestampTzPlusMilliseconds(now, *passes[j].naptime);
			break;
		}
		state->due = outcome == PASS_MORE ? now
			: TimestampTzPlusMilliseconds(now, *passes[i].naptime);
	}

	for (int i = 0; i < NPASSES; i++)
		next = Min(next, pass_state[i].due);
	return TimestampDifferenceMilliseconds(now, next);
}

/* The inbox pass: ingest up to cdp.inbox_batch_size messages. */
static int64
inbox_pass(bool *more)
{
	Oid			argtype = INT4OID;
	Datum		arg = Int32GetDatum(cdp_inbox_batch_size);
	bool		isnull;
	int64		processed;

	pgstat_report_activity(STATE_RUNNING,
						   psprintf("SELECT cdp.process_inbox(%d)", cdp_inbox_batch_size));
	if (SPI_execute_with_args("SELECT (cdp.process_inbox($1) ->> 'processed')::bigint",
							  1, &argtype, &arg, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "cdp worker: cdp.process_inbox() returned no row");
	processed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		elog(ERROR, "cdp worker: cdp.process_inbox() did not report a count");

	*more = processed >= cdp_inbox_batch_size;
	return processed;
}

/*
 * The audience pass: up to cdp.audience_batch_size journal rows, the due
 * window expiries, every audience brought current for what changed, and
 * the activation stage (cdp._audience_pass()).
 */
static int64
audience_pass(bool *more)
{
	Oid			argtype = INT4OID;
	Datum		arg = Int32GetDatum(cdp_audience_batch_size);
	bool		isnull;
	Datum		d;
	int64		profiles;

	pgstat_report_activity(STATE_RUNNING,
						   psprintf("SELECT cdp._audience_pass(%d)", cdp_audience_batch_size));
	if (SPI_execute_with_args("SELECT (r ->> 'profiles')::bigint, (r ->> 'more')::boolean "
							  "FROM cdp._audience_pass($1) AS r",
							  1, &argtype, &arg, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "cdp worker: cdp._audience_pass() returned no row");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	profiles = isnull ? 0 : DatumGetInt64(d);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	*more = !isnull && DatumGetBool(d);
	return profiles;
}

/*
 * Create the coming months' event partitions ahead of ingestion
 * (cdp.create_event_partitions()), then delete the events whose retention
 * has passed (cdp.apply_retention()).
 */
static int64
retention_pass(bool *more)
{
	bool		isnull;
	int64		deleted;

	/*
	 * (Not there while an install older than 0.2.0 waits for ALTER EXTENSION
	 * UPDATE: retention still runs meanwhile.)
	 */
	if (SPI_execute("SELECT FROM pg_catalog.pg_proc "
					"WHERE oid = pg_catalog.to_regprocedure('cdp.create_event_partitions(integer)')",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		pgstat_report_activity(STATE_RUNNING, "SELECT cdp.create_event_partitions()");
		if (SPI_execute("SELECT cdp.create_event_partitions()", false, 1) != SPI_OK_SELECT)
			elog(ERROR, "cdp worker: cdp.create_event_partitions() failed");
	}
	pgstat_report_activity(STATE_RUNNING, "SELECT cdp.apply_retention()");
	if (SPI_execute("SELECT (cdp.apply_retention() ->> 'deleted')::bigint", false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "cdp worker: cdp.apply_retention() returned no row");
	deleted = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*more = false;
	return isnull ? 0 : deleted;
}

/* Sleep until woken or timeout_ms passed; then handle signals. */
static bool
worker_sleep(long timeout_ms)
{
	int			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							   timeout_ms, PG_WAIT_EXTENSION);

	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		reload_configuration();
	}
	return (rc & WL_LATCH_SET) != 0;
}

/* Whether cdp.database exists and accepts connections (shared catalog). */
static bool
database_connectable(void)
{
	Oid			dboid;
	bool		ok = false;

	StartTransactionCommand();
	dboid = get_database_oid(cdp_database, true);
	if (OidIsValid(dboid))
	{
		HeapTuple	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));

		if (HeapTupleIsValid(tup))
		{
			ok = ((Form_pg_database) GETSTRUCT(tup))->datallowconn;
			ReleaseSysCache(tup);
		}
	}
	CommitTransactionCommand();
	return ok;
}

/*
 * Connected to no database: wait until cdp.database can be connected to,
 * then exit so that the postmaster starts the worker again, connecting.
 */
static pg_attribute_noreturn() void
wait_for_database(void)
{
	char	   *error = psprintf("database \"%s\" does not exist or does not accept connections",
								 cdp_database);

	ereport(LOG,
			(errcode(ERRCODE_UNDEFINED_DATABASE),
			 errmsg("cdp worker: %s; waiting", error),
			 errhint("Create the database, or set cdp.database to an existing one and restart the server.")));
	for (;;)
	{
		if (database_connectable())
		{
			ereport(LOG,
					(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
					 errmsg("cdp worker: database \"%s\" is there now; restarting to connect to it",
							cdp_database)));
			LWLockAcquire(CdpShared->lock, LW_EXCLUSIVE);
			CdpShared->worker_connecting = false;
			LWLockRelease(CdpShared->lock);
			proc_exit(1);
		}
		publish_pass(NULL, 0, error);
		worker_sleep(cdp_inbox_naptime);
	}
}

/*
 * Main entry point of the worker process.
 */
void
cdp_worker_main(Datum main_arg)
{
	bool		last_attempt_failed;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (CdpShared == NULL)
		elog(FATAL, "cdp worker: cdp's shared memory is not attached");

	/* Note the attempt: if connecting ends in FATAL, the flag stays set. */
	LWLockAcquire(CdpShared->lock, LW_EXCLUSIVE);
	last_attempt_failed = CdpShared->worker_connecting;
	CdpShared->worker_connecting = true;
	LWLockRelease(CdpShared->lock);

	BackgroundWorkerInitializeConnection(last_attempt_failed ? NULL : cdp_database, NULL, 0);
	SetConfigOption("application_name", MyBgworkerEntry->bgw_name,
					PGC_USERSET, PGC_S_SESSION);
	round_context = AllocSetContextCreate(TopMemoryContext, "cdp worker round",
										  ALLOCSET_DEFAULT_SIZES);
	worker_attach();
	if (last_attempt_failed)
		wait_for_database();

	LWLockAcquire(CdpShared->lock, LW_EXCLUSIVE);
	CdpShared->worker_connecting = false;
	LWLockRelease(CdpShared->lock);
	ereport(LOG,
			(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
			 errmsg("cdp worker: started in database \"%s\"", cdp_database)));

	for (;;)
	{
		long		timeout;

		MemoryContextSwitchTo(round_context);
		MemoryContextReset(round_context);

		timeout = run_due_passes();

		/*
		 * After a full batch the timeout is 0: no sleep, only a look at the
		 * latch and the signals.
		 */
		worker_sleep(timeout);
	}
}

/*
 * Register the worker.  Called from _PG_init only while
 * shared_preload_libraries is processed (and not in binary-upgrade mode).
 */
void
CdpWorkerRegister(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* Every pass writes: nothing to do on a standby until it is promoted. */
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = WORKER_RESTART_SECONDS;
	strlcpy(worker.bgw_library_name, "cdp", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "cdp_worker_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "cdp worker", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "cdp worker", BGW_MAXLEN);
	worker.bgw_main_arg = (Datum) 0;
	worker.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&worker);
}
