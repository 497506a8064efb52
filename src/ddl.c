/*-------------------------------------------------------------------------
 *
 * ddl.c
 *	  What DDL may do to sources and batch views.
 *
 * A source's rows must all reach a batch exactly once.  DDL can defeat
 * that: attaching a pre-loaded table (its rows may lie behind every future
 * window), detaching, dropping or truncating a table whose rows are still
 * waiting, changing the tracking column or dropping its guards.  And a
 * batch view must stay where and whose it is.  The extension's event
 * triggers, which fire in every session whether or not the library is
 * preloaded, call microbatch.ddl_guard():
 *
 *	ddl_command_start: refuses changes to the tracking column, its
 *		constraint and triggers on any table of a source's hierarchy
 *		(ALTER TABLE, DROP TRIGGER, ALTER TRIGGER ... RENAME); refuses
 *		DETACH PARTITION ... CONCURRENTLY, whose first transaction commits
 *		before any check could refuse it; refuses renaming, moving or giving
 *		away a batch view.
 *	ddl_command_end: guards tables that joined a hierarchy (CREATE TABLE
 *		... PARTITION OF / INHERITS, ATTACH PARTITION, INHERIT), refusing
 *		those holding rows behind a pipeline's position, and foreign tables;
 *		refuses DETACH PARTITION and NO INHERIT of tables with rows still
 *		waiting; after CREATE and ALTER SUBSCRIPTION, gives the tables a
 *		subscription writes into the replica trigger (src/source.c).
 *	sql_drop: refuses a drop that took waiting rows from a pipeline that
 *		stays (the drop hook below counted them); drops the pipelines whose
 *		source or batch view went (DROP TABLE ... CASCADE, DROP VIEW, DROP
 *		SCHEMA, DROP OWNED).
 *
 * The BEFORE TRUNCATE trigger on sources refuses to truncate waiting rows.
 * What the event triggers cannot see (they can be disabled) the checks
 * before every batch catch.  Statements microbatch itself issues pass.
 *
 * The library's object access hook sees every table a statement drops,
 * however it gets there (DROP TABLE, DROP SCHEMA ... CASCADE, DROP OWNED,
 * DROP EXTENSION), before anything is deleted: it counts the rows that
 * pipelines on the table's ancestors still wait for.  The preload installs
 * it in every session; without it, the event triggers on DROP statements
 * load the library first.
 *
 * With the preload, the ProcessUtility hook also lets our processes leave
 * a database that is being dropped, renamed or copied (only once the
 * statement's own permission checks would pass, so that nobody can stop
 * another database's pipelines by trying), and makes pipelines follow
 * REASSIGN OWNED, which fires no event trigger.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_class.h"
#include "catalog/pg_database.h"
#include "catalog/pg_inherits.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "microbatch.h"

PG_FUNCTION_INFO_V1(microbatch_ddl_guard);
PG_FUNCTION_INFO_V1(microbatch_source_truncated);

static ProcessUtility_hook_type prev_process_utility = NULL;
static object_access_hook_type prev_object_access_hook = NULL;

/*
 * Tables being dropped with rows a pipeline on an ancestor waits for, noted
 * by the drop hook for sql_drop, in TopTransactionContext; valid only in
 * the transaction that noted them.
 */
typedef struct MbDroppedRows
{
	Oid			relid;
	char	   *relname;
	int32		pipeline_id;
	char	   *pipeline;
	int64		pending;
} MbDroppedRows;

static List *dropped_rows = NIL;
static LocalTransactionId dropped_rows_lxid = InvalidLocalTransactionId;

/* Whether this database has the extension; its event triggers may outlive it */
static bool
mb_extension_here(void)
{
	return OidIsValid(get_extension_oid("microbatch", true)) &&
		OidIsValid(get_namespace_oid(MB_SCHEMA, true));
}

static bool
mb_is_tracking_column(const char *name)
{
	return name != NULL && strcmp(name, MB_TRACKING_COLUMN) == 0;
}

/* The pipelines whose source is the table or one of its ancestors */
static List *
mb_pipelines_over(Oid relid, bool strict_ancestors)
{
	List	   *tables = mb_table_and_ancestors(relid);

	if (strict_ancestors)
		tables = list_delete_first(tables);
	return mb_pipelines_on_sources(tables);
}

