/*-------------------------------------------------------------------------
 *
 * source.c
 *	  Source tables: the tracking column, and the guards on every table
 *	  that holds a source's rows.
 *
 * A source table has one tracking column, microbatch_xid, whose default is
 * the id of the inserting top-level transaction, and an index on it: a
 * B-tree, or a BRIN index (src/tracking_index.c).
 * Rows that already exist when the column is added get the id of the
 * creating transaction as a constant default, which costs no table rewrite
 * and makes them part of each pipeline's first batch.
 *
 * A row lands in the batch whose window contains its tracking value, so a
 * row with any other value than its transaction's id (copied from another
 * table, loaded by COPY with the column, restored from a dump into a live
 * database) could fall behind every future window and never be processed.
 * Every table of the source's hierarchy that holds rows (the source itself,
 * or its partitions and inheritance children) therefore carries:
 *
 *	- a NOT VALID check constraint that calls microbatch.tracking_xid_ok(),
 *	  refusing any row whose value is not the writing transaction's id, and
 *	  any row at all once the table is restored into another cluster (the
 *	  constraint holds the system identifier of the cluster it was made in).
 *	  It is local to each table and NOT VALID, so pg_dump restores it after
 *	  the data, which keeps its old values;
 *	- a BEFORE TRUNCATE trigger refusing to truncate rows a pipeline has not
 *	  processed;
 *	- on the tables a subscription writes into (directly or through a
 *	  partitioned table), a row trigger fired only in replica mode, giving
 *	  rows applied by logical replication the id of the applying
 *	  transaction.  Only there: any BEFORE ROW trigger, even one that never
 *	  fires, makes COPY insert row by row instead of in batches.  Rows a
 *	  subscription applies into a table without it keep the constraint's
 *	  check, which also wakes their pipelines;
 *	- with every partitioned table of the hierarchy, a statement trigger
 *	  that wakes the scheduler when the writing transaction commits.
 *
 * These guards are added to new members of the hierarchy, and the replica
 * trigger to the tables a subscription starts writing into, by the event
 * triggers (src/ddl.c), checked before every batch, and added again by
 * refresh_pipeline().  Changes to a table are made as the role calling the
 * API, who must own the table, through the user-code primitive.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/catalog.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_constraint.h"
#include "catalog/pg_subscription_rel.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/xid8.h"

#include "microbatch.h"

PG_FUNCTION_INFO_V1(microbatch_tracking_xid_ok);
PG_FUNCTION_INFO_V1(microbatch_source_replicated);

/*
 * The table whose tracking values rebind_pipeline() is rewriting, and the
 * tables above it (an inherited constraint names the table it came from):
 * only its rows pass, not those a trigger of the owner's may write
 * elsewhere meanwhile.
 */
static List *retagging = NIL;

/* Set while microbatch runs DDL of its own, which the event trigger passes */
static int	own_ddl_depth = 0;

static void mb_check_member_kind(Relation rel);
static bool mb_guards_needed(Oid relid, int32 exclude);

void
mb_ddl_own_begin(void)
{
	own_ddl_depth++;
}

void
mb_ddl_own_end(void)
{
	own_ddl_depth--;
}

bool
mb_ddl_is_own(void)
{
	return own_ddl_depth > 0;
}

/*
 * Run one statement of microbatch's own on a table, as the given role, who
 * must have the rights for it.  The event trigger lets it through.
 */
void
mb_table_ddl(Oid role, const char *sql)
{
	MbUserCode	uc;

	mb_user_code_begin(&uc, role, NULL);
	/* microbatch's own DDL, on a table of this node */
	mb_citus_local_ddl();
	mb_ddl_own_begin();
	PG_TRY();
	{
		int			rc = SPI_execute(sql, false, 0);

		if (rc != SPI_OK_UTILITY)
			elog(ERROR, "unexpected result %s for \"%s\"",
				 SPI_result_code_string(rc), sql);
	}
	PG_FINALLY();
	{
		mb_ddl_own_end();
	}
	PG_END_TRY();
	mb_user_code_end(&uc);
}

/* Tables in these schemas are never sources: system, toast, ours */
static bool
mb_is_reserved_namespace(Oid namespace)
{
	char	   *name = get_namespace_name(namespace);

	return IsCatalogNamespace(namespace) || IsToastNamespace(namespace) ||
		isAnyTempNamespace(namespace) ||
		(name != NULL && (strcmp(name, MB_SCHEMA) == 0 ||
						  strcmp(name, "information_schema") == 0));
}

static bool
mb_is_extension_member(Oid relid)
{
	return OidIsValid(getExtensionOfObject(RelationRelationId, relid));
}

/*
 * A pipeline can read a permanent table or partitioned table of the
 * caller's, outside the system's and the extensions' own objects.
 * Creating one changes the table (see above), so it takes the privileges
 * of the table's owner, as CREATE PUBLICATION does.
 */
