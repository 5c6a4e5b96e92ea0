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

#include "cdp.h"
#include "consent/consent.h"
#include "types/identifier.h"
#include "worker/shmem.h"

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

	/*
	 * Background workers are registered here, after shared memory, as each
	 * stage that needs one (audience evaluation, delivery) comes in.
	 */
}