/*
 * Whether a statement on the table may change what a pipeline reads: one
 * reads the table or a table above it, or, as ALTER TABLE and RENAME
 * recurse, a table below it.
 */
static bool
mb_feeds_pipeline(Oid relid)
{
	return mb_pipelines_over(relid, false) != NIL ||
		mb_pipelines_on_sources(mb_hierarchy_members(relid, NoLock)) != NIL;
}

static Oid
mb_rangevar_relid(RangeVar *rv)
{
	return rv ? RangeVarGetRelid(rv, NoLock, true) : InvalidOid;
}

/* "cannot <what> table t, which feeds a pipeline" */
static void
mb_refuse(const char *what, Oid relid, const char *detail, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("cannot %s table \"%s\", which feeds a pipeline",
					what, get_rel_name(relid)),
			 errdetail("%s", detail),
			 errhint("%s", hint)));
}

#define MB_HINT_DROP_FIRST "Drop the pipelines that read the table first."
#define MB_HINT_PROCESS_FIRST "Let the pipelines process its rows first, or drop them."


/*
 * Refuse ALTER TABLE subcommands that would loosen a source's tracking.
 * Changes to the column recurse to the tables below; the table's own
 * triggers, persistence and partitions matter only if a pipeline reads it.
 */
static void
mb_check_alter_table(AlterTableStmt *stmt, Oid relid)
{
	bool		read = mb_pipelines_over(relid, false) != NIL;
	ListCell   *lc;

	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

		switch (cmd->subtype)
		{
			case AT_ColumnDefault:
			case AT_CookedColumnDefault:
			case AT_DropNotNull:
			case AT_DropColumn:
			case AT_AlterColumnType:
			case AT_AddIdentity:
			case AT_SetIdentity:
			case AT_DropExpression:
				if (mb_is_tracking_column(cmd->name))
					mb_refuse(psprintf("change column \"%s\" of", MB_TRACKING_COLUMN),
							  relid,
							  "Its NOT NULL and its default pg_current_xact_id() put each row into exactly one batch.",
							  MB_HINT_DROP_FIRST);
				break;
			case AT_DropConstraint:
				if (cmd->name && strcmp(cmd->name, MB_TRACKING_CONSTRAINT) == 0)
					mb_refuse(psprintf("drop constraint \"%s\" of", MB_TRACKING_CONSTRAINT),
							  relid,
							  "It keeps rows with other tracking values than their transaction's out of the table.",
							  MB_HINT_DROP_FIRST);
				break;
			case AT_EnableTrig:
			case AT_EnableAlwaysTrig:
			case AT_EnableReplicaTrig:
			case AT_DisableTrig:
				if (read && cmd->name &&
					!mb_trigger_state_allowed(cmd->name,
											  cmd->subtype == AT_EnableTrig ? TRIGGER_FIRES_ON_ORIGIN :
											  cmd->subtype == AT_EnableAlwaysTrig ? TRIGGER_FIRES_ALWAYS :
											  cmd->subtype == AT_EnableReplicaTrig ? TRIGGER_FIRES_ON_REPLICA :
											  TRIGGER_DISABLED))
					mb_refuse(psprintf("change trigger \"%s\" of", cmd->name),
							  relid,
							  "microbatch's triggers fire as they were created.",
							  MB_HINT_DROP_FIRST);
				break;
			case AT_EnableTrigAll:
			case AT_EnableTrigUser:
			case AT_DisableTrigAll:
			case AT_DisableTrigUser:
				if (read)
					mb_refuse("enable or disable all triggers of", relid,
							  "microbatch's triggers fire as they were created.",
							  "Name the triggers to enable or disable one by one.");
				break;
			case AT_SetUnLogged:
				if (read)
					mb_refuse("make unlogged", relid,
							  "A crash empties an unlogged table, rows no batch has processed included.",
							  MB_HINT_DROP_FIRST);
				break;
			case AT_DetachPartition:
				if (read && castNode(PartitionCmd, cmd->def)->concurrent)
					mb_refuse("detach a partition concurrently from", relid,
							  "The first transaction of DETACH PARTITION ... CONCURRENTLY commits before the partition's waiting rows could be counted.",
							  "Use DETACH PARTITION without CONCURRENTLY: it refuses to take waiting rows away.");
				break;
			default:
				break;
		}
	}
}

