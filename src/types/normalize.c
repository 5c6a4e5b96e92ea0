/*-------------------------------------------------------------------------
 *
 * normalize.c
 *	  Normalisation of identifier values by kind.
 *
 * The rules are those marketing systems match on, so that the same person
 * typed differently by two systems becomes one key:
 *
 *	email		trim, Unicode NFKC, locale-independent lower-case, domain to
 *				ASCII with IDNA (UTS #46, non-transitional); exactly one '@',
 *				a non-empty local part, a domain with a dot, no whitespace.
 *				Nothing provider-specific (Gmail dots, plus tags): those are
 *				different addresses to the mail system, and so to us.
 *	phone		E.164 through libphonenumber (phone.cpp), numbers without a
 *				country code read in cdp.default_phone_region.
 *	device_id	a UUID (IDFA, GAID, IDFV), lower-case 8-4-4-4-12.
 *	other		trim, Unicode NFC; must not be empty.
 *
 * All functions here report bad input by returning a sentence naming the
 * rule that was broken, never by raising: batch ingestion sets a bad
 * identifier aside and goes on, and only the type input function turns the
 * sentence into an error.
 *
 * Unicode work is done by ICU on UTF-16.  Pure ASCII input, the common case,
 * takes a fast path with the same result: ASCII is invariant under NFC and
 * NFKC, and its lower-case mapping is the ASCII one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <unicode/uchar.h>
#include <unicode/uidna.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include "mb/pg_wchar.h"

#include "types/identifier.h"
#include "types/phone.h"

#define EMAIL_MAX_LOCAL_LEN		64	/* RFC 5321, octets */
#define EMAIL_MAX_LEN			254 /* RFC 5321 path limit less the brackets */

char	   *cdp_default_phone_region = NULL;

typedef enum UnicodeForm
{
	FORM_NFC,
	FORM_NFKC_LOWER
} UnicodeForm;

static bool
is_ascii(const char *s, int len)
{
	for (int i = 0; i < len; i++)
		if (IS_HIGHBIT_SET(s[i]))
			return false;
	return true;
}

static inline bool
is_ascii_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/*
 * Does the UTF-8 string contain a control character or, unless allowed,
 * whitespace?  Returns the phrase to report, or NULL.
 */
static const char *
find_bad_character(const char *s, int len, bool allow_space)
{
	int			i = 0;

	while (i < len)
	{
		UChar32		c;

		U8_NEXT(s, i, len, c);
		if (c < 0)
			return "is not valid UTF-8";
		if (u_iscntrl(c))
			return "contains a control character";
		if (!allow_space && u_isUWhiteSpace(c))
			return "contains whitespace";
	}
	return NULL;
}

static UChar *
utf8_to_utf16(const char *s, int len, int32 *outlen)
{
	UErrorCode	status = U_ZERO_ERROR;
	UChar	   *buf = palloc((len + 1) * sizeof(UChar));

	u_strFromUTF8(buf, len + 1, outlen, s, len, &status);
	if (U_FAILURE(status))
		elog(ERROR, "ICU could not convert UTF-8 to UTF-16: %s", u_errorName(status));
	return buf;
}

static void
append_utf16_as_utf8(StringInfo out, const UChar *s, int32 len)
{
	UErrorCode	status = U_ZERO_ERROR;
	int32		need;

	u_strToUTF8(NULL, 0, &need, s, len, &status);
	if (status != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(status))
		elog(ERROR, "ICU could not convert UTF-16 to UTF-8: %s", u_errorName(status));
	enlargeStringInfo(out, need + 1);
	status = U_ZERO_ERROR;
	u_strToUTF8(out->data + out->len, need + 1, NULL, s, len, &status);
	if (U_FAILURE(status))
		elog(ERROR, "ICU could not convert UTF-16 to UTF-8: %s", u_errorName(status));
	out->len += need;
	out->data[out->len] = '\0';
}

/*
 * Trim, normalise (NFC, or NFKC then root-locale lower-case) and append the
 * UTF-8 value to out.  Whitespace is Unicode White_Space, trimmed after
 * normalisation so that e.g. an ideographic space (U+3000) counts too.
 */
