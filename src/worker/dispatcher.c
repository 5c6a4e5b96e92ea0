/*-------------------------------------------------------------------------
 *
 * dispatcher.c
 *	  The cdp dispatcher: a background worker, apart from the cdp worker,
 *	  that delivers the outbox of webhook destinations over HTTP.
 *
 * It loops over three steps, none of which holds a transaction across the
 * network:
 *
 *	1. lease: one short transaction reads the webhook destinations and, for
 *	   each with room (max_in_flight, rate_limit) and due messages, leases
 *	   batches (cdp._dispatch_lease(): status in_flight with a lease expiry,
 *	   consent re-checked, per-profile order kept) and commits;
 *	2. send: the batches go out as concurrent requests on a libcurl multi
 *	   handle (src/activation/http.c), signed per Standard Webhooks;
 *	3. record: as requests finish, one short transaction records how each
 *	   ended (cdp._dispatch_result(): delivered, retry later, dead, 410
 *	   pauses the destination).
 *
 * Row locks are held only inside those transactions, so ingestion and the
 * audience pass never wait for a receiver.  A crash between 1 and 3 leaves
 * messages in flight; the next dispatcher gives them back when it starts
 * (cdp._dispatch_recover()) and sends them again (at least once, with the
 * same webhook-id).
 *
 * It sleeps on its latch: a commit that queued messages wakes it
 * (src/activation/state.c); otherwise it looks every cdp.dispatch_naptime,
 * or when the next retry is due.  While requests are running it polls
 * libcurl's sockets in short slices and checks its latch, signals and the
 * postmaster in between.
 *
 * It connects to cdp.database only once the cdp worker is connected there,
 * so a missing database is reported (and waited for) by the cdp worker
 * alone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
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
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "activation/activation.h"
#include "worker/shmem.h"
#include "worker/dispatcher.h"
#include "worker/worker.h"

#define DISPATCHER_RESTART_SECONDS 5

/* While requests run: the longest slice spent in libcurl's poll. */
#define POLL_SLICE_MS 10

/* A destination as the dispatcher serves it. */
typedef struct Dest
{
	int			id;
	char	   *url;
	unsigned char *key;			/* NULL: no secret, unsigned */
	int			keylen;
	int			batch_size;
	int			max_in_flight;
	int			timeout_ms;
	double		rate_limit;		/* requests per second; 0: none */
	char	  **headers;
	int			nheaders;
	bool		private_allowed;
	/* bookkeeping, carried over when the list is read again */
	int			in_flight;
	double		tokens;			/* rate limit bucket */
	TimestampTz tokens_at;
	TimestampTz idle_until;		/* nothing to lease before this (or a wakeup) */
} Dest;

static Dest *dests = NULL;
static int	ndests = 0;
static MemoryContext dest_context = NULL;	/* dests; reset when read again */
static MemoryContext round_context = NULL;	/* per loop iteration */
static TimestampTz next_refresh = 0;
static bool recovered = false;
static bool extension_missing_logged = false;
static char logged_error[CDP_DISPATCHER_ERROR_LEN] = "";

/* Batches leased in this round, sent after the lease commits. */
static List *leased = NIL;

static void
copy_clipped(char *dst, const char *src)
{
	int			len = pg_mbcliplen(src, strlen(src), CDP_DISPATCHER_ERROR_LEN - 1);

	memcpy(dst, src, len);
	dst[len] = '\0';
}

static void
dispatcher_detach(int code, Datum arg)
{
	LWLockAcquire(CdpDispatcher->lock, LW_EXCLUSIVE);
	if (CdpDispatcher->pid == MyProcPid)
	{
		CdpDispatcher->pid = 0;
		CdpDispatcher->latch = NULL;
		CdpDispatcher->in_flight = 0;
	}
	LWLockRelease(CdpDispatcher->lock);
}

static void
dispatcher_attach(void)
{
	LWLockAcquire(CdpDispatcher->lock, LW_EXCLUSIVE);
	CdpDispatcher->pid = MyProcPid;
	CdpDispatcher->latch = MyLatch;
	CdpDispatcher->started_at = GetCurrentTimestamp();
	CdpDispatcher->last_round_at = 0;
	CdpDispatcher->requests = 0;
	CdpDispatcher->delivered = 0;
	CdpDispatcher->failed = 0;
	CdpDispatcher->in_flight = 0;
	CdpDispatcher->last_error[0] = '\0';
	LWLockRelease(CdpDispatcher->lock);
	before_shmem_exit(dispatcher_detach, (Datum) 0);
}

