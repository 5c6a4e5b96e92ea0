/*-------------------------------------------------------------------------
 *
 * bigmem.c
 *	  Large allocations backed by transparent huge pages, released with a
 *	  memory context.
 *
 * cdp.restitch() builds an in-memory graph of hundreds of megabytes
 * (identifiers, profiles, hash tables, events) and touches all of it once.
 * With 4 kB pages every first touch is a page fault; on virtual machines a
 * fault costs tens of microseconds, and the faults alone took longer than
 * the replay.  Allocations of 2 MB and more are therefore mapped directly,
 * aligned to 2 MB and marked MADV_HUGEPAGE (the kernel's "madvise" mode,
 * Debian's default): one fault per 2 MB.  Smaller ones, and platforms
 * without madvise, use the owner memory context.  Mapped memory comes
 * zeroed, like the context's; all of it is unmapped when the owner context
 * is reset or deleted, on error too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/mman.h>

#include "utils/memutils.h"

#include "identity/bigmem.h"

#define BIGMEM_PAGE	((Size) 2 * 1024 * 1024)

typedef struct BigRegion
{
	char	   *base;
	Size		size;
} BigRegion;

struct BigMem
{
	MemoryContext owner;
	int			nregions;
	int			maxregions;
	BigRegion  *regions;
	MemoryContextCallback cb;
};

static void
bigmem_release(void *arg)
{
#ifdef MADV_HUGEPAGE
	BigMem	   *bm = arg;

	for (int i = 0; i < bm->nregions; i++)
		munmap(bm->regions[i].base, bm->regions[i].size);
	bm->nregions = 0;
#endif
}

BigMem *
bigmem_create(MemoryContext owner)
{
	BigMem	   *bm = MemoryContextAllocZero(owner, sizeof(BigMem));

	bm->owner = owner;
	bm->cb.func = bigmem_release;
	bm->cb.arg = bm;
	MemoryContextRegisterResetCallback(owner, &bm->cb);
	return bm;
}

/* size bytes, zeroed. */
void *
bigmem_alloc(BigMem *bm, Size size)
{
#ifdef MADV_HUGEPAGE
	char	   *map;
	char	   *base;
	Size		len;

	if (size < BIGMEM_PAGE)
		return MemoryContextAllocExtended(bm->owner, size, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);

	/* Map one page more than needed, then trim to a 2 MB boundary. */
	len = TYPEALIGN(BIGMEM_PAGE, size);
	map = mmap(NULL, len + BIGMEM_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Failed on request of size %zu for the identity graph.", size)));
	base = (char *) TYPEALIGN(BIGMEM_PAGE, map);
	if (base > map)
		munmap(map, base - map);
	munmap(base + len, (map + len + BIGMEM_PAGE) - (base + len));
	(void) madvise(base, len, MADV_HUGEPAGE);	/* a hint: fine if refused */

	if (bm->nregions == bm->maxregions)
	{
		bm->maxregions = Max(8, bm->maxregions * 2);
		bm->regions = bm->regions
			? repalloc(bm->regions, bm->maxregions * sizeof(BigRegion))
			: MemoryContextAlloc(bm->owner, bm->maxregions * sizeof(BigRegion));
	}
	bm->regions[bm->nregions].base = base;
	bm->regions[bm->nregions].size = len;
	bm->nregions++;
	return base;
#else
	return MemoryContextAllocExtended(bm->owner, size, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
#endif
}

void
bigmem_free(BigMem *bm, void *p)
{
#ifdef MADV_HUGEPAGE
	for (int i = 0; i < bm->nregions; i++)
		if (bm->regions[i].base == p)
		{
			munmap(p, bm->regions[i].size);
			bm->regions[i] = bm->regions[--bm->nregions];
			return;
		}
#endif
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
