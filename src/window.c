/*-------------------------------------------------------------------------
 *
 * window.c
 *	  Batch windows: which source rows a batch covers.
 *
 * Every source row carries the full id of the top-level transaction that
 * wrote it (the tracking column).  A batch covers the rows whose
 * transaction is visible in the batch's upper snapshot and not in its lower
 * snapshot, which is the previous batch's upper snapshot.  A transaction is
 * visible in a snapshot once it has committed before the snapshot was taken,
 * whatever its id, so rows of transactions still running at the sweep belong
 * to a later batch, and every committed row falls in exactly one window.
 * This is PgQ's batch-between-two-snapshots design.
 *
 * While a batch runs, its window is "active" in this backend and the batch
 * views select exactly its rows through the functions below.  A transaction
 * in the window is either at or above lower.xmax, or was still running when
 * the lower snapshot was taken (lower.xip); so the views constrain the
 * tracking column to [lower.xmax, upper.xmax) or to lower.xip, which index
 * scans on the column serve.  The cost of a sweep follows the size of the
 * batch, not of the table, and a long-running transaction does not make
 * every sweep read all that committed since it began.
 *
 * This file also counts and fingerprints a window's rows, cuts a window at
 * max_batch_rows, finds the next batch's window from the ledger, and counts
 * the rows a pipeline has not processed yet.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/commit_ts.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/supportnodes.h"
#include "storage/bufmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/xid8.h"

#include "microbatch.h"

PG_FUNCTION_INFO_V1(microbatch_batch_lower_xid);
PG_FUNCTION_INFO_V1(microbatch_batch_upper_xid);
PG_FUNCTION_INFO_V1(microbatch_batch_lower_running);
PG_FUNCTION_INFO_V1(microbatch_batch_contains);
PG_FUNCTION_INFO_V1(microbatch_current_batch_id);
PG_FUNCTION_INFO_V1(microbatch_batch_row_kept);
PG_FUNCTION_INFO_V1(microbatch_batch_row_kept_support);
PG_FUNCTION_INFO_V1(microbatch_rows_digest_accum);

/*
 * The varlena layout of pg_snapshot, as defined in
 * src/backend/utils/adt/xid8funcs.c (unchanged since txid_snapshot).
 */
typedef struct PgSnapshotData
{
	int32		vl_len_;
	uint32		nxip;
	FullTransactionId xmin;
	FullTransactionId xmax;
	FullTransactionId xip[FLEXIBLE_ARRAY_MEMBER];
} PgSnapshotData;

/*
 * A snapshot in which every transaction there will ever be is visible: the
 * upper bound of "everything after a pipeline's position".
 */
#define MB_XID_INFINITY (UINT64CONST(1) << 62)

static MbWindow *active_window = NULL;

static void mb_snapshot_unpack(Datum snapshot, MbSnapshot *unpacked);

/* A pg_snapshot with no transaction running */
static Datum
mb_snapshot_from_bounds(uint64 xmin, uint64 xmax)
{
	PgSnapshotData *snap = palloc(offsetof(PgSnapshotData, xip));

	SET_VARSIZE(snap, offsetof(PgSnapshotData, xip));
	snap->nxip = 0;
	snap->xmin = FullTransactionIdFromU64(xmin);
	snap->xmax = FullTransactionIdFromU64(xmax);
	return PointerGetDatum(snap);
}

/* The lower snapshot of a pipeline's first batch: no transaction visible */
Datum
mb_empty_snapshot(void)
{
	return mb_snapshot_from_bounds(U64FromFullTransactionId(FirstNormalFullTransactionId),
								   U64FromFullTransactionId(FirstNormalFullTransactionId));
}

/*
 * A backend's snapshots never list its own transaction as running.  The upper
 * snapshot of a batch must: the batch's transaction may insert source rows
 * after the sweep too, and all of its rows belong to the first batch after
 * it commits.
 */
static Datum
mb_snapshot_add_running(Datum snapshot, FullTransactionId xid)
{
	PgSnapshotData *snap = (PgSnapshotData *) PG_DETOAST_DATUM(snapshot);
	PgSnapshotData *result;
	uint32		i = 0;
	uint32		j = 0;

	if (!FullTransactionIdIsValid(xid) ||
		!FullTransactionIdPrecedes(xid, snap->xmax))
		return snapshot;

	result = palloc(offsetof(PgSnapshotData, xip) +
					sizeof(FullTransactionId) * (snap->nxip + 1));
	result->xmin = FullTransactionIdPrecedes(xid, snap->xmin) ? xid : snap->xmin;
	result->xmax = snap->xmax;
	while (i < snap->nxip && FullTransactionIdPrecedes(snap->xip[i], xid))
		result->xip[j++] = snap->xip[i++];
	result->xip[j++] = xid;
	while (i < snap->nxip)
		result->xip[j++] = snap->xip[i++];
	result->nxip = j;
	SET_VARSIZE(result, offsetof(PgSnapshotData, xip) +
				sizeof(FullTransactionId) * j);
	return PointerGetDatum(result);
}

/*
 * A snapshot taken now, as a pg_snapshot.  With own_running, our own
 * transaction, if it has an id, counts as still running in it.
 */
