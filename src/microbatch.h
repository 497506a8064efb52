/*-------------------------------------------------------------------------
 *
 * microbatch.h
 *	  Declarations shared by the microbatch extension's source files.
 *
 * src/api.c		the SQL-callable functions
 * src/catalog.c	the microbatch.* tables, through SPI, as their owner
 * src/usercode.c	where user code runs, and with what rights
 * src/hierarchy.c	which tables make up a source
 * src/source.c		sources: tracking column, guards
 * src/batchview.c	batch views, and the checks before a batch
 * src/ddl.c		what DDL may do to sources and batch views
 * src/window.c		batch windows: which source rows a batch covers
 * src/transform.c	validating and running the transforms
 * src/quality.c	expectations, audits and the quarantine
 * src/batch.c		the batch engine: run, replay, preview, reset, rows waiting,
 *					rebind
 * src/backfill.c	replays of ranges of batches, and their progress
 * src/retention.c	retention of staging rows and of batch history
 *
 * The background processes are declared in worker.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MICROBATCH_H
#define MICROBATCH_H

#include "access/transam.h"
#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "nodes/execnodes.h"
#include "nodes/pg_list.h"
#include "storage/itemptr.h"
#include "storage/lockdefs.h"
#include "utils/array.h"
#include "utils/elog.h"
#include "utils/resowner.h"

#define MB_SCHEMA			"microbatch"
#define MB_NLAYERS			3
#define MB_BATCH_VIEW_SUFFIX "_batch"

/* What create_pipeline adds to a source (source.c) */
#define MB_TRACKING_COLUMN	"microbatch_xid"
/* the extension's BRIN operator class for the tracking column */
#define MB_BRIN_OPCLASS	"xid8_minmax_ops"
#define MB_TRACKING_CONSTRAINT "microbatch_xid_current"
#define MB_TRIGGER_CHANGED	"microbatch_source_changed"
#define MB_TRIGGER_TRUNCATED "microbatch_source_truncated"
#define MB_TRIGGER_REPLICATED "microbatch_source_replicated"

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
	uint64		system_identifier;	/* of the cluster of its history */
	int64		rebind_batch_id;	/* 0 if never rebound */
	Interval   *history_retention;	/* NULL: microbatch.history_retention */
} MbPipeline;

/* A row of microbatch.transform */
typedef struct MbTransform
{
	int32		id;
	char	   *name;
	char	   *layer;
	char	   *command;
	char	   *search_path;
	int32		version;
} MbTransform;

/* What an expectation does with a row for which it is not true */
typedef enum MbViolationAction
{
	MB_VIOLATION_WARN,			/* keep the row, count it */
	MB_VIOLATION_DROP,			/* keep it from the transforms, quarantine it */
	MB_VIOLATION_FAIL			/* fail the batch */
} MbViolationAction;

/* Most expectations a pipeline may have: one bit each in a row's mask */
#define MB_MAX_EXPECTATIONS 63

/* A row of microbatch.expectation */
typedef struct MbExpectation
{
	char	   *name;
	char	   *predicate;		/* deparsed, names qualified */
	MbViolationAction action;
} MbExpectation;

/* A row of microbatch.audit */
typedef struct MbAudit
{
	int32		id;
	char	   *name;
	char	   *layer;
	char	   *query;
	char	   *search_path;
	bool		fail;			/* fail the batch, or only record */
} MbAudit;

/* A source row, by the table that holds it and its place there */
typedef struct MbRowId
{
	Oid			table;
	ItemPointerData tid;
} MbRowId;

/*
 * A statement over a batch view, prepared once and planned again when the
 * batches it runs for change in size (see transform.c).
 */
typedef struct MbBatchPlan
{
	char	   *sql;
	SPIPlanPtr	plan;
	int64		planned_rows;	/* the window's rows when planned, or -1 */
	int64		planned_pages;	/* the source's pages when planned, or -1 */
	TimestampTz planned_at;
} MbBatchPlan;

