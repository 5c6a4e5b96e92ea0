/*-------------------------------------------------------------------------
 *
 * phone.h
 *	  C interface of the libphonenumber shim (phone.cpp).
 *
 * The shim never throws and never calls into PostgreSQL: errors come back
 * as text in a caller-supplied buffer, so no C++ frame is ever crossed by
 * longjmp.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_TYPES_PHONE_H
#define CDP_TYPES_PHONE_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C"
{
#endif

/* E.164 is at most 15 digits after '+'. */
#define PHONE_E164_BUFSIZE 20

/*
 * Parse number (UTF-8, len bytes) as written in region (ISO 3166-1 alpha-2,
 * used only when the number has no international prefix) and write its
 * E.164 form ("+4930123456") into out.  Returns false and a sentence in err
 * when the number cannot be parsed or is not a valid number.
 */
extern bool phone_to_e164(const char *number, size_t len, const char *region,
						  char out[PHONE_E164_BUFSIZE], char *err, size_t errlen);

/* Does libphonenumber know this region code (upper-case)? */
extern bool phone_region_supported(const char *region);

#ifdef __cplusplus
}
#endif

#endif							/* CDP_TYPES_PHONE_H */
