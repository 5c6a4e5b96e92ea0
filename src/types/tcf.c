/*-------------------------------------------------------------------------
 *
 * tcf.c
 *	  Bounds-checked decoder for IAB TCF v2.x TC strings.
 *
 * See tcf.h for the format and for the decisions taken where the
 * specification leaves room.  Implementation notes:
 *
 *	- The base64url text is never converted to bytes: a TcfReader reads bits
 *	  straight from the validated characters (6 bits each), and every read
 *	  is checked against the bits left in the segment first, so a truncated
 *	  or lying string ends in an error naming the field and the bit offset.
 *	- Range entries are merged in a difference array indexed by vendor id
 *	  (+1 at the start, -1 after the end), then swept once in ascending
 *	  order.  Each range costs O(1) however long it is, so overlapping,
 *	  unsorted or repeated ranges (even 1..65535 thousands of times) give a
 *	  sorted, de-duplicated set in time linear in the input.
 *	- Sets are counted before they are allocated, so no array is ever
 *	  grown and the TCF_MAX_TOTAL_IDS guard is applied before allocating.
 *
 * src/types/tcf.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tcf.h"

#if defined(__GNUC__) || defined(__clang__)
#define TCF_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TCF_PRINTF(f, a)
#endif

#define TCF_MAX_VENDOR_ID	65535
#define TCF_MAX_SEGMENTS	8	/* core + one of each type 1..7 */

/* Per-call state: allocator, error buffer, scratch space, id budget. */
typedef struct TcfCtx
{
	TcfAllocFunc alloc;
	void	   *alloc_ctx;
	char	   *errbuf;
	size_t		errbuflen;
	int		   *diff;			/* difference array for merging ranges */
	size_t		diff_len;		/* entries allocated in diff */
	long		total_ids;		/* ids produced so far */
} TcfCtx;

/* Bit reader over the characters of one segment (padding stripped). */
typedef struct TcfReader
{
	const char *text;
	size_t		nbits;
	size_t		pos;			/* next bit to read */
	char		where[48];		/* "the core segment", "segment 2 (...)" */
} TcfReader;

/* A publisher restriction entry, remembered between the two passes. */
typedef struct TcfPubEntry
{
	int			purpose;
	int			type;
	int			nentries;
	size_t		pos;			/* bit offset of its first range entry */
	int			next;			/* next entry with the same pair, or -1 */
} TcfPubEntry;

static bool tcf_fail(TcfCtx *ctx, const char *fmt,...) TCF_PRINTF(2, 3);

static bool
tcf_fail(TcfCtx *ctx, const char *fmt,...)
{
	va_list		ap;

	if (ctx->errbuf != NULL && ctx->errbuflen > 0)
	{
		va_start(ap, fmt);
		vsnprintf(ctx->errbuf, ctx->errbuflen, fmt, ap);
		va_end(ap);
	}
	return false;
}

static void *
tcf_alloc(TcfCtx *ctx, size_t size)
{
	void	   *p = ctx->alloc(ctx->alloc_ctx, size);

	if (p == NULL)
		tcf_fail(ctx, "out of memory decoding TC string (%zu bytes requested)",
				 size);
	return p;
}

/* Value of a base64url character, or -1. */
static int
sextet_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* ---------- bit reading ---------- */

/* Unchecked: callers have verified that a bit remains. */
static int
peek_bit(const TcfReader *r)
{
	int			v = sextet_value((unsigned char) r->text[r->pos / 6]);

	return (v >> (5 - (int) (r->pos % 6))) & 1;
}

static int
take_bit(TcfReader *r)
{
	int			bit = peek_bit(r);

	r->pos++;
	return bit;
}

/* Unchecked: callers have verified that n bits remain. */
static uint64_t
take_bits(TcfReader *r, int n)
{
	uint64_t	v = 0;

	while (n-- > 0)
		v = (v << 1) | (uint64_t) take_bit(r);
	return v;
}

