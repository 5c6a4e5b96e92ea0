/*-------------------------------------------------------------------------
 *
 * url.c
 *	  Which URLs a webhook destination may have: http or https, no
 *	  credentials in the URL, and a host that resolves to public addresses
 *	  only.  Loopback, private (RFC 1918, unique local), link-local,
 *	  carrier-grade NAT, multicast and reserved addresses are refused unless
 *	  a superuser has set cdp.allow_private_destinations: a webhook must not
 *	  become a way to reach the database server's own network (SSRF).
 *
 * The check runs twice: when the destination is created or changed (here,
 * with getaddrinfo), and for every connection the dispatcher opens (http.c,
 * on the address libcurl actually connected to), so that a name that
 * resolves differently later (DNS rebinding) gains nothing.
 *
 * URLs are parsed by libcurl's own parser, so the check and the request
 * read the URL the same way.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>

#include "fmgr.h"
#include "utils/builtins.h"

#include "activation/activation.h"

bool		cdp_allow_private_destinations = false;

static bool
ipv4_is_private(uint32 a)
{
	return (a >> 24) == 0		/* 0.0.0.0/8 "this network" */
		|| (a >> 24) == 10		/* 10.0.0.0/8 */
		|| (a >> 22) == (100u << 2 | 1) /* 100.64.0.0/10 CGNAT */
		|| (a >> 24) == 127		/* loopback */
		|| (a >> 16) == (169u << 8 | 254)	/* link-local */
		|| (a >> 20) == (172u << 4 | 1) /* 172.16.0.0/12 */
		|| (a >> 8) == (192u << 16 | 0 << 8 | 0)	/* 192.0.0.0/24 */
		|| (a >> 16) == (192u << 8 | 168)	/* 192.168.0.0/16 */
		|| (a >> 17) == (198u << 7 | 18 >> 1)	/* 198.18.0.0/15 benchmarking */
		|| (a >> 28) >= 14;		/* multicast, reserved, broadcast */
}

static bool
ipv6_is_private(const unsigned char *b)
{
	static const unsigned char zero[16] = {0};
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};

	/* :: and ::1 */
	if (memcmp(b, zero, 15) == 0 && (b[15] == 0 || b[15] == 1))
		return true;
	/* IPv4-mapped and NAT64: judge the IPv4 address inside */
	if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0)
		return ipv4_is_private((uint32) b[12] << 24 | (uint32) b[13] << 16 | (uint32) b[14] << 8 | b[15]);
	/* 6to4: the IPv4 address in bits 16-47 */
	if (b[0] == 0x20 && b[1] == 0x02)
		return ipv4_is_private((uint32) b[2] << 24 | (uint32) b[3] << 16 | (uint32) b[4] << 8 | b[5]);
	return (b[0] & 0xfe) == 0xfc	/* fc00::/7 unique local */
		|| (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)	/* fe80::/10 link-local */
		|| (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)	/* fec0::/10 site-local */
		|| b[0] == 0xff;		/* multicast */
}

bool
address_is_private(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ipv4_is_private(ntohl(((const struct sockaddr_in *) sa)->sin_addr.s_addr));
	if (sa->sa_family == AF_INET6)
		return ipv6_is_private(((const struct sockaddr_in6 *) sa)->sin6_addr.s6_addr);
	return true;				/* anything else is not the internet */
}

/* A numeric address as libcurl reports it (CURLINFO_PRIMARY_IP). */
bool
ip_text_is_private(const char *ip)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (inet_pton(AF_INET, ip, &a4) == 1)
		return ipv4_is_private(ntohl(a4.s_addr));
	if (inet_pton(AF_INET6, ip, &a6) == 1)
		return ipv6_is_private(a6.s6_addr);
	return true;
}

static void
report_bad_url(const char *url, const char *detail, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid destination url \"%s\"", url),
			 errdetail("%s", detail),
			 errhint("%s", hint)));
}

/*
 * cdp._check_destination_url(url text) RETURNS boolean
 *
 * Raises 22023 unless url may be a destination; returns whether it
 * reaches a loopback or private address (allowed only while
 * cdp.allow_private_destinations is on).
 */
PG_FUNCTION_INFO_V1(cdp_check_destination_url);
Datum
cdp_check_destination_url(PG_FUNCTION_ARGS)
{
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	CURLU	   *u = curl_url();
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *user = NULL;
	char	   *password = NULL;
	char	   *hostname;
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	int			rc;
	bool		private = false;
	bool		any = false;
	char		first_private[INET6_ADDRSTRLEN] = "";

	if (u == NULL)
		elog(ERROR, "cdp: out of memory in libcurl");
	if (strlen(url) > 2048 || strpbrk(url, " \t\r\n") != NULL ||
		curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
	{
		curl_url_cleanup(u);
		report_bad_url(url, "It is not an absolute URL.",
					   "Write it as https://host[:port]/path.");
	}
	if (pg_strcasecmp(scheme, "http") != 0 && pg_strcasecmp(scheme, "https") != 0)
	{
		char	   *detail = psprintf("Scheme \"%s\" is not http or https.", scheme);

		curl_free(scheme);
		curl_free(host);
		curl_url_cleanup(u);
		report_bad_url(url, detail, "Destinations are http:// or https:// URLs (https for anything outside your own network).");
	}
	if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
	{
		curl_free(scheme);
		curl_url_cleanup(u);
		report_bad_url(url, "It has no host.", "Write it as https://host[:port]/path.");
	}
	if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK ||
		curl_url_get(u, CURLUPART_PASSWORD, &password, 0) == CURLUE_OK)
	{
		curl_free(user);
		curl_free(password);
		curl_free(scheme);
		curl_free(host);
		curl_url_cleanup(u);
		report_bad_url(url, "It carries credentials, which anybody who may read cdp.destinations would see.",
					   "Put them in a header (options {\"headers\": {\"Authorization\": \"…\"}}), whose value only cdp_admin sees, or rely on the signing secret.");
	}

	/* An IPv6 literal comes back in brackets. */
	hostname = pstrdup(host);
	if (hostname[0] == '[')
	{
		hostname++;
		hostname[strcspn(hostname, "]")] = '\0';
	}
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(hostname, NULL, &hints, &res);
	if (rc != 0)
		report_bad_url(url, psprintf("Host \"%s\" does not resolve: %s.", hostname, gai_strerror(rc)),
					   "Check the host name; it must resolve from the database server.");
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
	{
		any = true;
		if (address_is_private(ai->ai_addr))
		{
			if (!private)
			{
				const void *addr = ai->ai_family == AF_INET
					? (const void *) &((struct sockaddr_in *) ai->ai_addr)->sin_addr
					: (const void *) &((struct sockaddr_in6 *) ai->ai_addr)->sin6_addr;

				inet_ntop(ai->ai_family, addr, first_private, sizeof(first_private));
			}
			private = true;
		}
	}
	freeaddrinfo(res);
	if (!any)
		report_bad_url(url, psprintf("Host \"%s\" has no address.", hostname),
					   "Check the host name; it must resolve from the database server.");

	if (private && !cdp_allow_private_destinations)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination url \"%s\" reaches a loopback or private address", url),
				 errdetail("Host \"%s\" resolves to %s.", hostname, first_private),
				 errhint("Webhooks go to public addresses. To send to your own network (or to a local test receiver), a superuser sets cdp.allow_private_destinations = on before creating the destination.")));
	PG_RETURN_BOOL(private);
}
