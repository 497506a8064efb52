/*-------------------------------------------------------------------------
 *
 * tracking_index.c
 *	  The index on a source's tracking column: a B-tree (the default) or a
 *	  BRIN index of the extension's xid8 minmax operator class.
 *
 * A B-tree costs one index entry, and one WAL record, per inserted row: a
 * tenth to a fifth of a bulk load's time.  A BRIN index costs nearly
 * nothing to insert into: the tracking values of a heap that is only
 * appended to rise with its pages, so a range of pages is summarized once,
 * when it is full, and rows landing in the range still being filled touch
 * no index page at all.  Windows are then read with bitmap scans over the
 * ranges whose minimum and maximum meet the window (and the ranges not
 * summarized yet), every row rechecked against the window; the cut at
 * max_batch_rows counts its way up instead of reading the first rows in
 * order (src/window.c).
 *
 * The engine summarizes the full ranges at the table's end before each
 * batch, so that a window does not read all the rows appended since the
 * last VACUUM.  It does that only when no other session holds a
 * conflicting lock, and as the table's owner (summarizing runs the
 * operator class's functions, which are built in).
 *
 * Rows that land in pages freed by VACUUM (after retention or deletes)
 * widen the summary of an old range, which every later window then reads:
 * the results stay exact, the reads grow.  A BRIN index suits append-only
 * sources; docs/sql-reference.md says so.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/brin.h"
#include "access/brin_revmap.h"
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/index.h"
#include "catalog/pg_am.h"
#include "catalog/pg_index.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "microbatch.h"

/*
 * Pages per BRIN range of the engine's index: a window reads at least one
 * range, and the range still being filled, so ranges are kept small (the
 * index stays tiny all the same: one tuple per 128 kB of table).
 */
#define MB_BRIN_PAGES_PER_RANGE 16

/* The extension's BRIN operator class for xid8, or InvalidOid */
static Oid
mb_brin_opclass(void)
{
	return get_opclass_oid(BRIN_AM_OID,
						   list_make2(makeString(MB_SCHEMA),
									  makeString(MB_BRIN_OPCLASS)),
						   true);
}

/* The kind of a tracking index of rel: one without predicate led by attnum */
static MbTrackingIndex
mb_index_kind(Relation index, AttrNumber attnum, Oid brin_opclass)
{
	if (index->rd_index->indnkeyatts == 0 ||
		index->rd_index->indkey.values[0] != attnum ||
		!heap_attisnull(index->rd_indextuple, Anum_pg_index_indpred, NULL) ||
		!heap_attisnull(index->rd_indextuple, Anum_pg_index_indexprs, NULL))
		return MB_TRACKING_INDEX_NONE;
	if (index->rd_rel->relam == BTREE_AM_OID)
		return MB_TRACKING_INDEX_BTREE;
	if (index->rd_rel->relam == BRIN_AM_OID && OidIsValid(brin_opclass) &&
		index->rd_opcintype[0] == XID8OID &&
		index->rd_opfamily[0] == get_opclass_family(brin_opclass))
		return MB_TRACKING_INDEX_BRIN;
	return MB_TRACKING_INDEX_NONE;
}

/*
 * The tracking indexes of a table, and the best of their kinds (a B-tree
 * serves every window query better; BRIN only when there is no B-tree).
 * With indexes, the list of their OIDs and kinds, for the switch.
 */