static bool
require_bits(TcfCtx *ctx, const TcfReader *r, size_t n, const char *what)
{
	size_t		left = r->nbits - r->pos;

	if (n > left)
		return tcf_fail(ctx, "TC string is truncated: %s needs %zu bit%s at bit %zu of %s, only %zu remain",
						what, n, n == 1 ? "" : "s", r->pos, r->where, left);
	return true;
}

static bool
read_int(TcfCtx *ctx, TcfReader *r, int n, const char *what, int *out)
{
	if (!require_bits(ctx, r, (size_t) n, what))
		return false;
	*out = (int) take_bits(r, n);
	return true;
}

/* Two 6-bit letters, 0 = 'A' (ConsentLanguage, PublisherCC). */
static bool
read_letters(TcfCtx *ctx, TcfReader *r, const char *what, char *out)
{
	int			i;

	if (!require_bits(ctx, r, 12, what))
		return false;
	for (i = 0; i < 2; i++)
	{
		int			v = (int) take_bits(r, 6);

		if (v > 25)
			return tcf_fail(ctx, "%s letter %d has value %d at bit %zu of %s; letters must be 0-25 (A-Z)",
							what, i + 1, v, r->pos - 6, r->where);
		out[i] = (char) ('A' + v);
	}
	out[2] = '\0';
	return true;
}

/* ---------- id sets ---------- */

/* Charge count ids to the decode's budget (TCF_MAX_TOTAL_IDS). */
static bool
claim_ids(TcfCtx *ctx, int count, const char *what)
{
	if (count > TCF_MAX_TOTAL_IDS - ctx->total_ids)
		return tcf_fail(ctx, "TC string lists too many ids: %s would bring the total above %d",
						what, TCF_MAX_TOTAL_IDS);
	ctx->total_ids += count;
	return true;
}

/* A bitfield of nbits bits; bit i (0-based) set means id i + 1. */
static bool
read_bitfield_set(TcfCtx *ctx, TcfReader *r, int nbits, const char *what,
				  TcfIdSet *out)
{
	size_t		start = r->pos;
	int			count = 0;
	int			i;
	int			k = 0;

	if (!require_bits(ctx, r, (size_t) nbits, what))
		return false;
	for (i = 0; i < nbits; i++)
		count += take_bit(r);
	if (!claim_ids(ctx, count, what))
		return false;
	out->count = count;
	out->ids = NULL;
	if (count == 0)
		return true;
	out->ids = tcf_alloc(ctx, (size_t) count * sizeof(int));
	if (out->ids == NULL)
		return false;
	r->pos = start;
	for (i = 1; i <= nbits; i++)
		if (take_bit(r))
			out->ids[k++] = i;
	return true;
}

/* Zero diff[0 .. max_id + 1], growing the scratch array if needed. */
static bool
diff_reset(TcfCtx *ctx, int max_id)
{
	size_t		need = (size_t) max_id + 2;

	if (need > ctx->diff_len)
	{
		/* grow geometrically so repeated growth wastes at most 2x */
		size_t		len = ctx->diff_len * 2 > need ? ctx->diff_len * 2 : need;

		ctx->diff = tcf_alloc(ctx, len * sizeof(int));
		if (ctx->diff == NULL)
			return false;
		ctx->diff_len = len;
	}
	memset(ctx->diff, 0, need * sizeof(int));
	return true;
}

/* Sweep diff[1 .. max_id] into a sorted, duplicate-free set. */
static bool
diff_emit(TcfCtx *ctx, int max_id, const char *what, TcfIdSet *out)
{
	int			depth = 0;
	int			count = 0;
	int			id;
	int			k = 0;

	for (id = 1; id <= max_id; id++)
	{
		depth += ctx->diff[id];
		if (depth > 0)
			count++;
	}
	if (!claim_ids(ctx, count, what))
		return false;
	out->count = count;
	out->ids = NULL;
	if (count == 0)
		return true;
	out->ids = tcf_alloc(ctx, (size_t) count * sizeof(int));
	if (out->ids == NULL)
		return false;
	depth = 0;
	for (id = 1; id <= max_id; id++)
	{
		depth += ctx->diff[id];
		if (depth > 0)
			out->ids[k++] = id;
	}
	return true;
}

