/*-------------------------------------------------------------------------
 *
 * suppress.c
 *	  Erased identifiers stay out: ingestion drops every identifier whose
 *	  SHA-256 is in cdp.suppressed_identifiers, until cdp.unsuppress().
 *
 * Only the hash of an erased identifier is kept (GDPR Art. 17), so the
 * check hashes what arrives.  Dropped identifiers are not stored anywhere,
 * not even in the event's identifier list; a message left with none is
 * rejected.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "identity/identity.h"
#include "identity/store.h"

/* Lower-case hex SHA-256 of the identifier's text form ("kind:value"). */
static char *
identifier_sha256(const char *key)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int len;
	char	   *hex = palloc(EVP_MAX_MD_SIZE * 2 + 1);

	if (EVP_Digest(key, strlen(key), digest, &len, EVP_sha256(), NULL) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("OpenSSL could not compute a SHA-256 digest")));
	hex_encode((const char *) digest, len, hex);
	hex[len * 2] = '\0';
	return hex;
}

static int
cmp_cstring(const void *a, const void *b)
{
	return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/*
 * Usually nothing is suppressed: one probe says so, and no identifier is
 * hashed.  Otherwise each identifier is hashed once and the hashes are
 * looked up together.
 */
void
identity_drop_suppressed(IngestMessage *msgs, int n)
{
	ArrayBuild	hashes;
	Oid			type = TEXTARRAYOID;
	Datum		arg;
	char	  **found;
	char	  **hex;
	int			nfound;
	int			k = 0;

	for (int i = 0; i < n; i++)
		if (msgs[i].error == NULL)
			k += msgs[i].nids;
	if (k == 0)
		return;
	store_exec(PLAN_ANY_SUPPRESSED, "SELECT FROM cdp.suppressed_identifiers LIMIT 1",
			   0, NULL, NULL, NULL, false);
	if (SPI_processed == 0)
		return;
	hex = palloc(sizeof(char *) * k);
	k = 0;
	ab_init(&hashes, TEXTOID);
	for (int i = 0; i < n; i++)
		if (msgs[i].error == NULL)
			for (int j = 0; j < msgs[i].nids; j++)
			{
				hex[k] = identifier_sha256(msgs[i].ids[j]);
				ab_add_text(&hashes, hex[k++]);
			}
	k = 0;
	arg = ab_result(&hashes);
	store_exec(PLAN_SUPPRESSED,
			   "SELECT identifier_hash FROM cdp.suppressed_identifiers WHERE identifier_hash = ANY ($1)",
			   1, &type, &arg, NULL, false);
	nfound = (int) SPI_processed;
	if (nfound == 0)
		return;
	found = palloc(sizeof(char *) * nfound);
	for (int i = 0; i < nfound; i++)
		found[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
	qsort(found, nfound, sizeof(char *), cmp_cstring);

	/* hex[] follows the identifiers in the order they were hashed */
	for (int i = 0; i < n; i++)
	{
		IngestMessage *m = &msgs[i];
		int			kept = 0;

		if (m->error != NULL)
			continue;
		for (int j = 0; j < m->nids; j++)
		{
			if (bsearch(&hex[k++], found, nfound, sizeof(char *), cmp_cstring) != NULL)
				m->nsuppressed++;
			else
				m->ids[kept++] = m->ids[j];
		}
		m->nids = kept;
		if (kept == 0)
			m->error = pstrdup("message carries only erased identifiers: they are suppressed until cdp.unsuppress()");
	}
}
