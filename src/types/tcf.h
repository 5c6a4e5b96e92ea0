/*-------------------------------------------------------------------------
 *
 * tcf.h
 *	  Decoder for IAB TCF v2.x Transparency & Consent strings ("TC strings").
 *
 * A TC string is one or more segments separated by '.'.  Each segment is
 * base64url text (A-Z a-z 0-9 - _), 6 bits per character, read as a bit
 * stream, most significant bit first.  The first segment is the core
 * segment:
 *
 *	Version(6) Created(36) LastUpdated(36) CmpId(12) CmpVersion(12)
 *	ConsentScreen(6) ConsentLanguage(12) VendorListVersion(12)
 *	TcfPolicyVersion(6) IsServiceSpecific(1) UseNonStandardTexts(1)
 *	SpecialFeatureOptIns(12) PurposesConsent(24) PurposesLITransparency(24)
 *	PurposeOneTreatment(1) PublisherCC(12)
 *	vendor consents, vendor legitimate interests (each a vendor section:
 *	  MaxVendorId(16) IsRangeEncoding(1) then either a MaxVendorId-bit
 *	  bitfield or NumEntries(12) x [IsARange(1) Start(16) [End(16)]])
 *	NumPubRestrictions(12) x [PurposeId(6) RestrictionType(2)
 *	  NumEntries(12) x range entry]
 *
 * Every later segment starts with SegmentType(3): 1 = DisclosedVendors and
 * 2 = AllowedVendors (a vendor section each), 3 = PublisherTC
 * (PubPurposesConsent(24) PubPurposesLITransparency(24)
 * NumCustomPurposes(6) CustomPurposesConsent(N)
 * CustomPurposesLITransparency(N)).  Created/LastUpdated are deciseconds
 * since the Unix epoch, UTC.
 *
 * Decisions where the specification leaves room (strict but practical):
 *
 *	- Alphabet: base64url only.  '+' and '/' are rejected.  '=' padding is
 *	  tolerated only at the end of a segment, at most two, and only when it
 *	  completes a 4-character group (what a padding base64 encoder emits;
 *	  iabtcf-java accepts such strings).  Padding carries no bits.  Nothing
 *	  else (no whitespace) is accepted: callers trim if they want to.
 *	- Segment order: the first segment must be the core segment (it has no
 *	  type field, so it can only be recognised by position).  Optional
 *	  segments may follow in any order.  Segment type 0 after the first
 *	  segment is a second core segment and is rejected; types 4-7 are
 *	  skipped unread.  No segment type may appear twice (so a string has at
 *	  most 8 segments), and empty segments ("..", trailing '.') are errors.
 *	- Only version 2 is accepted.  Unused trailing bits of a segment are
 *	  ignored, whatever their value.
 *	- TcfPolicyVersion >= 4 (TCF v2.2): PurposesLITransparency must not
 *	  contain purposes 3, 4, 5 or 6.  The rule is applied to the core
 *	  segment only, as the specification states it; the PublisherTC
 *	  segment's legitimate-interest bits are returned as encoded.
 *	- ConsentLanguage / PublisherCC letters must be 0..25 ('A'..'Z').
 *	- Vendor ids are 1..65535: a range entry starting at 0, ending before
 *	  it starts, or (in a vendor section) ending beyond MaxVendorId is an
 *	  error.  Ranges may overlap and come in any order; every id set is
 *	  returned sorted ascending without duplicates.
 *	- Publisher restrictions: purpose id 0 and restriction type 3
 *	  ("undefined" in the specification) are errors.  Entries repeating a
 *	  (purpose, type) pair are merged: the pair is reported once, at the
 *	  position of its first occurrence, with the union of the vendors.
 *	  Vendors listed under several types for one purpose are kept as
 *	  encoded.
 *	- Amplification guard: a decode may produce at most TCF_MAX_TOTAL_IDS
 *	  ids over all sets (range entries let a few bytes name 65535 vendors).
 *
 * Errors say what is wrong and where.  Positions of characters are 1-based
 * offsets in the whole string; bit offsets are 0-based within a segment;
 * segments are numbered from 1 (the core segment is segment 1).
 *
 * This file is plain C99 and does not depend on PostgreSQL.
 *
 * src/types/tcf.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_TCF_H
#define CDP_TCF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Upper bound on ids produced by one decode, summed over all sets. */
#define TCF_MAX_TOTAL_IDS		(1 << 20)

/* Publisher restriction types. */
#define TCF_RESTRICTION_NOT_ALLOWED		0
#define TCF_RESTRICTION_REQUIRE_CONSENT	1
#define TCF_RESTRICTION_REQUIRE_LI		2

/*
 * Memory comes from the caller (palloc in PostgreSQL).  It must return
 * suitably aligned memory; NULL is reported as "out of memory".  The
 * decoder frees nothing.
 */
typedef void *(*TcfAllocFunc) (void *alloc_ctx, size_t size);

/* A set of ids (purposes, features or vendors): ascending, no duplicates. */
typedef struct TcfIdSet
{
	int			count;
	int		   *ids;			/* NULL when count is 0 */
} TcfIdSet;

typedef struct TcfRestriction
{
	int			purpose;		/* 1..63 */
	int			type;			/* TCF_RESTRICTION_* */
	TcfIdSet	vendors;
} TcfRestriction;

typedef struct TcfDecoded
{
	int			version;
	int64_t		created_ds;		/* deciseconds since Unix epoch, UTC */
	int64_t		last_updated_ds;
	int			cmp_id;
	int			cmp_version;
	int			consent_screen;
	char		consent_language[3];	/* two letters, NUL-terminated */
	int			vendor_list_version;
	int			policy_version;
	bool		is_service_specific;
	bool		use_non_standard_texts;
	bool		purpose_one_treatment;
	char		publisher_cc[3];	/* two letters, NUL-terminated */
	TcfIdSet	special_feature_optins;
	TcfIdSet	purpose_consents;
	TcfIdSet	purpose_legitimate_interests;
	TcfIdSet	vendor_consents;
	TcfIdSet	vendor_legitimate_interests;

	/* one per distinct (purpose, type), in order of first appearance */
	int			n_restrictions;
	TcfRestriction *restrictions;

	bool		has_disclosed_vendors;
	bool		has_allowed_vendors;
	bool		has_publisher_tc;
	TcfIdSet	disclosed_vendors;
	TcfIdSet	allowed_vendors;
	TcfIdSet	pub_purpose_consents;
	TcfIdSet	pub_purpose_legitimate_interests;
	TcfIdSet	pub_custom_purpose_consents;
	TcfIdSet	pub_custom_purpose_legitimate_interests;
} TcfDecoded;

/*
 * Decode the len bytes at str (no terminating NUL needed) into *out.
 * On failure returns false and writes a one-line message into errbuf
 * (truncated to errbuflen); *out is then partially filled and must not be
 * used.
 */
extern bool tcf_decode(const char *str, size_t len, TcfDecoded *out,
					   TcfAllocFunc alloc, void *alloc_ctx,
					   char *errbuf, size_t errbuflen);

/* Binary search in a decoded id set. */
extern bool tcf_idset_contains(const TcfIdSet *set, int id);

#endif							/* CDP_TCF_H */