Datum
mb_current_snapshot(bool own_running)
{
	Datum		snapshot;

	PushActiveSnapshot(GetTransactionSnapshot());
	snapshot = OidFunctionCall0(F_PG_CURRENT_SNAPSHOT);
	PopActiveSnapshot();
	if (!own_running)
		return snapshot;
	return mb_snapshot_add_running(snapshot, GetTopFullTransactionIdIfAny());
}

static int
mb_xid_cmp(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/* Most ids a rebind's position lists as running beyond the snapshot's */
#define MB_REBIND_MAX_GAP 1000000

/*
 * The position a rebound pipeline starts from, taken now: our transaction
 * and the given subtransaction ids of ours count as running, except those
 * marked seen, which count as committed; and so does every other id between
 * the snapshot's xmax and the highest of ours, whatever it is (another
 * transaction's, still running when we took the snapshot).
 */
Datum
mb_rebind_snapshot(const uint64 *ours, const bool *seen, int nours)
{
	MbSnapshot	base;
	uint64		top = U64FromFullTransactionId(GetTopFullTransactionId());
	uint64		xmax;
	uint64	   *xip;
	uint32		nxip = 0;
	uint32		size;
	PgSnapshotData *snap;

	mb_snapshot_unpack(mb_current_snapshot(false), &base);
	xmax = Max(base.xmax, top + 1);
	for (int i = 0; i < nours; i++)
		xmax = Max(xmax, ours[i] + 1);
	if (xmax - base.xmax > MB_REBIND_MAX_GAP)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many transactions started while the pipelines were rebound"),
				 errhint("Rebind them again when the server is quieter.")));

	size = base.nxip + nours + 1 + (uint32) (xmax - base.xmax);
	xip = palloc(sizeof(uint64) * size);
	memcpy(xip, base.xip, sizeof(uint64) * base.nxip);
	nxip = base.nxip;
	xip[nxip++] = top;
	for (int i = 0; i < nours; i++)
		if (!seen[i])
			xip[nxip++] = ours[i];
	for (uint64 xid = base.xmax; xid < xmax; xid++)
	{
		bool		mine = xid == top;

		for (int i = 0; i < nours && !mine; i++)
			mine = xid == ours[i];
		if (!mine)
			xip[nxip++] = xid;
	}
	qsort(xip, nxip, sizeof(uint64), mb_xid_cmp);

	snap = palloc(offsetof(PgSnapshotData, xip) + sizeof(FullTransactionId) * nxip);
	snap->xmin = FullTransactionIdFromU64(Min(base.xmin, xip[0]));
	snap->xmax = FullTransactionIdFromU64(xmax);
	snap->nxip = 0;
	for (uint32 i = 0; i < nxip; i++)
		if (i == 0 || xip[i] != xip[i - 1])
			snap->xip[snap->nxip++] = FullTransactionIdFromU64(xip[i]);
	SET_VARSIZE(snap, offsetof(PgSnapshotData, xip) +
				sizeof(FullTransactionId) * snap->nxip);
	return PointerGetDatum(snap);
}

/* Unpack a pg_snapshot into CurrentMemoryContext */
static void
mb_snapshot_unpack(Datum snapshot, MbSnapshot *unpacked)
{
	PgSnapshotData *snap = (PgSnapshotData *) PG_DETOAST_DATUM(snapshot);

	unpacked->xmin = U64FromFullTransactionId(snap->xmin);
	unpacked->xmax = U64FromFullTransactionId(snap->xmax);
	unpacked->nxip = snap->nxip;
	unpacked->xip = palloc(sizeof(uint64) * Max(snap->nxip, 1));
	for (uint32 i = 0; i < snap->nxip; i++)
		unpacked->xip[i] = U64FromFullTransactionId(snap->xip[i]);
}

/* Same rule as pg_visible_in_snapshot() */
static bool
mb_snapshot_visible(const MbSnapshot *snapshot, uint64 xid)
{
	uint32		low = 0;
	uint32		high = snapshot->nxip;

	if (xid < snapshot->xmin)
		return true;
	if (xid >= snapshot->xmax)
		return false;

	while (low < high)
	{
		uint32		mid = low + (high - low) / 2;

		if (snapshot->xip[mid] == xid)
			return false;
		if (snapshot->xip[mid] < xid)
			low = mid + 1;
		else
			high = mid;
	}
	return true;
}

void
mb_window_init(MbWindow *window, int32 pipeline_id, int64 batch_id,
			   Datum lower, Datum upper, uint64 xid_from, uint64 xid_to)
{
	window->pipeline_id = pipeline_id;
	window->batch_id = batch_id;
	window->replay = false;
	window->lower_datum = lower;
	window->upper_datum = upper;
	mb_snapshot_unpack(lower, &window->lower);
	mb_snapshot_unpack(upper, &window->upper);
	window->xid_from = xid_from;
	window->xid_to = xid_to;
	window->dropped = NULL;
	window->ndropped = 0;
	window->source_pages = -1;
}

/* The caller keeps the window alive until mb_window_deactivate() */
void
mb_window_activate(MbWindow *window)
{
	Assert(active_window == NULL);
	active_window = window;
}

void
mb_window_deactivate(void)
{
	active_window = NULL;
}

bool
mb_window_is_active(void)
{
	return active_window != NULL;
}

