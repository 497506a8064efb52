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
 * no index page at all.  Windows are read with the same conditions as over
 * a B-tree, as bitmap scans over the ranges whose minimum and maximum meet
 * them (and the ranges not summarized yet), every row rechecked; only the
 * cut at max_batch_rows, which needs order, counts its way up instead
 * (src/window.c).
 *
 * Before each batch the engine summarizes the full ranges at the end of
 * the source's tables, so that a window does not read all the rows
 * appended since the last VACUUM; it does that as each table's owner, and
 * only when no other session holds a lock it would wait for.  The planner
 * costs a BRIN scan by the column's correlation, taken as none without
 * statistics, so a table never analysed with rows has its tracking column
 * analysed before the first batch that has rows.
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
#include "access/xlog.h"
#include "catalog/dependency.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_index.h"
#include "catalog/pg_opclass.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
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

/*
 * The extension's BRIN operator class for xid8, or InvalidOid; looked up
 * without a check of the caller's rights on the schema, which the guards
 * on a source must not depend on
 */
static Oid
mb_brin_opclass(void)
{
	Oid			namespace = get_namespace_oid(MB_SCHEMA, true);

	if (!OidIsValid(namespace))
		return InvalidOid;
	return GetSysCacheOid3(CLAAMNAMENSP, Anum_pg_opclass_oid,
						   ObjectIdGetDatum(BRIN_AM_OID),
						   CStringGetDatum(MB_BRIN_OPCLASS),
						   ObjectIdGetDatum(namespace));
}

/*
 * The kind of an index as a tracking index: a valid one without predicate
 * or expressions, led by attnum
 */
