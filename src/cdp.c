/*-------------------------------------------------------------------------
 *
 * cdp.c
 *	  Entry point of the cdp extension: configuration parameters, shared
 *	  memory and background worker registration.
 *
 * Every capability lives in its own folder (types/, identity/, consent/,
 * audience/, activation/, worker/) and exposes what it needs here through a
 * small header; this file only wires them into the server.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "activation/activation.h"
#include "cdp.h"
#include "consent/consent.h"
#include "types/identifier.h"
#include "worker/dispatcher.h"
#include "worker/shmem.h"
#include "worker/worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static void
define_gucs(void)
{
	DefineCustomStringVariable("cdp.default_phone_region",
							   "Region assumed for phone numbers written without a country code.",
							   "An ISO 3166-1 alpha-2 code such as DE, AT, CH, GB or US.",
							   &cdp_default_phone_region,
							   "DE",
							   PGC_USERSET,
							   0,
							   cdp_check_phone_region, NULL, NULL);

	DefineCustomStringVariable("cdp.purpose",
							   "What this session reads customer data for (a purpose in cdp.purposes).",
							   "Members of cdp_analyst see only profiles with consent for this purpose, "
							   "and nothing while it is empty. Set it per role for BI tools: "
							   "ALTER ROLE bi SET cdp.purpose = 'analytics'.",
							   &cdp_purpose,
							   "",
							   PGC_USERSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomBoolVariable("cdp.erasure_in_progress",
							 "Set by cdp.erase_subject() while it removes ledger entries.",
							 NULL,
							 &cdp_erasure_in_progress,
							 false,
							 PGC_SUSET,
							 GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							 NULL, NULL, NULL);

	/*
	 * The background worker (src/worker/worker.c).  cdp.database can only be
	 * set at server start, and PostgreSQL refuses to define such a setting
	 * later (CREATE EXTENSION or LOAD in a server without the preload); it
	 * would mean nothing there anyway, as no worker runs.
	 */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomStringVariable("cdp.database",
								   "Database the cdp background worker connects to.",
								   "The worker processes cdp.inbox (and, later, audiences) of this one database; "
								   "run CREATE EXTENSION cdp there.  Takes effect at server start.",
								   &cdp_database,
								   "postgres",
								   PGC_POSTMASTER,
								   0,
								   NULL, NULL, NULL);

	DefineCustomIntVariable("cdp.inbox_naptime",
							"Longest time cdp.inbox waits for the background worker.",
							"A commit that inserted into cdp.inbox wakes the worker at once; "
							"otherwise it looks this often.  Also the pause after a failed pass.",
							&cdp_inbox_naptime,
							1000, 10, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("cdp.inbox_batch_size",
							"Most cdp.inbox messages the background worker ingests in one transaction.",
							"After a full batch the worker starts the next one without sleeping, "
							"until the inbox is empty.",
							&cdp_inbox_batch_size,
							5000, 1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("cdp.audience_naptime",
							"Longest time audiences wait for the background worker to bring them current.",
							"A commit that appended to the change journal (events, merges, consent, "
							"definitions) wakes the worker at once; otherwise, and for time windows "
							"that expire, it looks this often.",
							&cdp_audience_naptime,
							1000, 10, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("cdp.audience_batch_size",
							"Most change-journal rows the audience pass takes in one transaction.",
							"One row is one ingesting call (up to a whole inbox batch).  After a full "
							"batch the worker starts the next one without sleeping.",
							&cdp_audience_batch_size,
							1000, 1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("cdp.retention_naptime",
							"How often the background worker deletes events past their retention.",
							"It runs cdp.create_event_partitions() (the coming months' event partitions) "
							"and cdp.apply_retention(): see cdp.retention and cdp.purposes.retention.",
							&cdp_retention_naptime,
							3600 * 1000, 1000, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	/* Activation (src/activation/, src/worker/dispatcher.c). */
	DefineCustomBoolVariable("cdp.allow_private_destinations",
							 "Allow webhook destinations on loopback and private addresses.",
							 "Off: a destination URL must resolve to public addresses only, so that a webhook "
							 "cannot reach the database server's own network.  Checked when a destination is "
							 "created or changed; destinations accepted while it was on keep that permission.",
							 &cdp_allow_private_destinations,
							 false,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("cdp.dispatch_naptime",
							"Longest time the dispatcher waits before looking at the outbox again.",
							"A commit that queued messages wakes it at once, and it wakes when a retry is due; "
							"this bounds the wait otherwise (and after an error).",
							&cdp_dispatch_naptime,
							1000, 10, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("cdp");
}

void
_PG_init(void)
{
	define_gucs();
	ConsentInit();

	/*
	 * Shared memory and background workers only exist when the library is
	 * preloaded.  In binary-upgrade mode no worker may run.
	 */
	if (!process_shared_preload_libraries_in_progress || IsBinaryUpgrade)
		return;

	CdpShmemInit();
	ActivationShmemInit();

	/*
	 * Background workers come after shared memory, which they publish their
	 * state in.  One worker runs every pass (inbox, retention, audiences);
	 * the dispatcher delivers the outbox, so that a slow receiver never
	 * holds up the passes.
	 */
	CdpWorkerRegister();
	CdpDispatcherRegister();
}