bool
mb_window_is_replay(void)
{
	return active_window != NULL && active_window->replay;
}

static MbWindow *
mb_window_for(int32 pipeline_id)
{
	if (active_window != NULL && active_window->pipeline_id == pipeline_id)
		return active_window;
	return NULL;
}

static uint64
mb_window_lower_bound(const MbWindow *window)
{
	return Max(window->lower.xmax, window->xid_from);
}

/* The lowest tracking value any transaction of the window can have */
static uint64
mb_window_first_xid(const MbWindow *window)
{
	return Max(window->lower.xmin, window->xid_from);
}

static uint64
mb_window_upper_bound(const MbWindow *window)
{
	if (window->xid_to != 0)
		return Min(window->upper.xmax, window->xid_to);
	return window->upper.xmax;
}

static bool
mb_window_contains(const MbWindow *window, uint64 xid)
{
	return xid >= window->xid_from &&
		xid < mb_window_upper_bound(window) &&
		mb_snapshot_visible(&window->upper, xid) &&
		!mb_snapshot_visible(&window->lower, xid);
}

/*
 * Inclusive lower bound of the tracking column for the transactions of the
 * active window that started after the lower snapshot
 */
Datum
microbatch_batch_lower_xid(PG_FUNCTION_ARGS)
{
	MbWindow   *window = mb_window_for(PG_GETARG_INT32(0));

	PG_RETURN_FULLTRANSACTIONID(FullTransactionIdFromU64(window ? mb_window_lower_bound(window) : 0));
}

/* Exclusive upper bound; equal to the lower bound outside a batch */
Datum
microbatch_batch_upper_xid(PG_FUNCTION_ARGS)
{
	MbWindow   *window = mb_window_for(PG_GETARG_INT32(0));

	PG_RETURN_FULLTRANSACTIONID(FullTransactionIdFromU64(window ? mb_window_upper_bound(window) : 0));
}