static void
append_unicode_form(StringInfo out, const char *s, int len, UnicodeForm form)
{
	UErrorCode	status = U_ZERO_ERROR;
	const UNormalizer2 *norm;
	UChar	   *src;
	UChar	   *dst;
	int32		srclen;
	int32		dstlen;
	int32		cap;
	int32		start;
	int32		end;

	if (is_ascii(s, len))
	{
		int			b = 0;
		int			e = len;

		while (b < e && is_ascii_space(s[b]))
			b++;
		while (e > b && is_ascii_space(s[e - 1]))
			e--;
		enlargeStringInfo(out, e - b + 1);
		for (int i = b; i < e; i++)
			out->data[out->len++] = (form == FORM_NFKC_LOWER) ? pg_ascii_tolower(s[i]) : s[i];
		out->data[out->len] = '\0';
		return;
	}

	src = utf8_to_utf16(s, len, &srclen);

	norm = (form == FORM_NFC) ? unorm2_getNFCInstance(&status) : unorm2_getNFKCInstance(&status);
	if (U_FAILURE(status))
		elog(ERROR, "ICU normaliser unavailable: %s", u_errorName(status));

	/* NFKC can expand a code unit up to 18-fold (U+FDFA); grow on demand. */
	cap = srclen * 3 + 16;
	for (;;)
	{
		dst = palloc(cap * sizeof(UChar));
		status = U_ZERO_ERROR;
		dstlen = unorm2_normalize(norm, src, srclen, dst, cap, &status);
		if (status != U_BUFFER_OVERFLOW_ERROR)
			break;
		pfree(dst);
		cap = dstlen + 1;
	}
	if (U_FAILURE(status))
		elog(ERROR, "ICU normalisation failed: %s", u_errorName(status));

	if (form == FORM_NFKC_LOWER)
	{
		UChar	   *lower;

		cap = dstlen * 3 + 16;	/* full case mapping may expand, e.g. U+0130 */
		for (;;)
		{
			lower = palloc(cap * sizeof(UChar));
			status = U_ZERO_ERROR;
			/* "" is the root locale: no Turkish or Lithuanian special cases */
			srclen = u_strToLower(lower, cap, dst, dstlen, "", &status);
			if (status != U_BUFFER_OVERFLOW_ERROR)
				break;
			pfree(lower);
			cap = srclen + 1;
		}
		if (U_FAILURE(status))
			elog(ERROR, "ICU lower-case mapping failed: %s", u_errorName(status));
		dst = lower;
		dstlen = srclen;
	}

	start = 0;
	end = dstlen;
	while (start < end)
	{
		UChar32		c;
		int32		next = start;

		U16_NEXT(dst, next, end, c);
		if (!u_isUWhiteSpace(c))
			break;
		start = next;
	}
	while (end > start)
	{
		UChar32		c;
		int32		prev = end;

		U16_PREV(dst, start, prev, c);
		if (!u_isUWhiteSpace(c))
			break;
		end = prev;
	}
	append_utf16_as_utf8(out, dst + start, end - start);
}

/* One UTS #46 processor per backend; ICU keeps it thread-safe and immutable. */
static const UIDNA *
get_idna(void)
{
	static UIDNA *idna = NULL;

	if (idna == NULL)
	{
		UErrorCode	status = U_ZERO_ERROR;

		idna = uidna_openUTS46(UIDNA_USE_STD3_RULES | UIDNA_CHECK_BIDI |
							   UIDNA_CHECK_CONTEXTJ | UIDNA_NONTRANSITIONAL_TO_ASCII,
							   &status);
		if (U_FAILURE(status))
			elog(ERROR, "ICU IDNA processor unavailable: %s", u_errorName(status));
	}
	return idna;
}

static const char *
idna_error_text(uint32 errors)
{
	if (errors & UIDNA_ERROR_EMPTY_LABEL)
		return "email domain has an empty label (two dots in a row, or a dot at the start)";
	if (errors & UIDNA_ERROR_LABEL_TOO_LONG)
		return "email domain has a label longer than 63 characters";
	if (errors & UIDNA_ERROR_DOMAIN_NAME_TOO_LONG)
		return "email domain is longer than 253 characters";
	if (errors & (UIDNA_ERROR_LEADING_HYPHEN | UIDNA_ERROR_TRAILING_HYPHEN))
		return "email domain has a label that starts or ends with a hyphen";
	if (errors & UIDNA_ERROR_DISALLOWED)
		return "email domain contains a character not allowed in domain names";
	if (errors & UIDNA_ERROR_PUNYCODE)
		return "email domain has an invalid punycode (xn--) label";
	if (errors & UIDNA_ERROR_BIDI)
		return "email domain mixes right-to-left and left-to-right text in a way IDNA forbids";
	return "email domain is not a valid internationalised domain name";
}