void
mb_source_check_usable(Oid source, Oid caller)
{
	char		relkind = get_rel_relkind(source);
	char	   *relname = get_rel_name(source);
	HeapTuple	tuple;
	Oid			relowner;

	if (relkind == '\0' || relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", source)));
	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", relname),
				 errdetail("The source of a pipeline must be a table or a partitioned table.")));
	if (get_rel_persistence(source) == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("source table \"%s\" is a temporary table", relname),
				 errdetail("Batches can run in other sessions, which cannot see temporary tables.")));
	if (mb_is_reserved_namespace(get_rel_namespace(source)) ||
		mb_is_extension_member(source))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table \"%s\" cannot be the source of a pipeline", relname),
				 errdetail("System catalogs and tables that belong to an extension cannot be sources.")));

	mb_citus_check_source(source);

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(source));
	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", source)));
	relowner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	if (!has_privs_of_role(caller, relowner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of table %s", relname),
				 errdetail("A pipeline adds a column \"%s\", an index, a constraint and triggers to its source, and drops them again.",
						   MB_TRACKING_COLUMN),
				 errhint("Ask the table's owner to create the pipeline, then to give it to you with microbatch.alter_pipeline_owner().")));
}

/* The OID of microbatch.tracking_xid_ok(xid8, regclass, bigint) */
static Oid
mb_tracking_function(void)
{
	Oid			argtypes[3] = {XID8OID, REGCLASSOID, INT8OID};

	return LookupFuncName(stringToQualifiedNameList(MB_SCHEMA ".tracking_xid_ok"),
						  3, argtypes, false);
}

/* Whether an expression is exactly pg_current_xact_id() */
static bool
mb_is_current_xact_id(Node *expr)
{
	return expr != NULL && IsA(expr, FuncExpr) &&
		((FuncExpr *) expr)->funcid == F_PG_CURRENT_XACT_ID &&
		((FuncExpr *) expr)->args == NIL;
}

/*
 * Whether a check constraint expression is ours, made in this cluster:
 * microbatch.tracking_xid_ok(microbatch_xid, <table>, <this system id>)
 */
static bool
mb_is_tracking_check(Node *expr, AttrNumber attnum, bool *this_cluster)
{
	FuncExpr   *call;
	Node	   *column;
	Node	   *sysid;

	if (expr == NULL || !IsA(expr, FuncExpr))
		return false;
	call = (FuncExpr *) expr;
	if (call->funcid != mb_tracking_function() || list_length(call->args) != 3)
		return false;
	column = linitial(call->args);
	sysid = lthird(call->args);
	if (!IsA(column, Var) || ((Var *) column)->varattno != attnum ||
		!IsA(sysid, Const) || ((Const *) sysid)->constisnull)
		return false;
	*this_cluster = (uint64) DatumGetInt64(((Const *) sysid)->constvalue) ==
		GetSystemIdentifier();
	return true;
}

typedef enum MbGuardState
{
	MB_GUARD_MISSING,
	MB_GUARD_FOREIGN,			/* ours, made in another cluster */
	MB_GUARD_OK
} MbGuardState;

/* The state of our check constraint on one table; errors on an impostor */
static MbGuardState
mb_tracking_check_state(Relation rel)
{
	TupleConstr *constr = RelationGetDescr(rel)->constr;
	AttrNumber	attnum = get_attnum(RelationGetRelid(rel), MB_TRACKING_COLUMN);

	for (int i = 0; constr != NULL && i < constr->num_check; i++)
	{
		ConstrCheck *check = &constr->check[i];
		bool		this_cluster;

		if (strcmp(check->ccname, MB_TRACKING_CONSTRAINT) != 0)
			continue;
		if (!mb_is_tracking_check(stringToNode(check->ccbin), attnum, &this_cluster))
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("table %s has a constraint \"%s\" that is not microbatch's",
							RelationGetRelationName(rel), MB_TRACKING_CONSTRAINT),
					 errhint("Rename or drop that constraint; microbatch needs the name.")));
		return this_cluster ? MB_GUARD_OK : MB_GUARD_FOREIGN;
	}
	return MB_GUARD_MISSING;
}

/* Whether a table's tracking constraint is a copy inherited from a parent */
static bool
mb_tracking_check_inherited(Oid relid)
{
	Oid			conoid = get_relation_constraint_oid(relid, MB_TRACKING_CONSTRAINT, true);
	HeapTuple	tuple;
	bool		inherited;

	if (!OidIsValid(conoid))
		return false;
	tuple = SearchSysCache1(CONSTROID, ObjectIdGetDatum(conoid));
	if (!HeapTupleIsValid(tuple))
		return false;
	inherited = ((Form_pg_constraint) GETSTRUCT(tuple))->coninhcount > 0;
	ReleaseSysCache(tuple);
	return inherited;
}

/* A trigger's firing state (pg_trigger.tgenabled), or 0 if there is none */
static char
mb_trigger_state(Relation rel, const char *name)
{
	TriggerDesc *trigdesc = rel->trigdesc;

	for (int i = 0; trigdesc != NULL && i < trigdesc->numtriggers; i++)
		if (strcmp(trigdesc->triggers[i].tgname, name) == 0)
			return trigdesc->triggers[i].tgenabled;
	return 0;
}

static bool
mb_has_trigger(Relation rel, const char *name)
{
	return mb_trigger_state(rel, name) != 0;
}

/*
 * Our triggers and how they fire: the wake-up always, also for apply
 * workers; the TRUNCATE guard as any trigger; the replica trigger in
 * replica mode only.
 */
typedef struct MbGuardTrigger
{
	const char *name;
	bool		rows_only;		/* only on tables that hold rows */
	bool		subscribed_only;	/* only on tables a subscription writes */
	char		enabled;
	const char *enable_sql;
} MbGuardTrigger;

