/*-------------------------------------------------------------------------
 *
 * microbatch.h
 *	  Declarations shared by the microbatch extension's source files.
 *
 * src/catalog.c	the microbatch.* tables, through SPI, as their owner
 * src/source.c		the tracking column on source tables and the batch views
 * src/window.c		batch windows: which source rows a batch covers
 * src/transform.c	validating and running the transforms
 * src/batch.c		the batch engine: run, replay, rows waiting
 * src/api.c		the SQL-callable functions
 *
 *-------------------------------------------------------------------------
 */
#ifndef MICROBATCH_H
#define MICROBATCH_H

#include "access/transam.h"
#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "nodes/pg_list.h"
#include "utils/elog.h"

/* Column that create_pipeline adds to a source: the inserting top-level xid */
#define MB_TRACKING_COLUMN	"microbatch_xid"
#define MB_SCHEMA			"microbatch"
#define MB_BATCH_VIEW_SUFFIX "_batch"
#define MB_WAKEUP_TRIGGER	"microbatch_source_changed"

/* A row of microbatch.pipeline */
typedef struct MbPipeline
{
	int32		id;
	char	   *name;
	Oid			source;
	Oid			batch_view;
	Oid			owner;
	int64		max_batch_rows; /* 0 when there is no cap */
	char	   *state;
	int32		consecutive_failures;
	bool		failure_alerted;	/* a failed alert awaits its recovery alert */
} MbPipeline;

/* A row of microbatch.transform */
typedef struct MbTransform
{
	int32		id;
	char	   *name;
	char	   *layer;
	char	   *command;
	char	   *search_path;
} MbTransform;

/*
 * A statement over a batch view, prepared once and planned again when the
 * batches it runs for change in size (see transform.c).
 */
typedef struct MbBatchPlan
{
	char	   *sql;
	SPIPlanPtr	plan;
	int64		planned_rows;	/* the window's rows when planned, or -1 */
	TimestampTz planned_at;
} MbBatchPlan;

/* What a kept plan is for: a transform, or one of the engine's own queries */
typedef enum MbPlanKind
{
	MB_PLAN_TRANSFORM,			/* by transform id */
	MB_PLAN_WINDOW_COUNT,		/* by pipeline id */
	MB_PLAN_WINDOW_NTH_XID		/* by pipeline id */
} MbPlanKind;

/* A pg_snapshot, unpacked for fast visibility checks */
typedef struct MbSnapshot
{
	uint64		xmin;
	uint64		xmax;
	uint32		nxip;
	uint64	   *xip;			/* ascending */
} MbSnapshot;

/*
 * The source rows of one batch: those whose inserting transaction is visible
 * in the upper snapshot and not in the lower one, restricted to
 * [xid_from, xid_to) when max_batch_rows splits a window into several
 * batches (0 means no bound).
 */
typedef struct MbWindow
{
	int32		pipeline_id;
	int64		batch_id;
	Datum		lower_datum;	/* pg_snapshot, as stored in the ledger */
	Datum		upper_datum;
	MbSnapshot	lower;
	MbSnapshot	upper;
	uint64		xid_from;
	uint64		xid_to;
} MbWindow;

/* The last committed batch of a pipeline, from the ledger */
typedef struct MbLastBatch
{
	int64		batch_id;
	Datum		lower_datum;
	Datum		upper_datum;
	uint64		xid_from;
	uint64		xid_to;
	int64		rows_in;
} MbLastBatch;

typedef enum MbBatchStatus
{
	MB_BATCH_EMPTY,				/* nothing new: nothing was written */
	MB_BATCH_COMMITTED,
	MB_BATCH_FAILED				/* rolled back; the attempt is in the ledger */
} MbBatchStatus;

typedef struct MbBatchResult
{
	MbBatchStatus status;
	int64		batch_id;
	int64		rows_in;
	TimestampTz started_at;
	int32		failures;		/* consecutive failed batches, this one included */
	bool		capped;			/* max_batch_rows left rows of its window */
	ErrorData  *error;			/* when status is MB_BATCH_FAILED */
} MbBatchResult;

/*
 * Identity of an API call.  Catalog work runs as the catalog's owner with a
 * pinned search_path; user code runs as the pipeline's owner.
 */
typedef struct MbCall
{
	Oid			caller;
	char	   *caller_search_path;
	Oid			saved_user;
	int			saved_sec_context;
	int			guc_nest_level;
} MbCall;