static void
mb_refuse_batch_view_change(const MbPipeline *pipeline, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("cannot %s the batch view of pipeline \"%s\"", what,
					pipeline->name),
			 errdetail("Transforms read it as %s.%s%s.", MB_SCHEMA,
					   pipeline->name, MB_BATCH_VIEW_SUFFIX),
			 errhint("microbatch.alter_pipeline_owner() gives a pipeline and its view to another role.")));
}

/* The pipeline whose batch view relid is, or NULL */
static MbPipeline *
mb_pipeline_of_view(Oid relid)
{
	List	   *pipelines = mb_pipelines_with_views(list_make1_oid(relid));

	return pipelines ? linitial(pipelines) : NULL;
}

/*
 * What a DDL statement does to the tables we guard, its relations resolved
 * to OIDs: first, as the role running it, with its search_path; then acted
 * upon as the catalog's owner.
 */
typedef enum MbDdlKind
{
	MB_DDL_ALTER,				/* ALTER TABLE subcommands on relid */
	MB_DDL_RENAME,				/* RENAME of relid, or of a part of it */
	MB_DDL_MOVE,				/* ALTER ... SET SCHEMA of relid */
	MB_DDL_DROP_TRIGGER,		/* DROP TRIGGER name ON relid */
	MB_DDL_JOINED,				/* relid joined a hierarchy */
	MB_DDL_LEFT,				/* relid left the hierarchy of parent */
	MB_DDL_SUBSCRIPTION			/* a subscription may write new tables */
} MbDdlKind;

typedef struct MbDdlAction
{
	MbDdlKind	kind;
	Oid			relid;
	Oid			parent;
	Node	   *stmt;
	const char *name;			/* of the trigger dropped */
} MbDdlAction;

static MbDdlAction *
mb_new_action(MbDdlKind kind, Oid relid, Oid parent, Node *stmt)
{
	MbDdlAction *action = palloc0(sizeof(MbDdlAction));

	action->kind = kind;
	action->relid = relid;
	action->parent = parent;
	action->stmt = stmt;
	return action;
}

static List *
mb_add_action(List *actions, MbDdlKind kind, Oid relid, Oid parent, Node *stmt)
{
	if (!OidIsValid(relid))
		return actions;
	return lappend(actions, mb_new_action(kind, relid, parent, stmt));
}

static List *
mb_ddl_start_actions(Node *parsetree)
{
	List	   *actions = NIL;
	ListCell   *lc;

	switch (nodeTag(parsetree))
	{
		case T_AlterTableStmt:
			return mb_add_action(actions, MB_DDL_ALTER,
								 mb_rangevar_relid(((AlterTableStmt *) parsetree)->relation),
								 InvalidOid, parsetree);
		case T_RenameStmt:
			return mb_add_action(actions, MB_DDL_RENAME,
								 mb_rangevar_relid(((RenameStmt *) parsetree)->relation),
								 InvalidOid, parsetree);
		case T_AlterObjectSchemaStmt:
			return mb_add_action(actions, MB_DDL_MOVE,
								 mb_rangevar_relid(((AlterObjectSchemaStmt *) parsetree)->relation),
								 InvalidOid, parsetree);
		case T_DropStmt:
			/* other drops: the drop hook and sql_drop see their tables */
			if (((DropStmt *) parsetree)->removeType != OBJECT_TRIGGER)
				return NIL;
			foreach(lc, ((DropStmt *) parsetree)->objects)
			{
				List	   *names = lfirst(lc);
				int			ntable = list_length(names) - 1;
				Oid			relid = mb_rangevar_relid(makeRangeVarFromNameList(list_truncate(list_copy(names),
																							 ntable)));
				MbDdlAction *action;

				if (!OidIsValid(relid))
					continue;
				action = mb_new_action(MB_DDL_DROP_TRIGGER, relid, InvalidOid,
									   parsetree);
				action->name = strVal(list_nth(names, ntable));
				actions = lappend(actions, action);
			}
			return actions;
		default:
			return NIL;
	}
}