static MbTrackingIndex
mb_index_kind(Relation index, AttrNumber attnum, Oid brin_opclass)
{
	Form_pg_index form = index->rd_index;

	if (!form->indisvalid || !form->indisready || !form->indislive ||
		form->indnkeyatts == 0 || form->indkey.values[0] != attnum ||
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
 * serves every window query; BRIN counts only when there is no B-tree).
 * With btrees, brins: the lists of their OIDs, of single-column ones only
 * when single.
 */
MbTrackingIndex
mb_tracking_index_of(Relation rel, AttrNumber attnum, bool single,
					 List **btrees, List **brins)
{
	List	   *indexes;
	Oid			brin_opclass;
	MbTrackingIndex best = MB_TRACKING_INDEX_NONE;
	ListCell   *lc;

	if (attnum == InvalidAttrNumber)
		return MB_TRACKING_INDEX_NONE;
	indexes = RelationGetIndexList(rel);
	brin_opclass = mb_brin_opclass();
	foreach(lc, indexes)
	{
		Relation	index = index_open(lfirst_oid(lc), AccessShareLock);
		MbTrackingIndex kind = mb_index_kind(index, attnum, brin_opclass);
		bool		listed = !single ||
			(index->rd_index->indnatts == 1 &&
			 !OidIsValid(get_index_constraint(lfirst_oid(lc))));

		if (kind == MB_TRACKING_INDEX_BTREE)
		{
			best = MB_TRACKING_INDEX_BTREE;
			if (btrees != NULL && listed)
				*btrees = lappend_oid(*btrees, lfirst_oid(lc));
		}
		else if (kind == MB_TRACKING_INDEX_BRIN)
		{
			if (best == MB_TRACKING_INDEX_NONE)
				best = MB_TRACKING_INDEX_BRIN;
			if (brins != NULL && listed)
				*brins = lappend_oid(*brins, lfirst_oid(lc));
		}
		index_close(index, AccessShareLock);
	}
	list_free(indexes);
	return best;
}

/* The tables of a source's hierarchy that hold rows and only a BRIN tracking index */
static List *
mb_brin_members(Oid source)
{
	List	   *members = NIL;
	ListCell   *lc;

	foreach(lc, mb_hierarchy_members(source, AccessShareLock))
	{
		Relation	rel = table_open(lfirst_oid(lc), NoLock);

		if (rel->rd_rel->relkind == RELKIND_RELATION &&
			mb_tracking_index_of(rel, get_attnum(RelationGetRelid(rel),
												 MB_TRACKING_COLUMN),
								 false, NULL, NULL) == MB_TRACKING_INDEX_BRIN)
			members = lappend_oid(members, RelationGetRelid(rel));
		table_close(rel, NoLock);
	}
	return members;
}

/*
 * The answers of mb_source_tracked_by_brin(), by source, forgotten at any
 * relcache invalidation: indexes and hierarchies change only by DDL, and
 * every batch asks.  An answer computed while an invalidation came in is not
 * kept.
 */
typedef struct MbBrinSource
{
	Oid			source;
	bool		brin;
} MbBrinSource;

static HTAB *brin_sources = NULL;
static uint64 brin_sources_generation = 0;

static void
mb_brin_sources_forget(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	MbBrinSource *entry;

	brin_sources_generation++;
	hash_seq_init(&status, brin_sources);
	while ((entry = hash_seq_search(&status)) != NULL)
		(void) hash_search(brin_sources, &entry->source, HASH_REMOVE, NULL);
}

/*
 * Whether a table of a source's hierarchy that holds rows has only a BRIN
 * tracking index: the window's cut at max_batch_rows cannot read it in
 * order, and the table is summarized before each batch.
 */
bool
mb_source_tracked_by_brin(Oid source)
{
	MbBrinSource *entry;
	uint64		generation;
	bool		brin;

	if (brin_sources == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(MbBrinSource);
		brin_sources = hash_create("microbatch BRIN sources", 16, &ctl,
								   HASH_ELEM | HASH_BLOBS);
		CacheRegisterRelcacheCallback(mb_brin_sources_forget, (Datum) 0);
	}
	entry = hash_search(brin_sources, &source, HASH_FIND, NULL);
	if (entry != NULL)
		return entry->brin;

	generation = brin_sources_generation;
	brin = mb_brin_members(source) != NIL;
	if (generation == brin_sources_generation)
	{
		entry = hash_search(brin_sources, &source, HASH_ENTER, NULL);
		entry->brin = brin;
	}
	return brin;
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
	ListCell   *lc;

	(void) mb_tracking_index_of(rel, attnum, true, &btrees, &brins);
	table_close(rel, NoLock);

	if (kind == MB_TRACKING_INDEX_BRIN && brins == NIL)
		mb_table_ddl(caller, psprintf("CREATE INDEX ON %s USING brin (%s %s.%s) "
									  "WITH (pages_per_range = %d)",
									  relname, MB_TRACKING_COLUMN, MB_SCHEMA,
									  MB_BRIN_OPCLASS, MB_BRIN_PAGES_PER_RANGE));
	else if (kind == MB_TRACKING_INDEX_BTREE && btrees == NIL)
		mb_table_ddl(caller, psprintf("CREATE INDEX ON %s (%s)", relname,
									  MB_TRACKING_COLUMN));
	foreach(lc, kind == MB_TRACKING_INDEX_BRIN ? btrees : brins)
		mb_table_ddl(caller, psprintf("DROP INDEX %s",
									  mb_qualified_relname(lfirst_oid(lc))));
	CommandCounterIncrement();

	btrees = brins = NIL;
	rel = table_open(relid, NoLock);
	if (kind == MB_TRACKING_INDEX_BRIN &&
		mb_tracking_index_of(rel, attnum, false, &btrees, NULL) == MB_TRACKING_INDEX_BTREE)
		ereport(NOTICE,
				(errmsg("B-tree index \"%s\" on %s serves the windows of table \"%s\"",
						get_rel_name(linitial_oid(btrees)), MB_TRACKING_COLUMN,
						RelationGetRelationName(rel)),
				 errdetail("It has more columns or backs a constraint, so it was kept; the BRIN index is used once no B-tree leads with the column.")));
	btrees = NIL;
	(void) mb_tracking_index_of(rel, attnum, true, &btrees, &brins);
	table_close(rel, NoLock);
	return kind == MB_TRACKING_INDEX_BRIN ? linitial_oid(brins) : linitial_oid(btrees);
}

/*
 * Summarize the full page ranges at the end of a BRIN tracking index that
 * are not summarized yet, walking back from the last full range to the
 * first summarized one, each range when its index lock is free.
 */
static void
mb_summarize_tail(Relation heap, Relation index)
{
	BlockNumber pages_per_range;
	BlockNumber heap_pages = RelationGetNumberOfBlocks(heap);
	BrinRevmap *revmap = brinRevmapInitialize(index, &pages_per_range, NULL);
	Buffer		buf = InvalidBuffer;
	BlockNumber first = heap_pages - heap_pages % pages_per_range;
	Oid			indexoid = RelationGetRelid(index);

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

	if (first + pages_per_range > heap_pages ||
		!ConditionalLockRelationOid(indexoid, ShareUpdateExclusiveLock))
		return;
	for (BlockNumber start = first; start + pages_per_range <= heap_pages;
		 start += pages_per_range)
	{
		CHECK_FOR_INTERRUPTS();
		(void) DirectFunctionCall2(brin_summarize_range,
								   ObjectIdGetDatum(indexoid),
								   Int64GetDatum(start));
	}
	UnlockRelationOid(indexoid, ShareUpdateExclusiveLock);
}

/* Run fn on a table as its owner, in a security-restricted operation */
static void
mb_as_table_owner(Relation rel, void (*fn) (Relation rel, AttrNumber attnum))
{
	Oid			saved_user;
	int			saved_sec_context;

	GetUserIdAndSecContext(&saved_user, &saved_sec_context);
	SetUserIdAndSecContext(rel->rd_rel->relowner,
						   saved_sec_context | SECURITY_RESTRICTED_OPERATION);
	PG_TRY();
	{
		fn(rel, get_attnum(RelationGetRelid(rel), MB_TRACKING_COLUMN));
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(saved_user, saved_sec_context);
	}
	PG_END_TRY();
}

/*
 * Run fn on each table of a pipeline's source that has only BRIN tracking
 * indexes, as the table's owner, if the lock that summarizing or analysing
 * takes is free: a batch never waits for maintenance (VACUUM, ANALYZE,
 * CREATE INDEX), and the next one does it.  Only for a pipeline whose
 * owner may still read the source: the batch would fail right after.
 */
static void
mb_for_brin_members(const MbPipeline *pipeline,
					void (*fn) (Relation rel, AttrNumber attnum))
{
	ListCell   *lc;

	if (RecoveryInProgress() || !mb_source_tracked_by_brin(pipeline->source) ||
		pg_class_aclcheck(pipeline->source, pipeline->owner, ACL_SELECT) != ACLCHECK_OK)
		return;
	foreach(lc, mb_brin_members(pipeline->source))
	{
		Oid			relid = lfirst_oid(lc);
		Relation	rel;

		if (!ConditionalLockRelationOid(relid, ShareUpdateExclusiveLock))
			continue;
		rel = table_open(relid, NoLock);
		mb_as_table_owner(rel, fn);
		table_close(rel, NoLock);
		UnlockRelationOid(relid, ShareUpdateExclusiveLock);
	}
}

static void
mb_summarize_table(Relation rel, AttrNumber attnum)
{
	List	   *brins = NIL;
	ListCell   *lc;

	(void) mb_tracking_index_of(rel, attnum, false, NULL, &brins);
	foreach(lc, brins)
	{
		Relation	index = index_open(lfirst_oid(lc), AccessShareLock);

		mb_summarize_tail(rel, index);
		index_close(index, AccessShareLock);
	}
}

/*
 * The planner costs a BRIN scan by the column's correlation, which it takes
 * as none without statistics: plans over the batch view would read the
 * whole table.  ANALYZE inside the batch keeps its lock until the batch
 * ends, but only once: afterwards the column has statistics.
 */
static void
mb_analyze_table(Relation rel, AttrNumber attnum)
{
	/* an empty table gets no statistics: it would be analysed every time */
	if (RelationGetNumberOfBlocks(rel) > 0 &&
		!SearchSysCacheExists3(STATRELATTINH,
							   ObjectIdGetDatum(RelationGetRelid(rel)),
							   Int16GetDatum(attnum), BoolGetDatum(false)))
		mb_table_ddl(rel->rd_rel->relowner,
					 psprintf("ANALYZE %s (%s)",
							  mb_qualified_relname(RelationGetRelid(rel)),
							  MB_TRACKING_COLUMN));
}

/* Before a batch: summarize the new full ranges of the source's BRIN indexes */
void
mb_tracking_index_summarize(const MbPipeline *pipeline)
{
	mb_for_brin_members(pipeline, mb_summarize_table);
}

/*
 * Once the window has rows (an ANALYZE of a table whose rows are not
 * visible yet would write no statistics, and run again every time): give
 * the tracking column of the source's BRIN tables statistics if it has none
 */
void
mb_tracking_index_analyze(const MbPipeline *pipeline)
{
	mb_for_brin_members(pipeline, mb_analyze_table);
}