/*
 * One range entry: IsARange(1) StartOrOnlyVendorId(16) [EndVendorId(16)].
 * label/entry name it in messages ("vendor consent range entry 3").
 */
static bool
read_range_entry(TcfCtx *ctx, TcfReader *r, const char *label, int entry,
				 int max_id, int *start, int *end)
{
	size_t		at = r->pos;
	size_t		left = r->nbits - at;
	bool		is_range = left > 0 && peek_bit(r);
	size_t		need = is_range ? 33 : 17;

	if (need > left)
		return tcf_fail(ctx, "TC string is truncated: %s range entry %d needs %zu bits at bit %zu of %s, only %zu remain",
						label, entry, need, at, r->where, left);
	r->pos++;
	*start = (int) take_bits(r, 16);
	*end = is_range ? (int) take_bits(r, 16) : *start;
	if (*start == 0)
		return tcf_fail(ctx, "%s range entry %d (bit %zu of %s) starts at vendor id 0; vendor ids start at 1",
						label, entry, at, r->where);
	if (*end < *start)
		return tcf_fail(ctx, "%s range entry %d (bit %zu of %s) ends at vendor id %d, before its start %d",
						label, entry, at, r->where, *end, *start);
	if (*end > max_id)
		return tcf_fail(ctx, "%s range entry %d (bit %zu of %s) reaches vendor id %d, beyond MaxVendorId %d",
						label, entry, at, r->where, *end, max_id);
	return true;
}

/*
 * A vendor section: MaxVendorId(16) IsRangeEncoding(1), then a bitfield or
 * NumEntries(12) range entries.  label is e.g. "vendor consent".
 */
static bool
read_vendor_section(TcfCtx *ctx, TcfReader *r, const char *label,
					TcfIdSet *out)
{
	char		what[64];
	int			max_id;
	int			is_range;
	int			nentries;
	int			i;

	snprintf(what, sizeof(what), "%s MaxVendorId", label);
	if (!read_int(ctx, r, 16, what, &max_id))
		return false;
	snprintf(what, sizeof(what), "%s IsRangeEncoding", label);
	if (!read_int(ctx, r, 1, what, &is_range))
		return false;
	if (!is_range)
	{
		snprintf(what, sizeof(what), "%s bitfield", label);
		return read_bitfield_set(ctx, r, max_id, what, out);
	}

	snprintf(what, sizeof(what), "%s NumEntries", label);
	if (!read_int(ctx, r, 12, what, &nentries) || !diff_reset(ctx, max_id))
		return false;
	for (i = 1; i <= nentries; i++)
	{
		int			start;
		int			end;

		if (!read_range_entry(ctx, r, label, i, max_id, &start, &end))
			return false;
		ctx->diff[start]++;
		ctx->diff[end + 1]--;
	}
	snprintf(what, sizeof(what), "%s ranges", label);
	return diff_emit(ctx, max_id, what, out);
}

/*
 * Publisher restrictions.  Pass 1 validates every entry and chains entries
 * sharing a (purpose, type) pair; pass 2 re-reads each chain's ranges into
 * the difference array and emits one merged set per pair.  A pair key is
 * purpose * 4 + type, so 256 keys cover every encodable pair.
 */