static List *
mb_ddl_end_actions(Node *parsetree)
{
	List	   *actions = NIL;
	ListCell   *lc;
	Oid			relid;

	if (IsA(parsetree, CreateStmt) || IsA(parsetree, CreateForeignTableStmt))
	{
		CreateStmt *stmt = IsA(parsetree, CreateStmt) ? (CreateStmt *) parsetree :
		&((CreateForeignTableStmt *) parsetree)->base;

		if (stmt->inhRelations != NIL || stmt->partbound != NULL)
			actions = mb_add_action(actions, MB_DDL_JOINED,
									mb_rangevar_relid(stmt->relation),
									InvalidOid, parsetree);
		return actions;
	}
	if (IsA(parsetree, CreateSchemaStmt))
	{
		/* its tables fire no event trigger of their own */
		CreateSchemaStmt *stmt = (CreateSchemaStmt *) parsetree;
		char	   *schema = stmt->schemaname ? stmt->schemaname :
		get_rolespec_name(stmt->authrole);

		foreach(lc, stmt->schemaElts)
		{
			CreateStmt *element = (CreateStmt *) lfirst(lc);
			RangeVar   *relation;

			if (!IsA(element, CreateStmt) ||
				(element->inhRelations == NIL && element->partbound == NULL))
				continue;
			relation = copyObject(element->relation);
			if (relation->schemaname == NULL)
				relation->schemaname = schema;
			actions = mb_add_action(actions, MB_DDL_JOINED,
									mb_rangevar_relid(relation), InvalidOid,
									parsetree);
		}
		return actions;
	}
	/* the forms that can make a subscription write into more tables */
	if (IsA(parsetree, CreateSubscriptionStmt) ||
		(IsA(parsetree, AlterSubscriptionStmt) &&
		 (((AlterSubscriptionStmt *) parsetree)->kind == ALTER_SUBSCRIPTION_REFRESH ||
		  ((AlterSubscriptionStmt *) parsetree)->kind == ALTER_SUBSCRIPTION_SET_PUBLICATION ||
		  ((AlterSubscriptionStmt *) parsetree)->kind == ALTER_SUBSCRIPTION_ADD_PUBLICATION ||
		  ((AlterSubscriptionStmt *) parsetree)->kind == ALTER_SUBSCRIPTION_DROP_PUBLICATION)))
		return list_make1(mb_new_action(MB_DDL_SUBSCRIPTION, InvalidOid,
										InvalidOid, parsetree));
	if (!IsA(parsetree, AlterTableStmt))
		return NIL;

	relid = mb_rangevar_relid(((AlterTableStmt *) parsetree)->relation);
	foreach(lc, ((AlterTableStmt *) parsetree)->cmds)
	{
		AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

		switch (cmd->subtype)
		{
			case AT_AttachPartition:
			case AT_DetachPartition:
			case AT_DetachPartitionFinalize:
				/* the partition joins or leaves the table altered */
				actions = mb_add_action(actions,
										cmd->subtype == AT_AttachPartition ? MB_DDL_JOINED : MB_DDL_LEFT,
										mb_rangevar_relid(castNode(PartitionCmd, cmd->def)->name),
										relid, parsetree);
				break;
			case AT_AddInherit:
			case AT_DropInherit:
				/* the table altered joins or leaves its parent's hierarchy */
				actions = mb_add_action(actions,
										cmd->subtype == AT_AddInherit ? MB_DDL_JOINED : MB_DDL_LEFT,
										relid, mb_rangevar_relid(castNode(RangeVar, cmd->def)),
										parsetree);
				break;
			default:
				break;
		}
	}
	return actions;
}

/* Refuse to drop microbatch's triggers from a table of a source's hierarchy */
static void
mb_check_drop_trigger(const char *name, Oid relid)
{
	if (mb_is_guard_trigger(name) && mb_pipelines_over(relid, false) != NIL)
		mb_refuse(psprintf("drop trigger \"%s\" of", name), relid,
				  "microbatch's triggers wake the pipelines and guard the rows.",
				  MB_HINT_DROP_FIRST);
}

/*
 * A table is about to be dropped (the statement's rights were checked, and
 * the table is locked): note the rows pipelines on its ancestors still wait
 * for.  Whether those pipelines stay, sql_drop knows once it sees all that
 * went.
 */
