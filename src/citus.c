/*-------------------------------------------------------------------------
 *
 * citus.c
 *	  Distributed pipelines: exactly-once pipelines over Citus distributed
 *	  tables, one shard pipeline per shard, on the node that holds it.
 *
 * A row's tracking id and a batch's snapshots mean something on one server
 * only.  So a distributed pipeline does not decide on the coordinator which
 * rows the workers hold: each worker runs an ordinary pipeline over each
 * shard placement it holds (the way PgQ ran on every node), whose tracking
 * column exists on the shard only and so gets its default, the worker's own
 * transaction id, on the worker.  A multi-shard write that Citus commits
 * with two-phase commit is, on each worker, a local transaction that stays
 * running in every snapshot until COMMIT PREPARED arrives, however late
 * (2PC recovery included): the single-node argument holds on each worker,
 * shard by shard.  Transforms write co-located distributed tables (local
 * shards, in the batch's own transaction) and reference tables (a
 * distributed transaction the worker commits, atomically with its ledger).
 * docs/scaling.md has the whole argument.
 *
 * On each worker, microbatch.<pipeline>_batch is the union of the batch
 * views of its shard pipelines, <pipeline>_<shard id>: outside a batch of a
 * shard pipeline its view is empty, so during one the union holds exactly
 * that batch, and one transform text serves every shard.
 *
 * The coordinator keeps the list of distributed pipelines and sends the
 * shard pipelines' changes to the workers, as the caller, one worker
 * transaction per node, so not inside a transaction block.  A shard move
 * would leave the moved rows' new placement without a pipeline, so the
 * functions that move, copy or split shards are refused, when called,
 * while the database has distributed pipelines.  A shard with more than
 * one placement would be processed once per placement: refused too.
 *
 * Citus propagates DDL on objects of a distributed extension; microbatch's
 * own DDL (batch views, tracking columns) is local to each node, so an API
 * call turns that propagation off for itself (mb_call_begin()), and user
 * code gets the server's setting back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "microbatch.h"

#define MB_CITUS_DDL_PROPAGATION "citus.enable_ddl_propagation"

/* Citus functions that move, copy or split shards, or rebuild a table's */
static const char *const mb_shard_transfer_functions[] = {
	"citus_move_shard_placement", "master_move_shard_placement",
	"citus_copy_shard_placement", "master_copy_shard_placement",
	"citus_rebalance_start", "rebalance_table_shards",
	"replicate_table_shards", "citus_drain_node", "master_drain_node",
	"citus_split_shard_by_split_points", "isolate_tenant_to_new_shard",
	"citus_promote_clone_and_rebalance", "citus_schema_move",
	"citus_schema_undistribute", "alter_distributed_table",
	"undistribute_table", "alter_table_set_access_method",
	NULL
};

static needs_fmgr_hook_type prev_needs_fmgr_hook = NULL;
static fmgr_hook_type prev_fmgr_hook = NULL;

/*
 * The distributed pipeline whose shard pipelines this transaction changed
 * on the nodes: those changes committed there, whatever this transaction
 * does.  In TopMemoryContext.
 */
static char *mb_nodes_changed = NULL;
static SubTransactionId mb_nodes_changed_subxact = InvalidSubTransactionId;

/* Keep Citus from propagating microbatch's own, node-local DDL */
void
mb_citus_local_ddl(void)
{
	if (GetConfigOption(MB_CITUS_DDL_PROPAGATION, true, false) != NULL)
		(void) set_config_option(MB_CITUS_DDL_PROPAGATION, "off",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
}

/*
 * The coordinator's functions change each node in a transaction of the
 * node's own, which a rollback here cannot undo: so they run once per
 * transaction, outside transaction blocks.
 */
static void
mb_check_may_change_nodes(const char *name)
{
	if (IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("distributed pipeline \"%s\" cannot be changed inside a transaction block", name),
				 errdetail("Each node makes the change in a transaction of its own, which a rollback here would not undo.")));
	if (mb_nodes_changed != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("distributed pipeline \"%s\" cannot be changed in the transaction that changed distributed pipeline \"%s\"",
						name, mb_nodes_changed),
				 errdetail("Each node makes the change in a transaction of its own, which a rollback here would not undo.")));
}

static void
mb_nodes_remember_change(const char *name)
{
	if (mb_nodes_changed == NULL)
	{
		mb_nodes_changed = MemoryContextStrdup(TopMemoryContext, name);
		mb_nodes_changed_subxact = GetCurrentSubTransactionId();
	}
}

static void
mb_nodes_forget_change(void)
{
	if (mb_nodes_changed != NULL)
		pfree(mb_nodes_changed);
	mb_nodes_changed = NULL;
}

/* Say so when the (sub)transaction that changed nodes rolls back */
static void
mb_nodes_warn_kept(void)
{
	char	   *name = pstrdup(mb_nodes_changed);

	mb_nodes_forget_change();
	ereport(WARNING,
			(errmsg("the nodes keep the changes to distributed pipeline \"%s\" that were rolled back here", name),
			 errdetail("Each node made the change in a transaction of its own."),
			 errhint("Make the change again, or undo it, in a transaction of its own; microbatch.drop_shard_pipelines() on a node drops shard pipelines that its coordinator does not list.")));
}

static void
mb_citus_xact_callback(XactEvent event, void *arg)
{
	if (mb_nodes_changed == NULL)
		return;
	if (event == XACT_EVENT_ABORT)
		mb_nodes_warn_kept();
	else if (event == XACT_EVENT_COMMIT)
		mb_nodes_forget_change();
}