/* catalog.c */
extern void mb_call_begin(MbCall *call);
extern void mb_call_end(MbCall *call);
extern void mb_run_as(Oid role, Oid *saved_user, int *saved_sec_context);
extern void mb_run_as_end(Oid saved_user, int saved_sec_context);
extern bool mb_pipeline_by_name(const char *name, MbPipeline *pipeline);
extern MbPipeline *mb_pipeline_get(const char *name);
extern MbPipeline *mb_pipeline_lock(const char *name, Oid caller);
extern bool mb_pipeline_by_id(int32 id, MbPipeline *pipeline);
extern void mb_pipeline_check_owner(const MbPipeline *pipeline, Oid role);
extern int32 mb_pipeline_next_id(void);
extern void mb_pipeline_insert(int32 id, const char *name, Oid source,
							   Oid batch_view, Oid owner, Datum batch_interval,
							   int64 max_batch_rows);
extern void mb_pipeline_delete(int32 id);
extern void mb_pipeline_set_state(int32 id, const char *state);
extern void mb_pipeline_set_batch_view(int32 id, Oid batch_view);
extern void mb_pipeline_set_failures(int32 id, int32 failures, bool failed,
									 bool alerted);
extern void mb_pipeline_alter(int32 id, Datum batch_interval, bool interval_null,
							  int64 max_batch_rows, bool max_rows_null);
extern void mb_notify_alert(const char *event, const char *pipeline_name,
							int64 batch_id, const ErrorData *error,
							int32 failures);
extern int32 mb_source_other_pipelines(Oid source, int32 pipeline_id);
extern List *mb_transform_list(int32 pipeline_id);
extern bool mb_transform_exists(int32 pipeline_id, const char *name);
extern void mb_transform_insert(int32 pipeline_id, const char *name,
								const char *layer, const char *command,
								const char *search_path);
extern bool mb_transform_delete(int32 pipeline_id, const char *name);
extern bool mb_last_batch(int32 pipeline_id, MbLastBatch *last);
extern bool mb_committed_batch(int32 pipeline_id, int64 batch_id,
							   MbLastBatch *batch);
extern void mb_ledger_insert(const MbWindow *window, bool committed,
							 int64 rows_in,
							 TimestampTz started_at, TimestampTz finished_at,
							 const ErrorData *error);
extern void mb_ledger_record_replay(int32 pipeline_id, int64 batch_id,
									TimestampTz replayed_at);

/* source.c */
extern void mb_source_check_usable(Oid source, Oid caller);
extern void mb_source_prepare(Oid source, Oid caller);
extern Oid	mb_batch_view_create(const MbPipeline *pipeline);
extern void mb_batch_view_drop(const MbPipeline *pipeline);
extern void mb_source_release(const MbPipeline *pipeline);
extern void mb_pipeline_check_source_exists(const MbPipeline *pipeline);
extern void mb_pipeline_check_relations(const MbPipeline *pipeline);
extern char *mb_window_predicate(int32 pipeline_id, const char *alias);

/* window.c */
extern Datum mb_empty_snapshot(void);
extern Datum mb_snapshot_add_running(Datum snapshot, FullTransactionId xid);
extern void mb_snapshot_unpack(Datum snapshot, MbSnapshot *unpacked);
extern bool mb_snapshot_visible(const MbSnapshot *snapshot, uint64 xid);
extern void mb_window_init(MbWindow *window, int32 pipeline_id,
						   int64 batch_id, Datum lower, Datum upper,
						   uint64 xid_from, uint64 xid_to);
extern void mb_window_activate(MbWindow *window);
extern void mb_window_deactivate(void);
extern bool mb_window_is_active(void);

/* transform.c */
extern MbBatchPlan *mb_batch_plan_slot(MbPlanKind kind, int32 id);
extern SPIPlanPtr mb_batch_plan(MbBatchPlan *entry, const char *sql,
								int nargs, Oid *argtypes, int64 rows);
extern void mb_transform_validate(const char *command, Oid owner,
								  const char *search_path);
extern void mb_transforms_run(const MbPipeline *pipeline, List *transforms,
							  int64 batch_id, int64 rows);

/* shmem.c, worker.c */
extern void mb_wake_scheduler_at_commit(void);
extern void mb_warn_if_no_workers(void);
extern void mb_worker_report_batch(const char *pipeline_name, int64 batch_id);
extern void mb_worker_note_snapshot(void);

/* batch.c */
extern MbBatchResult mb_run_batch(const char *pipeline_name, Oid caller);
extern int64 mb_replay_batch(const char *pipeline_name, int64 batch_id,
							 Oid caller);
extern bool mb_rows_waiting(const char *pipeline_name, Oid caller,
							int64 *rows);
extern MbBatchResult mb_record_failure(const char *pipeline_name,
									   const ErrorData *error);

#endif							/* MICROBATCH_H */
