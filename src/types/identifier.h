/*-------------------------------------------------------------------------
 *
 * identifier.h
 *	  The cdp.identifier type: a normalised (kind, value) pair.
 *
 * An identifier is stored as the varlena text "kind:value" of its normalised
 * form.  The kind matches [a-z][a-z0-9_]{0,31}, so the first ':' always ends
 * it; the value may contain further colons.  Two identifiers are the same
 * customer key exactly when their stored bytes are equal.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_TYPES_IDENTIFIER_H
#define CDP_TYPES_IDENTIFIER_H

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/guc.h"

#define IDENTIFIER_MAX_KIND_LEN		32
#define IDENTIFIER_MAX_VALUE_LEN	1024	/* bytes of the normalised value */

/* GUC cdp.default_phone_region, defined in cdp.c */
extern char *cdp_default_phone_region;
extern bool cdp_check_phone_region(char **newval, void **extra, GucSource source);

/*
 * Normalise one identifier without raising an error.
 *
 * kind must be NUL-terminated; value is len bytes in the server encoding.
 * On success appends "kind:value" (normalised, server encoding) to out and
 * returns NULL.  On failure returns a palloc'd sentence naming the rule the
 * input broke (for errdetail, or to set a message aside in a batch) and
 * leaves out in an unspecified state.
 */
extern char *identifier_normalize(const char *kind, const char *value, int len,
								  StringInfo out);

/* Why a (lower-case) kind name is not valid, or NULL. */
extern char *identifier_kind_error(const char *kind);

/* Build a cdp.identifier datum from text input, raising 22P02 on bad input. */
extern Datum identifier_from_cstring(const char *str);

/* Split a detoasted identifier into its kind and value (not NUL-terminated). */
extern void identifier_split(const struct varlena *id,
							 const char **kind, int *kindlen,
							 const char **value, int *valuelen);

#endif							/* CDP_TYPES_IDENTIFIER_H */