/* What a kept plan is for: a transform, or one of the engine's own queries */
typedef enum MbPlanKind
{
	MB_PLAN_TRANSFORM,			/* by transform id */
	MB_PLAN_WINDOW_CONTENT,		/* by pipeline id */
	MB_PLAN_WINDOW_COUNT,		/* by pipeline id */
	MB_PLAN_WINDOW_NTH_XID,		/* by pipeline id */
	MB_PLAN_WINDOW_RANGE_COUNT,	/* by pipeline id */
	MB_PLAN_WINDOW_RANGE_NTH,	/* by pipeline id */
	MB_PLAN_WINDOW_OLDEST_COMMIT,	/* by pipeline id */
	MB_PLAN_WINDOW_BACKLOG,		/* by pipeline id */
	MB_PLAN_EXPECTATIONS,		/* by pipeline id */
	MB_PLAN_AUDIT				/* by audit id */
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
	bool		replay;			/* a replay, which must not feed pipelines */
	Datum		lower_datum;	/* pg_snapshot, as stored in the ledger */
	Datum		upper_datum;
	MbSnapshot	lower;
	MbSnapshot	upper;
	uint64		xid_from;
	uint64		xid_to;
	MbRowId    *dropped;		/* rows drop expectations took out, sorted */
	int64		ndropped;
	int64		source_pages;	/* the source's size when the window was
								 * counted, or -1 */
} MbWindow;

/* How many rows a window holds, and their fingerprint */
typedef struct MbWindowContent
{
	int64		rows;
	int64		digest;
} MbWindowContent;

/* A committed or skipped batch of the ledger */
typedef struct MbLedgerBatch
{
	int64		batch_id;
	bool		skipped;
	Datum		lower_datum;
	Datum		upper_datum;
	uint64		xid_from;
	uint64		xid_to;
	int64		rows_in;		/* -1 for a skipped batch */
	bool		has_digest;
	int64		rows_digest;
} MbLedgerBatch;

/* A row to write into the ledger */
typedef struct MbLedgerEntry
{
	int32		pipeline_id;
	int64		batch_id;
	const char *status;			/* committed, failed or skipped */
	const MbWindow *window;		/* NULL: failed before the window was known */
	int64		rows_in;		/* -1: not known */
	int64		rows_digest;
	int64		rows_dropped;	/* -1: not known */
	TimestampTz started_at;
	TimestampTz finished_at;
	const ErrorData *error;
	const char *note;
	const char *transform_versions; /* JSON object, or NULL */
	const char *progress;		/* JSON object, or NULL */
	TimestampTz oldest_row_committed_at;	/* 0: not known */
} MbLedgerEntry;

/* What one step of a previewed batch did */
typedef struct MbStep
{
	const char *kind;			/* window, expectations, transform, audit */
	char	   *name;
	char	   *layer;
	int64		rows;
	int64		usecs;
} MbStep;

/* The steps a batch logs as it runs (transform.c) */
typedef struct MbStepLog
{
	MemoryContext context;
	List	   *steps;			/* of MbStep, in order */
	struct MbStepLog *outer;	/* the log of an enclosing batch */
} MbStepLog;

/* What waits for a pipeline (microbatch.freshness) */
typedef struct MbBacklog
{
	int64		rows;
	uint64		oldest_xid;		/* 0: nothing waits */
	TimestampTz oldest_commit;	/* 0: not known */
} MbBacklog;

/* What a batch attempt did, counted in stats.c when it commits */
typedef struct MbBatchOutcome
{
	bool		committed;		/* else failed */
	int64		rows_in;		/* -1: not known */
	int64		rows_written;
	int64		rows_dropped;	/* -1: not known */
	int64		lock_wait_us;
	TimestampTz started_at;
	TimestampTz ledger_started_at;	/* 0: not known */
	TimestampTz oldest_row_committed_at;	/* 0: not known */
} MbBatchOutcome;

/* A row of microbatch.retention */
typedef struct MbRetention
{
	Oid			source;
	Interval   *retain;			/* NULL: rows are kept */
	uint64		removed_below;	/* 0: nothing removed yet */
	uint64		system_identifier;	/* of removed_below's transaction ids */
} MbRetention;