/* Transactions of the active window that were running at the lower snapshot */
Datum
microbatch_batch_lower_running(PG_FUNCTION_ARGS)
{
	MbWindow   *window = mb_window_for(PG_GETARG_INT32(0));
	Datum	   *xids;
	int			n = 0;

	if (window == NULL)
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(XID8OID));

	xids = palloc(sizeof(Datum) * Max(window->lower.nxip, 1));
	for (uint32 i = 0; i < window->lower.nxip; i++)
	{
		uint64		xid = window->lower.xip[i];

		if (xid >= window->xid_from && xid < mb_window_upper_bound(window))
			xids[n++] = FullTransactionIdGetDatum(FullTransactionIdFromU64(xid));
	}
	PG_RETURN_ARRAYTYPE_P(construct_array(xids, n, XID8OID, sizeof(uint64),
										  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

Datum
microbatch_batch_contains(PG_FUNCTION_ARGS)
{
	MbWindow   *window = mb_window_for(PG_GETARG_INT32(0));
	uint64		xid = U64FromFullTransactionId(PG_GETARG_FULLTRANSACTIONID(1));

	PG_RETURN_BOOL(window != NULL && mb_window_contains(window, xid));
}

int
mb_row_id_cmp(const void *a, const void *b)
{
	const MbRowId *left = a;
	const MbRowId *right = b;

	if (left->table != right->table)
		return left->table < right->table ? -1 : 1;
	return ItemPointerCompare((ItemPointer) &left->tid, (ItemPointer) &right->tid);
}

/* Whether drop expectations left a row of the active window in its batch */
Datum
microbatch_batch_row_kept(PG_FUNCTION_ARGS)
{
	MbWindow   *window = mb_window_for(PG_GETARG_INT32(0));
	MbRowId		row;

	if (window == NULL || window->ndropped == 0)
		PG_RETURN_BOOL(true);
	row.table = PG_GETARG_OID(1);
	row.tid = *(ItemPointer) PG_GETARG_POINTER(2);
	PG_RETURN_BOOL(bsearch(&row, window->dropped, window->ndropped,
						   sizeof(MbRowId), mb_row_id_cmp) == NULL);
}

/*
 * The planner would guess that a boolean function keeps a third of the
 * rows; batch_row_kept() keeps nearly all of them.
 */
Datum
microbatch_batch_row_kept_support(PG_FUNCTION_ARGS)
{
	Node	   *request = (Node *) PG_GETARG_POINTER(0);

	if (IsA(request, SupportRequestSelectivity))
	{
		((SupportRequestSelectivity *) request)->selectivity = 1.0;
		PG_RETURN_POINTER(request);
	}
	PG_RETURN_POINTER(NULL);
}

Datum
microbatch_current_batch_id(PG_FUNCTION_ARGS)
{
	if (active_window == NULL)
		PG_RETURN_NULL();
	PG_RETURN_INT64(active_window->batch_id);
}

/*
 * The conditions on the tracking column of a table, under the given alias,
 * for the active window of a pipeline: its transactions that started after
 * the lower snapshot, and those that were running when it was taken.  Every
 * operator is schema-qualified: the clauses go into views and queries that
 * must mean the same whatever the search_path.
 */
static char *
mb_window_range_condition(int32 pipeline_id, const char *alias)
{
	return psprintf("%1$s.%2$s OPERATOR(pg_catalog.>=) microbatch.batch_lower_xid(%3$d) "
					"AND %1$s.%2$s OPERATOR(pg_catalog.<) microbatch.batch_upper_xid(%3$d)",
					alias, MB_TRACKING_COLUMN, pipeline_id);
}

static char *
mb_window_running_condition(int32 pipeline_id, const char *alias)
{
	return psprintf("%1$s.%2$s OPERATOR(pg_catalog.=) ANY (microbatch.batch_lower_running(%3$d))",
					alias, MB_TRACKING_COLUMN, pipeline_id);
}

static char *
mb_window_contains_condition(int32 pipeline_id, const char *alias)
{
	return psprintf("microbatch.batch_contains(%3$d, %1$s.%2$s)",
					alias, MB_TRACKING_COLUMN, pipeline_id);
}

/* The WHERE clause that restricts a table to the active window */
char *
mb_window_predicate(int32 pipeline_id, const char *alias)
{
	return psprintf("(%s OR %s) AND %s",
					mb_window_range_condition(pipeline_id, alias),
					mb_window_running_condition(pipeline_id, alias),
					mb_window_contains_condition(pipeline_id, alias));
}

/*
 * Fingerprint of the rows of a window, whatever their order: the sum of one
 * hash per row.  A row's hash combines, for each non-null column, the
 * column's name and the value's hash, so that adding a column that is null
 * in old rows keeps old fingerprints, while any change of a value, a row
 * more or less, or a row replaced by another, changes it (with a
 * probability of a collision of 2^-64).  Types without a hash function are
 * hashed through their text form.
 */
typedef struct MbDigestColumn
{
	bool		dropped;
	bool		use_hash;
	FmgrInfo	proc;			/* extended hash, or output function */
	Oid			collation;
	uint64		name_hash;
} MbDigestColumn;

typedef struct MbDigestCache
{
	Oid			type_id;
	int32		typmod;
	int			natts;
	MbDigestColumn columns[FLEXIBLE_ARRAY_MEMBER];
} MbDigestCache;

static MbDigestCache *
mb_digest_cache(FunctionCallInfo fcinfo, HeapTupleHeader row)
{
	Oid			type_id = HeapTupleHeaderGetTypeId(row);
	int32		typmod = HeapTupleHeaderGetTypMod(row);
	MbDigestCache *cache = (MbDigestCache *) fcinfo->flinfo->fn_extra;
	TupleDesc	desc;

	if (cache != NULL && cache->type_id == type_id && cache->typmod == typmod)
		return cache;

	desc = lookup_rowtype_tupdesc(type_id, typmod);
	cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt,
								   offsetof(MbDigestCache, columns) +
								   sizeof(MbDigestColumn) * desc->natts);
	cache->type_id = type_id;
	cache->typmod = typmod;
	cache->natts = desc->natts;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(desc, i);
		MbDigestColumn *column = &cache->columns[i];
		TypeCacheEntry *type;

		column->dropped = attr->attisdropped;
		if (column->dropped)
			continue;
		type = lookup_type_cache(attr->atttypid, TYPECACHE_HASH_EXTENDED_PROC);
		column->collation = attr->attcollation;
		column->name_hash = hash_bytes_extended((const unsigned char *) NameStr(attr->attname),
												strlen(NameStr(attr->attname)), 0);
		column->use_hash = OidIsValid(type->hash_extended_proc);
		if (column->use_hash)
			fmgr_info_cxt(type->hash_extended_proc, &column->proc,
						  fcinfo->flinfo->fn_mcxt);
		else
		{
			Oid			output;
			bool		varlena;

			getTypeOutputInfo(attr->atttypid, &output, &varlena);
			fmgr_info_cxt(output, &column->proc, fcinfo->flinfo->fn_mcxt);
		}
	}
	ReleaseTupleDesc(desc);
	fcinfo->flinfo->fn_extra = cache;
	return cache;
}

Datum
microbatch_rows_digest_accum(PG_FUNCTION_ARGS)
{
	uint64		state = (uint64) PG_GETARG_INT64(0);
	HeapTupleHeader row = PG_GETARG_HEAPTUPLEHEADER(1);
	MbDigestCache *cache = mb_digest_cache(fcinfo, row);
	int			natts = cache->natts;
	TupleDesc	desc = lookup_rowtype_tupdesc(cache->type_id, cache->typmod);
	HeapTupleData tuple;
	Datum	   *values = palloc(sizeof(Datum) * natts);
	bool	   *nulls = palloc(sizeof(bool) * natts);
	uint64		row_hash = 0;

	tuple.t_len = HeapTupleHeaderGetDatumLength(row);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = row;
	heap_deform_tuple(&tuple, desc, values, nulls);
	ReleaseTupleDesc(desc);

	for (int i = 0; i < natts; i++)
	{
		MbDigestColumn *column = &cache->columns[i];
		uint64		value_hash;

		if (nulls[i] || column->dropped)
			continue;
		if (column->use_hash)
			value_hash = DatumGetUInt64(FunctionCall2Coll(&column->proc,
														  column->collation,
														  values[i],
														  Int64GetDatum(0)));
		else
		{
			char	   *text = OutputFunctionCall(&column->proc, values[i]);

			value_hash = hash_bytes_extended((const unsigned char *) text,
											 strlen(text), 0);
		}
		row_hash = hash_combine64(row_hash,
								  hash_combine64(column->name_hash, value_hash));
	}
	pfree(values);
	pfree(nulls);

	/* murmur3's finalizer, so that sums of similar rows do not cancel out */
	row_hash ^= row_hash >> 33;
	row_hash *= UINT64CONST(0xff51afd7ed558ccd);
	row_hash ^= row_hash >> 33;
	PG_RETURN_INT64((int64) (state + row_hash));
}