static const MbGuardTrigger guard_triggers[] = {
	{MB_TRIGGER_CHANGED, false, false, TRIGGER_FIRES_ALWAYS, "ENABLE ALWAYS"},
	{MB_TRIGGER_TRUNCATED, true, false, TRIGGER_FIRES_ALWAYS, "ENABLE ALWAYS"},
	{MB_TRIGGER_REPLICATED, true, true, TRIGGER_FIRES_ON_REPLICA, "ENABLE REPLICA"},
};

/*
 * Whether a subscription of this database writes into a table: it is in
 * pg_subscription_rel, or a partitioned table above it is (the apply worker
 * routes rows into the partition, whose own row triggers fire).
 */
bool
mb_subscription_writes(Oid relid)
{
	List	   *tables = list_make1_oid(relid);
	Relation	catalog;
	ListCell   *lc;
	bool		found = false;

	if (get_rel_relispartition(relid))
		tables = list_concat(tables, get_partition_ancestors(relid));
	catalog = table_open(SubscriptionRelRelationId, AccessShareLock);
	foreach(lc, tables)
	{
		ScanKeyData key;
		SysScanDesc scan;

		ScanKeyInit(&key, Anum_pg_subscription_rel_srrelid,
					BTEqualStrategyNumber, F_OIDEQ,
					ObjectIdGetDatum(lfirst_oid(lc)));
		scan = systable_beginscan(catalog, SubscriptionRelSrrelidSrsubidIndexId,
								  true, NULL, 1, &key);
		found = HeapTupleIsValid(systable_getnext(scan));
		systable_endscan(scan);
		if (found)
			break;
	}
	table_close(catalog, AccessShareLock);
	return found;
}

/*
 * Whether setting a trigger's firing state to enabled keeps microbatch's
 * guards as they must be: true for other triggers, and for ours when it
 * is their own state (pg_dump sets it so, after creating them).
 */
bool
mb_trigger_state_allowed(const char *name, char enabled)
{
	for (int i = 0; i < lengthof(guard_triggers); i++)
		if (strcmp(name, guard_triggers[i].name) == 0)
			return enabled == guard_triggers[i].enabled;
	return true;
}

bool
mb_is_guard_trigger(const char *name)
{
	for (int i = 0; i < lengthof(guard_triggers); i++)
		if (strcmp(name, guard_triggers[i].name) == 0)
			return true;
	return false;
}

/*
 * The tracking column must be an xid8 that is NOT NULL and defaults to
 * pg_current_xact_id(): a row written with any other value may never be
 * processed.  Returns its number, or InvalidAttrNumber if the table has no
 * such column and missing_ok.
 */
static AttrNumber
mb_tracking_column_check(Relation rel, bool missing_ok)
{
	TupleDesc	desc = RelationGetDescr(rel);
	AttrNumber	attnum = InvalidAttrNumber;
	Form_pg_attribute attr = NULL;
	Node	   *def = NULL;

	for (int i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped &&
			strcmp(NameStr(TupleDescAttr(desc, i)->attname), MB_TRACKING_COLUMN) == 0)
		{
			attr = TupleDescAttr(desc, i);
			attnum = attr->attnum;
		}
	if (attr == NULL)
	{
		if (missing_ok)
			return InvalidAttrNumber;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("source table %s has no column \"%s\"",
						RelationGetRelationName(rel), MB_TRACKING_COLUMN),
				 errhint("Drop the pipeline and create it again.")));
	}
	if (attr->atttypid != XID8OID)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_COLUMN),
				 errmsg("column \"%s\" of table %s is not a microbatch tracking column",
						MB_TRACKING_COLUMN, RelationGetRelationName(rel)),
				 errdetail("A tracking column has type xid8."),
				 errhint("Rename or drop the column; microbatch needs the name.")));

	for (int i = 0; desc->constr != NULL && i < desc->constr->num_defval; i++)
		if (desc->constr->defval[i].adnum == attnum)
			def = stringToNode(desc->constr->defval[i].adbin);
	if (!attr->attnotnull || !mb_is_current_xact_id(def))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("column \"%s\" of table %s must be NOT NULL with the default pg_current_xact_id()",
						MB_TRACKING_COLUMN, RelationGetRelationName(rel)),
				 errdetail("Rows written with any other value would fall outside every batch window."),
				 errhint("Restore them with ALTER TABLE ... ALTER COLUMN %s SET DEFAULT pg_catalog.pg_current_xact_id(), ALTER COLUMN %s SET NOT NULL, or drop the column and create the pipeline again.",
						 MB_TRACKING_COLUMN, MB_TRACKING_COLUMN)));
	return attnum;
}

static bool
mb_holds_rows(Oid relid)
{
	return get_rel_relkind(relid) == RELKIND_RELATION;
}

/*
 * Before every batch: the tracking column is still what it must be, and
 * every table holding the source's rows still has its constraint, made in
 * this cluster.  Event triggers keep it so; this catches what they could
 * not see (disabled, or changes made before the pipeline existed).
 */