static void
mb_citus_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	if (mb_nodes_changed != NULL && event == SUBXACT_EVENT_ABORT_SUB &&
		mySubid == mb_nodes_changed_subxact)
		mb_nodes_warn_kept();
}

/*
 * User code propagates its DDL as the server is set to (microbatch's API
 * calls turn propagation off for their own DDL): a transform's DDL on a
 * distributed table must not change the coordinator alone.
 */
void
mb_citus_user_ddl(void)
{
	const char *reset;

	if (GetConfigOption(MB_CITUS_DDL_PROPAGATION, true, false) == NULL)
		return;
	reset = GetConfigOptionResetString(MB_CITUS_DDL_PROPAGATION);
	(void) set_config_option(MB_CITUS_DDL_PROPAGATION, reset,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

static bool
mb_citus_installed(void)
{
	return OidIsValid(get_extension_oid("citus", true));
}

/*
 * The Citus distribution method of a table ('h' hash, 'n' reference or
 * Citus local, ...), or '\0' for a table Citus does not manage.  SPI must
 * be connected.
 */
char
mb_citus_table_method(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	bool		isnull;
	char		method;

	if (!mb_citus_installed())
		return '\0';
	if (SPI_execute_with_args("SELECT partmethod FROM pg_catalog.pg_dist_partition "
							  "WHERE logicalrelid OPERATOR(pg_catalog.=) $1",
							  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_dist_partition");
	if (SPI_processed == 0)
		return '\0';
	method = DatumGetChar(SPI_getbinval(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 1, &isnull));
	return isnull ? '\0' : method;
}

/* create_pipeline() on a table Citus manages: only by shard */
void
mb_citus_check_source(Oid source)
{
	char		method = mb_citus_table_method(source);

	if (method == '\0')
		return;
	if (method == 'h')
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table \"%s\" is a distributed table", get_rel_name(source)),
				 errdetail("Transaction ids and snapshots of one node cannot tell which rows the other nodes committed."),
				 errhint("Use microbatch.create_distributed_pipeline(): it runs a pipeline over each shard, on the node that holds it.")));
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("table \"%s\" is a Citus reference or local table", get_rel_name(source)),
			 errdetail("Only hash-distributed Citus tables can be the source of a distributed pipeline.")));
}

/* Whether a shard of the table has more than one placement */
static bool
mb_has_replicated_shards(Oid source)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(source)};

	if (SPI_execute_with_args("SELECT FROM pg_catalog.pg_dist_shard s "
							  "JOIN pg_catalog.pg_dist_placement p ON p.shardid OPERATOR(pg_catalog.=) s.shardid "
							  "WHERE s.logicalrelid OPERATOR(pg_catalog.=) $1 "
							  "GROUP BY s.shardid HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 1 LIMIT 1",
							  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the shard placements of table \"%s\"",
			 get_rel_name(source));
	return SPI_processed > 0;
}

/* The distributed pipeline's row on the coordinator: its source and owner */
static bool
mb_distributed_lookup(const char *name, bool for_update, Oid *source, Oid *owner)
{
	Oid			argtypes[1] = {NAMEOID};
	Datum		values[1] = {CStringGetDatum(name)};
	bool		isnull;

	if (SPI_execute_with_args(psprintf("SELECT source_table, owner_role FROM microbatch.distributed_pipeline "
									   "WHERE pipeline_name OPERATOR(pg_catalog.=) $1%s",
									   for_update ? " FOR UPDATE" : ""),
							  1, argtypes, values, NULL, !for_update, 1) != SPI_OK_SELECT ||
		SPI_processed == 0)
		return false;
	*source = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
	*owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 2, &isnull));
	return true;
}

/* A node holding shard placements of a source, and their names there */
typedef struct MbShardNode
{
	char	   *host;
	int32		port;
	char	   *shards;			/* their regclass[], as SQL */
} MbShardNode;

static List *
mb_shard_nodes(Oid source)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(source)};
	List	   *nodes = NIL;

	if (SPI_execute_with_args("SELECT n.nodename, n.nodeport, "
							  /* shard_name() qualifies names outside public only */
							  "pg_catalog.array_agg(CASE WHEN ns.nspname OPERATOR(pg_catalog.=) 'public' "
							  "THEN 'public.' ELSE '' END OPERATOR(pg_catalog.||) "
							  "pg_catalog.shard_name(s.logicalrelid, s.shardid) "
							  "ORDER BY s.shardid)::pg_catalog.text "
							  "FROM pg_catalog.pg_dist_shard s "
							  "JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) s.logicalrelid "
							  "JOIN pg_catalog.pg_namespace ns ON ns.oid OPERATOR(pg_catalog.=) c.relnamespace "
							  "JOIN pg_catalog.pg_dist_placement p ON p.shardid OPERATOR(pg_catalog.=) s.shardid "
							  "JOIN pg_catalog.pg_dist_node n ON n.groupid OPERATOR(pg_catalog.=) p.groupid "
							  "WHERE s.logicalrelid OPERATOR(pg_catalog.=) $1 "
							  "AND n.noderole OPERATOR(pg_catalog.=) 'primary' "
							  "GROUP BY 1, 2 ORDER BY 1, 2",
							  1, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the shard placements of table \"%s\"",
			 get_rel_name(source));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		MbShardNode *node = palloc(sizeof(MbShardNode));
		HeapTuple	tuple = SPI_tuptable->vals[i];
		bool		isnull;

		node->host = SPI_getvalue(tuple, SPI_tuptable->tupdesc, 1);
		node->port = DatumGetInt32(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 2, &isnull));
		node->shards = psprintf("%s::pg_catalog.regclass[]",
								quote_literal_cstr(SPI_getvalue(tuple, SPI_tuptable->tupdesc, 3)));
		nodes = lappend(nodes, node);
	}
	return nodes;
}