/*
 * Run a query over the active window as the pipeline's owner, through the
 * user-code primitive: the batch view reads the source with the owner's
 * rights, and its row security policies are the owner's code.  Fills
 * result with the first row's columns (up to nresult); returns false when
 * there is no row.
 *
 * These queries read only the window.  A bitmap scan of the tracking index,
 * with the window's bounds as index conditions, costs the window's size
 * whatever it is; a sequential scan, or a full scan of the index with the
 * bounds as a filter, costs the table's.  The planner, estimating with the
 * window it is planned for, would rightly pick one of the latter for a window
 * holding most of the table, and the plan is kept for the batches after; so
 * the bitmap scan is the only scan it is offered.  An ordered query (one
 * that reads the first rows of a window in tracking order, and stops) is
 * offered the index scan instead, its bounds as index conditions: it costs
 * the rows it reads, where a bitmap scan would read and sort the window.
 */
static bool
mb_window_query(const MbPipeline *pipeline, MbWindow *window, MbPlanKind kind,
				bool ordered, const char *sql, int nargs, Oid *argtypes,
				Datum *args, int nresult, NullableDatum *result)
{
	SPIPlanPtr	plan;
	MbUserCode	uc;
	volatile bool found = false;

	mb_user_code_begin(&uc, pipeline->owner, NULL);
	mb_user_code_set(&uc, "enable_seqscan", "off");
	if (ordered)
		mb_user_code_set(&uc, "enable_bitmapscan", "off");
	else
	{
		mb_user_code_set(&uc, "enable_indexscan", "off");
		mb_user_code_set(&uc, "enable_indexonlyscan", "off");
	}
	mb_user_code_set(&uc, "jit", "off");
	plan = mb_batch_plan(mb_batch_plan_slot(kind, pipeline->id), sql, nargs,
						 argtypes, -1, -1);
	mb_window_activate(window);
	PG_TRY();
	{
		if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read the window of pipeline \"%s\"",
				 pipeline->name);
		if (SPI_processed > 0)
		{
			found = true;
			for (int i = 0; i < nresult; i++)
				result[i].value = SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, i + 1,
												&result[i].isnull);
		}
	}
	PG_FINALLY();
	{
		mb_window_deactivate();
	}
	PG_END_TRY();
	mb_user_code_end(&uc);
	return found;
}

static char *
mb_batch_view_qualified(const MbPipeline *pipeline)
{
	return quote_qualified_identifier(MB_SCHEMA, get_rel_name(pipeline->batch_view));
}

/*
 * The size of the source's tables, in pages: a plan kept for small windows
 * over a small table is made again once the table has grown (see
 * transform.c).  The tables are locked already: the window was just read.
 */
static int64
mb_source_pages(Oid source)
{
	Relation	rel = relation_open(source, AccessShareLock);
	bool		has_members = rel->rd_rel->relhassubclass;
	int64		pages = 0;
	ListCell   *lc;

	if (RELKIND_HAS_STORAGE(rel->rd_rel->relkind))
		pages = RelationGetNumberOfBlocks(rel);
	relation_close(rel, AccessShareLock);
	if (!has_members)
		return pages;

	foreach(lc, find_all_inheritors(source, AccessShareLock, NULL))
	{
		if (lfirst_oid(lc) == source)
			continue;
		rel = relation_open(lfirst_oid(lc), NoLock);
		if (RELKIND_HAS_STORAGE(rel->rd_rel->relkind))
			pages += RelationGetNumberOfBlocks(rel);
		relation_close(rel, NoLock);
	}
	return pages;
}

/* Count the rows of a window, and fingerprint them */
MbWindowContent
mb_window_content(const MbPipeline *pipeline, MbWindow *window)
{
	NullableDatum result[2];
	MbWindowContent content;

	mb_window_query(pipeline, window, MB_PLAN_WINDOW_CONTENT, false,
					psprintf("SELECT pg_catalog.count(*), microbatch.rows_digest(b.*) FROM %s AS b",
							 mb_batch_view_qualified(pipeline)),
					0, NULL, NULL, 2, result);
	content.rows = DatumGetInt64(result[0].value);
	content.digest = DatumGetInt64(result[1].value);
	/* only a window with rows is planned for; an empty one is a poll */
	if (content.rows > 0)
		window->source_pages = mb_source_pages(pipeline->source);
	return content;
}

static int64
mb_window_count(const MbPipeline *pipeline, MbWindow *window)
{
	NullableDatum result[1];

	mb_window_query(pipeline, window, MB_PLAN_WINDOW_COUNT, false,
					psprintf("SELECT pg_catalog.count(*) FROM %s",
							 mb_batch_view_qualified(pipeline)),
					0, NULL, NULL, 1, result);
	return DatumGetInt64(result[0].value);
}