void
mb_source_check_guarded(const MbPipeline *pipeline)
{
	ListCell   *lc;

	foreach(lc, mb_hierarchy_members(pipeline->source, AccessShareLock))
	{
		Oid			member = lfirst_oid(lc);
		Relation	rel = table_open(member, NoLock);
		MbGuardState state;

		mb_check_member_kind(rel);
		if (member == pipeline->source)
			(void) mb_tracking_column_check(rel, false);
		for (int i = 0; i < lengthof(guard_triggers); i++)
		{
			char		state = mb_trigger_state(rel, guard_triggers[i].name);

			/* without the replica trigger, the constraint refuses foreign ids */
			if (guard_triggers[i].subscribed_only && state == 0)
				continue;
			if ((!guard_triggers[i].rows_only || mb_holds_rows(member)) &&
				state != guard_triggers[i].enabled)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("trigger \"%s\" of table %s of the source of pipeline \"%s\" is missing or disabled",
								guard_triggers[i].name, RelationGetRelationName(rel),
								pipeline->name),
						 errhint("Run microbatch.refresh_pipeline(%s) as the table's owner.",
								 quote_literal_cstr(pipeline->name))));
		}
		if (!mb_holds_rows(member))
		{
			table_close(rel, NoLock);
			continue;
		}
		state = mb_tracking_check_state(rel);
		if (state == MB_GUARD_FOREIGN)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table %s of pipeline \"%s\" was restored from another cluster",
							RelationGetRelationName(rel), pipeline->name),
					 errhint("Run microbatch.rebind_pipeline(%s).",
							 quote_literal_cstr(pipeline->name))));
		if (state == MB_GUARD_MISSING)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("table %s of the source of pipeline \"%s\" has no constraint \"%s\"",
							RelationGetRelationName(rel), pipeline->name,
							MB_TRACKING_CONSTRAINT),
					 errdetail("Rows written into it with other tracking values than their transaction's could be lost."),
					 errhint("Run microbatch.refresh_pipeline(%s) as the table's owner.",
							 quote_literal_cstr(pipeline->name))));
		table_close(rel, NoLock);
	}
}

/*
 * What no table of a source's hierarchy may be: a foreign table (its rows
 * carry no transaction id of ours), a temporary table (other sessions, the
 * background workers among them, cannot see its rows), an unlogged table
 * (a crash empties it, rows no batch has processed included), or a
 * partitioned table with a partition half detached (no longer read through
 * it, with its rows).
 */
static void
mb_check_member_kind(Relation rel)
{
	const char *relname = RelationGetRelationName(rel);
	Oid			pending;

	if (rel->rd_rel->relkind == RELKIND_FOREIGN_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("foreign table %s cannot hold rows of a pipeline source",
						relname),
				 errdetail("Rows of a foreign table carry no transaction id of this cluster.")));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("temporary table %s cannot hold rows of a pipeline source",
						relname),
				 errdetail("Other sessions, the background workers among them, cannot see its rows.")));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_UNLOGGED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("unlogged table %s cannot hold rows of a pipeline source",
						relname),
				 errdetail("A crash empties an unlogged table, rows no batch has processed included."),
				 errhint("Make it logged with ALTER TABLE ... SET LOGGED.")));
	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE &&
		OidIsValid(pending = mb_partition_detach_pending(RelationGetRelid(rel))))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("partition %s of table %s is being detached",
						get_rel_name(pending), relname),
				 errdetail("Its rows are no longer read through the table."),
				 errhint("Finish the detach with ALTER TABLE ... DETACH PARTITION ... FINALIZE.")));
}

/*
 * Give one table of a hierarchy the guards it lacks, as role.  holds_rows
 * tables get the constraint, the index (inheritance children do not get it
 * from their parent), the TRUNCATE guard and, if a subscription writes into
 * them, the replica trigger, which the others lose; every table gets the
 * wake-up trigger.  With rebind, a constraint made in
 * another cluster is made again for this one.
 */
static void
mb_guard_table(Oid relid, Oid role, bool rebind)
{
	Relation	rel = table_open(relid, AccessShareLock);
	const char *relname = mb_qualified_relname(relid);
	bool		holds_rows = rel->rd_rel->relkind == RELKIND_RELATION;
	AttrNumber	attnum = get_attnum(relid, MB_TRACKING_COLUMN);
	MbGuardState check = holds_rows ? mb_tracking_check_state(rel) : MB_GUARD_OK;
	bool		partition = rel->rd_rel->relispartition;
	bool		index = !holds_rows || partition ||
		mb_tracking_index_of(rel, attnum, false, NULL, NULL) != MB_TRACKING_INDEX_NONE;
	bool		subscribed = holds_rows && mb_subscription_writes(relid);
	char		trigger_states[lengthof(guard_triggers)];

	mb_check_member_kind(rel);
	for (int i = 0; i < lengthof(guard_triggers); i++)
		trigger_states[i] = mb_trigger_state(rel, guard_triggers[i].name);
	table_close(rel, NoLock);

	/*
	 * A partition gets a constraint of its own (pg_dump restores a
	 * partition's inherited constraints before its data); a plain table
	 * passes it on to its inheritance children, whose copies go with it
	 * (PostgreSQL's NO INHERIT of a child cannot tell a parent's NO INHERIT
	 * constraint from one it inherited).
	 */
	if (check == MB_GUARD_FOREIGN && rebind && !mb_tracking_check_inherited(relid))
	{
		mb_table_ddl(role, psprintf("ALTER TABLE %s%s DROP CONSTRAINT %s",
									partition ? "ONLY " : "", relname,
									MB_TRACKING_CONSTRAINT));
		check = MB_GUARD_MISSING;
	}
	if (check == MB_GUARD_MISSING)
		mb_table_ddl(role, psprintf("ALTER TABLE %s%s ADD CONSTRAINT %s "
									"CHECK (microbatch.tracking_xid_ok(%s, %s::pg_catalog.regclass, '" INT64_FORMAT "'::pg_catalog.int8)) "
									"%sNOT VALID",
									partition ? "ONLY " : "", relname,
									MB_TRACKING_CONSTRAINT, MB_TRACKING_COLUMN,
									quote_literal_cstr(relname),
									(int64) GetSystemIdentifier(),
									partition ? "NO INHERIT " : ""));
	if (!index)
		mb_table_ddl(role, psprintf("CREATE INDEX ON ONLY %s (%s)",
									relname, MB_TRACKING_COLUMN));

	for (int i = 0; i < lengthof(guard_triggers); i++)
	{
		const MbGuardTrigger *trigger = &guard_triggers[i];

		if (trigger->rows_only && !holds_rows)
			continue;
		if (trigger->subscribed_only && !subscribed)
		{
			if (trigger_states[i] != 0)
				mb_table_ddl(role, psprintf("DROP TRIGGER %s ON %s",
											trigger->name, relname));
			continue;
		}
		if (trigger_states[i] == 0)
		{
			if (strcmp(trigger->name, MB_TRIGGER_CHANGED) == 0)
				mb_table_ddl(role, psprintf("CREATE TRIGGER %s AFTER INSERT OR UPDATE ON %s "
											"FOR EACH STATEMENT EXECUTE FUNCTION microbatch.source_changed()",
											trigger->name, relname));
			else if (strcmp(trigger->name, MB_TRIGGER_TRUNCATED) == 0)
				mb_table_ddl(role, psprintf("CREATE TRIGGER %s BEFORE TRUNCATE ON %s "
											"FOR EACH STATEMENT EXECUTE FUNCTION microbatch.source_truncated()",
											trigger->name, relname));
			else
				mb_table_ddl(role, psprintf("CREATE TRIGGER %s BEFORE INSERT OR UPDATE ON %s "
											"FOR EACH ROW EXECUTE FUNCTION microbatch.source_replicated()",
											trigger->name, relname));
		}
		if (trigger_states[i] != trigger->enabled)
			mb_table_ddl(role, psprintf("ALTER TABLE ONLY %s %s TRIGGER %s",
										relname, trigger->enable_sql, trigger->name));
	}
}