/* The normalised email must already be in out, from offset start on. */
static char *
check_email(StringInfo out, int start)
{
	char	   *email = out->data + start;
	int			len = out->len - start;
	char	   *at;
	char	   *domain;
	int			locallen;
	int			domainlen;
	const char *bad;
	char		ascii[256];
	UIDNAInfo	info = UIDNA_INFO_INITIALIZER;
	UErrorCode	status = U_ZERO_ERROR;
	int32		asciilen;

	if (len == 0)
		return pstrdup("email is empty");
	if ((bad = find_bad_character(email, len, false)) != NULL)
		return psprintf("email %s", bad);

	at = memchr(email, '@', len);
	if (at == NULL)
		return pstrdup("email has no \"@\"");
	if (memchr(at + 1, '@', len - (at + 1 - email)) != NULL)
		return pstrdup("email has more than one \"@\"");

	locallen = at - email;
	domain = at + 1;
	domainlen = len - locallen - 1;
	if (locallen == 0)
		return pstrdup("email has an empty local part (nothing before \"@\")");
	if (locallen > EMAIL_MAX_LOCAL_LEN)
		return psprintf("email local part is longer than %d bytes", EMAIL_MAX_LOCAL_LEN);
	if (domainlen == 0)
		return pstrdup("email has no domain");
	if (domain[domainlen - 1] == '.')
		return pstrdup("email domain ends with a dot");

	asciilen = uidna_nameToASCII_UTF8(get_idna(), domain, domainlen,
									  ascii, sizeof(ascii) - 1, &info, &status);
	if (status == U_BUFFER_OVERFLOW_ERROR)
		return pstrdup("email domain is longer than 253 characters");
	if (U_FAILURE(status))
		elog(ERROR, "ICU IDNA conversion failed: %s", u_errorName(status));
	if (info.errors != 0)
		return pstrdup(idna_error_text(info.errors));
	if (memchr(ascii, '.', asciilen) == NULL)
		return pstrdup("email domain has no dot");

	/* Replace the domain by its ASCII form. */
	out->len = start + locallen + 1;
	appendBinaryStringInfo(out, ascii, asciilen);

	if (out->len - start > EMAIL_MAX_LEN)
		return psprintf("email is longer than %d bytes", EMAIL_MAX_LEN);
	return NULL;
}

static char *
normalize_email(const char *s, int len, StringInfo out)
{
	int			start = out->len;

	append_unicode_form(out, s, len, FORM_NFKC_LOWER);
	return check_email(out, start);
}

static char *
normalize_phone(const char *s, int len, StringInfo out)
{
	char		e164[PHONE_E164_BUFSIZE];
	char		err[256];
	int			i = 0;

	while (i < len && is_ascii_space(s[i]))
		i++;
	if (i == len)
		return pstrdup("phone is empty");
	if (!phone_to_e164(s, len, cdp_default_phone_region, e164, err, sizeof(err)))
		return pstrdup(err);
	appendStringInfoString(out, e164);
	return NULL;
}

/*
 * A UUID as 32 hex digits, with or without the canonical hyphens, optionally
 * in braces; written out lower-case with hyphens.
 */