/*
 * A query of the engine's over the source's rows (its hierarchy's) in the
 * active window: SELECT select_list FROM source AS s WHERE <window> tail
 */
static char *
mb_window_source_sql(const MbPipeline *pipeline, const char *select_list,
					 const char *tail)
{
	return psprintf("SELECT %s FROM %s AS s WHERE %s%s", select_list,
					mb_qualified_relname(pipeline->source),
					mb_window_predicate(pipeline->id, "s"), tail);
}

/* The commit time of the oldest row, as an aggregate over s */
#define MB_OLDEST_COMMIT_SQL \
	"pg_catalog.min(pg_catalog.pg_xact_commit_timestamp(pg_catalog.xid(s." MB_TRACKING_COLUMN ")))"

/*
 * The tracking xid of the n-th row (from 0) of the window in xid order, or
 * 0 if the window has fewer rows.  The transactions that were running at
 * the lower snapshot all have lower ids than those that started after it,
 * so the first n + 1 rows of the window are among the first n + 1 of each
 * part: two ordered scans that stop there, whatever the size of the window.
 */
static uint64
mb_window_nth_xid(const MbPipeline *pipeline, MbWindow *window, int64 n)
{
	NullableDatum result[1];
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		args[2] = {Int64GetDatum(n),
	Int64GetDatum(n < PG_INT64_MAX ? n + 1 : n)};
	const char *source = mb_qualified_relname(pipeline->source);
	char	   *sql;

	sql = psprintf("SELECT w.x FROM ("
				   "(SELECT s.%1$s AS x FROM %2$s AS s WHERE %3$s AND %5$s ORDER BY 1 LIMIT $2) "
				   "UNION ALL "
				   "(SELECT s.%1$s AS x FROM %2$s AS s WHERE %4$s AND %5$s ORDER BY 1 LIMIT $2)"
				   ") AS w ORDER BY 1 OFFSET $1 LIMIT 1",
				   MB_TRACKING_COLUMN, source,
				   mb_window_running_condition(pipeline->id, "s"),
				   mb_window_range_condition(pipeline->id, "s"),
				   mb_window_contains_condition(pipeline->id, "s"));
	if (!mb_window_query(pipeline, window, MB_PLAN_WINDOW_NTH_XID, true, sql,
						 2, argtypes, args, 1, result) ||
		result[0].isnull)
		return 0;
	return U64FromFullTransactionId(DatumGetFullTransactionId(result[0].value));
}

/*
 * The rows of a window in the xid range [from, to), counted up to limit:
 * the scan stops there, so a count costs at most limit rows whatever the
 * range holds
 */
static int64
mb_window_count_range(const MbPipeline *pipeline, MbWindow *window,
					  const char *sql, uint64 from, uint64 to, int64 limit)
{
	Oid			argtypes[3] = {XID8OID, XID8OID, INT8OID};
	Datum		args[3];
	NullableDatum result[1];

	args[0] = FullTransactionIdGetDatum(FullTransactionIdFromU64(from));
	args[1] = FullTransactionIdGetDatum(FullTransactionIdFromU64(to));
	args[2] = Int64GetDatum(limit);
	mb_window_query(pipeline, window, MB_PLAN_WINDOW_RANGE_COUNT, false, sql,
					3, argtypes, args, 1, result);
	return DatumGetInt64(result[0].value);
}

/*
 * The same for a source with a BRIN tracking index, which has no order.  A
 * window of at most n rows is told by reading n + 1 of its rows in any
 * order.  Otherwise count the window's rows in xid ranges that double in
 * width from its lowest possible xid, each beginning where the one before
 * ended, until one holds the n-th row; halve that range while it holds more
 * than twice the rows still needed, then read it in order.  Every count
 * stops after twice the rows needed, so a capped batch reads a small
 * multiple of its own rows, whatever the backlog and however its xids are
 * spread.  The queries take snapshots of their own, but a window only loses
 * rows (to DELETE or UPDATE): if the n-th row is gone by the last query,
 * the cut at the range's end still leaves at most n rows before it.
 */