MbTrackingIndex
mb_tracking_index_of(Relation rel, AttrNumber attnum, List **btrees,
					 List **brins)
{
	List	   *indexes = RelationGetIndexList(rel);
	Oid			brin_opclass = mb_brin_opclass();
	MbTrackingIndex best = MB_TRACKING_INDEX_NONE;
	ListCell   *lc;

	if (attnum == InvalidAttrNumber)
		return MB_TRACKING_INDEX_NONE;
	foreach(lc, indexes)
	{
		Relation	index = index_open(lfirst_oid(lc), AccessShareLock);
		MbTrackingIndex kind = mb_index_kind(index, attnum, brin_opclass);
		bool		single = index->rd_index->indnatts == 1 &&
			!OidIsValid(get_index_constraint(lfirst_oid(lc)));

		if (kind == MB_TRACKING_INDEX_BTREE)
		{
			best = MB_TRACKING_INDEX_BTREE;
			if (btrees != NULL && single)
				*btrees = lappend_oid(*btrees, lfirst_oid(lc));
		}
		else if (kind == MB_TRACKING_INDEX_BRIN)
		{
			if (best == MB_TRACKING_INDEX_NONE)
				best = MB_TRACKING_INDEX_BRIN;
			if (brins != NULL && single)
				*brins = lappend_oid(*brins, lfirst_oid(lc));
		}
		index_close(index, AccessShareLock);
	}
	list_free(indexes);
	return best;
}

/*
 * Whether the window queries over a source must do without ordered index
 * scans and array searches: some table of its hierarchy that holds rows
 * has only a BRIN tracking index.
 */
bool
mb_source_tracked_by_brin(Oid source)
{
	ListCell   *lc;

	foreach(lc, mb_hierarchy_members(source, AccessShareLock))
	{
		Relation	rel = table_open(lfirst_oid(lc), NoLock);
		bool		brin = false;

		if (rel->rd_rel->relkind == RELKIND_RELATION)
			brin = mb_tracking_index_of(rel, get_attnum(RelationGetRelid(rel),
														MB_TRACKING_COLUMN),
										NULL, NULL) == MB_TRACKING_INDEX_BRIN;
		table_close(rel, NoLock);
		if (brin)
			return true;
	}
	return false;
}

/*
 * Give a source table the tracking index of the given kind, dropping the
 * single-column ones of the other kind, as caller, who owns it.  Returns
 * the index.
 */
Oid
mb_tracking_index_set(Oid relid, MbTrackingIndex kind, Oid caller)
{
	Relation	rel = table_open(relid, ShareLock);
	const char *relname = mb_qualified_relname(relid);
	AttrNumber	attnum = get_attnum(relid, MB_TRACKING_COLUMN);
	List	   *btrees = NIL;
	List	   *brins = NIL;
	List	   *drop;
	ListCell   *lc;
	Oid			index;

	(void) mb_tracking_index_of(rel, attnum, &btrees, &brins);
	table_close(rel, NoLock);

	if (kind == MB_TRACKING_INDEX_BRIN && brins == NIL)
		mb_table_ddl(caller, psprintf("CREATE INDEX ON %s USING brin (%s %s.%s) "
									  "WITH (pages_per_range = %d)",
									  relname, MB_TRACKING_COLUMN, MB_SCHEMA,
									  MB_BRIN_OPCLASS, MB_BRIN_PAGES_PER_RANGE));
	else if (kind == MB_TRACKING_INDEX_BTREE && btrees == NIL)
		mb_table_ddl(caller, psprintf("CREATE INDEX ON %s (%s)", relname,
									  MB_TRACKING_COLUMN));
	drop = kind == MB_TRACKING_INDEX_BRIN ? btrees : brins;
	foreach(lc, drop)
		mb_table_ddl(caller, psprintf("DROP INDEX %s",
									  mb_qualified_relname(lfirst_oid(lc))));
	CommandCounterIncrement();

	btrees = brins = NIL;
	rel = table_open(relid, NoLock);
	(void) mb_tracking_index_of(rel, attnum, &btrees, &brins);
	table_close(rel, NoLock);
	index = kind == MB_TRACKING_INDEX_BRIN ? linitial_oid(brins) : linitial_oid(btrees);
	return index;
}

/*
 * Summarize the full page ranges at the end of a BRIN tracking index that
 * are not summarized yet, walking back from the last full range to the
 * first summarized one.  Returns how many ranges were summarized.
 */
