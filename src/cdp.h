/*-------------------------------------------------------------------------
 *
 * cdp.h
 *	  Declarations shared by every capability of the cdp extension: the
 *	  library version and the check for functions that need the library to
 *	  be preloaded.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_H
#define CDP_H

#ifndef CDP_VERSION
#error "CDP_VERSION must be defined by the build (see Makefile)"
#endif

/* Raise SQLSTATE 55000 unless cdp was loaded by shared_preload_libraries. */
extern void cdp_require_preload(const char *what);

#endif							/* CDP_H */