static char *
normalize_device_id(const char *s, int len, StringInfo out)
{
	static const char *const hint =
		"device_id must be a UUID: 32 hexadecimal digits, as 8-4-4-4-12 or without hyphens";
	char		hex[32];
	int			n = 0;
	int			b = 0;
	int			e = len;

	while (b < e && is_ascii_space(s[b]))
		b++;
	while (e > b && is_ascii_space(s[e - 1]))
		e--;
	if (b == e)
		return pstrdup("device_id is empty");
	if (s[b] == '{' && e - b >= 2 && s[e - 1] == '}')
	{
		b++;
		e--;
	}
	for (int i = b; i < e; i++)
	{
		char		c = s[i];

		if (c == '-' && e - b == 36 && (i - b == 8 || i - b == 13 || i - b == 18 || i - b == 23))
			continue;
		if (!isxdigit((unsigned char) c) || n == 32)
			return pstrdup(hint);
		hex[n++] = pg_ascii_tolower(c);
	}
	if (n != 32)
		return pstrdup(hint);

	appendBinaryStringInfo(out, hex, 8);
	appendStringInfoChar(out, '-');
	appendBinaryStringInfo(out, hex + 8, 4);
	appendStringInfoChar(out, '-');
	appendBinaryStringInfo(out, hex + 12, 4);
	appendStringInfoChar(out, '-');
	appendBinaryStringInfo(out, hex + 16, 4);
	appendStringInfoChar(out, '-');
	appendBinaryStringInfo(out, hex + 20, 12);
	return NULL;
}

static char *
normalize_other(const char *kind, const char *s, int len, StringInfo out)
{
	int			start = out->len;
	const char *bad;

	append_unicode_form(out, s, len, FORM_NFC);
	if (out->len == start)
		return psprintf("%s is empty", kind);
	if ((bad = find_bad_character(out->data + start, out->len - start, true)) != NULL)
		return psprintf("%s %s", kind, bad);
	return NULL;
}

/*
 * Is kind a valid kind name?  It must already be lower-case.  Returns why
 * not, or NULL.
 */
char *
identifier_kind_error(const char *kind)
{
	int			len = strlen(kind);

	if (len == 0)
		return pstrdup("identifier kind is empty");
	if (len > IDENTIFIER_MAX_KIND_LEN)
		return psprintf("identifier kind is longer than %d characters", IDENTIFIER_MAX_KIND_LEN);
	if (!(kind[0] >= 'a' && kind[0] <= 'z'))
		return psprintf("identifier kind \"%s\" must start with a letter", kind);
	for (int i = 1; i < len; i++)
	{
		char		c = kind[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return psprintf("identifier kind \"%s\" may contain only letters, digits and \"_\"", kind);
	}
	return NULL;
}

char *
identifier_normalize(const char *kind, const char *value, int len, StringInfo out)
{
	char	   *lkind;
	char	   *utf8;
	char	   *err;
	StringInfoData val;

	lkind = pstrdup(kind);
	for (char *p = lkind; *p; p++)
		*p = pg_ascii_tolower(*p);
	if ((err = identifier_kind_error(lkind)) != NULL)
		return err;

	/* ICU works on UTF-8; other server encodings are converted both ways. */
	utf8 = pg_server_to_any(value, len, PG_UTF8);
	if (utf8 != value)
		len = strlen(utf8);

	initStringInfo(&val);
	if (strcmp(lkind, "email") == 0)
		err = normalize_email(utf8, len, &val);
	else if (strcmp(lkind, "phone") == 0)
		err = normalize_phone(utf8, len, &val);
	else if (strcmp(lkind, "device_id") == 0)
		err = normalize_device_id(utf8, len, &val);
	else
		err = normalize_other(lkind, utf8, len, &val);
	if (err != NULL)
		return err;

	if (val.len > IDENTIFIER_MAX_VALUE_LEN)
		return psprintf("%s is longer than %d bytes", lkind, IDENTIFIER_MAX_VALUE_LEN);

	appendStringInfoString(out, lkind);
	appendStringInfoChar(out, ':');
	appendStringInfoString(out, pg_any_to_server(val.data, val.len, PG_UTF8));
	return NULL;
}

bool
cdp_check_phone_region(char **newval, void **extra, GucSource source)
{
	char	   *r = *newval;

	if (r == NULL)
		return false;
	if (strlen(r) != 2 || !isalpha((unsigned char) r[0]) || !isalpha((unsigned char) r[1]))
	{
		GUC_check_errdetail("cdp.default_phone_region must be a two-letter ISO 3166-1 region code such as DE or US.");
		return false;
	}
	r[0] = pg_ascii_toupper(r[0]);
	r[1] = pg_ascii_toupper(r[1]);
	if (!phone_region_supported(r))
	{
		GUC_check_errdetail("Region \"%s\" is not known to libphonenumber.", r);
		return false;
	}
	return true;
}
