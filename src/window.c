/*-------------------------------------------------------------------------
 *
 * window.c
 *	  Batch windows: which source rows a batch covers.
 *
 * Every source row carries the full id of the top-level transaction that
 * inserted it (the tracking column).  A batch covers the rows whose
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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "fmgr.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/xid8.h"

#include "microbatch.h"

PG_FUNCTION_INFO_V1(microbatch_batch_lower_xid);
PG_FUNCTION_INFO_V1(microbatch_batch_upper_xid);
PG_FUNCTION_INFO_V1(microbatch_batch_lower_running);
PG_FUNCTION_INFO_V1(microbatch_batch_contains);
PG_FUNCTION_INFO_V1(microbatch_current_batch_id);

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

static MbWindow *active_window = NULL;

/* The lower snapshot of a pipeline's first batch: no transaction visible */
Datum
mb_empty_snapshot(void)
{
	char		text[64];

	snprintf(text, sizeof(text), UINT64_FORMAT ":" UINT64_FORMAT ":",
			 U64FromFullTransactionId(FirstNormalFullTransactionId),
			 U64FromFullTransactionId(FirstNormalFullTransactionId));
	return DirectFunctionCall1(pg_snapshot_in, CStringGetDatum(text));
}

/*
 * A backend's snapshots never list its own transaction as running.  The upper
 * snapshot of a batch must: the batch's transaction may insert source rows
 * after the sweep too, and all of its rows belong to the first batch after
 * it commits.
 */
Datum
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

/* Unpack a pg_snapshot into CurrentMemoryContext */
void
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
bool
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
	window->lower_datum = lower;
	window->upper_datum = upper;
	mb_snapshot_unpack(lower, &window->lower);
	mb_snapshot_unpack(upper, &window->upper);
	window->xid_from = xid_from;
	window->xid_to = xid_to;
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

static uint64
mb_window_upper_bound(const MbWindow *window)
{
	if (window->xid_to != 0)
		return Min(window->upper.xmax, window->xid_to);
	return window->upper.xmax;
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

	if (window == NULL)
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(xid >= window->xid_from &&
				   xid < mb_window_upper_bound(window) &&
				   mb_snapshot_visible(&window->upper, xid) &&
				   !mb_snapshot_visible(&window->lower, xid));
}

Datum
microbatch_current_batch_id(PG_FUNCTION_ARGS)
{
	if (active_window == NULL)
		PG_RETURN_NULL();
	PG_RETURN_INT64(active_window->batch_id);
}