static int64
mb_summarize_tail(Relation heap, Relation index)
{
	BlockNumber pages_per_range;
	BlockNumber heap_pages = RelationGetNumberOfBlocks(heap);
	BrinRevmap *revmap = brinRevmapInitialize(index, &pages_per_range, NULL);
	Buffer		buf = InvalidBuffer;
	BlockNumber first = heap_pages - heap_pages % pages_per_range;
	int64		summarized = 0;

	while (first >= pages_per_range)
	{
		OffsetNumber off;
		Size		size;
		BrinTuple  *tuple;

		CHECK_FOR_INTERRUPTS();
		tuple = brinGetTupleForHeapBlock(revmap, first - pages_per_range, &buf,
										 &off, &size, BUFFER_LOCK_SHARE, NULL);
		if (tuple != NULL)
		{
			LockBuffer(buf, BUFFER_LOCK_UNLOCK);
			break;
		}
		first -= pages_per_range;
	}
	if (BufferIsValid(buf))
		ReleaseBuffer(buf);
	brinRevmapTerminate(revmap);

	for (BlockNumber start = first; start + pages_per_range <= heap_pages;
		 start += pages_per_range)
	{
		CHECK_FOR_INTERRUPTS();
		summarized += DatumGetInt32(DirectFunctionCall2(brin_summarize_range,
														ObjectIdGetDatum(RelationGetRelid(index)),
														Int64GetDatum(start)));
	}
	return summarized;
}

/*
 * Before a batch over a source whose table has a BRIN tracking index,
 * summarize the index's full ranges at the end of the table.  Skipped when
 * another session holds a lock that summarizing would wait for (VACUUM,
 * ANALYZE, CREATE INDEX): a batch never waits for maintenance, and the
 * next one summarizes.  Summarizing locks the table only while it runs,
 * and runs as the table's owner, whose right it is.
 */
void
mb_tracking_index_summarize(Oid source)
{
	Relation	rel;
	AttrNumber	attnum;
	List	   *brins = NIL;
	Oid			saved_user;
	int			saved_sec_context;
	ListCell   *lc;

	if (RecoveryInProgress())
		return;
	rel = table_open(source, AccessShareLock);
	attnum = get_attnum(source, MB_TRACKING_COLUMN);
	if (rel->rd_rel->relkind != RELKIND_RELATION ||
		mb_tracking_index_of(rel, attnum, NULL, &brins) != MB_TRACKING_INDEX_BRIN)
	{
		table_close(rel, NoLock);
		return;
	}
	if (!ConditionalLockRelationOid(source, ShareUpdateExclusiveLock))
	{
		table_close(rel, NoLock);
		return;
	}

	GetUserIdAndSecContext(&saved_user, &saved_sec_context);
	SetUserIdAndSecContext(rel->rd_rel->relowner,
						   saved_sec_context | SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		foreach(lc, brins)
		{
			Relation	index = index_open(lfirst_oid(lc), AccessShareLock);

			(void) mb_summarize_tail(rel, index);
			index_close(index, AccessShareLock);
		}
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(saved_user, saved_sec_context);
	}
	PG_END_TRY();

	/*
	 * The planner costs a BRIN scan by the column's correlation, which is
	 * taken as none without statistics: plans over the batch view would
	 * read the whole table.  A table never analysed with rows (autovacuum
	 * off, or not there yet) has its tracking column analysed, once.
	 */
	if (!SearchSysCacheExists3(STATRELATTINH, ObjectIdGetDatum(source),
							   Int16GetDatum(attnum), BoolGetDatum(false)) &&
		RelationGetNumberOfBlocks(rel) > 0)
		mb_table_ddl(rel->rd_rel->relowner,
					 psprintf("ANALYZE %s (%s)", mb_qualified_relname(source),
							  MB_TRACKING_COLUMN));
	UnlockRelationOid(source, ShareUpdateExclusiveLock);
	table_close(rel, NoLock);
}
