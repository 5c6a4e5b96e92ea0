/*-------------------------------------------------------------------------
 *
 * scan.c
 *	  Reading a whole cdp storage table (every partition of a partitioned
 *	  one) with a plain sequential scan, for cdp.restitch().
 *
 * A rebuild reads millions of rows and keeps a few columns of each.  Going
 * through SPI would copy every row into a tuple table and deform it again
 * column by column; here each row is deformed once, up to the last column
 * asked for, and handed over as Datums that point into the buffer page
 * (valid only during the callback).
 *
 * Every table is read through a small ring of buffers (a bulk-read
 * strategy), as PostgreSQL reads tables larger than a quarter of shared
 * buffers: a rebuild reads each page once, and pages not cached already
 * should not evict the working set of ingestion and audiences -- nor make
 * the rebuild itself write out the dirty buffers they would replace.
 *
 * Visibility is what a SPI query at the same point would see: a fresh
 * snapshot in READ COMMITTED, taken after the caller's locks, which
 * includes the transaction's own earlier writes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "identity/store.h"

static void
scan_one(Relation rel, int ncols, const char *const *columns, Snapshot snapshot,
		 ScanRowFn fn, void *arg)
{
	TupleDesc	desc = RelationGetDescr(rel);
	AttrNumber	attnums[SCAN_MAX_COLUMNS];
	int			natts = 0;
	Datum	   *all = palloc(sizeof(Datum) * desc->natts);
	bool	   *allnull = palloc(sizeof(bool) * desc->natts);
	Datum		values[SCAN_MAX_COLUMNS];
	bool		isnull[SCAN_MAX_COLUMNS];
	TableScanDesc scan;
	uint64		n = 0;

	/* By name: a partition's column numbers may differ from its parent's. */
	for (int i = 0; i < ncols; i++)
	{
		attnums[i] = get_attnum(RelationGetRelid(rel), columns[i]);
		if (attnums[i] == InvalidAttrNumber)
			elog(ERROR, "cdp: column \"%s\" of \"%s\" not found", columns[i], RelationGetRelationName(rel));
		natts = Max(natts, attnums[i]);
	}

	scan = table_beginscan(rel, snapshot, 0, NULL);
	if (rel->rd_tableam == GetHeapamTableAmRoutine())
	{
		HeapTuple	tup;

		/*
		 * heapam chose a ring for a large table already; give a smaller one
		 * the same (heap_endscan() frees it).  PostgreSQL 15 has no API for
		 * this: it relies on heapam's scan descriptor, and a rescan would
		 * reset it (this scan is never rescanned).
		 */
		if (((HeapScanDesc) scan)->rs_strategy == NULL)
			((HeapScanDesc) scan)->rs_strategy = GetAccessStrategy(BAS_BULKREAD);

		/*
		 * heap_getnext() rather than a slot: no buffer pin per row.  The
		 * tuple points into the page, valid until the next call.
		 */
		while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
		{
			if ((++n & 4095) == 0)
				CHECK_FOR_INTERRUPTS();
			heap_deform_tuple(tup, desc, all, allnull);
			for (int i = 0; i < ncols; i++)
			{
				values[i] = all[attnums[i] - 1];
				isnull[i] = allnull[attnums[i] - 1];
			}
			fn(arg, values, isnull);
		}
	}
	else
	{
		/* another table access method (a columnar partition, say) */
		TupleTableSlot *slot = table_slot_create(rel, NULL);

		while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
		{
			if ((++n & 4095) == 0)
				CHECK_FOR_INTERRUPTS();
			slot_getsomeattrs(slot, natts);
			for (int i = 0; i < ncols; i++)
			{
				values[i] = slot->tts_values[attnums[i] - 1];
				isnull[i] = slot->tts_isnull[attnums[i] - 1];
			}
			fn(arg, values, isnull);
		}
		ExecDropSingleTupleTableSlot(slot);
	}
	table_endscan(scan);
	pfree(all);
	pfree(allnull);
}

/*
 * Call fn for every visible row of cdp.<table> (of each of its partitions,
 * in no particular order) with the values of the named columns.
 */
void
scan_storage(const char *table, int ncols, const char *const *columns, ScanRowFn fn, void *arg)
{
	Oid			relid = cdp_relid(table);
	Relation	rel;
	AclResult	aclresult;
	List	   *rels;
	ListCell   *lc;

	Assert(ncols <= SCAN_MAX_COLUMNS);
	aclresult = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, table);

	/* As SPI does for each statement: a new snapshot that sees our own writes. */
	PushActiveSnapshot(GetTransactionSnapshot());
	CommandCounterIncrement();
	UpdateActiveSnapshotCommandId();

	rel = table_open(relid, AccessShareLock);
	rels = rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE
		? find_all_inheritors(relid, AccessShareLock, NULL)
		: list_make1_oid(relid);
	foreach(lc, rels)
	{
		Relation	r = table_open(lfirst_oid(lc), NoLock);

		if (RELKIND_HAS_STORAGE(r->rd_rel->relkind))
			scan_one(r, ncols, columns, GetActiveSnapshot(), fn, arg);
		table_close(r, NoLock);
	}
	table_close(rel, NoLock);
	PopActiveSnapshot();
}