static bool
read_restrictions(TcfCtx *ctx, TcfReader *r, TcfDecoded *out)
{
	int			head[256];
	int			tail[256];
	int			max_end[256];
	char		label[64];
	TcfPubEntry *entries;
	int			n;
	int			i;
	int			j;
	int			k;
	int			nunique = 0;
	size_t		end_pos;

	if (!read_int(ctx, r, 12, "NumPubRestrictions", &n))
		return false;
	if (n == 0)
		return true;
	entries = tcf_alloc(ctx, (size_t) n * sizeof(TcfPubEntry));
	if (entries == NULL)
		return false;
	for (k = 0; k < 256; k++)
	{
		head[k] = tail[k] = -1;
		max_end[k] = 0;
	}

	for (i = 0; i < n; i++)
	{
		TcfPubEntry *e = &entries[i];

		snprintf(label, sizeof(label), "publisher restriction %d", i + 1);
		if (!require_bits(ctx, r, 20, label))
			return false;
		e->purpose = (int) take_bits(r, 6);
		e->type = (int) take_bits(r, 2);
		e->nentries = (int) take_bits(r, 12);
		e->pos = r->pos;
		e->next = -1;
		if (e->purpose == 0)
			return tcf_fail(ctx, "publisher restriction %d has purpose id 0 (bit %zu of %s); purpose ids start at 1",
							i + 1, r->pos - 20, r->where);
		if (e->type == 3)
			return tcf_fail(ctx, "publisher restriction %d (purpose %d) has restriction type 3, which TCF leaves undefined (bit %zu of %s)",
							i + 1, e->purpose, r->pos - 14, r->where);

		snprintf(label, sizeof(label), "publisher restriction %d (purpose %d, type %d)",
				 i + 1, e->purpose, e->type);
		k = e->purpose * 4 + e->type;
		for (j = 1; j <= e->nentries; j++)
		{
			int			start;
			int			end;

			if (!read_range_entry(ctx, r, label, j, TCF_MAX_VENDOR_ID,
								  &start, &end))
				return false;
			if (end > max_end[k])
				max_end[k] = end;
		}
		if (head[k] < 0)
		{
			head[k] = i;
			nunique++;
		}
		else
			entries[tail[k]].next = i;
		tail[k] = i;
	}
	end_pos = r->pos;

	out->restrictions = tcf_alloc(ctx, (size_t) nunique * sizeof(TcfRestriction));
	if (out->restrictions == NULL)
		return false;
	for (i = 0; i < n; i++)
	{
		TcfRestriction *res;

		k = entries[i].purpose * 4 + entries[i].type;
		if (head[k] != i)
			continue;			/* merged into an earlier entry */
		res = &out->restrictions[out->n_restrictions++];
		res->purpose = entries[i].purpose;
		res->type = entries[i].type;
		if (!diff_reset(ctx, max_end[k]))
			return false;
		for (j = i; j >= 0; j = entries[j].next)
		{
			int			m;

			r->pos = entries[j].pos;
			for (m = 1; m <= entries[j].nentries; m++)
			{
				int			start;
				int			end;

				/* validated in pass 1, cannot fail */
				if (!read_range_entry(ctx, r, "publisher restriction", m,
									  TCF_MAX_VENDOR_ID,
									  &start, &end))
					return false;
				ctx->diff[start]++;
				ctx->diff[end + 1]--;
			}
		}
		snprintf(label, sizeof(label), "publisher restriction for purpose %d, type %d",
				 res->purpose, res->type);
		if (!diff_emit(ctx, max_end[k], label, &res->vendors))
			return false;
	}
	r->pos = end_pos;
	return true;
}

/* ---------- segments ---------- */