/*
 * Guard a table and everything below it in its hierarchy, as role.  Used
 * when a source gets its first pipeline, when tables join a source's
 * hierarchy, by refresh_pipeline() and by rebind_pipeline().
 */
void
mb_source_guard(Oid relid, Oid role, bool rebind)
{
	ListCell   *lc;

	foreach(lc, mb_hierarchy_members(relid, NoLock))
		mb_guard_table(lfirst_oid(lc), role, rebind);
}

/* The tables of this database's subscriptions */
List *
mb_subscribed_tables(void)
{
	Relation	catalog = table_open(SubscriptionRelRelationId, AccessShareLock);
	SysScanDesc scan = systable_beginscan(catalog, InvalidOid, false, NULL, 0, NULL);
	List	   *subscribed = NIL;
	HeapTuple	tuple;

	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
		subscribed = list_append_unique_oid(subscribed,
											((Form_pg_subscription_rel) GETSTRUCT(tuple))->srrelid);
	systable_endscan(scan);
	table_close(catalog, AccessShareLock);
	return subscribed;
}

/*
 * The tables holding a source's rows, among the given tables and those
 * below them, that a subscription writes into get the replica trigger, as
 * caller: after CREATE or ALTER SUBSCRIPTION (caller may manage
 * subscriptions, and so any table's triggers), and when a table joins a
 * hierarchy (caller owns it).  The subscription command must not wait for
 * writers of these tables, nor fail because of one: a table whose lock is
 * not free at once is left with a warning.
 */
void
mb_source_guard_subscribed(List *tables, Oid caller)
{
	ListCell   *lc;

	foreach(lc, tables)
	{
		ListCell   *lm;

		foreach(lm, mb_hierarchy_members(lfirst_oid(lc), NoLock))
		{
			Oid			member = lfirst_oid(lm);
			Relation	rel;
			bool		missing;

			if (!mb_holds_rows(member) || !mb_guards_needed(member, 0) ||
				!mb_subscription_writes(member))
				continue;
			/* writers hold no lock that conflicts with this one */
			rel = try_relation_open(member, AccessShareLock);
			if (rel == NULL)
				continue;		/* dropped meanwhile */
			missing = !mb_has_trigger(rel, MB_TRIGGER_REPLICATED);
			relation_close(rel, NoLock);
			if (!missing)
				continue;
			if (!ConditionalLockRelationOid(member, ShareRowExclusiveLock))
			{
				ereport(WARNING,
						(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
						 errmsg("could not give table \"%s\" the trigger \"%s\" now",
								get_rel_name(member), MB_TRIGGER_REPLICATED),
						 errdetail("Another transaction holds a lock on the table. Until it has the trigger, rows a subscription applies into it with a publisher's %s are refused.",
								   MB_TRACKING_COLUMN),
						 errhint("Run microbatch.refresh_pipeline() for a pipeline reading the table.")));
				continue;
			}
			mb_guard_table(member, caller, false);
		}
	}
}

/*
 * Drop the tracking column (and its index) of a table no pipeline reads any
 * more, as role: a Citus shard must have its distributed table's columns.
 */
void
mb_source_drop_tracking(Oid relid, Oid role)
{
	Relation	rel = table_open(relid, AccessShareLock);
	AttrNumber	attnum = mb_tracking_column_check(rel, true);

	table_close(rel, NoLock);
	if (attnum != InvalidAttrNumber)
		mb_table_ddl(role, psprintf("ALTER TABLE %s DROP COLUMN %s",
									mb_qualified_relname(relid),
									MB_TRACKING_COLUMN));
}