static void
mb_note_dropped_rows(Oid relid)
{
	List	   *pipelines;
	ListCell   *lp;
	MbCall		call;

	if (MyProc->lxid != dropped_rows_lxid)
	{
		dropped_rows = NIL;
		dropped_rows_lxid = MyProc->lxid;
	}

	/* what a drop undone by a savepoint noted is counted again */
	foreach(lp, dropped_rows)
		if (((MbDroppedRows *) lfirst(lp))->relid == relid)
			dropped_rows = foreach_delete_current(dropped_rows, lp);

	mb_call_begin(&call);
	pipelines = mb_pipelines_over(relid, true);
	foreach(lp, pipelines)
	{
		MbPipeline *pipeline = lfirst(lp);
		int64		pending;

		mb_pipeline_lock_known(pipeline);
		pending = mb_window_pending_in(pipeline, relid, NULL);
		if (pending > 0)
		{
			MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
			MbDroppedRows *noted = palloc(sizeof(MbDroppedRows));

			noted->relid = relid;
			noted->relname = pstrdup(get_rel_name(relid));
			noted->pipeline_id = pipeline->id;
			noted->pipeline = pstrdup(pipeline->name);
			noted->pending = pending;
			dropped_rows = lappend(dropped_rows, noted);
			MemoryContextSwitchTo(old);
		}
	}
	mb_call_end(&call);
}

static void
mb_object_access(ObjectAccessType access, Oid classId, Oid objectId,
				 int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	/* internal drops are of transient tables, such as a rewrite's */
	if (access == OAT_DROP && classId == RelationRelationId && subId == 0 &&
		(((ObjectAccessDrop *) arg)->dropflags & PERFORM_DELETION_INTERNAL) == 0 &&
		get_rel_relkind(objectId) == RELKIND_RELATION &&
		get_attnum(objectId, MB_TRACKING_COLUMN) != InvalidAttrNumber &&
		!mb_ddl_is_own() && mb_extension_here())
		mb_note_dropped_rows(objectId);
}

/*
 * The drop is over: refuse it if it took rows that a pipeline which is
 * still there had not processed.
 */
static void
mb_check_dropped_rows(List *dropped)
{
	ListCell   *lc;

	if (MyProc->lxid != dropped_rows_lxid)
		return;
	foreach(lc, dropped_rows)
	{
		MbDroppedRows *noted = lfirst(lc);
		MbPipeline	pipeline;

		/* noted by a drop that a savepoint undid, or by one of ours */
		if (!list_member_oid(dropped, noted->relid))
			continue;
		if (!mb_pipeline_by_id(noted->pipeline_id, &pipeline) ||
			list_member_oid(dropped, pipeline.source))
			continue;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot drop table \"%s\", which feeds a pipeline",
						noted->relname),
				 errdetail_plural("Pipeline \"%s\" has not processed " INT64_FORMAT " of its rows.",
								  "Pipeline \"%s\" has not processed " INT64_FORMAT " of its rows.",
								  (unsigned long) noted->pending,
								  noted->pipeline, noted->pending),
				 errhint(MB_HINT_PROCESS_FIRST)));
	}
	dropped_rows = NIL;
}

static void
mb_check_rename(RenameStmt *stmt, Oid relid)
{
	MbPipeline *pipeline;

	if ((stmt->renameType == OBJECT_VIEW || stmt->renameType == OBJECT_TABLE) &&
		(pipeline = mb_pipeline_of_view(relid)) != NULL)
		mb_refuse_batch_view_change(pipeline, "rename");
	if (!mb_feeds_pipeline(relid))
		return;
	if (stmt->renameType == OBJECT_COLUMN && mb_is_tracking_column(stmt->subname))
		mb_refuse(psprintf("rename column \"%s\" of", MB_TRACKING_COLUMN),
				  relid, "Batches find the rows' transactions in it.",
				  MB_HINT_DROP_FIRST);
	if (stmt->renameType == OBJECT_TABCONSTRAINT &&
		strcmp(stmt->subname, MB_TRACKING_CONSTRAINT) == 0)
		mb_refuse(psprintf("rename constraint \"%s\" of", MB_TRACKING_CONSTRAINT),
				  relid, "Batches check that it is there.",
				  MB_HINT_DROP_FIRST);
	if (stmt->renameType == OBJECT_TRIGGER && mb_is_guard_trigger(stmt->subname))
		mb_refuse(psprintf("rename trigger \"%s\" of", stmt->subname),
				  relid, "Batches check that it is there.",
				  MB_HINT_DROP_FIRST);
}