static bool
read_core(TcfCtx *ctx, TcfReader *r, TcfDecoded *out)
{
	int			v;
	int			p;

	if (!read_int(ctx, r, 6, "Version", &out->version))
		return false;
	if (out->version != 2)
	{
		/* optional segments start with 3 type bits: 001, 010 or 011 */
		int			t = out->version >> 3;

		if (t >= 1 && t <= 3)
			return tcf_fail(ctx, "unsupported TC string version %d: only version 2 is supported (the first segment looks like an optional segment of type %d; the core segment must come first)",
							out->version, t);
		return tcf_fail(ctx, "unsupported TC string version %d: only version 2 is supported",
						out->version);
	}
	if (!require_bits(ctx, r, 72, "Created and LastUpdated"))
		return false;
	out->created_ds = (int64_t) take_bits(r, 36);
	out->last_updated_ds = (int64_t) take_bits(r, 36);
	if (!read_int(ctx, r, 12, "CmpId", &out->cmp_id) ||
		!read_int(ctx, r, 12, "CmpVersion", &out->cmp_version) ||
		!read_int(ctx, r, 6, "ConsentScreen", &out->consent_screen) ||
		!read_letters(ctx, r, "ConsentLanguage", out->consent_language) ||
		!read_int(ctx, r, 12, "VendorListVersion", &out->vendor_list_version) ||
		!read_int(ctx, r, 6, "TcfPolicyVersion", &out->policy_version))
		return false;
	if (!read_int(ctx, r, 1, "IsServiceSpecific", &v))
		return false;
	out->is_service_specific = v;
	if (!read_int(ctx, r, 1, "UseNonStandardTexts", &v))
		return false;
	out->use_non_standard_texts = v;
	if (!read_bitfield_set(ctx, r, 12, "SpecialFeatureOptIns", &out->special_feature_optins) ||
		!read_bitfield_set(ctx, r, 24, "PurposesConsent", &out->purpose_consents) ||
		!read_bitfield_set(ctx, r, 24, "PurposesLITransparency", &out->purpose_legitimate_interests))
		return false;

	/* TCF v2.2 (policy 4+) removed legitimate interest for purposes 3-6 */
	if (out->policy_version >= 4)
		for (p = 3; p <= 6; p++)
			if (tcf_idset_contains(&out->purpose_legitimate_interests, p))
				return tcf_fail(ctx, "TCF policy version %d forbids legitimate interest for purpose %d: since TCF v2.2, PurposesLITransparency must be 0 for purposes 3-6",
								out->policy_version, p);

	if (!read_int(ctx, r, 1, "PurposeOneTreatment", &v))
		return false;
	out->purpose_one_treatment = v;
	return read_letters(ctx, r, "PublisherCC", out->publisher_cc) &&
		read_vendor_section(ctx, r, "vendor consent", &out->vendor_consents) &&
		read_vendor_section(ctx, r, "vendor legitimate interest",
							&out->vendor_legitimate_interests) &&
		read_restrictions(ctx, r, out);
}

static bool
read_publisher_tc(TcfCtx *ctx, TcfReader *r, TcfDecoded *out)
{
	int			ncustom;

	return read_bitfield_set(ctx, r, 24, "PubPurposesConsent", &out->pub_purpose_consents) &&
		read_bitfield_set(ctx, r, 24, "PubPurposesLITransparency",
						  &out->pub_purpose_legitimate_interests) &&
		read_int(ctx, r, 6, "NumCustomPurposes", &ncustom) &&
		read_bitfield_set(ctx, r, ncustom, "CustomPurposesConsent",
						  &out->pub_custom_purpose_consents) &&
		read_bitfield_set(ctx, r, ncustom, "CustomPurposesLITransparency",
						  &out->pub_custom_purpose_legitimate_interests);
}

/*
 * Set up a reader over segment segno, text str[start, end): strip valid
 * trailing padding, reject empty segments and misplaced '='.
 */
static bool
open_segment(TcfCtx *ctx, TcfReader *r, const char *str, size_t start,
			 size_t end, int segno)
{
	size_t		n = end;
	size_t		npad;
	size_t		i;

	while (n > start && str[n - 1] == '=')
		n--;
	npad = end - n;
	for (i = start; i < n; i++)
		if (str[i] == '=')
			return tcf_fail(ctx, "misplaced '=' at position %zu: padding may only end a segment",
							i + 1);
	if (n == start)
		return tcf_fail(ctx, "segment %d (at position %zu) is empty: segments must hold base64url text",
						segno, start + 1);
	if (npad > 0 && (npad > 2 || (n - start + npad) % 4 != 0))
		return tcf_fail(ctx, "invalid padding at position %zu: segment %d has %zu characters followed by %zu '='; padding may only complete a 4-character group",
						n + 1, segno, n - start, npad);

	/* bit offsets are size_t; keep 6 * length representable (32-bit) */
	if (n - start > ((size_t) -1) / 6)
		return tcf_fail(ctx, "segment %d is too long (%zu characters)",
						segno, n - start);

	r->text = str + start;
	r->nbits = (n - start) * 6;
	r->pos = 0;
	if (segno == 1)
		snprintf(r->where, sizeof(r->where), "the core segment");
	else
		snprintf(r->where, sizeof(r->where), "segment %d", segno);
	return true;
}