static uint64
mb_window_nth_xid_counted(const MbPipeline *pipeline, MbWindow *window,
						  int64 n)
{
	const char *source = mb_qualified_relname(pipeline->source);
	const char *predicate = mb_window_predicate(pipeline->id, "s");
	const char *in_range = "s." MB_TRACKING_COLUMN " OPERATOR(pg_catalog.>=) $1 AND s."
		MB_TRACKING_COLUMN " OPERATOR(pg_catalog.<) $2";
	char	   *count_sql;
	uint64		from = mb_window_first_xid(window);
	uint64		end = mb_window_upper_bound(window);
	uint64		to = from;
	uint64		width = 1;
	int64		need = Min(n, PG_INT64_MAX / 4);

	count_sql = psprintf("SELECT pg_catalog.count(*) FROM "
						 "(SELECT FROM %s AS s WHERE %s AND %s LIMIT $3) AS w",
						 source, predicate, in_range);
	if (mb_window_count_range(pipeline, window, count_sql, from, end,
							  need + 1) <= need)
		return 0;
	for (;;)
	{
		int64		rows;

		CHECK_FOR_INTERRUPTS();
		if (from >= end)
			return 0;
		to = end - from > width ? from + width : end;
		rows = mb_window_count_range(pipeline, window, count_sql, from, to,
									 need + 1);
		if (rows > need)
			break;
		need -= rows;
		from = to;
		if (width <= PG_UINT64_MAX / 2)
			width *= 2;
	}

	for (;;)
	{
		uint64		middle;
		int64		rows;

		CHECK_FOR_INTERRUPTS();
		if (mb_window_count_range(pipeline, window, count_sql, from, to,
								  2 * (need + 1)) < 2 * (need + 1))
		{
			Oid			argtypes[3] = {XID8OID, XID8OID, INT8OID};
			Datum		args[3];
			NullableDatum result[1];

			args[0] = FullTransactionIdGetDatum(FullTransactionIdFromU64(from));
			args[1] = FullTransactionIdGetDatum(FullTransactionIdFromU64(to));
			args[2] = Int64GetDatum(need);
			if (!mb_window_query(pipeline, window, MB_PLAN_WINDOW_RANGE_NTH, false,
								 psprintf("SELECT s.%s FROM %s AS s WHERE %s AND %s "
										  "ORDER BY 1 OFFSET $3 LIMIT 1",
										  MB_TRACKING_COLUMN, source, predicate,
										  in_range),
								 3, argtypes, args, 1, result))
				return to;
			return U64FromFullTransactionId(DatumGetFullTransactionId(result[0].value));
		}
		/* one transaction holds the n-th row and many more */
		if (to - from == 1)
			return from;
		middle = from + (to - from) / 2;
		rows = mb_window_count_range(pipeline, window, count_sql, from, middle,
									 need + 1);
		if (rows > need)
			to = middle;
		else
		{
			need -= rows;
			from = middle;
		}
	}
}

/*
 * Cap the window at max_batch_rows by cutting it at a transaction boundary,
 * in xid order; the rest is left to the following batches.  A single
 * transaction larger than the cap stays whole.
 */
static void
mb_window_cut(const MbPipeline *pipeline, MbWindow *window)
{
	uint64		cut;
	uint64		first;
	uint64		(*nth_xid) (const MbPipeline *, MbWindow *, int64);

	if (pipeline->max_batch_rows <= 0)
		return;
	nth_xid = mb_source_tracked_by_brin(pipeline->source) ?
		mb_window_nth_xid_counted : mb_window_nth_xid;
	cut = nth_xid(pipeline, window, pipeline->max_batch_rows);
	if (cut == 0)
		return;
	first = nth_xid(pipeline, window, 0);
	if (first != 0 && cut <= first)
		cut = first + 1;
	window->xid_to = cut;
}

/*
 * The windows after a pipeline's position: the rest of a window that
 * max_batch_rows cut (if any), then the window from the position's upper
 * snapshot to the given one.  Returns how many there are.
 */
static int
mb_windows_after(const MbPipeline *pipeline, const MbLedgerBatch *position,
				 bool has_position, Datum upper, int64 batch_id,
				 MbWindow windows[2])
{
	int			n = 0;

	if (has_position && position->xid_to != 0)
		mb_window_init(&windows[n++], pipeline->id, batch_id,
					   position->lower_datum, position->upper_datum,
					   position->xid_to, 0);
	mb_window_init(&windows[n++], pipeline->id, batch_id,
				   has_position ? position->upper_datum : mb_empty_snapshot(),
				   upper, 0, 0);
	return n;
}

/*
 * Find the next batch's window, cut it at max_batch_rows, and count and
 * fingerprint its rows.  After a capped batch the rest of its window comes
 * first; then a new window from the position to now.  The observer, if
 * any, hears right before the new window's upper snapshot is taken.
 */
MbWindowContent
mb_next_window(const MbPipeline *pipeline, MbWindow *window,
			   const MbBatchObserver *observer)
{
	MbLedgerBatch position;
	bool		has_position = mb_ledger_position(pipeline->id, &position);
	int64		batch_id = has_position ? position.batch_id + 1 : 1;
	MbWindowContent content;

	mb_tracking_index_summarize(pipeline);
	if (has_position && position.xid_to != 0)
	{
		mb_window_init(window, pipeline->id, batch_id, position.lower_datum,
					   position.upper_datum, position.xid_to, 0);
		mb_window_cut(pipeline, window);
		content = mb_window_content(pipeline, window);
		/* the rows below the cut may have gone since it was made */
		if (content.rows == 0 && window->xid_to != 0)
		{
			window->xid_to = 0;
			content = mb_window_content(pipeline, window);
		}
		if (content.rows > 0)
			return content;
	}

	if (observer != NULL && observer->before_snapshot != NULL)
		observer->before_snapshot(observer->arg, pipeline);
	mb_window_init(window, pipeline->id, batch_id,
				   has_position ? position.upper_datum : mb_empty_snapshot(),
				   mb_current_snapshot(true), 0, 0);
	mb_window_cut(pipeline, window);
	return mb_window_content(pipeline, window);
}

/* Count the committed source rows that no committed batch has processed */
int64
mb_window_rows_waiting(const MbPipeline *pipeline)
{
	MbLedgerBatch position;
	bool		has_position = mb_ledger_position(pipeline->id, &position);
	MbWindow	windows[2];
	int			n = mb_windows_after(pipeline, &position, has_position,
									 mb_current_snapshot(true), 0, windows);
	int64		rows = 0;

	for (int i = 0; i < n; i++)
		rows += mb_window_count(pipeline, &windows[i]);
	return rows;
}