/*
 * Rows already in a table that gets a tracking column from us have the
 * creating transaction's id; rows of a column that was there before, and
 * rows of a table joining a source's hierarchy, must hold ids of this
 * cluster's committed transactions (or of ours), or they would sit in a
 * window that never comes (or comes at random, once this cluster's ids
 * reach theirs).
 */
void
mb_source_check_values(Oid source)
{
	Oid			types[1] = {PG_SNAPSHOTOID};
	Datum		values[1];
	MbUserCode	uc;
	bool		isnull;
	int64		foreign;

	/*
	 * A writer still running could commit rows that this check cannot see,
	 * with any value: wait for the writers of every table below, and keep
	 * new ones out until the guards are in place, at commit.  The snapshot
	 * comes after the wait, which the writers' commits precede.
	 */
	(void) mb_hierarchy_members(source, ShareRowExclusiveLock);
	values[0] = mb_current_snapshot(false);

	/* every row committed until now, as mb_window_pending_in() counts */
	mb_user_code_begin(&uc, GetUserId(), NULL);
	PushActiveSnapshot(GetLatestSnapshot());
	if (SPI_execute_with_args(psprintf("SELECT pg_catalog.count(*) FROM %s AS s "
									   "WHERE s.%s OPERATOR(pg_catalog.>=) pg_catalog.pg_snapshot_xmin($1) "
									   "AND NOT pg_catalog.pg_visible_in_snapshot(s.%s, $1) "
									   "AND s.%s IS DISTINCT FROM pg_catalog.pg_current_xact_id_if_assigned()",
									   mb_qualified_relname(source),
									   MB_TRACKING_COLUMN, MB_TRACKING_COLUMN,
									   MB_TRACKING_COLUMN),
							  1, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the tracking values of relation %u", source);
	foreign = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull));
	PopActiveSnapshot();
	mb_user_code_end(&uc);
	if (foreign > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg_plural("table %s has " INT64_FORMAT " row whose %s is not a committed transaction of this cluster",
							   "table %s has " INT64_FORMAT " rows whose %s is not a committed transaction of this cluster",
							   (unsigned long) foreign,
							   get_rel_name(source), foreign, MB_TRACKING_COLUMN),
				 errdetail("They were copied from another table or restored from another cluster; no batch window would hold them."),
				 errhint("Give them the current transaction's id with UPDATE ... SET %s = DEFAULT, or delete them.",
						 MB_TRACKING_COLUMN)));
}

/*
 * refresh_pipeline(), before it guards the tables that lack the constraint
 * (made while the event triggers were disabled): their rows must hold ids
 * of this cluster, or no window would hold them; and rows behind the
 * position of a pipeline on an ancestor may never have been processed, if
 * the table joined the hierarchy then, which nothing can tell from rows
 * that were: a warning says how many.
 */
void
mb_source_check_unguarded(Oid source)
{
	ListCell   *lc;

	foreach(lc, mb_hierarchy_members(source, NoLock))
	{
		Oid			member = lfirst_oid(lc);
		Relation	rel;
		MbGuardState state;
		ListCell   *lp;

		if (!mb_holds_rows(member))
			continue;
		rel = table_open(member, AccessShareLock);
		state = mb_tracking_check_state(rel);
		table_close(rel, NoLock);
		if (state != MB_GUARD_MISSING)
			continue;

		mb_source_check_values(member);
		foreach(lp, mb_pipelines_on_sources(mb_table_and_ancestors(member)))
		{
			MbPipeline *pipeline = lfirst(lp);
			int64		total;
			int64		pending;
			int64		behind;

			if (pipeline->source == member)
				continue;		/* the source itself joined nothing */
			pending = mb_window_pending_in(pipeline, member, &total);
			behind = total - pending;
			if (behind > 0)
				ereport(WARNING,
						(errcode(ERRCODE_WARNING),
						 errmsg_plural("table \"%s\" has " INT64_FORMAT " row that pipeline \"%s\" may never have processed",
									   "table \"%s\" has " INT64_FORMAT " rows that pipeline \"%s\" may never have processed",
									   (unsigned long) behind,
									   get_rel_name(member), behind, pipeline->name),
						 errdetail("The table had no constraint \"%s\": it may have joined the source while microbatch's event triggers were disabled, and rows behind the pipeline's last batch are not processed.",
								   MB_TRACKING_CONSTRAINT),
						 errhint("If they were never processed, give them the current transaction's id with UPDATE ... SET %s = DEFAULT.",
								 MB_TRACKING_COLUMN)));
		}
	}
}

/*
 * Make sure the source has the tracking column, its index and the guards,
 * adding what is missing as the caller, who owns the table (checked by
 * mb_source_check_usable()).  Rows already there when the column is added
 * get the creating transaction's id, so that they are part of the first
 * batch; with skip_existing, the smallest normal transaction id, which
 * every snapshot but the empty one sees as committed.
 */
