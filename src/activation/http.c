/*-------------------------------------------------------------------------
 *
 * http.c
 *	  Sending webhook batches with the libcurl multi interface: many
 *	  requests at once in one process, connections kept alive and reused
 *	  per host, HTTPS with certificate and host name verification (libcurl's
 *	  defaults, set explicitly and never turned off).
 *
 * Each request is a POST of the batch body with the Standard Webhooks
 * headers (webhook-id, webhook-timestamp, webhook-signature) and the
 * destination's own headers.  Redirects are not followed (a 3xx is an
 * answer like any other), only http and https are spoken, and before a
 * request goes out on a connection the address it connected to is checked
 * again (url.c), so that a host name that now resolves to a private
 * address is refused without sending anything.
 *
 * libcurl calls back into this file from curl_multi_perform(): the
 * callbacks neither allocate with palloc nor raise errors (a longjmp
 * through libcurl would corrupt it); what they keep goes into buffers
 * allocated beforehand.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>
#include <time.h>

#include "utils/memutils.h"

#include "activation/activation.h"

/* How much of a response body is kept for last_error. */
#define RESPONSE_KEEP 1000

static CURLM *multi = NULL;
static MemoryContext delivery_context = NULL;
static int	running = 0;

void
http_init(void)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ereport(FATAL,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("cdp dispatcher: libcurl could not be initialised")));
	multi = curl_multi_init();
	if (multi == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("cdp dispatcher: out of memory in libcurl")));
	delivery_context = AllocSetContextCreate(TopMemoryContext, "cdp deliveries",
											 ALLOCSET_DEFAULT_SIZES);
}

/* Keep the start of the response body. */
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	Delivery   *d = (Delivery *) userdata;
	size_t		n = size * nmemb;
	size_t		room = RESPONSE_KEEP - d->response_len;

	if (room > 0)
	{
		size_t		take = Min(room, n);

		memcpy(d->response + d->response_len, ptr, take);
		d->response_len += take;
		d->response[d->response_len] = '\0';
	}
	return n;
}

/* Connected (or reusing a connection): refuse private addresses. */
static int
prereq_cb(void *clientp, char *conn_primary_ip, char *conn_local_ip,
		  int conn_primary_port, int conn_local_port)
{
	Delivery   *d = (Delivery *) clientp;

	if (!d->private_allowed && ip_text_is_private(conn_primary_ip))
	{
		d->refused = true;
		snprintf(d->refusal, sizeof(d->refusal),
				 "refused: the host resolves to %s, a loopback or private address", conn_primary_ip);
		return CURL_PREREQFUNC_ABORT;
	}
	return CURL_PREREQFUNC_OK;
}

static struct curl_slist *
add_header(struct curl_slist *list, const char *header)
{
	struct curl_slist *l = curl_slist_append(list, header);

	if (l == NULL)
	{
		curl_slist_free_all(list);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("cdp dispatcher: out of memory in libcurl")));
	}
	return l;
}

/* The same, then pfree the header (libcurl keeps its own copy). */
static struct curl_slist *
add_header_free(struct curl_slist *list, char *header)
{
	list = add_header(list, header);
	pfree(header);
	return list;
}