static void
publish_error(const char *error)
{
	LWLockAcquire(CdpDispatcher->lock, LW_EXCLUSIVE);
	if (error)
		copy_clipped(CdpDispatcher->last_error, error);
	else
		CdpDispatcher->last_error[0] = '\0';
	CdpDispatcher->last_round_at = GetCurrentTimestamp();
	CdpDispatcher->in_flight = deliveries_running();
	LWLockRelease(CdpDispatcher->lock);
}

static Dest *
find_dest(int id)
{
	for (int i = 0; i < ndests; i++)
		if (dests[i].id == id)
			return &dests[i];
	return NULL;
}

static char *
spi_text(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

static int
spi_int(HeapTuple tup, TupleDesc desc, int col, int deflt)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? deflt : DatumGetInt32(d);
}

/* Read the webhook destinations again, keeping each one's bookkeeping. */
static void
load_destinations(void)
{
	Dest	   *old = NULL;
	int			nold = ndests;
	MemoryContext oldcxt;
	TupleDesc	desc;

	if (SPI_execute("SELECT * FROM cdp._dispatch_destinations()", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "cdp dispatcher: cdp._dispatch_destinations() failed");

	/* Keep the old bookkeeping in the round context while dest_context resets. */
	if (nold > 0)
	{
		old = MemoryContextAlloc(round_context, sizeof(Dest) * nold);
		memcpy(old, dests, sizeof(Dest) * nold);
	}
	MemoryContextReset(dest_context);
	oldcxt = MemoryContextSwitchTo(dest_context);
	ndests = (int) SPI_processed;
	dests = palloc0(sizeof(Dest) * Max(ndests, 1));
	desc = SPI_tuptable->tupdesc;
	for (int i = 0; i < ndests; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		Dest	   *d = &dests[i];
		char	   *secret = spi_text(tup, desc, 3);
		bool		isnull;
		Datum		hd;

		d->id = spi_int(tup, desc, 1, 0);
		d->url = spi_text(tup, desc, 2);
		if (secret != NULL)
		{
			const char *error;

			/* Checked when it was stored; a bad one here sends unsigned. */
			d->key = webhook_key(secret, &d->keylen, &error);
		}
		d->batch_size = spi_int(tup, desc, 4, 100);
		d->max_in_flight = spi_int(tup, desc, 5, 4);
		hd = SPI_getbinval(tup, desc, 6, &isnull);
		d->rate_limit = isnull ? 0 : DatumGetFloat8(hd);
		d->timeout_ms = spi_int(tup, desc, 7, 10000);
		hd = SPI_getbinval(tup, desc, 8, &isnull);
		if (!isnull)
		{
			Datum	   *elems;
			bool	   *nulls;
			int			n;

			deconstruct_array(DatumGetArrayTypeP(hd), TEXTOID, -1, false, TYPALIGN_INT,
							  &elems, &nulls, &n);
			d->headers = palloc(sizeof(char *) * Max(n, 1));
			for (int j = 0; j < n; j++)
				if (!nulls[j])
					d->headers[d->nheaders++] = TextDatumGetCString(elems[j]);
		}
		d->private_allowed = DatumGetBool(SPI_getbinval(tup, desc, 9, &isnull));

		d->tokens = Max(1.0, d->rate_limit / 10);
		d->tokens_at = GetCurrentTimestamp();
		for (int j = 0; j < nold; j++)
			if (old[j].id == d->id)
			{
				d->in_flight = old[j].in_flight;
				d->tokens = old[j].tokens;
				d->tokens_at = old[j].tokens_at;
				d->idle_until = old[j].idle_until;
			}
	}
	MemoryContextSwitchTo(oldcxt);
}

/* Refill the rate limit bucket; how many requests may start now. */
static int
room(Dest *d, TimestampTz now)
{
	int			n = d->max_in_flight - d->in_flight;

	if (d->rate_limit > 0)
	{
		double		burst = Max(1.0, d->rate_limit / 10);
		long		secs;
		int			usecs;

		TimestampDifference(d->tokens_at, now, &secs, &usecs);
		d->tokens = Min(burst, d->tokens + d->rate_limit * (secs + usecs / 1e6));
		d->tokens_at = now;
		n = Min(n, (int) floor(d->tokens));
	}
	return Max(n, 0);
}

/* When the rate limit lets the next request start. */
static TimestampTz
tokens_ready_at(const Dest *d)
{
	if (d->rate_limit <= 0 || d->tokens >= 1)
		return 0;
	return TimestampTzPlusMilliseconds(d->tokens_at, (int64) ceil((1 - d->tokens) / d->rate_limit * 1000));
}

typedef struct LeasedBatch
{
	DeliveryRequest req;
	char	   *webhook_id;
	char	   *body;
} LeasedBatch;

/* Lease up to n batches of d (in the lease transaction). */
static void
lease_destination(Dest *d, int n, TimestampTz now)
{
	Oid			argtypes[2] = {INT4OID, INT4OID};
	Datum		args[2] = {Int32GetDatum(d->id), Int32GetDatum(n)};
	uint64		got;

	pgstat_report_activity(STATE_RUNNING, "SELECT * FROM cdp._dispatch_lease(...)");
	if (SPI_execute_with_args("SELECT * FROM cdp._dispatch_lease($1, $2)", 2, argtypes, args,
							  NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "cdp dispatcher: cdp._dispatch_lease() failed");
	got = SPI_processed;
	for (uint64 i = 0; i < got; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext old = MemoryContextSwitchTo(round_context);
		LeasedBatch *b = palloc0(sizeof(LeasedBatch));
		bool		isnull;
		ArrayType  *ids;

		b->webhook_id = spi_text(tup, desc, 1);
		ids = DatumGetArrayTypePCopy(SPI_getbinval(tup, desc, 2, &isnull));
		b->body = spi_text(tup, desc, 3);
		b->req.destination_id = d->id;
		b->req.url = d->url;
		b->req.key = d->key;
		b->req.keylen = d->keylen;
		b->req.timeout_ms = d->timeout_ms;
		b->req.private_allowed = d->private_allowed;
		b->req.headers = d->headers;
		b->req.nheaders = d->nheaders;
		b->req.webhook_id = b->webhook_id;
		b->req.body = b->body;
		b->req.nmessages = ArrayGetNItems(ARR_NDIM(ids), ARR_DIMS(ids));
		b->req.message_ids = (int64 *) ARR_DATA_PTR(ids);
		leased = lappend(leased, b);
		MemoryContextSwitchTo(old);
	}

	/* Fewer than asked: nothing more is due before the next retry. */
	if ((int) got < n)
	{
		TimestampTz idle = TimestampTzPlusMilliseconds(now, cdp_dispatch_naptime);

		if (SPI_execute_with_args("SELECT cdp._dispatch_next_due($1)", 1, argtypes, args,
								  NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		{
			bool		isnull;
			Datum		due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				idle = Min(idle, DatumGetTimestampTz(due));
		}
		d->idle_until = idle;
	}
}

static void
error_context(void *arg)
{
	errcontext("cdp dispatcher %s", (const char *) arg);
}

/*
 * Run fn in its own transaction with SPI connected; false (error logged
 * once per distinct message, transaction rolled back) when it failed.
 */
static bool
in_transaction(void (*fn) (void *), void *arg, const char *what)
{
	ResourceOwner owner = CurrentResourceOwner;
	MemoryContext cxt = CurrentMemoryContext;
	ErrorContextCallback errcallback;
	volatile bool ok = true;

	errcallback.callback = error_context;
	errcallback.arg = unconstify(char *, what);
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "cdp dispatcher: SPI_connect failed");
		fn(arg);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		char		error[CDP_DISPATCHER_ERROR_LEN];

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		copy_clipped(error, psprintf("%s: %s", what, edata->message ? edata->message : "unknown error"));
		if (strcmp(error, logged_error) != 0)
		{
			EmitErrorReport();
			strlcpy(logged_error, error, sizeof(logged_error));
		}
		FlushErrorState();
		AbortCurrentTransaction();
		CurrentResourceOwner = owner;
		MemoryContextSwitchTo(cxt);
		RESUME_INTERRUPTS();
		publish_error(error);
		ok = false;
	}
	PG_END_TRY();

	error_context_stack = errcallback.previous;
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
}

typedef struct LeaseRound
{
	bool		refresh;
	bool		no_extension;
} LeaseRound;

static void
lease_round(void *arg)
{
	LeaseRound *r = (LeaseRound *) arg;
	TimestampTz now = GetCurrentTimestamp();

	if (!OidIsValid(get_extension_oid("cdp", true)))
	{
		r->no_extension = true;
		return;
	}
	if (!recovered)
	{
		pgstat_report_activity(STATE_RUNNING, "SELECT cdp._dispatch_recover()");
		if (SPI_execute("SELECT cdp._dispatch_recover()", false, 1) != SPI_OK_SELECT)
			elog(ERROR, "cdp dispatcher: cdp._dispatch_recover() failed");
	}
	if (r->refresh)
		load_destinations();
	for (int i = 0; i < ndests; i++)
	{
		Dest	   *d = &dests[i];
		int			n = room(d, now);

		if (n > 0 && now >= d->idle_until)
			lease_destination(d, n, now);
	}
}

/* Lease what is due and start sending it. */
static void
lease_and_send(bool woken)
{
	TimestampTz now = GetCurrentTimestamp();
	LeaseRound	r = {false, false};
	bool		any = false;
	ListCell   *lc;

	r.refresh = woken || now >= next_refresh || !recovered;
	for (int i = 0; i < ndests && !any; i++)
		any = room(&dests[i], now) > 0 && now >= dests[i].idle_until;
	if (!r.refresh && !any)
		return;

	leased = NIL;
	if (!in_transaction(lease_round, &r, "lease"))
	{
		/* Try again after the naptime. */
		next_refresh = TimestampTzPlusMilliseconds(now, cdp_dispatch_naptime);
		for (int i = 0; i < ndests; i++)
			dests[i].idle_until = next_refresh;
		leased = NIL;
		return;
	}
	if (r.no_extension)
	{
		/* Logged once, and shown by cdp.status(), as the cdp worker does. */
		char	   *error = psprintf("extension cdp is not installed in database \"%s\"",
									 cdp_database);

		if (!extension_missing_logged)
			ereport(LOG,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cdp dispatcher: %s; waiting", error)));
		extension_missing_logged = true;
		ndests = 0;
		MemoryContextReset(dest_context);
		dests = NULL;
		next_refresh = TimestampTzPlusMilliseconds(now, cdp_dispatch_naptime);
		publish_error(error);
		return;
	}
	extension_missing_logged = false;
	if (!recovered)
		ereport(LOG,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg("cdp dispatcher: delivering in database \"%s\"", cdp_database)));
	recovered = true;
	if (r.refresh)
		next_refresh = TimestampTzPlusMilliseconds(now, cdp_dispatch_naptime);

	foreach(lc, leased)
	{
		LeasedBatch *b = (LeasedBatch *) lfirst(lc);
		Dest	   *d = find_dest(b->req.destination_id);

		delivery_start(&b->req);
		if (d)
		{
			d->in_flight++;
			if (d->rate_limit > 0)
				d->tokens -= 1;
		}
	}
	leased = NIL;
	if (logged_error[0] != '\0')
	{
		ereport(LOG,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg("cdp dispatcher: leasing succeeded again")));
		logged_error[0] = '\0';
	}
	publish_error(NULL);
}

/* Record the outcome of finished deliveries (in the result transaction). */
static void
record_results(void *arg)
{
	List	   *done = (List *) arg;
	ListCell   *lc;
	Oid			argtypes[5] = {INT8ARRAYOID, INT4OID, TEXTOID, INT8OID, TEXTOID};

	pgstat_report_activity(STATE_RUNNING, "SELECT cdp._dispatch_result(...)");
	foreach(lc, done)
	{
		Delivery   *d = (Delivery *) lfirst(lc);
		Datum	   *elems = palloc(sizeof(Datum) * d->nmessages);
		Datum		args[5];
		char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

		for (int i = 0; i < d->nmessages; i++)
			elems[i] = Int64GetDatum(d->message_ids[i]);
		args[0] = PointerGetDatum(construct_array(elems, d->nmessages, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		args[1] = Int32GetDatum(d->http_status);
		if (d->error)
			args[2] = CStringGetTextDatum(d->error);
		else
			nulls[2] = 'n';
		args[3] = Int64GetDatum(d->retry_after_ms);
		/* A response body that is not valid text is not kept. */
		if (d->response[0] != '\0' &&
			pg_verifymbstr(d->response, strlen(d->response), true))
			args[4] = CStringGetTextDatum(d->response);
		else
			nulls[4] = 'n';
		if (SPI_execute_with_args("SELECT cdp._dispatch_result($1, $2, $3, $4, $5)", 5, argtypes, args,
								  nulls, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "cdp dispatcher: cdp._dispatch_result() failed");
	}
}

/* Collect the finished deliveries and record them in one transaction. */
static void
finish_deliveries(void)
{
	List	   *done = NIL;
	Delivery   *d;
	int64		delivered = 0;
	int64		failed = 0;
	ListCell   *lc;

	while ((d = delivery_next_done()) != NULL)
	{
		Dest	   *dest = find_dest(d->destination_id);

		done = lappend(done, d);
		if (dest)
		{
			dest->in_flight = Max(dest->in_flight - 1, 0);
			/* What waited behind these messages may go now. */
			dest->idle_until = 0;
		}
		if (d->http_status >= 200 && d->http_status < 300)
			delivered += d->nmessages;
		else
			failed++;
	}
	if (done == NIL)
		return;

	/*
	 * If recording fails the messages stay in flight until their lease
	 * ends, then go again: at least once.
	 */
	(void) in_transaction(record_results, done, "recording results");

	LWLockAcquire(CdpDispatcher->lock, LW_EXCLUSIVE);
	CdpDispatcher->requests += list_length(done);
	CdpDispatcher->delivered += delivered;
	CdpDispatcher->failed += failed;
	CdpDispatcher->in_flight = deliveries_running();
	CdpDispatcher->last_round_at = GetCurrentTimestamp();
	LWLockRelease(CdpDispatcher->lock);

	foreach(lc, done)
		delivery_free((Delivery *) lfirst(lc));
	list_free(done);
}

/* How long to sleep when nothing is being sent, in milliseconds. */
static long
idle_timeout(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = Max(next_refresh, now);

	for (int i = 0; i < ndests; i++)
	{
		TimestampTz t = Max(dests[i].idle_until, tokens_ready_at(&dests[i]));

		if (dests[i].in_flight < dests[i].max_in_flight)
			next = Min(next, Max(t, now));
	}
	return TimestampDifferenceMilliseconds(now, next);
}

static void
handle_signals(void)
{
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		next_refresh = 0;
	}
}

/* Wait for the latch (or the timeout); true when it was set. */
static bool
dispatcher_sleep(long timeout_ms)
{
	int			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							   timeout_ms, PG_WAIT_EXTENSION);

	ResetLatch(MyLatch);
	handle_signals();
	return (rc & WL_LATCH_SET) != 0;
}

/* Whether the cdp worker is connected to cdp.database (so it exists). */
static bool
worker_connected(void)
{
	bool		connected;

	LWLockAcquire(CdpShared->lock, LW_SHARED);
	connected = CdpShared->worker.pid != 0 && !CdpShared->worker_connecting;
	LWLockRelease(CdpShared->lock);
	return connected;
}

void
cdp_dispatcher_main(Datum main_arg)
{
	bool		woken = true;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (CdpShared == NULL || CdpDispatcher == NULL)
		elog(FATAL, "cdp dispatcher: cdp's shared memory is not attached");

	/* The cdp worker reports a missing database; wait until it is in. */
	while (!worker_connected())
		dispatcher_sleep(200);

	BackgroundWorkerInitializeConnection(cdp_database, NULL, 0);
	SetConfigOption("application_name", MyBgworkerEntry->bgw_name, PGC_USERSET, PGC_S_SESSION);

	/*
	 * Its commits need not wait for the WAL flush: a lease or an outcome
	 * lost in a crash only means the message is sent again, which
	 * at-least-once delivery allows (and the receiver deduplicates by id).
	 * Everything it did not lose stays exactly as committed.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION);
	dest_context = AllocSetContextCreate(TopMemoryContext, "cdp dispatcher destinations",
										 ALLOCSET_DEFAULT_SIZES);
	round_context = AllocSetContextCreate(TopMemoryContext, "cdp dispatcher round",
										  ALLOCSET_DEFAULT_SIZES);
	http_init();
	dispatcher_attach();
	ereport(LOG,
			(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
			 errmsg("cdp dispatcher: started in database \"%s\"", cdp_database)));

	for (;;)
	{
		MemoryContextSwitchTo(round_context);
		MemoryContextReset(round_context);

		if (woken)
			for (int i = 0; i < ndests; i++)
				dests[i].idle_until = 0;
		lease_and_send(woken);
		woken = false;

		if (deliveries_running() > 0)
		{
			int			rc;

			deliveries_wait(POLL_SLICE_MS);
			finish_deliveries();
			rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 0, PG_WAIT_EXTENSION);
			if (rc & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				woken = true;
			}
			handle_signals();
		}
		else
			woken = dispatcher_sleep(idle_timeout());
	}
}

/* Register the dispatcher; only while shared_preload_libraries is processed. */
void
CdpDispatcherRegister(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = DISPATCHER_RESTART_SECONDS;
	strlcpy(worker.bgw_library_name, "cdp", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "cdp_dispatcher_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "cdp dispatcher", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "cdp dispatcher", BGW_MAXLEN);
	worker.bgw_main_arg = (Datum) 0;
	worker.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&worker);
}