/*
 * The commit time of the oldest row of a window, by commit timestamps
 * (track_commit_timestamp is on), or 0 if not known: rows of transactions
 * older than the commit timestamps kept.
 */
TimestampTz
mb_window_oldest_commit(const MbPipeline *pipeline, MbWindow *window)
{
	NullableDatum result[1];

	if (!mb_window_query(pipeline, window, MB_PLAN_WINDOW_OLDEST_COMMIT, false,
						 mb_window_source_sql(pipeline, MB_OLDEST_COMMIT_SQL, ""),
						 0, NULL, NULL, 1, result) ||
		result[0].isnull)
		return 0;
	return DatumGetTimestampTz(result[0].value);
}

/*
 * What waits for a pipeline: the committed source rows no committed batch
 * has processed, the lowest tracking xid among them and, with
 * track_commit_timestamp on, the commit time of the oldest (0 if not known
 * or nothing waits).  One pass over the rows, as rows_waiting() makes.
 */
int64
mb_window_backlog(const MbPipeline *pipeline, uint64 *oldest_xid,
				  TimestampTz *oldest_commit)
{
	MbLedgerBatch position;
	bool		has_position = mb_ledger_position(pipeline->id, &position);
	MbWindow	windows[2];
	int			n = mb_windows_after(pipeline, &position, has_position,
									 mb_current_snapshot(true), 0, windows);
	int64		rows = 0;
	const char *sql;

	sql = mb_window_source_sql(pipeline,
							   track_commit_timestamp ?
							   "pg_catalog.count(*), pg_catalog.min(s." MB_TRACKING_COLUMN "), "
							   MB_OLDEST_COMMIT_SQL :
							   "pg_catalog.count(*), pg_catalog.min(s." MB_TRACKING_COLUMN "), "
							   "NULL::pg_catalog.timestamptz",
							   "");
	*oldest_xid = 0;
	*oldest_commit = 0;
	for (int i = 0; i < n; i++)
	{
		NullableDatum result[3];

		(void) mb_window_query(pipeline, &windows[i], MB_PLAN_WINDOW_BACKLOG, false,
							   sql, 0, NULL, NULL, 3, result);
		rows += DatumGetInt64(result[0].value);
		if (!result[1].isnull)
		{
			uint64		xid = U64FromFullTransactionId(DatumGetFullTransactionId(result[1].value));

			if (*oldest_xid == 0 || xid < *oldest_xid)
				*oldest_xid = xid;
		}
		if (!result[2].isnull &&
			(*oldest_commit == 0 || DatumGetTimestampTz(result[2].value) < *oldest_commit))
			*oldest_commit = DatumGetTimestampTz(result[2].value);
	}
	return rows;
}

/* A count(*) query of the engine's, read-only */
static int64
mb_count_rows(const char *sql)
{
	bool		isnull;

	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not run \"%s\"", sql);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/* The rows of one table (ONLY it) in a window */
static int64
mb_window_count_in(const MbPipeline *pipeline, MbWindow *window,
				   const char *table)
{
	volatile int64 rows = 0;

	mb_window_activate(window);
	PG_TRY();
	{
		rows = mb_count_rows(psprintf("SELECT pg_catalog.count(*) FROM ONLY %s AS s WHERE %s",
									  table, mb_window_predicate(pipeline->id, "s")));
	}
	PG_FINALLY();
	{
		mb_window_deactivate();
	}
	PG_END_TRY();
	return rows;
}

/*
 * Count the rows of one table of a source's hierarchy (ONLY that table)
 * that a pipeline has not processed: those after its position, whenever
 * they commit.  With total, also count all its rows.  This is engine SQL
 * over a plain table, run as the catalog's owner, who may read any member
 * of the hierarchy, in a security-restricted operation all the same.  The
 * callers (DDL that takes the table's rows away, or brings new ones) hold a
 * lock that keeps writers out, and the count must see every row committed
 * until then, also while they waited for that lock, so it reads the table
 * with the latest snapshot, not the statement's.
 */
int64
mb_window_pending_in(const MbPipeline *pipeline, Oid relid, int64 *total)
{
	MbLedgerBatch position;
	bool		has_position = mb_ledger_position(pipeline->id, &position);
	MbWindow	windows[2];
	int			n = mb_windows_after(pipeline, &position, has_position,
									 mb_snapshot_from_bounds(MB_XID_INFINITY,
															 MB_XID_INFINITY),
									 0, windows);
	const char *table = mb_qualified_relname(relid);
	int64		pending = 0;
	MbUserCode	uc;

	mb_user_code_begin(&uc, GetUserId(), NULL);
	mb_user_code_set(&uc, "enable_seqscan", "off");
	PushActiveSnapshot(GetLatestSnapshot());
	for (int i = 0; i < n; i++)
		pending += mb_window_count_in(pipeline, &windows[i], table);
	if (total != NULL)
		*total = mb_count_rows(psprintf("SELECT pg_catalog.count(*) FROM ONLY %s", table));
	PopActiveSnapshot();
	mb_user_code_end(&uc);
	return pending;
}