#define SETOPT(e, opt, val) \
	do { \
		if (curl_easy_setopt((e), (opt), (val)) != CURLE_OK) \
			elog(ERROR, "cdp dispatcher: libcurl refused option %s", #opt); \
	} while (0)

/*
 * Start sending one batch.  The request is on its way once the caller
 * next runs deliveries_wait().
 */
Delivery *
delivery_start(const DeliveryRequest *req)
{
	MemoryContext old = MemoryContextSwitchTo(delivery_context);
	Delivery   *d = palloc0(sizeof(Delivery));
	struct curl_slist *h = NULL;
	int64		now = (int64) time(NULL);
	CURL	   *e;

	d->destination_id = req->destination_id;
	d->private_allowed = req->private_allowed;
	d->nmessages = req->nmessages;
	d->message_ids = palloc(sizeof(int64) * Max(req->nmessages, 1));
	memcpy(d->message_ids, req->message_ids, sizeof(int64) * req->nmessages);
	d->body = pstrdup(req->body);
	d->body_len = strlen(d->body);
	d->response = palloc(RESPONSE_KEEP + 1);
	d->response[0] = '\0';

	h = add_header(h, "Content-Type: application/json");
	h = add_header(h, "User-Agent: cdp/" CDP_VERSION);
	h = add_header(h, "Expect:");	/* no 100-continue round trip */
	h = add_header_free(h, psprintf("webhook-id: %s", req->webhook_id));
	h = add_header_free(h, psprintf("webhook-timestamp: " INT64_FORMAT, now));
	if (req->key != NULL)
	{
		char	   *sig = webhook_signature(req->key, req->keylen, req->webhook_id, now,
											d->body, d->body_len);

		h = add_header_free(h, psprintf("webhook-signature: %s", sig));
		pfree(sig);
	}
	for (int i = 0; i < req->nheaders; i++)
		h = add_header(h, req->headers[i]);
	d->headers = h;

	e = curl_easy_init();
	if (e == NULL)
	{
		curl_slist_free_all(h);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("cdp dispatcher: out of memory in libcurl")));
	}
	d->easy = e;
	SETOPT(e, CURLOPT_URL, req->url);
	SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
	SETOPT(e, CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(e, CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(e, CURLOPT_SSL_VERIFYHOST, 2L);
	SETOPT(e, CURLOPT_NOSIGNAL, 1L);
	SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
	SETOPT(e, CURLOPT_POST, 1L);
	SETOPT(e, CURLOPT_POSTFIELDS, d->body);
	SETOPT(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) d->body_len);
	SETOPT(e, CURLOPT_HTTPHEADER, h);
	SETOPT(e, CURLOPT_TIMEOUT_MS, (long) req->timeout_ms);
	SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(req->timeout_ms, 10000));
	SETOPT(e, CURLOPT_WRITEFUNCTION, write_cb);
	SETOPT(e, CURLOPT_WRITEDATA, d);
	SETOPT(e, CURLOPT_PREREQFUNCTION, prereq_cb);
	SETOPT(e, CURLOPT_PREREQDATA, d);
	SETOPT(e, CURLOPT_ERRORBUFFER, d->curl_error);
	SETOPT(e, CURLOPT_PRIVATE, d);
	if (curl_multi_add_handle(multi, e) != CURLM_OK)
		elog(ERROR, "cdp dispatcher: curl_multi_add_handle failed");
	running++;

	MemoryContextSwitchTo(old);
	return d;
}

int
deliveries_running(void)
{
	return running;
}

/* Move the transfers on; wait up to timeout_ms for something to happen. */
void
deliveries_wait(int timeout_ms)
{
	int			still;

	curl_multi_perform(multi, &still);
	if (still > 0)
	{
		curl_multi_poll(multi, NULL, 0, timeout_ms, NULL);
		curl_multi_perform(multi, &still);
	}
}

/* A finished delivery with its outcome, or NULL when none (yet). */
Delivery *
delivery_next_done(void)
{
	CURLMsg    *m;
	int			left;

	while ((m = curl_multi_info_read(multi, &left)) != NULL)
	{
		CURL	   *e = m->easy_handle;
		CURLcode	rc = m->data.result;
		Delivery   *d = NULL;
		long		code = 0;
		curl_off_t	retry_after = 0;
		MemoryContext old;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **) &d);
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
		curl_easy_getinfo(e, CURLINFO_RETRY_AFTER, &retry_after);

		old = MemoryContextSwitchTo(delivery_context);
		if (d->refused)
		{
			d->http_status = -1;
			d->error = pstrdup(d->refusal);
		}
		else if (rc != CURLE_OK)
		{
			d->http_status = 0;
			d->error = d->curl_error[0] != '\0'
				? psprintf("%s: %s", curl_easy_strerror(rc), d->curl_error)
				: pstrdup(curl_easy_strerror(rc));
		}
		else
		{
			d->http_status = (int) code;
			d->error = NULL;
		}
		d->retry_after_ms = retry_after > 0 ? (int64) retry_after * 1000 : 0;
		MemoryContextSwitchTo(old);

		curl_multi_remove_handle(multi, e);
		curl_easy_cleanup(e);
		curl_slist_free_all(d->headers);
		d->headers = NULL;
		d->easy = NULL;
		running--;
		return d;
	}
	return NULL;
}

void
delivery_free(Delivery *d)
{
	pfree(d->message_ids);
	pfree(d->body);
	pfree(d->response);
	if (d->error)
		pfree(d->error);
	pfree(d);
}