void
mb_source_prepare(Oid source, Oid caller, bool skip_existing)
{
	Relation	rel = table_open(source, AccessShareLock);
	const char *relname = mb_qualified_relname(source);
	AttrNumber	attnum = mb_tracking_column_check(rel, true);
	bool		has_index = attnum != InvalidAttrNumber &&
		mb_tracking_index_of(rel, attnum, false, NULL, NULL) != MB_TRACKING_INDEX_NONE;

	table_close(rel, NoLock);

	if (attnum == InvalidAttrNumber)
	{
		FullTransactionId xid = skip_existing ? FirstNormalFullTransactionId :
		GetTopFullTransactionId();

		mb_table_ddl(caller, psprintf("ALTER TABLE %s ADD COLUMN %s pg_catalog.xid8 "
									  "NOT NULL DEFAULT '" UINT64_FORMAT "'",
									  relname, MB_TRACKING_COLUMN,
									  U64FromFullTransactionId(xid)));
		mb_table_ddl(caller, psprintf("ALTER TABLE %s ALTER COLUMN %s "
									  "SET DEFAULT pg_catalog.pg_current_xact_id()",
									  relname, MB_TRACKING_COLUMN));
		mb_table_ddl(caller, psprintf("COMMENT ON COLUMN %s.%s IS "
									  "'id of the inserting transaction, set by microbatch: "
									  "leave it to its default'",
									  relname, MB_TRACKING_COLUMN));
	}
	else
		mb_source_check_values(source);
	if (!has_index)
		mb_table_ddl(caller, psprintf("CREATE INDEX ON %s (%s)", relname,
									  MB_TRACKING_COLUMN));
	mb_source_guard(source, caller, false);
}

/*
 * Whether any pipeline other than exclude reads a table or one of its
 * ancestors, and so needs the table's guards.
 */
static bool
mb_guards_needed(Oid relid, int32 exclude)
{
	ListCell   *lc;

	foreach(lc, mb_pipelines_on_sources(mb_table_and_ancestors(relid)))
		if (((MbPipeline *) lfirst(lc))->id != exclude)
			return true;
	return false;
}

/*
 * Drop the guards of a table and of the tables below it that no pipeline
 * but exclude needs any more, as caller.  The tables' owner only may: other
 * tables keep them, and *kept says so.
 */
static void
mb_unguard(Oid root, int32 exclude, Oid caller, bool *kept)
{
	ListCell   *lc;

	foreach(lc, mb_hierarchy_members(root, NoLock))
	{
		Oid			relid = lfirst_oid(lc);
		Relation	rel;
		const char *relname = mb_qualified_relname(relid);
		bool		drop_check;
		bool		partition;
		bool		has_trigger[lengthof(guard_triggers)];

		if (mb_guards_needed(relid, exclude))
			continue;
		if (!pg_class_ownercheck(relid, caller))
		{
			*kept = true;
			continue;
		}
		/* closed again before ALTER TABLE, which wants it unused */
		rel = table_open(relid, AccessShareLock);
		partition = rel->rd_rel->relispartition;
		drop_check = rel->rd_rel->relkind == RELKIND_RELATION &&
			mb_tracking_check_state(rel) != MB_GUARD_MISSING &&
			!mb_tracking_check_inherited(relid);
		for (int i = 0; i < lengthof(guard_triggers); i++)
			has_trigger[i] = mb_has_trigger(rel, guard_triggers[i].name);
		table_close(rel, NoLock);

		if (drop_check)
			mb_table_ddl(caller, psprintf("ALTER TABLE %s%s DROP CONSTRAINT %s",
										  partition ? "ONLY " : "", relname,
										  MB_TRACKING_CONSTRAINT));
		for (int i = 0; i < lengthof(guard_triggers); i++)
			if (has_trigger[i])
				mb_table_ddl(caller, psprintf("DROP TRIGGER %s ON %s",
											  guard_triggers[i].name, relname));
	}
}

static void
mb_notice_guards_kept(const char *what)
{
	ereport(NOTICE,
			(errmsg("some tables of %s keep microbatch's constraint and triggers", what),
			 errdetail("Only the owner of a table can drop them."),
			 errhint("Its owner can drop the constraint \"%s\" and the triggers \"%s\", \"%s\" and \"%s\".",
					 MB_TRACKING_CONSTRAINT, MB_TRIGGER_CHANGED,
					 MB_TRIGGER_TRUNCATED, MB_TRIGGER_REPLICATED)));
}

/*
 * When the last pipeline on a hierarchy goes, so do the guards, which
 * depend on the extension.  The column and its index stay: loaders may name
 * the column, and they do not depend on the extension.
 */
void
mb_source_release(const MbPipeline *pipeline, Oid caller)
{
	bool		kept = false;

	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(pipeline->source)))
		return;
	mb_unguard(pipeline->source, pipeline->id, caller, &kept);
	if (kept)
		mb_notice_guards_kept(psprintf("the source of pipeline \"%s\"", pipeline->name));
}

/* A table left a source's hierarchy: the guards go if nothing needs them */
void
mb_source_table_left(Oid relid, Oid caller)
{
	bool		kept = false;

	mb_unguard(relid, 0, caller, &kept);
	if (kept)
		mb_notice_guards_kept(psprintf("table \"%s\"", get_rel_name(relid)));
}

/*
 * rebind_pipeline(): give the rows of one table (ONLY it) that match
 * where_sql the tracking value value_sql (expressions over "s"), past the
 * constraint.  The table's owner does it: an UPDATE runs the table's index
 * expressions and ALWAYS triggers.  Its other triggers are not for this
 * bookkeeping, hence replica mode, and row security must not hide rows from
 * it, hence row_security off, which makes a policy that would an error.
 */