static void
mb_check_alter(AlterTableStmt *stmt, Oid relid)
{
	MbPipeline *pipeline = mb_pipeline_of_view(relid);
	ListCell   *lc;

	if (pipeline != NULL)
	{
		foreach(lc, stmt->cmds)
			if (lfirst_node(AlterTableCmd, lc)->subtype == AT_ChangeOwner)
				mb_refuse_batch_view_change(pipeline, "give away");
		return;
	}
	if (mb_feeds_pipeline(relid))
		mb_check_alter_table(stmt, relid);
}

/*
 * A table joined the hierarchy of a source, with all the tables below it:
 * no row of theirs may lie behind the position of a pipeline on the new
 * ancestors, or it would never be processed.  Each such pipeline's lock is
 * held to the end of the transaction, so that no batch moves the position
 * until the new tables are part of what batches read.  Then the tables get
 * the guards, made by the role running the DDL, who owns them.
 */
static void
mb_table_joined(Oid relid, Oid caller)
{
	List	   *pipelines = mb_pipelines_over(relid, true);
	ListCell   *lp;

	if (pipelines == NIL)
		return;
	foreach(lp, pipelines)
	{
		MbPipeline *pipeline = lfirst(lp);
		ListCell   *lc;

		mb_pipeline_lock_known(pipeline);

		/*
		 * Until the rebind, this cluster's ids mean nothing to the pipeline,
		 * and the rebind would take the new table's rows for processed ones.
		 */
		if (pipeline->system_identifier != GetSystemIdentifier())
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot add table \"%s\" to the source of pipeline \"%s\", which was restored from another cluster",
							get_rel_name(relid), pipeline->name),
					 errhint("Run microbatch.rebind_pipeline(%s) first.",
							 quote_literal_cstr(pipeline->name))));
		foreach(lc, mb_hierarchy_members(relid, NoLock))
		{
			Oid			member = lfirst_oid(lc);
			int64		total;
			int64		pending;

			if (get_rel_relkind(member) != RELKIND_RELATION)
				continue;
			mb_source_check_values(member);
			pending = mb_window_pending_in(pipeline, member, &total);
			if (total > pending)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg_plural("table \"%s\" has " INT64_FORMAT " row that pipeline \"%s\" would never process",
									   "table \"%s\" has " INT64_FORMAT " rows that pipeline \"%s\" would never process",
									   (unsigned long) (total - pending),
									   get_rel_name(member), total - pending, pipeline->name),
						 errdetail("Their %s values lie behind the pipeline's last batch: they were loaded before it, or copied from elsewhere.",
								   MB_TRACKING_COLUMN),
						 errhint("Insert the rows through the source instead (INSERT INTO ... SELECT without the column %s), or give them the current transaction's id with UPDATE ... SET %s = DEFAULT before attaching the table.",
								 MB_TRACKING_COLUMN, MB_TRACKING_COLUMN)));
		}
	}
	mb_source_guard(relid, caller, false);
}

/*
 * A table left the hierarchy of a source: refuse it if a pipeline on a
 * former ancestor has not processed all of its rows; otherwise it loses the
 * guards it no longer needs.
 */
static void
mb_table_left(Oid relid, Oid former_parent, Oid caller)
{
	List	   *pipelines = mb_pipelines_over(former_parent, false);
	ListCell   *lp;

	foreach(lp, pipelines)
	{
		MbPipeline *pipeline = lfirst(lp);
		ListCell   *lc;

		mb_pipeline_lock_known(pipeline);
		foreach(lc, mb_hierarchy_members(relid, NoLock))
		{
			Oid			member = lfirst_oid(lc);

			if (get_rel_relkind(member) == RELKIND_RELATION &&
				mb_window_pending_in(pipeline, member, NULL) > 0)
				mb_refuse("detach", member,
						  psprintf("Pipeline \"%s\" has not processed all of its rows yet.",
								   pipeline->name),
						  MB_HINT_PROCESS_FIRST);
		}
	}
	if (pipelines != NIL)
		mb_source_table_left(relid, caller);
}

/*
 * Pipelines whose source or batch view was dropped go with them, with a
 * notice, as dependent objects would; the guards of a source that is still
 * there go if nothing needs them any more and the role may drop them.
 */
