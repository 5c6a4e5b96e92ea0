/*-------------------------------------------------------------------------
 *
 * activation.h
 *	  Activation: destinations, the outbox and its delivery.  What the
 *	  dispatcher worker (src/worker/dispatcher.c) and cdp.c need from
 *	  src/activation/: settings, the dispatcher's shared state and how a
 *	  backend wakes it, webhook signing, the private-address check and the
 *	  HTTP transfers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_ACTIVATION_H
#define CDP_ACTIVATION_H

#include <sys/socket.h>

#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

/* Settings (defined as GUCs in cdp.c). */
extern bool cdp_allow_private_destinations;
extern int	cdp_dispatch_naptime;

/* Room for the dispatcher's last error (longer messages are cut). */
#define CDP_DISPATCHER_ERROR_LEN 256

/*
 * What the dispatcher publishes about itself.  Only the dispatcher writes
 * it; backends read it (cdp.status()) and set its latch at commit.
 */
typedef struct CdpDispatcherState
{
	LWLock	   *lock;			/* protects the fields below */
	pid_t		pid;			/* 0 when the dispatcher is not running */
	Latch	   *latch;			/* NULL when it is not running */
	TimestampTz started_at;
	TimestampTz last_round_at;
	int64		requests;		/* HTTP requests finished since it started */
	int64		delivered;		/* messages delivered since it started */
	int64		failed;			/* requests that did not deliver */
	int			in_flight;		/* requests running now */
	char		last_error[CDP_DISPATCHER_ERROR_LEN];	/* "" when none */
} CdpDispatcherState;

/* NULL unless cdp was preloaded. */
extern CdpDispatcherState *CdpDispatcher;

/* Request and attach the dispatcher's shared state (from _PG_init). */
extern void ActivationShmemInit(void);

/* Set the dispatcher's latch now (no-op when it is not running). */
extern void ActivationWakeDispatcher(void);

/*
 * Webhook signing (sign.c).  The key is the secret's bytes, or for
 * whsec_<base64> the decoded base64; NULL with *error set when invalid.
 */
extern unsigned char *webhook_key(const char *secret, int *keylen, const char **error);
extern char *webhook_signature(const unsigned char *key, int keylen, const char *id,
							   int64 timestamp, const char *body, size_t bodylen);

/* Loopback, private, link-local, multicast or otherwise not public (url.c). */
extern bool address_is_private(const struct sockaddr *sa);
extern bool ip_text_is_private(const char *ip);

/*
 * HTTP delivery (http.c): one request per batch, many at once on a libcurl
 * multi handle.
 */
typedef struct Delivery
{
	/* what was sent */
	int			destination_id;
	int64	   *message_ids;
	int			nmessages;
	bool		private_allowed;
	/* how it ended (set by delivery_next_done) */
	int			http_status;	/* 0: no answer (connection, timeout); -1:
								 * refused before sending */
	int64		retry_after_ms; /* from Retry-After; 0 if none */
	char	   *error;			/* NULL on a 2xx */
	char	   *response;		/* start of the response body */
	/* private to http.c */
	void	   *easy;
	struct curl_slist *headers;
	char	   *body;
	size_t		body_len;
	char		curl_error[256];
	char		refusal[128];	/* why the pre-request check refused */
	size_t		response_len;
	bool		refused;
} Delivery;

typedef struct DeliveryRequest
{
	int			destination_id;
	const char *url;
	const unsigned char *key;	/* NULL: unsigned */
	int			keylen;
	int			timeout_ms;
	bool		private_allowed;
	char	  **headers;		/* "Name: value" */
	int			nheaders;
	const char *webhook_id;
	const char *body;
	int64	   *message_ids;
	int			nmessages;
} DeliveryRequest;

extern void http_init(void);
extern Delivery *delivery_start(const DeliveryRequest *req);
extern int	deliveries_running(void);
extern void deliveries_wait(int timeout_ms);
extern Delivery *delivery_next_done(void);
extern void delivery_free(Delivery *d);

#endif							/* CDP_ACTIVATION_H */
