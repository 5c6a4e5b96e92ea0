/*-------------------------------------------------------------------------
 *
 * consent.h
 *	  Consent: the ledger, the current decision per profile and purpose,
 *	  consent-aware reads and data-subject rights.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_CONSENT_H
#define CDP_CONSENT_H

/* GUC cdp.purpose: what the session reads customer data for. */
extern char *cdp_purpose;

/* GUC cdp.erasure_in_progress: set by cdp.erase_subject() only. */
extern bool cdp_erasure_in_progress;

extern void ConsentInit(void);

#endif							/* CDP_CONSENT_H */