static void
mb_sql_drop(Oid caller)
{
	List	   *dropped = NIL;
	ListCell   *lc;

	if (SPI_execute("SELECT objid FROM pg_catalog.pg_event_trigger_dropped_objects() "
					"WHERE classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass "
					"AND objsubid OPERATOR(pg_catalog.=) 0",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the dropped objects");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		dropped = lappend_oid(dropped,
							  DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
															 SPI_tuptable->tupdesc,
															 1, &isnull)));
	}
	if (dropped == NIL)
		return;
	mb_check_dropped_rows(dropped);

	foreach(lc, list_concat(mb_pipelines_on_sources(dropped),
							mb_pipelines_with_views(dropped)))
	{
		MbPipeline *pipeline = lfirst(lc);
		MbPipeline	still;

		if (!mb_pipeline_by_id(pipeline->id, &still))
			continue;			/* both its source and its view went */
		mb_pipeline_delete(pipeline->id);
		ereport(NOTICE,
				(errmsg("pipeline \"%s\" was dropped with its %s",
						pipeline->name,
						list_member_oid(dropped, pipeline->source) ?
						"source table" : "batch view")));
		mb_source_release(pipeline, caller);
	}
	mb_citus_forget_dropped(dropped);
	mb_wake_scheduler_at_commit();
}

/*
 * microbatch.ddl_guard(): the extension's event triggers.  Relation names
 * are resolved first, as the role running the statement and with its
 * search_path; then the catalog is read as its owner.
 */
Datum
microbatch_ddl_guard(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata = (EventTriggerData *) fcinfo->context;
	List	   *actions = NIL;
	bool		sql_drop;
	MbCall		call;
	ListCell   *lc;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("microbatch.ddl_guard() must be called as an event trigger")));
	if (mb_ddl_is_own())
		PG_RETURN_VOID();

	/* the start trigger fires for every statement: most have nothing for us */
	sql_drop = strcmp(trigdata->event, "sql_drop") == 0;
	if (strcmp(trigdata->event, "ddl_command_start") == 0)
		actions = mb_ddl_start_actions(trigdata->parsetree);
	else if (strcmp(trigdata->event, "ddl_command_end") == 0)
		actions = mb_ddl_end_actions(trigdata->parsetree);
	if ((actions == NIL && !sql_drop) || !mb_extension_here())
		PG_RETURN_VOID();

	mb_call_begin(&call);
	if (sql_drop)
		mb_sql_drop(call.caller);
	foreach(lc, actions)
	{
		MbDdlAction *action = lfirst(lc);

		switch (action->kind)
		{
			case MB_DDL_ALTER:
				mb_check_alter((AlterTableStmt *) action->stmt, action->relid);
				break;
			case MB_DDL_RENAME:
				mb_check_rename((RenameStmt *) action->stmt, action->relid);
				break;
			case MB_DDL_MOVE:
				{
					MbPipeline *pipeline = mb_pipeline_of_view(action->relid);

					if (pipeline != NULL)
						mb_refuse_batch_view_change(pipeline, "move");
					break;
				}
			case MB_DDL_DROP_TRIGGER:
				mb_check_drop_trigger(action->name, action->relid);
				break;
			case MB_DDL_JOINED:
				mb_table_joined(action->relid, call.caller);
				/* it may have joined a table a subscription writes into */
				mb_source_guard_subscribed(list_make1_oid(action->relid),
										   call.caller);
				break;
			case MB_DDL_LEFT:
				if (OidIsValid(action->parent))
					mb_table_left(action->relid, action->parent, call.caller);
				break;
			case MB_DDL_SUBSCRIPTION:
				mb_source_guard_subscribed(mb_subscribed_tables(), call.caller);
				break;
		}
	}
	mb_call_end(&call);
	PG_RETURN_VOID();
}

/*
 * BEFORE TRUNCATE on every table holding a source's rows.  TRUNCATE has
 * the table locked, so no batch runs on it while we look.
 */
Datum
microbatch_source_truncated(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Oid			relid;
	MbCall		call;
	ListCell   *lc;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("microbatch.source_truncated() must be called as a TRUNCATE trigger")));
	relid = RelationGetRelid(trigdata->tg_relation);

	mb_call_begin(&call);
	foreach(lc, mb_pipelines_over(relid, false))
	{
		MbPipeline *pipeline = lfirst(lc);
		int64		pending = mb_window_pending_in(pipeline, relid, NULL);

		if (pending > 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg_plural("cannot truncate table \"%s\": pipeline \"%s\" has not processed " INT64_FORMAT " of its rows",
								   "cannot truncate table \"%s\": pipeline \"%s\" has not processed " INT64_FORMAT " of its rows",
								   (unsigned long) pending,
								   get_rel_name(relid), pipeline->name, pending),
					 errdetail("TRUNCATE would lose them without a trace in the pipeline's history."),
					 errhint("Let the pipeline process them first, or DELETE them if they are to be discarded.")));
	}
	mb_call_end(&call);
	PG_RETURN_POINTER(NULL);
}