/*
 * Run a command on each node, as the caller, each in a transaction of its
 * own (Citus' master_run_on_worker()), leaving node_name, node_port,
 * success and result in SPI_tuptable.  With after_shards, the command is
 * command, the node's shards and after_shards, pasted together (the texts
 * hold user input: never a format).
 */
static void
mb_nodes_execute(MbCall *call, List *nodes, const char *command,
				 const char *after_shards)
{
	int			n = list_length(nodes);
	Datum	   *hosts = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *ports = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *commands = palloc(sizeof(Datum) * Max(n, 1));
	Oid			argtypes[3] = {TEXTARRAYOID, INT4ARRAYOID, TEXTARRAYOID};
	Datum		values[3];
	int			i = 0;
	ListCell   *lc;
	Oid			user;
	int			sec_context;

	foreach(lc, nodes)
	{
		MbShardNode *node = lfirst(lc);

		hosts[i] = CStringGetTextDatum(node->host);
		ports[i] = Int32GetDatum(node->port);
		commands[i] = CStringGetTextDatum(after_shards == NULL ? command :
										  psprintf("%s%s%s", command, node->shards,
												   after_shards));
		i++;
	}
	values[0] = PointerGetDatum(construct_array(hosts, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(ports, n, INT4OID, 4, true, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(commands, n, TEXTOID, -1, false, TYPALIGN_INT));

	/* Citus connects as the current user: the caller, not the catalog owner */
	GetUserIdAndSecContext(&user, &sec_context);
	SetUserIdAndSecContext(call->caller, call->saved_sec_context);
	PG_TRY();
	{
		if (SPI_execute_with_args("SELECT node_name, node_port, success, result "
								  "FROM pg_catalog.master_run_on_worker($1, $2, $3, true)",
								  3, argtypes, values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not run a command on the Citus nodes");
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(user, sec_context);
	}
	PG_END_TRY();
}

/*
 * mb_nodes_execute(), for a change: returns the sum of the integers the
 * commands return, or, when a command fails and undo is given, runs undo on
 * the nodes where the command succeeded and raises the first node's error.
 */
static int64
mb_run_on_nodes(MbCall *call, const char *name, List *nodes,
				const char *command, const char *after_shards,
				const char *undo)
{
	List	   *succeeded = NIL;
	char	   *failure = NULL;
	char	   *failed_node = NULL;
	int64		total = 0;

	if (nodes == NIL)
		return 0;
	mb_nodes_execute(call, nodes, command, after_shards);

	for (uint64 row = 0; row < SPI_processed; row++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[row];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		bool		success = DatumGetBool(SPI_getbinval(tuple, desc, 3, &isnull));
		char	   *result = SPI_getvalue(tuple, desc, 4);
		char	   *host = SPI_getvalue(tuple, desc, 1);
		char	   *port = SPI_getvalue(tuple, desc, 2);

		if (success)
		{
			ListCell   *node_lc;

			total += result ? pg_strtoint64(result) : 0;
			foreach(node_lc, nodes)
			{
				MbShardNode *node = lfirst(node_lc);

				if (strcmp(node->host, host) == 0 &&
					node->port == pg_strtoint32(port))
					succeeded = lappend(succeeded, node);
			}
		}
		else if (failure == NULL)
		{
			failure = result ? result : "unknown error";
			if (strncmp(failure, "ERROR:  ", 8) == 0)
				failure += 8;
			failed_node = psprintf("%s:%s", host, port);
		}
	}
	if (succeeded != NIL && (total > 0 || failure != NULL))
		mb_nodes_remember_change(name);
	if (failure != NULL && undo != NULL && succeeded != NIL)
	{
		/* if the undo fails, its error says so, and the change is kept */
		(void) mb_run_on_nodes(call, name, succeeded, undo, NULL, NULL);
		mb_nodes_forget_change();
	}
	if (failure != NULL)
	{
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not change the shard pipelines on node %s", failed_node),
				 errdetail("The node reported: %s", failure),
				 undo && succeeded ? errhint("The nodes where the change succeeded were changed back.") : 0));
	}
	return total;
}

/* The remote call's arguments, as SQL literals */
static const char *
mb_literal_or_null(const char *value)
{
	return value ? quote_literal_cstr(value) : "NULL";
}

int64
mb_distributed_create(MbCall *call, const char *name, Oid source,
					  const char *batch_interval, const char *max_batch_rows,
					  const char *start_from, const char *batch_timeout)
{
	Oid			existing_source;
	Oid			existing_owner;
	Oid			argtypes[3] = {NAMEOID, REGCLASSOID, REGROLEOID};
	Datum		values[3];
	List	   *nodes;
	int64		created;

	mb_check_may_change_nodes(name);
	if (!mb_citus_installed())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the citus extension is not installed in this database"),
				 errhint("A distributed pipeline runs over a Citus distributed table; use microbatch.create_pipeline() for other tables.")));
	if (get_rel_name(source) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", source)));
	if (mb_citus_table_method(source) != 'h')
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("table \"%s\" is not a hash-distributed Citus table",
						get_rel_name(source)),
				 errhint("Distribute it with create_distributed_table(), or use microbatch.create_pipeline() for a table of this node.")));
	if (!pg_class_ownercheck(source, call->caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of table %s", get_rel_name(source)),
				 errdetail("A distributed pipeline adds a column \"%s\", an index, a constraint and triggers to every shard of its source.",
						   MB_TRACKING_COLUMN)));
	if (mb_has_replicated_shards(source))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table \"%s\" has shards with more than one placement", get_rel_name(source)),
				 errdetail("Each placement of a shard would have a pipeline of its own, and the shard's rows would be processed once per placement."),
				 errhint("Distribute the table with citus.shard_replication_factor = 1.")));
	if (mb_distributed_lookup(name, true, &existing_source, &existing_owner))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("distributed pipeline \"%s\" already exists", name)));

	values[0] = CStringGetDatum(name);
	values[1] = ObjectIdGetDatum(source);
	values[2] = ObjectIdGetDatum(call->caller);
	if (SPI_execute_with_args("INSERT INTO microbatch.distributed_pipeline "
							  "(pipeline_name, source_table, owner_role) VALUES ($1, $2, $3)",
							  3, argtypes, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record distributed pipeline \"%s\"", name);

	nodes = mb_shard_nodes(source);
	if (nodes == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" has no shard placements", get_rel_name(source))));
	created = mb_run_on_nodes(call, name, nodes,
							  psprintf("SELECT microbatch.create_shard_pipelines(%s, ",
									   quote_literal_cstr(name)),
							  psprintf(", %s, %s, %s, %s)",
									   mb_literal_or_null(batch_interval),
									   mb_literal_or_null(max_batch_rows),
									   mb_literal_or_null(start_from),
									   mb_literal_or_null(batch_timeout)),
							  psprintf("SELECT microbatch.drop_shard_pipelines(%s)",
									   quote_literal_cstr(name)));
	return created;
}