static bool
check_characters(TcfCtx *ctx, const char *str, size_t len)
{
	size_t		i;

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) str[i];

		if (sextet_value(c) >= 0 || c == '.' || c == '=')
			continue;
		if (c == '+' || c == '/')
			return tcf_fail(ctx, "invalid character '%c' at position %zu: TC strings use base64url (A-Z a-z 0-9 - _), where '-' and '_' replace '+' and '/'",
							c, i + 1);
		if (c >= 0x20 && c < 0x7f)
			return tcf_fail(ctx, "invalid character '%c' at position %zu: TC strings use base64url (A-Z a-z 0-9 - _)",
							c, i + 1);
		return tcf_fail(ctx, "invalid byte 0x%02x at position %zu: TC strings use base64url (A-Z a-z 0-9 - _)",
						c, i + 1);
	}
	return true;
}

bool
tcf_decode(const char *str, size_t len, TcfDecoded *out,
		   TcfAllocFunc alloc, void *alloc_ctx,
		   char *errbuf, size_t errbuflen)
{
	static const char *const segment_names[8] = {
		"core", "DisclosedVendors", "AllowedVendors", "PublisherTC",
		"unknown", "unknown", "unknown", "unknown"
	};
	TcfCtx		ctx;
	TcfReader	r;
	bool		seen[8] = {false};
	size_t		bounds[TCF_MAX_SEGMENTS + 1];
	int			nsegments = 0;
	int			segno;
	size_t		i;

	memset(out, 0, sizeof(*out));
	memset(&ctx, 0, sizeof(ctx));
	ctx.alloc = alloc;
	ctx.alloc_ctx = alloc_ctx;
	ctx.errbuf = errbuf;
	ctx.errbuflen = errbuflen;
	if (errbuf != NULL && errbuflen > 0)
		errbuf[0] = '\0';

	if (str == NULL || len == 0)
		return tcf_fail(&ctx, "TC string is empty");
	if (!check_characters(&ctx, str, len))
		return false;

	/* segment i spans [bounds[i], next '.') */
	bounds[nsegments++] = 0;
	for (i = 0; i < len; i++)
		if (str[i] == '.')
		{
			if (nsegments == TCF_MAX_SEGMENTS)
				return tcf_fail(&ctx, "too many segments: the '.' at position %zu starts segment %d, but a TC string has at most %d (core plus one of each segment type 1-7)",
								i + 1, nsegments + 1, TCF_MAX_SEGMENTS);
			bounds[nsegments++] = i + 1;
		}
	bounds[nsegments] = len + 1;

	for (segno = 1; segno <= nsegments; segno++)
	{
		int			type;

		if (!open_segment(&ctx, &r, str, bounds[segno - 1],
						  bounds[segno] - 1, segno))
			return false;
		if (segno == 1)
		{
			if (!read_core(&ctx, &r, out))
				return false;
			continue;
		}

		/* a segment holds at least one character, so 3 bits are there */
		type = (int) take_bits(&r, 3);
		if (type == 0)
			return tcf_fail(&ctx, "segment %d has segment type 0 (core): the core segment must be the first segment and appear only once",
							segno);
		if (seen[type])
			return tcf_fail(&ctx, "segment %d repeats segment type %d (%s): each segment type may appear only once",
							segno, type, segment_names[type]);
		seen[type] = true;
		snprintf(r.where, sizeof(r.where), "segment %d (%s)",
				 segno, segment_names[type]);
		switch (type)
		{
			case 1:
				out->has_disclosed_vendors = true;
				if (!read_vendor_section(&ctx, &r, "disclosed vendors",
										 &out->disclosed_vendors))
					return false;
				break;
			case 2:
				out->has_allowed_vendors = true;
				if (!read_vendor_section(&ctx, &r, "allowed vendors",
										 &out->allowed_vendors))
					return false;
				break;
			case 3:
				out->has_publisher_tc = true;
				if (!read_publisher_tc(&ctx, &r, out))
					return false;
				break;
			default:
				/* unknown segment type: skipped, for forward compatibility */
				break;
		}
	}
	return true;
}

bool
tcf_idset_contains(const TcfIdSet *set, int id)
{
	int			lo = 0;
	int			hi = set->count - 1;

	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (set->ids[mid] == id)
			return true;
		if (set->ids[mid] < id)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return false;
}