/*
 * DROP DATABASE, ALTER DATABASE ... RENAME and CREATE DATABASE ... TEMPLATE
 * need a database without connections.  Our processes in it are asked to
 * leave only when the statement's own checks would pass: on a database
 * that exists, by a role with the rights PostgreSQL checks for it; DROP and
 * CREATE only at top level outside a transaction block, DROP and RENAME
 * not of the database we are connected to.
 */
typedef enum MbDatabaseAction
{
	MB_DATABASE_DROP,
	MB_DATABASE_RENAME,
	MB_DATABASE_COPY,
} MbDatabaseAction;

static bool
mb_may_act_on_database(const char *dbname, MbDatabaseAction action,
					   ProcessUtilityContext context)
{
	Oid			dboid = get_database_oid(dbname, true);
	HeapTuple	tuple;
	bool		is_template = false;

	if (!OidIsValid(dboid))
		return false;
	if (action != MB_DATABASE_RENAME &&
		(context != PROCESS_UTILITY_TOPLEVEL || IsTransactionBlock()))
		return false;
	if (action != MB_DATABASE_COPY && dboid == MyDatabaseId)
		return false;
	if (action != MB_DATABASE_DROP && !have_createdb_privilege())
		return false;
	tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
	if (HeapTupleIsValid(tuple))
	{
		is_template = ((Form_pg_database) GETSTRUCT(tuple))->datistemplate;
		ReleaseSysCache(tuple);
	}
	if (!pg_database_ownercheck(dboid, GetUserId()) &&
		!(action == MB_DATABASE_COPY && is_template))
		return false;
	return true;
}

/* REASSIGN OWNED moved the batch views; move their pipelines too */
static void
mb_after_reassign_owned(ReassignOwnedStmt *stmt)
{
	List	   *old_roles = NIL;
	ListCell   *lc;
	MbCall		call;

	if (!mb_extension_here())
		return;
	foreach(lc, stmt->roles)
		old_roles = lappend_oid(old_roles, get_rolespec_oid(lfirst(lc), false));
	mb_call_begin(&call);
	mb_pipelines_reassign(old_roles, get_rolespec_oid(stmt->newrole, false));
	mb_call_end(&call);
	mb_wake_scheduler_at_commit();
}

static void
mb_process_utility(PlannedStmt *pstmt, const char *queryString,
				   bool readOnlyTree, ProcessUtilityContext context,
				   ParamListInfo params, QueryEnvironment *queryEnv,
				   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (IsA(stmt, DropdbStmt))
	{
		DropdbStmt *drop = (DropdbStmt *) stmt;

		if (mb_may_act_on_database(drop->dbname, MB_DATABASE_DROP, context))
			mb_release_database(drop->dbname);
	}
	else if (IsA(stmt, RenameStmt) &&
			 ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
	{
		RenameStmt *rename = (RenameStmt *) stmt;

		if (!OidIsValid(get_database_oid(rename->newname, true)) &&
			mb_may_act_on_database(rename->subname, MB_DATABASE_RENAME, context))
			mb_release_database(rename->subname);
	}
	else if (IsA(stmt, CreatedbStmt))
	{
		CreatedbStmt *create = (CreatedbStmt *) stmt;
		ListCell   *lc;

		foreach(lc, create->options)
		{
			DefElem    *option = lfirst_node(DefElem, lc);

			if (strcmp(option->defname, "template") == 0 && option->arg != NULL &&
				!OidIsValid(get_database_oid(create->dbname, true)) &&
				mb_may_act_on_database(defGetString(option), MB_DATABASE_COPY, context))
				mb_release_database(defGetString(option));
		}
	}

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);

	if (IsA(stmt, ReassignOwnedStmt))
		mb_after_reassign_owned((ReassignOwnedStmt *) stmt);
}

void
mb_utility_hook_install(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = mb_process_utility;
}

void
mb_object_access_hook_install(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = mb_object_access;
}
