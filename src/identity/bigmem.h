/*-------------------------------------------------------------------------
 *
 * bigmem.h
 *	  Large allocations backed by transparent huge pages, released with a
 *	  memory context.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CDP_IDENTITY_BIGMEM_H
#define CDP_IDENTITY_BIGMEM_H

typedef struct BigMem BigMem;

extern BigMem *bigmem_create(MemoryContext owner);
extern void *bigmem_alloc(BigMem *bm, Size size);
extern void *bigmem_realloc(BigMem *bm, void *p, Size oldsize, Size newsize);
extern void bigmem_free(BigMem *bm, void *p);

#endif							/* CDP_IDENTITY_BIGMEM_H */
