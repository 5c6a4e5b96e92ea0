/*-------------------------------------------------------------------------
 *
 * sign.c
 *	  Webhook signatures as the Standard Webhooks specification defines
 *	  them: webhook-signature is "v1," followed by the base64 of
 *	  HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>").  A secret
 *	  written whsec_<base64> (as Svix and the specification's libraries
 *	  generate them) is base64-decoded into the key; any other secret is
 *	  used as it is.
 *
 * HMAC, SHA-256 and base64 come from OpenSSL.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>
#include <openssl/params.h>

#include "fmgr.h"
#include "utils/builtins.h"

#include "activation/activation.h"

#define WHSEC_PREFIX "whsec_"

/*
 * The HMAC key of a secret, palloc'd.  NULL (and *error) for a whsec_
 * secret whose rest is not base64 of at least one byte.
 */
unsigned char *
webhook_key(const char *secret, int *keylen, const char **error)
{
	size_t		len = strlen(secret);
	const char *b64;
	size_t		b64len;
	unsigned char *key;
	int			n;
	int			pad = 0;

	*error = NULL;
	if (strncmp(secret, WHSEC_PREFIX, strlen(WHSEC_PREFIX)) != 0)
	{
		key = palloc(len + 1);
		memcpy(key, secret, len);
		*keylen = (int) len;
		return key;
	}

	b64 = secret + strlen(WHSEC_PREFIX);
	b64len = strlen(b64);
	if (b64len == 0 || b64len % 4 != 0 || b64len > 4096)
	{
		*error = "The part after whsec_ is not base64 (its length is not a multiple of 4)";
		return NULL;
	}
	if (b64[b64len - 1] == '=')
		pad++;
	if (b64len > 1 && b64[b64len - 2] == '=')
		pad++;

	/* EVP_DecodeBlock counts padding as zero bytes: subtract it. */
	key = palloc(b64len / 4 * 3 + 1);
	n = EVP_DecodeBlock(key, (const unsigned char *) b64, (int) b64len);
	if (n < 0 || n - pad <= 0)
	{
		pfree(key);
		*error = "The part after whsec_ is not valid base64";
		return NULL;
	}
	*keylen = n - pad;
	return key;
}

/* "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>", palloc'd. */
char *
webhook_signature(const unsigned char *key, int keylen, const char *id,
				  int64 timestamp, const char *body, size_t bodylen)
{
	char		prefix[512];
	int			prefixlen;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	char	   *out;
	bool		ok;

	prefixlen = snprintf(prefix, sizeof(prefix), "%s." INT64_FORMAT ".", id, timestamp);
	if (prefixlen < 0 || prefixlen >= (int) sizeof(prefix))
		elog(ERROR, "cdp: webhook id too long to sign");

	/* EVP_MAC (OpenSSL 3): the message goes in as prefix, then body. */
	{
		EVP_MAC    *mac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
		EVP_MAC_CTX *mctx = mac_alg ? EVP_MAC_CTX_new(mac_alg) : NULL;
		OSSL_PARAM	params[2];
		char		digest[] = "SHA256";
		size_t		outlen = 0;

		params[0] = OSSL_PARAM_construct_utf8_string("digest", digest, 0);
		params[1] = OSSL_PARAM_construct_end();
		ok = mctx != NULL
			&& EVP_MAC_init(mctx, key, keylen, params) == 1
			&& EVP_MAC_update(mctx, (const unsigned char *) prefix, prefixlen) == 1
			&& EVP_MAC_update(mctx, (const unsigned char *) body, bodylen) == 1
			&& EVP_MAC_final(mctx, mac, &outlen, sizeof(mac)) == 1;
		maclen = (unsigned int) outlen;
		EVP_MAC_CTX_free(mctx);
		EVP_MAC_free(mac_alg);
	}
	if (!ok)
		elog(ERROR, "cdp: HMAC-SHA256 failed in OpenSSL");

	out = palloc(3 + (maclen + 2) / 3 * 4 + 1);
	memcpy(out, "v1,", 3);
	EVP_EncodeBlock((unsigned char *) out + 3, mac, (int) maclen);
	return out;
}

static void
report_bad_secret(const char *error)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid webhook secret"),
			 errdetail("%s.", error),
			 errhint("A whsec_ secret is whsec_ followed by standard base64, e.g. 'whsec_' || encode(gen_random_bytes(32), 'base64'); any other secret is used as it is.")));
}

/*
 * cdp._webhook_secret_check(secret text) RETURNS void
 */
PG_FUNCTION_INFO_V1(cdp_webhook_secret_check);
Datum
cdp_webhook_secret_check(PG_FUNCTION_ARGS)
{
	char	   *secret = text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *error;
	int			keylen;

	if (webhook_key(secret, &keylen, &error) == NULL)
		report_bad_secret(error);
	PG_RETURN_VOID();
}

/*
 * cdp.webhook_signature(secret text, webhook_id text, webhook_timestamp
 * bigint, body text) RETURNS text
 */
PG_FUNCTION_INFO_V1(cdp_webhook_signature);
Datum
cdp_webhook_signature(PG_FUNCTION_ARGS)
{
	char	   *secret = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	int64		timestamp = PG_GETARG_INT64(2);
	text	   *body = PG_GETARG_TEXT_PP(3);
	const char *error;
	int			keylen;
	unsigned char *key = webhook_key(secret, &keylen, &error);

	if (key == NULL)
		report_bad_secret(error);
	if (strlen(id) > 256)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook id is too long"),
				 errhint("cdp's webhook ids are msg_ and 32 hex digits.")));
	PG_RETURN_TEXT_P(cstring_to_text(webhook_signature(key, keylen, id, timestamp,
													   VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body))));
}