/*
 * The nodes of a distributed pipeline, after checking that the caller may
 * change it.  With remove, its row goes.
 */
static List *
mb_distributed_nodes(MbCall *call, const char *name, bool remove)
{
	Oid			source;
	Oid			owner;
	Oid			argtypes[1] = {NAMEOID};
	Datum		values[1] = {CStringGetDatum(name)};

	mb_check_may_change_nodes(name);
	if (!mb_citus_installed() || !mb_distributed_lookup(name, true, &source, &owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("distributed pipeline \"%s\" does not exist", name),
				 errhint("The view microbatch.distributed_pipelines lists the distributed pipelines of this database.")));
	if (!has_privs_of_role(call->caller, owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of distributed pipeline %s", name)));
	if (remove &&
		SPI_execute_with_args("DELETE FROM microbatch.distributed_pipeline "
							  "WHERE pipeline_name OPERATOR(pg_catalog.=) $1",
							  1, argtypes, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not remove distributed pipeline \"%s\"", name);
	return mb_shard_nodes(source);
}

/*
 * The shard pipelines of a distributed pipeline on each node, as each node
 * shows them to the caller: one row per node, success and a JSON array of
 * the shard pipelines (or the node's error).
 */
void
mb_distributed_status(MbCall *call, const char *name, ReturnSetInfo *rsinfo)
{
	Oid			source;
	Oid			owner;
	List	   *nodes;

	if (!mb_citus_installed() || !mb_distributed_lookup(name, false, &source, &owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("distributed pipeline \"%s\" does not exist", name),
				 errhint("The view microbatch.distributed_pipelines lists the distributed pipelines of this database.")));
	nodes = mb_shard_nodes(source);
	if (nodes == NIL)
		return;
	mb_nodes_execute(call, nodes,
					 psprintf("SELECT COALESCE(pg_catalog.json_agg(s ORDER BY s.pipeline), '[]'::pg_catalog.json)::pg_catalog.text "
							  "FROM (SELECT p.pipeline, sp.shard::pg_catalog.text AS shard, p.state, "
							  "p.last_batch_id, p.last_batch_at, p.rows_waiting, p.last_error "
							  "FROM microbatch.shard_pipelines sp "
							  "JOIN microbatch.pipelines p ON p.pipeline OPERATOR(pg_catalog.=) sp.pipeline "
							  "WHERE sp.distributed_pipeline OPERATOR(pg_catalog.=) %s) s",
							  quote_literal_cstr(name)),
					 NULL);
	for (uint64 row = 0; row < SPI_processed; row++)
	{
		Datum		values[4];
		bool		nulls[4];

		for (int col = 0; col < 4; col++)
			values[col] = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
										col + 1, &nulls[col]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

int64
mb_distributed_add_transform(MbCall *call, const char *name,
							 const char *transform, const char *layer,
							 const char *command)
{
	List	   *nodes = mb_distributed_nodes(call, name, false);

	return mb_run_on_nodes(call, name, nodes,
						   psprintf("SELECT microbatch.add_shard_transform(%s, %s, %s, %s, %s)",
									quote_literal_cstr(name),
									quote_literal_cstr(transform),
									quote_literal_cstr(layer),
									quote_literal_cstr(command),
									quote_literal_cstr(call->caller_search_path)),
						   NULL,
						   psprintf("SELECT microbatch.remove_shard_transform(%s, %s)",
									quote_literal_cstr(name),
									quote_literal_cstr(transform)));
}

int64
mb_distributed_remove_transform(MbCall *call, const char *name,
								const char *transform)
{
	List	   *nodes = mb_distributed_nodes(call, name, false);
	int64		removed;

	removed = mb_run_on_nodes(call, name, nodes,
							  psprintf("SELECT microbatch.remove_shard_transform(%s, %s)",
									   quote_literal_cstr(name),
									   quote_literal_cstr(transform)),
							  NULL, NULL);
	if (removed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("transform \"%s\" of distributed pipeline \"%s\" does not exist",
						transform, name)));
	return removed;
}

int64
mb_distributed_change(MbCall *call, const char *name, const char *change,
					  const char *batch_interval, const char *max_batch_rows,
					  const char *batch_timeout)
{
	List	   *nodes = mb_distributed_nodes(call, name, false);

	return mb_run_on_nodes(call, name, nodes,
						   psprintf("SELECT microbatch.change_shard_pipelines(%s, %s, %s, %s, %s)",
									quote_literal_cstr(name),
									quote_literal_cstr(change),
									mb_literal_or_null(batch_interval),
									mb_literal_or_null(max_batch_rows),
									mb_literal_or_null(batch_timeout)),
						   NULL, NULL);
}

int64
mb_distributed_drop(MbCall *call, const char *name)
{
	List	   *nodes = mb_distributed_nodes(call, name, true);

	return mb_run_on_nodes(call, name, nodes,
						   psprintf("SELECT microbatch.drop_shard_pipelines(%s)",
									quote_literal_cstr(name)),
						   NULL, NULL);
}

/*
 * Worker side.  Each function runs in one local transaction: on a node it
 * changes all of the pipeline's shard pipelines or none.
 */

/* Whether Citus knows the table as a shard of one of its tables */
static bool
mb_is_known_shard(Oid relid)
{
	Oid			argtypes[1] = {REGCLASSOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	bool		isnull;

	if (SPI_execute_with_args("SELECT pg_catalog.relation_is_a_known_shard($1)",
							  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up relation %u in Citus' metadata", relid);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull)) && !isnull;
}

static char *
mb_shard_pipeline_name(const char *name, Oid shard)
{
	const char *relname = get_rel_name(shard);
	const char *suffix = relname ? strrchr(relname, '_') : NULL;

	/*
	 * Citus names a shard <table>_<shard id>; where Citus is installed, the
	 * table must be one of its shards, so that no other table takes the
	 * names of a distributed pipeline to come.
	 */
	if (suffix == NULL || suffix[1] == '\0' ||
		strspn(suffix + 1, "0123456789") != strlen(suffix + 1) ||
		(mb_citus_installed() && !mb_is_known_shard(shard)))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a shard of a distributed table",
						relname ? relname : "?")));
	return psprintf("%s%s", name, suffix);
}

/* Run one of microbatch's own SQL functions as the caller */
static void
mb_call_as_caller(MbCall *call, const char *sql, int nargs, Oid *argtypes,
				  Datum *values, const char *nulls)
{
	Oid			user;
	int			sec_context;

	GetUserIdAndSecContext(&user, &sec_context);
	SetUserIdAndSecContext(call->caller, call->saved_sec_context);
	PG_TRY();
	{
		if (SPI_execute_with_args(sql, nargs, argtypes, values, nulls, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not run \"%s\"", sql);
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(user, sec_context);
	}
	PG_END_TRY();
}

/* The shard pipelines of a distributed pipeline on this node, by name */
static List *
mb_shard_pipelines(const char *name)
{
	Oid			argtypes[1] = {NAMEOID};
	Datum		values[1] = {CStringGetDatum(name)};
	List	   *names = NIL;

	if (SPI_execute_with_args("SELECT p.pipeline_name::pg_catalog.text "
							  "FROM microbatch.shard_pipeline s "
							  "JOIN microbatch.pipeline p ON p.pipeline_id OPERATOR(pg_catalog.=) s.pipeline_id "
							  "WHERE s.distributed_pipeline OPERATOR(pg_catalog.=) $1 ORDER BY 1",
							  1, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the shard pipelines of \"%s\"", name);
	for (uint64 i = 0; i < SPI_processed; i++)
		names = lappend(names, SPI_getvalue(SPI_tuptable->vals[i],
											SPI_tuptable->tupdesc, 1));
	return names;
}

/*
 * The view microbatch.<pipeline>_batch of this node: the union of its shard
 * pipelines' batch views.
 */
static void
mb_shard_union_view_create(const char *name, Oid owner, List *batch_views)
{
	const char *view = quote_qualified_identifier(MB_SCHEMA,
												  psprintf("%s%s", name, MB_BATCH_VIEW_SUFFIX));
	StringInfoData sql;
	ListCell   *lc;

	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE VIEW %s AS ", view);
	foreach(lc, batch_views)
		appendStringInfo(&sql, "%sSELECT * FROM %s",
						 foreach_current_index(lc) > 0 ? " UNION ALL " : "",
						 mb_qualified_relname(lfirst_oid(lc)));

	mb_ddl_own_begin();
	PG_TRY();
	{
		if (SPI_execute(sql.data, false, 0) != SPI_OK_UTILITY ||
			SPI_execute(psprintf("ALTER VIEW %s OWNER TO %s", view,
								 quote_identifier(GetUserNameFromId(owner, false))),
						false, 0) != SPI_OK_UTILITY ||
			SPI_execute(psprintf("COMMENT ON VIEW %s IS %s", view,
								 quote_literal_cstr(psprintf("rows of the batch of a shard pipeline of distributed pipeline %s being processed; empty outside its transforms",
															 name))),
						false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not create the batch view of distributed pipeline \"%s\"", name);
	}
	PG_FINALLY();
	{
		mb_ddl_own_end();
	}
	PG_END_TRY();
}

static Oid
mb_relation_owner(Oid relid)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/* Drop a view of microbatch's schema, as microbatch's own DDL */
static void
mb_drop_own_view(Oid view)
{
	mb_ddl_own_begin();
	PG_TRY();
	{
		if (SPI_execute(psprintf("DROP VIEW %s", mb_qualified_relname(view)),
						false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not drop view \"%s\"", get_rel_name(view));
	}
	PG_FINALLY();
	{
		mb_ddl_own_end();
	}
	PG_END_TRY();
}

/*
 * Drop the union view of a distributed pipeline, if it is there and is no
 * pipeline's batch view: the caller must own it.  Returns its owner.
 */
static Oid
mb_shard_union_view_drop(MbCall *call, const char *name)
{
	Oid			view = get_relname_relid(psprintf("%s%s", name, MB_BATCH_VIEW_SUFFIX),
										 get_namespace_oid(MB_SCHEMA, false));
	Oid			owner;

	if (!OidIsValid(view) || mb_pipelines_with_views(list_make1_oid(view)) != NIL)
		return call->caller;
	owner = mb_relation_owner(view);
	if (!pg_class_ownercheck(view, call->caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of distributed pipeline %s", name)));
	mb_drop_own_view(view);
	return owner;
}

int64
mb_shard_pipelines_create(MbCall *call, const char *name, ArrayType *shards,
						  NullableDatum *args)
{
	Datum	   *shard_values;
	bool	   *shard_nulls;
	int			nshards;
	const char *view_name = psprintf("%s%s", name, MB_BATCH_VIEW_SUFFIX);
	List	   *batch_views = NIL;
	Oid			argtypes[6] = {NAMEOID, REGCLASSOID, INTERVALOID, INT8OID,
	TEXTOID, INTERVALOID};

	deconstruct_array(shards, REGCLASSOID, sizeof(Oid), true, TYPALIGN_INT,
					  &shard_values, &shard_nulls, &nshards);
	if (nshards == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a node needs at least one shard for distributed pipeline \"%s\"", name)));
	if (get_relname_relid(view_name, get_namespace_oid(MB_SCHEMA, false)) != InvalidOid)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_TABLE),
				 errmsg("relation \"%s.%s\" already exists", MB_SCHEMA, view_name),
				 errhint("A distributed pipeline's batch view is named after it; choose another name.")));

	for (int i = 0; i < nshards; i++)
	{
		Oid			shard = DatumGetObjectId(shard_values[i]);
		char	   *shard_pipeline;
		Datum		values[6];
		char		nulls[6];
		Oid			row_types[4] = {NAMEOID, NAMEOID, REGCLASSOID, BOOLOID};
		Datum		row[4];
		MbPipeline	created;
		bool		tracking_added;

		if (shard_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("shards must not contain nulls")));
		shard_pipeline = mb_shard_pipeline_name(name, shard);
		tracking_added = get_attnum(shard, MB_TRACKING_COLUMN) == InvalidAttrNumber;
		values[0] = CStringGetDatum(shard_pipeline);
		values[1] = ObjectIdGetDatum(shard);
		nulls[0] = nulls[1] = ' ';
		for (int a = 0; a < 4; a++)
		{
			values[a + 2] = args[a].value;
			nulls[a + 2] = args[a].isnull ? 'n' : ' ';
		}
		mb_call_as_caller(call, "SELECT microbatch.create_pipeline($1, $2, $3, $4, $5, $6)",
						  6, argtypes, values, nulls);
		if (!mb_pipeline_by_name(shard_pipeline, &created))
			elog(ERROR, "shard pipeline \"%s\" was not created", shard_pipeline);

		row[0] = CStringGetDatum(shard_pipeline);
		row[1] = CStringGetDatum(name);
		row[2] = ObjectIdGetDatum(shard);
		row[3] = BoolGetDatum(tracking_added);
		if (SPI_execute_with_args("INSERT INTO microbatch.shard_pipeline "
								  "(pipeline_id, distributed_pipeline, shard, tracking_added) "
								  "SELECT pipeline_id, $2, $3, $4 FROM microbatch.pipeline "
								  "WHERE pipeline_name OPERATOR(pg_catalog.=) $1",
								  4, row_types, row, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record shard pipeline \"%s\"", shard_pipeline);
		batch_views = lappend_oid(batch_views, created.batch_view);
	}
	mb_shard_union_view_create(name, call->caller, batch_views);
	return nshards;
}

static List *
mb_shard_pipelines_known(const char *name)
{
	List	   *names = mb_shard_pipelines(name);

	if (names == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("distributed pipeline \"%s\" has no shard pipelines on this node", name)));
	return names;
}

int64
mb_shard_transform_add(MbCall *call, const char *name, const char *transform,
					   const char *layer, const char *command,
					   const char *search_path)
{
	List	   *names = mb_shard_pipelines_known(name);
	ListCell   *lc;
	Oid			argtypes[4] = {NAMEOID, NAMEOID, TEXTOID, TEXTOID};

	/* validated and stored under the coordinator caller's search_path */
	(void) set_config_option("search_path", search_path, PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	foreach(lc, names)
	{
		Datum		values[4] = {CStringGetDatum(lfirst(lc)), CStringGetDatum(transform),
		CStringGetTextDatum(layer), CStringGetTextDatum(command)};

		mb_call_as_caller(call, "SELECT microbatch.add_transform($1, $2, $3, $4)",
						  4, argtypes, values, NULL);
	}
	/* the call's GUC nest level takes the search_path back */
	return list_length(names);
}

/*
 * Shard pipelines without the transform are passed over (a change undone
 * halfway); returns how many had it.
 */
int64
mb_shard_transform_remove(MbCall *call, const char *name, const char *transform)
{
	List	   *names = mb_shard_pipelines_known(name);
	ListCell   *lc;
	Oid			argtypes[2] = {NAMEOID, NAMEOID};
	int64		removed = 0;

	foreach(lc, names)
	{
		Datum		values[2] = {CStringGetDatum(lfirst(lc)), CStringGetDatum(transform)};
		MbPipeline	pipeline;

		if (!mb_pipeline_by_name(lfirst(lc), &pipeline) ||
			!mb_transform_exists(pipeline.id, transform))
			continue;
		mb_call_as_caller(call, "SELECT microbatch.remove_transform($1, $2)",
						  2, argtypes, values, NULL);
		removed++;
	}
	return removed;
}

/* Nothing to drop is no error: the coordinator may have lost track */
int64
mb_shard_pipelines_drop(MbCall *call, const char *name)
{
	List	   *names = mb_shard_pipelines(name);
	ListCell   *lc;
	Oid			argtypes[1] = {NAMEOID};
	Datum		values[1] = {CStringGetDatum(name)};

	List	   *shards = NIL;

	if (names == NIL)
		return 0;
	if (SPI_execute_with_args("SELECT shard FROM microbatch.shard_pipeline "
							  "WHERE distributed_pipeline OPERATOR(pg_catalog.=) $1 "
							  "AND tracking_added",
							  1, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the shard pipelines of \"%s\"", name);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		shards = lappend_oid(shards,
							 DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
															SPI_tuptable->tupdesc, 1, &isnull)));
	}

	(void) mb_shard_union_view_drop(call, name);
	foreach(lc, names)
	{
		Datum		pipeline[1] = {CStringGetDatum(lfirst(lc))};

		mb_call_as_caller(call, "SELECT microbatch.drop_pipeline($1)",
						  1, argtypes, pipeline, NULL);
	}
	if (SPI_execute_with_args("DELETE FROM microbatch.shard_pipeline "
							  "WHERE distributed_pipeline OPERATOR(pg_catalog.=) $1",
							  1, argtypes, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not remove the shard pipelines of \"%s\"", name);

	/*
	 * A shard must have the distributed table's columns, or Citus cannot
	 * move it: a tracking column the shard pipeline added goes with the
	 * last pipeline that reads it (on the shard, above it or below it).
	 */
	foreach(lc, shards)
	{
		Oid			shard = lfirst_oid(lc);

		if (get_rel_name(shard) == NULL ||
			mb_pipelines_on_sources(list_concat(mb_hierarchy_members(shard, NoLock),
												mb_table_and_ancestors(shard))) != NIL)
			continue;
		if (!pg_class_ownercheck(shard, call->caller))
			ereport(NOTICE,
					(errmsg("column \"%s\" of shard %s was kept: only its owner can drop it",
							MB_TRACKING_COLUMN, get_rel_name(shard))));
		else
			mb_source_drop_tracking(shard, call->caller);
	}
	return list_length(names);
}

/*
 * Pause, resume, alter or refresh every shard pipeline of this node.  A
 * refresh rebuilds each batch view (after columns of the distributed table
 * changed), so the union over them is built again too.
 */
int64
mb_shard_pipelines_change(MbCall *call, const char *name, const char *change,
						  NullableDatum *args)
{
	List	   *names;
	List	   *batch_views = NIL;
	ListCell   *lc;
	const char *sql;
	bool		refresh = false;
	Oid			view_owner = InvalidOid;
	Oid			argtypes[4] = {NAMEOID, INTERVALOID, INT8OID, INTERVALOID};
	int			nargs = 1;

	if (strcmp(change, "pause") == 0)
		sql = "SELECT microbatch.pause_pipeline($1)";
	else if (strcmp(change, "resume") == 0)
		sql = "SELECT microbatch.resume_pipeline($1)";
	else if (strcmp(change, "alter") == 0)
	{
		sql = "SELECT microbatch.alter_pipeline($1, $2, $3, $4)";
		nargs = 4;
	}
	else if (strcmp(change, "refresh") == 0)
	{
		sql = "SELECT microbatch.refresh_pipeline($1)";
		refresh = true;
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid change \"%s\"", change),
				 errhint("The change is pause, resume, alter or refresh.")));

	names = mb_shard_pipelines_known(name);
	if (refresh)
		view_owner = mb_shard_union_view_drop(call, name);
	foreach(lc, names)
	{
		Datum		values[4];
		char		nulls[4] = {' ', ' ', ' ', ' '};
		MbPipeline	pipeline;

		values[0] = CStringGetDatum(lfirst(lc));
		for (int a = 0; a < 3; a++)
		{
			values[a + 1] = args[a].value;
			nulls[a + 1] = args[a].isnull ? 'n' : ' ';
		}
		mb_call_as_caller(call, sql, nargs, argtypes, values, nulls);
		if (refresh && mb_pipeline_by_name(lfirst(lc), &pipeline))
			batch_views = lappend_oid(batch_views, pipeline.batch_view);
	}
	if (refresh)
		mb_shard_union_view_create(name, view_owner, batch_views);
	return list_length(names);
}

/*
 * After a drop: forget the shard pipelines that went with their shard, and
 * the distributed pipelines whose table went.  Citus drops shards with
 * CASCADE, which takes the union views along.
 */
void
mb_citus_forget_dropped(List *dropped)
{
	Oid			ns = get_namespace_oid(MB_SCHEMA, true);
	Oid			argtypes[1] = {OIDARRAYOID};
	Datum	   *oids;
	Datum		values[1];
	int			i = 0;
	ListCell   *lc;

	/* a catalog older than 0.4.0 has neither table */
	if (!OidIsValid(ns) || !OidIsValid(get_relname_relid("shard_pipeline", ns)))
		return;
	oids = palloc(sizeof(Datum) * list_length(dropped));
	foreach(lc, dropped)
		oids[i++] = ObjectIdGetDatum(lfirst_oid(lc));
	values[0] = PointerGetDatum(construct_array(oids, i, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
	if (SPI_execute("DELETE FROM microbatch.shard_pipeline s WHERE NOT EXISTS "
					"(SELECT FROM microbatch.pipeline p "
					"WHERE p.pipeline_id OPERATOR(pg_catalog.=) s.pipeline_id)",
					false, 0) != SPI_OK_DELETE ||
		SPI_execute_with_args("DELETE FROM microbatch.distributed_pipeline "
							  "WHERE source_table::pg_catalog.oid OPERATOR(pg_catalog.=) ANY ($1)",
							  1, argtypes, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not forget the distributed pipelines of dropped tables");
}

/*
 * Shard moves, copies and splits are refused while the database has
 * distributed pipelines: the new placement would have no shard pipeline.
 * The check is made when one of those functions is called, however the
 * call was planned (a view, a SQL function, a prepared statement, Citus'
 * background rebalancer): an fmgr hook, as sepgsql uses.
 */
static bool
mb_is_shard_transfer_function(Oid funcid)
{
	HeapTuple	tuple;
	Form_pg_proc proc;
	bool		found = false;

	if (funcid < FirstNormalObjectId)
		return false;
	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	if (!HeapTupleIsValid(tuple))
		return false;
	proc = (Form_pg_proc) GETSTRUCT(tuple);
	if (proc->pronamespace == PG_CATALOG_NAMESPACE)
		for (int i = 0; !found && mb_shard_transfer_functions[i]; i++)
			found = strcmp(NameStr(proc->proname), mb_shard_transfer_functions[i]) == 0;
	ReleaseSysCache(tuple);
	return found;
}

/*
 * Whether the database has distributed pipelines, read from the table
 * directly (this runs in whatever database a shard move is made, as
 * whoever makes it), share-locked until the end of the transaction that
 * moves shards, so that no distributed pipeline is created meanwhile.
 */
static bool
mb_database_has_distributed_pipelines(void)
{
	Oid			ns;
	Oid			relid;
	Relation	rel;
	Snapshot	snapshot;
	TupleTableSlot *slot;
	TableScanDesc scan;
	bool		found;

	if (!OidIsValid(get_extension_oid("microbatch", true)) ||
		!OidIsValid(ns = get_namespace_oid(MB_SCHEMA, true)) ||
		!OidIsValid(relid = get_relname_relid("distributed_pipeline", ns)))
		return false;
	rel = table_open(relid, ShareLock);
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	slot = table_slot_create(rel, NULL);
	scan = table_beginscan(rel, snapshot, 0, NULL);
	found = table_scan_getnextslot(scan, ForwardScanDirection, slot);
	table_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snapshot);
	table_close(rel, NoLock);
	return found;
}

static bool
mb_needs_fmgr_hook(Oid funcid)
{
	if (prev_needs_fmgr_hook && prev_needs_fmgr_hook(funcid))
		return true;
	return mb_is_shard_transfer_function(funcid);
}

static void
mb_fmgr_hook(FmgrHookEventType event, FmgrInfo *flinfo, Datum *private)
{
	if (event == FHET_START && mb_is_shard_transfer_function(flinfo->fn_oid) &&
		mb_database_has_distributed_pipelines())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s() cannot run while this database has distributed pipelines",
						get_func_name(flinfo->fn_oid)),
				 errdetail("A shard pipeline processes the rows of its shard on the node that holds it; rows of a moved, copied or split shard would be processed by no pipeline."),
				 errhint("Stop the loaders, let the pipelines process every row, drop them with microbatch.drop_distributed_pipeline(), move the shards, and create the pipelines again with start_from => 'now'.")));
	if (prev_fmgr_hook)
		prev_fmgr_hook(event, flinfo, private);
}

void
mb_citus_init(void)
{
	prev_needs_fmgr_hook = needs_fmgr_hook;
	needs_fmgr_hook = mb_needs_fmgr_hook;
	prev_fmgr_hook = fmgr_hook;
	fmgr_hook = mb_fmgr_hook;
	RegisterXactCallback(mb_citus_xact_callback, NULL);
	RegisterSubXactCallback(mb_citus_subxact_callback, NULL);
}
