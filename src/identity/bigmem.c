/*-------------------------------------------------------------------------
 *
 * bigmem.c
 *	  Large allocations of the identity graph, released with a memory
 *	  context.
 *
 * cdp.restitch() builds an in-memory graph of hundreds of megabytes
 * (identifiers, profiles, hash tables, events) and allocates it in a few
 * large pieces through here.  The memory comes zeroed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"

#include "identity/bigmem.h"

struct BigMem
{
	MemoryContext owner;
};

BigMem *
bigmem_create(MemoryContext owner)
{
	BigMem	   *bm = MemoryContextAllocZero(owner, sizeof(BigMem));

	bm->owner = owner;
	return bm;
}

/* size bytes, zeroed. */
void *
bigmem_alloc(BigMem *bm, Size size)
{
	return MemoryContextAllocExtended(bm->owner, size, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
}

void
bigmem_free(BigMem *bm, void *p)
{
	pfree(p);
}

/* Grow (or shrink) p, keeping its first Min(oldsize, newsize) bytes; the rest is zeroed. */
void *
bigmem_realloc(BigMem *bm, void *p, Size oldsize, Size newsize)
{
	void	   *q = bigmem_alloc(bm, newsize);

	if (p != NULL)
	{
		memcpy(q, p, Min(oldsize, newsize));
		bigmem_free(bm, p);
	}
	return q;
}
