/*-------------------------------------------------------------------------
 *
 * hierarchy.c
 *	  Which tables make up a source: the tables below it (partitions,
 *	  inheritance children), the tables above a table, and the roots.
 *
 * A pipeline may read any table of a hierarchy, a partition as well as the
 * partitioned table above it, so what holds for a table depends on the
 * pipelines of its ancestors too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_inherits.h"
#include "storage/lmgr.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

#include "microbatch.h"

/*
 * A table and every table below it, each locked in lockmode until the end
 * of the transaction; the table comes first, parents before children.
 */
List *
mb_hierarchy_members(Oid relid, LOCKMODE lockmode)
{
	/* find_all_inheritors() locks the tables below only */
	if (lockmode != NoLock)
		LockRelationOid(relid, lockmode);
	return find_all_inheritors(relid, lockmode, NULL);
}

/*
 * A table and every table it inherits from, directly or not: partitioned
 * tables above a partition, parents of an inheritance child (there may be
 * several).
 */
List *
mb_table_and_ancestors(Oid relid)
{
	List	   *result = list_make1_oid(relid);
	Relation	inherits = table_open(InheritsRelationId, AccessShareLock);

	for (int i = 0; i < list_length(result); i++)
	{
		ScanKeyData key;
		SysScanDesc scan;
		HeapTuple	tuple;

		ScanKeyInit(&key, Anum_pg_inherits_inhrelid, BTEqualStrategyNumber,
					F_OIDEQ, ObjectIdGetDatum(list_nth_oid(result, i)));
		scan = systable_beginscan(inherits, InheritsRelidSeqnoIndexId, true,
								  NULL, 1, &key);
		while ((tuple = systable_getnext(scan)) != NULL)
			result = list_append_unique_oid(result,
											((Form_pg_inherits) GETSTRUCT(tuple))->inhparent);
		systable_endscan(scan);
	}
	table_close(inherits, AccessShareLock);
	return result;
}

/*
 * A partition of the table whose DETACH PARTITION ... CONCURRENTLY has not
 * been finished, or InvalidOid.  Such a partition is no longer read through
 * the table, nor listed among its members.
 */
Oid
mb_partition_detach_pending(Oid relid)
{
	Relation	inherits = table_open(InheritsRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	Oid			pending = InvalidOid;

	ScanKeyInit(&key, Anum_pg_inherits_inhparent, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(relid));
	scan = systable_beginscan(inherits, InheritsParentIndexId, true,
							  NULL, 1, &key);
	while ((tuple = systable_getnext(scan)) != NULL)
		if (((Form_pg_inherits) GETSTRUCT(tuple))->inhdetachpending)
			pending = ((Form_pg_inherits) GETSTRUCT(tuple))->inhrelid;
	systable_endscan(scan);
	table_close(inherits, AccessShareLock);
	return pending;
}

/* The tables at the top of a table's hierarchies: ancestors without parents */
List *
mb_hierarchy_roots(Oid relid)
{
	List	   *roots = NIL;
	ListCell   *lc;

	foreach(lc, mb_table_and_ancestors(relid))
		if (!has_superclass(lfirst_oid(lc)))
			roots = lappend_oid(roots, lfirst_oid(lc));
	return roots;
}

