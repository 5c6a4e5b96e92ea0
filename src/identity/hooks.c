/*-------------------------------------------------------------------------
 *
 * hooks.c
 *	  Notifying the layers above identity that profiles changed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "identity/identity.h"

#define MAX_HOOKS 8

static IdentityChangeHook hooks[MAX_HOOKS];
static int	nhooks = 0;

/* Called from the capabilities' XxxInit() in _PG_init. */
void
identity_add_change_hook(IdentityChangeHook hook)
{
	for (int i = 0; i < nhooks; i++)
		if (hooks[i] == hook)
			return;
	if (nhooks == MAX_HOOKS)
		elog(ERROR, "cdp: too many identity change hooks");
	hooks[nhooks++] = hook;
}

void
identity_changed(const int64 *profiles, int n)
{
	if (n == 0)
		return;
	for (int i = 0; i < nhooks; i++)
		hooks[i] (profiles, n);
}