typedef enum MbBatchStatus
{
	MB_BATCH_EMPTY,				/* nothing new: nothing was written */
	MB_BATCH_COMMITTED,
	MB_BATCH_FAILED,			/* rolled back; the attempt is in the ledger */
	MB_BATCH_BUSY,				/* another transaction held the pipeline */
	MB_BATCH_NOT_ENABLED		/* background: paused or failed, nothing ran */
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
 * What a background worker hears of the batches it runs; any callback may
 * be NULL.  timeout_reason says why a cancel happened if it was the batch's
 * timeout, or returns NULL.
 */
typedef struct MbBatchObserver
{
	void	   *arg;
	void		(*before_snapshot) (void *arg, const MbPipeline *pipeline);
	void		(*batch_started) (void *arg, const MbPipeline *pipeline,
								  int64 batch_id);
	const char *(*timeout_reason) (void *arg);
} MbBatchObserver;

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

/* Text being validated, for mb_parse_error_context(), and what it is */
typedef struct MbParseContext
{
	const char *text;
	const char *what;
} MbParseContext;

/* User code in progress (usercode.c) */
typedef struct MbUserCode
{
	Oid			saved_user;
	int			saved_sec_context;
	int			guc_nest_level;
} MbUserCode;

/* Settings (microbatch.c) */
extern int	mb_batch_timeout;
extern int	mb_max_retries;
extern int	mb_history_retention;
extern int	mb_retention_step_rows;
extern int	mb_backfill_delay;

/* usercode.c */
extern void mb_user_code_begin(MbUserCode *uc, Oid role, const char *search_path);
extern void mb_user_code_set(MbUserCode *uc, const char *name, const char *value);
extern void mb_user_code_end(MbUserCode *uc);
extern void mb_check_role_may_run(Oid role, const char *pipeline_name);

/* citus.c */
extern void mb_citus_init(void);
extern void mb_citus_local_ddl(void);
extern void mb_citus_user_ddl(void);
extern char mb_citus_table_method(Oid relid);
extern void mb_citus_check_source(Oid source);
extern int64 mb_distributed_create(MbCall *call, const char *name, Oid source,
								   const char *batch_interval,
								   const char *max_batch_rows,
								   const char *start_from,
								   const char *batch_timeout);
extern int64 mb_distributed_add_transform(MbCall *call, const char *name,
										  const char *transform,
										  const char *layer,
										  const char *command);
extern int64 mb_distributed_remove_transform(MbCall *call, const char *name,
											 const char *transform);
extern int64 mb_distributed_drop(MbCall *call, const char *name);
extern int64 mb_shard_pipelines_create(MbCall *call, const char *name,
									   ArrayType *shards, NullableDatum *args);
extern int64 mb_shard_transform_add(MbCall *call, const char *name,
									const char *transform, const char *layer,
									const char *command,
									const char *search_path);
extern int64 mb_shard_transform_remove(MbCall *call, const char *name,
									   const char *transform);
extern int64 mb_shard_pipelines_drop(MbCall *call, const char *name);
extern int64 mb_distributed_change(MbCall *call, const char *name,
								   const char *change,
								   const char *batch_interval,
								   const char *max_batch_rows,
								   const char *batch_timeout);
extern int64 mb_shard_pipelines_change(MbCall *call, const char *name,
									   const char *change,
									   NullableDatum *args);
extern void mb_citus_forget_dropped(List *dropped);
extern void mb_source_drop_tracking(Oid relid, Oid role);
extern void mb_distributed_status(MbCall *call, const char *name,
								  ReturnSetInfo *rsinfo);

/* catalog.c */
extern const char *mb_qualified_relname(Oid relid);
extern void mb_call_begin(MbCall *call);
extern void mb_call_end(MbCall *call);
extern bool mb_may_monitor(Oid role, Oid owner);
extern bool mb_pipeline_by_name(const char *name, MbPipeline *pipeline);
extern MbPipeline *mb_pipeline_get(const char *name);
extern bool mb_pipeline_by_id(int32 id, MbPipeline *pipeline);
extern List *mb_pipelines_on_sources(List *relids);
extern List *mb_pipelines_with_views(List *relids);
extern MbPipeline *mb_pipeline_lock(const char *name, Oid caller);
extern MbPipeline *mb_pipeline_try_lock(const char *name, Oid caller);
extern void mb_pipeline_lock_known(MbPipeline *pipeline);
extern void mb_pipeline_check_owner(const MbPipeline *pipeline, Oid role);
extern bool mb_lock_history(int32 pipeline_id, LOCKMODE mode, bool wait);
extern bool mb_lock_retention_worker(void);
extern bool mb_lock_hierarchy_retention(Oid root, LOCKMODE mode, bool wait);
extern int32 mb_pipeline_next_id(void);
extern void mb_pipeline_insert(const MbPipeline *pipeline, Datum batch_interval,
							   Datum batch_timeout, bool timeout_null);
extern void mb_pipeline_delete(int32 id);
extern void mb_pipeline_set_state(int32 id, const char *state);
extern bool mb_pipeline_failures_for_update(MbPipeline *pipeline);
extern void mb_pipeline_set_failures(int32 id, int32 failures, bool failed,
									 bool alerted);
extern void mb_pipeline_alter(int32 id, NullableDatum batch_interval,
							  NullableDatum max_batch_rows,
							  NullableDatum batch_timeout);
extern void mb_pipeline_set_batch_view(int32 id, Oid batch_view);
extern void mb_pipeline_set_owner(int32 id, Oid owner);
extern void mb_pipelines_reassign(List *old_roles, Oid new_role);
extern void mb_pipeline_set_rebound(int32 id, uint64 system_identifier,
									int64 batch_id);
extern void mb_notify_alert(const char *event, int32 pipeline_id,
							int64 batch_id, const ErrorData *error,
							int32 failures);
extern List *mb_transform_list(int32 pipeline_id);
extern bool mb_transform_exists(int32 pipeline_id, const char *name);
extern void mb_transform_insert(int32 pipeline_id, const char *name,
								const char *layer, const char *command,
								const char *search_path);
extern int32 mb_transform_replace(int32 pipeline_id, const char *name,
								  const char *command, const char *search_path);
extern bool mb_transform_delete(int32 pipeline_id, const char *name);
extern bool mb_ledger_position(int32 pipeline_id, MbLedgerBatch *position);
extern bool mb_ledger_batch(int32 pipeline_id, int64 batch_id,
							MbLedgerBatch *batch);
extern void mb_ledger_insert(const MbLedgerEntry *entry);
extern void mb_ledger_record_replay(int32 pipeline_id, int64 batch_id,
									TimestampTz replayed_at,
									int64 rows_dropped,
									const char *transform_versions);
extern int64 mb_ledger_first_batch(int32 pipeline_id);
extern int64 mb_ledger_last_finished_before(int32 pipeline_id,
											TimestampTz cutoff,
											int64 before_batch);
extern bool mb_ledger_lowest_xid(int32 pipeline_id, int64 from_batch,
								 int64 to_batch, bool committed_only,
								 uint64 *lowest);
extern int64 mb_ledger_range(int32 pipeline_id, bool by_time, Datum from,
							 Datum to, int64 *first, int64 *last);
extern int64 mb_ledger_next_committed(int32 pipeline_id, int64 after, int64 to);
extern void mb_pipeline_set_history_retention(int32 id, Interval *retain);
extern int64 mb_history_trim(int32 pipeline_id, int64 through_batch,
							 int64 limit, int64 *others);
extern List *mb_retention_list(List *relids);
extern void mb_retention_set(Oid source, Interval *retain);
extern void mb_retention_drop(Oid source);
extern void mb_retention_record(Oid source, uint64 horizon, int64 rows,
								int64 partitions);
extern List *mb_expectation_list(int32 pipeline_id);
extern bool mb_expectation_exists(int32 pipeline_id, const char *name);
extern void mb_expectation_insert(int32 pipeline_id, const char *name,
								  const char *predicate, const char *action);
extern bool mb_expectation_delete(int32 pipeline_id, const char *name);
extern List *mb_audit_list(int32 pipeline_id);
extern bool mb_audit_exists(int32 pipeline_id, const char *name);
extern void mb_audit_insert(int32 pipeline_id, const char *name,
							const char *layer, const char *query,
							const char *action, const char *search_path);
extern bool mb_audit_delete(int32 pipeline_id, const char *name);
extern void mb_check_results_clear(int32 pipeline_id, int64 batch_id);
extern void mb_check_result_insert(int32 pipeline_id, int64 batch_id,
								   const char *kind, const char *name,
								   const char *action, int64 passed,
								   int64 failed, Datum sample);
extern void mb_quarantine_insert(int32 pipeline_id, int64 batch_id,
								 Datum names, int n, Datum *masks,
								 Datum *rows);
extern int64 mb_quarantine_clear(int32 pipeline_id, int64 before_batch);

/* source.c */
extern void mb_source_check_usable(Oid source, Oid caller);
extern void mb_source_prepare(Oid source, Oid caller, bool skip_existing);
extern void mb_table_ddl(Oid role, const char *sql);
extern bool mb_subscription_writes(Oid relid);
extern List *mb_subscribed_tables(void);
extern void mb_source_guard_subscribed(List *tables, Oid caller);
extern void mb_source_guard(Oid relid, Oid role, bool rebind);
extern void mb_source_check_guarded(const MbPipeline *pipeline);
extern void mb_ddl_own_begin(void);
extern void mb_ddl_own_end(void);
extern bool mb_ddl_is_own(void);
extern bool mb_trigger_state_allowed(const char *name, char enabled);
extern bool mb_is_guard_trigger(const char *name);
extern void mb_source_release(const MbPipeline *pipeline, Oid caller);
extern void mb_source_table_left(Oid relid, Oid caller);
extern void mb_source_check_values(Oid source);
extern void mb_source_check_unguarded(Oid source);
extern void mb_source_retag(Oid relid, const char *value_sql,
							 const char *where_sql);

/* batchview.c */
extern Oid	mb_batch_view_create(const MbPipeline *pipeline);
extern void mb_batch_view_drop(const MbPipeline *pipeline);
extern void mb_batch_view_set_owner(const MbPipeline *pipeline, Oid owner);
extern void mb_pipeline_check_source_exists(const MbPipeline *pipeline);
extern void mb_pipeline_check_relations(const MbPipeline *pipeline);

/* ddl.c */
extern void mb_utility_hook_install(void);
extern void mb_object_access_hook_install(void);

/* hierarchy.c */
extern List *mb_hierarchy_members(Oid relid, LOCKMODE lockmode);

/* tracking_index.c */
typedef enum MbTrackingIndex
{
	MB_TRACKING_INDEX_NONE,
	MB_TRACKING_INDEX_BTREE,
	MB_TRACKING_INDEX_BRIN
} MbTrackingIndex;

extern MbTrackingIndex mb_tracking_index_of(Relation rel, AttrNumber attnum,
											bool single, List **btrees,
											List **brins);
extern bool mb_source_tracked_by_brin(Oid source);
extern Oid	mb_tracking_index_set(Oid relid, MbTrackingIndex kind, Oid caller);
extern void mb_tracking_index_summarize(const MbPipeline *pipeline);
extern void mb_tracking_index_analyze(const MbPipeline *pipeline);
extern List *mb_table_and_ancestors(Oid relid);
extern List *mb_hierarchy_roots(Oid relid);
extern Oid	mb_partition_detach_pending(Oid relid);

/* window.c */
extern Datum mb_empty_snapshot(void);
extern Datum mb_current_snapshot(bool own_running);
extern Datum mb_rebind_snapshot(const uint64 *ours, const bool *seen, int nours);
extern void mb_window_init(MbWindow *window, int32 pipeline_id,
						   int64 batch_id, Datum lower, Datum upper,
						   uint64 xid_from, uint64 xid_to);
extern void mb_window_activate(MbWindow *window);
extern void mb_window_deactivate(void);
extern bool mb_window_is_active(void);
extern bool mb_window_is_replay(void);
extern char *mb_window_predicate(int32 pipeline_id, const char *alias);
extern int	mb_row_id_cmp(const void *a, const void *b);
extern MbWindowContent mb_window_content(const MbPipeline *pipeline,
										 MbWindow *window);
extern MbWindowContent mb_next_window(const MbPipeline *pipeline,
									  MbWindow *window,
									  const MbBatchObserver *observer);
extern int64 mb_window_rows_waiting(const MbPipeline *pipeline);
extern TimestampTz mb_window_oldest_commit(const MbPipeline *pipeline,
										   MbWindow *window);
extern int64 mb_window_backlog(const MbPipeline *pipeline, uint64 *oldest_xid,
							   TimestampTz *oldest_commit);
extern int64 mb_window_pending_in(const MbPipeline *pipeline, Oid relid,
								  int64 *total);

/* transform.c */
extern const char *const mb_layers[MB_NLAYERS];
extern bool mb_previewing;
extern void mb_steps_begin(MbStepLog *log, MemoryContext context);
extern void mb_steps_end(MbStepLog *log);
extern TimestampTz mb_step_start(void);
extern void mb_step_record(const char *kind, const char *name,
						   const char *layer, int64 rows, TimestampTz started);
extern void mb_parse_error_context(void *arg);
extern MbBatchPlan *mb_batch_plan_slot(MbPlanKind kind, int32 id);
extern SPIPlanPtr mb_batch_plan(MbBatchPlan *entry, const char *sql,
								int nargs, Oid *argtypes, int64 rows,
								int64 source_pages);
extern void mb_transform_validate(const char *command, Oid owner,
								  const char *search_path, const char *what);
extern void mb_check_executable(Node *node, Oid owner);
extern void mb_transforms_run(const MbPipeline *pipeline, List *transforms,
							  List *audits, const MbWindow *window,
							  int64 rows);

/* quality.c */
extern const char *mb_violation_action_name(MbViolationAction action);
extern char *mb_expectation_validate(const MbPipeline *pipeline,
									 const char *predicate, Oid owner,
									 const char *search_path);
extern void mb_audit_validate(const char *query, Oid owner,
							  const char *search_path);
extern int64 mb_expectations_check(const MbPipeline *pipeline,
								   List *expectations, MbWindow *window,
								   int64 rows);
extern void mb_audits_run(const MbPipeline *pipeline, List *audits,
						  const char *layer, const MbWindow *window,
						  int64 rows);

/* retention.c */
extern int64 mb_retention_now(Oid source, Oid caller);
extern bool mb_retention_state(Oid source, uint64 *horizon, char **held_back_by,
							   const char **held_back_state, int64 *removable);
extern void mb_retention_check_replayable(const MbPipeline *pipeline,
										  int64 from_batch, int64 to_batch);
extern int64 mb_trim_history(const MbPipeline *pipeline);
extern bool mb_retention_wanted(void);

/* backfill.c */
extern int64 mb_backfill_hold(Oid dboid, int32 pipeline_id);
extern bool mb_backfill_running(Oid dboid, const char *pipeline_name);

/* batch.c */
extern ErrorData *mb_subtransaction_error(MemoryContext context,
										  ResourceOwner owner);
extern MbBatchResult mb_run_batch(const char *pipeline_name, Oid caller,
								  bool wait, const MbBatchObserver *observer);
extern int64 mb_replay_batch(const char *pipeline_name, int64 batch_id,
							 Oid caller);
extern List *mb_preview_batch(const char *pipeline_name, Oid caller,
							  MemoryContext result_context);
extern int64 mb_reset_pipeline(const char *pipeline_name, Oid caller);
extern bool mb_rows_waiting(const char *pipeline_name, Oid caller,
							bool oldest, MbBacklog *backlog);
extern int32 mb_record_failure(const char *pipeline_name,
							   const ErrorData *error, TimestampTz started_at);
extern void mb_rebind_pipeline(const char *pipeline_name, Oid caller);
extern void mb_skip_existing_rows(const MbPipeline *pipeline);

/* wakeup.c, status.c, launcher.c: what the SQL side asks of workers */
extern void mb_wake_for_source(Oid relid);
extern void mb_wake_scheduler_at_commit(void);
extern void mb_warn_if_no_workers(void);
extern void mb_release_database(const char *dbname);

/* stats.c */
extern void mb_stats_count_batch(int32 pipeline_id, const MbBatchOutcome *outcome);
extern void mb_stats_forget_pipeline(int32 pipeline_id);
extern void mb_stats_forget_database(Oid dboid);
extern void mb_stats_forget_database_at_commit(void);

#endif							/* MICROBATCH_H */