void
mb_source_retag(Oid relid, const char *value_sql, const char *where_sql)
{
	const char *relname = mb_qualified_relname(relid);
	MbUserCode	uc;
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);

	mb_user_code_begin(&uc, owner, NULL);
	(void) set_config_option("session_replication_role", "replica",
							 PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	mb_user_code_set(&uc, "row_security", "off");
	retagging = mb_table_and_ancestors(relid);
	PG_TRY();
	{
		if (SPI_execute(psprintf("UPDATE ONLY %s AS s SET %s = %s WHERE %s",
								 relname, MB_TRACKING_COLUMN, value_sql, where_sql),
						false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not rewrite the tracking values of %s", relname);
	}
	PG_FINALLY();
	{
		retagging = NIL;
	}
	PG_END_TRY();
	mb_user_code_end(&uc);
}

/*
 * microbatch.tracking_xid_ok(xid, table, system_identifier): the check
 * constraint of every table holding a source's rows.  Raises the error
 * itself, to say what is wrong and how to load rows instead.
 */
Datum
microbatch_tracking_xid_ok(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_ARGISNULL(1) ? InvalidOid : PG_GETARG_OID(1);
	const char *relname;
	FullTransactionId current;

	/*
	 * Statement triggers do not fire for the rows a subscription applies:
	 * the rows wake their pipelines here.
	 */
	if (SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA &&
		OidIsValid(relid))
		mb_wake_for_source(relid);

	/* once per row loaded: the common case first, and nothing looked up */
	if (!PG_ARGISNULL(0) && !PG_ARGISNULL(2) &&
		(uint64) PG_GETARG_INT64(2) == GetSystemIdentifier() &&
		FullTransactionIdEquals(PG_GETARG_FULLTRANSACTIONID(0),
								GetTopFullTransactionId()) &&
		!mb_window_is_replay())
		PG_RETURN_BOOL(true);

	if (retagging != NIL && list_member_oid(retagging, relid))
		PG_RETURN_BOOL(true);
	relname = OidIsValid(relid) ? get_rel_name(relid) : NULL;
	if (relname == NULL)
		relname = "?";
	if (!PG_ARGISNULL(2) &&
		(uint64) PG_GETARG_INT64(2) != GetSystemIdentifier())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" was restored from another cluster and takes no rows until its pipelines are rebound",
						relname),
				 errdetail("Its rows carry transaction ids of the cluster it came from."),
				 errhint("Run microbatch.rebind_pipeline() for one of its pipelines.")));
	if (mb_window_is_replay())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a replay cannot write into table \"%s\", which feeds a pipeline",
						relname),
				 errdetail("The pipelines reading it would process the replayed rows as new rows."),
				 errhint("A transform that feeds other pipelines cannot be replayed: keep it in a pipeline of its own, and replay the pipelines downstream instead.")));
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("column \"%s\" of table \"%s\" must not be null",
						MB_TRACKING_COLUMN, relname)));

	current = GetTopFullTransactionId();
	if (!FullTransactionIdEquals(PG_GETARG_FULLTRANSACTIONID(0), current) &&
		SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("%s of a replicated row of table \"%s\" must be the id of the transaction applying it",
						MB_TRACKING_COLUMN, relname),
				 errdetail("The row has " UINT64_FORMAT ", from the publisher; this transaction is " UINT64_FORMAT ".",
						   U64FromFullTransactionId(PG_GETARG_FULLTRANSACTIONID(0)),
						   U64FromFullTransactionId(current)),
				 errhint("Run microbatch.refresh_pipeline() for a pipeline reading the table: it gives the tables a subscription writes into a trigger that replaces the publisher's ids. Or leave %s out of the publication's column list.",
						 MB_TRACKING_COLUMN)));
	if (!FullTransactionIdEquals(PG_GETARG_FULLTRANSACTIONID(0), current))
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("%s of a row of table \"%s\" must be the id of the transaction writing the row",
						MB_TRACKING_COLUMN, relname),
				 errdetail("The row has " UINT64_FORMAT "; this transaction is " UINT64_FORMAT ". A row with another value could fall outside every batch window and never be processed.",
						   U64FromFullTransactionId(PG_GETARG_FULLTRANSACTIONID(0)),
						   U64FromFullTransactionId(current)),
				 errhint("Leave %s to its default: name the other columns in INSERT and COPY, and write SET %s = DEFAULT in an UPDATE.",
						 MB_TRACKING_COLUMN, MB_TRACKING_COLUMN)));
	PG_RETURN_BOOL(true);
}

/*
 * Row trigger, fired in replica mode only (logical replication apply and
 * table synchronisation): a replicated row gets the id of the transaction
 * applying it, as if inserted here, whatever it had on the publisher.
 */
Datum
microbatch_source_replicated(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	tuple;
	int			attnum;
	Datum		value;
	bool		isnull = false;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("microbatch.source_replicated() must be called as a BEFORE ROW trigger")));

	tuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;
	attnum = SPI_fnumber(RelationGetDescr(trigdata->tg_relation), MB_TRACKING_COLUMN);
	if (attnum <= 0 || list_member_oid(retagging, RelationGetRelid(trigdata->tg_relation)))
		return PointerGetDatum(tuple);
	value = FullTransactionIdGetDatum(GetTopFullTransactionId());
	mb_wake_for_source(RelationGetRelid(trigdata->tg_relation));
	return PointerGetDatum(heap_modify_tuple_by_cols(tuple,
													 RelationGetDescr(trigdata->tg_relation),
													 1, &attnum, &value, &isnull));
}
