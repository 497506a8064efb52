/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *	  Waking schedulers and the launcher when transactions commit.
 *
 * A transaction that wrote into a source tells its database's scheduler
 * when it commits, so that pipelines with batch_interval 0 run at once and
 * idle pipelines know there is something to do; one that changed a
 * pipeline makes the scheduler read the catalog again; CREATE EXTENSION
 * wakes the launcher.  Triggers and API functions only mark the
 * transaction; the commit callback does the rest, after the commit is
 * visible.
 *
 * Commits are counted per source hierarchy, in shared counters keyed by the
 * hierarchy's root table, which the scheduler creates for the sources of
 * its pipelines: a commit into one source wakes only the pipelines of that
 * hierarchy.  Every commit into any source is also counted for the whole
 * database, for pipelines that found no room for a counter of their own.
 * A commit sets the scheduler's latch only if a pipeline of a hierarchy it
 * wrote into (or one without a counter) waits for a commit: the scheduler
 * flags the counters it waits on.  Otherwise the scheduler reads the
 * counters when it wakes anyway.  A prepared transaction is counted
 * when some later commit finds it committed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/procarray.h"
#include "utils/inval.h"
#include "utils/memutils.h"

#include "microbatch.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(microbatch_source_changed);
PG_FUNCTION_INFO_V1(microbatch_extension_created);

/* What this backend's transaction must do when it commits */
static List *woken_roots = NIL; /* in TopMemoryContext */
static bool wake_for_source = false;
static Oid	last_woken = InvalidOid;	/* when wake_for_source */
static bool wake_for_catalog = false;
static bool wake_launcher = false;

/* The roots of the hierarchies of the tables this backend wrote into */
typedef struct MbRootsEntry
{
	Oid			relid;			/* hash key */
	List	   *roots;			/* in TopMemoryContext */
} MbRootsEntry;

static HTAB *roots_cache = NULL;

/* Partitions and inheritance change with DDL, which invalidates relcache */
static void
mb_roots_cache_invalidate(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	MbRootsEntry *entry;

	last_woken = InvalidOid;
	if (roots_cache == NULL)
		return;
	hash_seq_init(&status, roots_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		list_free(entry->roots);
		hash_search(roots_cache, &entry->relid, HASH_REMOVE, NULL);
	}
}

static List *
mb_roots_of(Oid relid)
{
	MbRootsEntry *entry;
	List	   *roots;
	MemoryContext old;
	bool		found;

	if (roots_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(MbRootsEntry);
		roots_cache = hash_create("microbatch hierarchy roots", 32, &ctl,
								  HASH_ELEM | HASH_BLOBS);
		CacheRegisterRelcacheCallback(mb_roots_cache_invalidate, (Datum) 0);
	}
	entry = hash_search(roots_cache, &relid, HASH_FIND, NULL);
	if (entry != NULL)
		return list_copy(entry->roots);

	/* reading the catalog may process invalidations: enter afterwards */
	roots = mb_hierarchy_roots(relid);
	old = MemoryContextSwitchTo(TopMemoryContext);
	entry = hash_search(roots_cache, &relid, HASH_ENTER, &found);
	if (found)
		list_free(entry->roots);
	entry->roots = list_copy(roots);
	MemoryContextSwitchTo(old);
	return roots;
}

/* A source table was written: wake its hierarchy's pipelines at commit */
void
mb_wake_for_source(Oid relid)
{
	ListCell   *lc;

	/* called for each row a subscription applies: once a table will do */
	if (wake_for_source && relid == last_woken)
		return;
	foreach(lc, mb_roots_of(relid))
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		woken_roots = list_append_unique_oid(woken_roots, lfirst_oid(lc));
		MemoryContextSwitchTo(old);
	}
	wake_for_source = true;
	last_woken = relid;
}

/* The pipelines of this database changed: tell the scheduler at commit */
void
mb_wake_scheduler_at_commit(void)
{
	wake_for_catalog = true;
}

/*
 * Count a commit into a hierarchy, and say whether a pipeline of it waits
 * for one.  Caller holds the lock in any mode.
 */
static bool
mb_count_root_commit(Oid dboid, Oid root)
{
	MbSourceKey key;
	MbSourceCommits *counter;

	memset(&key, 0, sizeof(key));
	key.dboid = dboid;
	key.root = root;
	counter = hash_search(mb_source_hash, &key, HASH_FIND, NULL);
	if (counter == NULL)
		return false;
	/* a full barrier, pairing with the scheduler's, as below */
	pg_atomic_fetch_add_u64(&counter->commits, 1);
	return pg_atomic_read_u32(&counter->wanted) != 0;
}

/*
 * Count a commit into a database's sources, and say whether its scheduler
 * waits for one for a pipeline without a counter of its own.  Caller holds
 * the lock in any mode.
 */
static bool
mb_count_database_commit(MbSlot *scheduler)
{
	/*
	 * The fetch-adds are full barriers, pairing with the scheduler's between
	 * setting the flag and reading the counters.
	 */
	pg_atomic_fetch_add_u64(&scheduler->db_commits, 1);
	return pg_atomic_read_u32(&scheduler->wants_source_commits) != 0;
}

/* Wake for a committed prepared transaction.  Caller holds the lock. */
static void
mb_wake_for_prepared(const MbPreparedWake *prepared)
{
	MbSlot	   *scheduler = mb_scheduler_slot(prepared->dboid);
	bool		wake = false;

	/* CREATE EXTENSION committed by COMMIT PREPARED (how Citus creates it) */
	if (prepared->extension_created && mb_shared->launcher_latch != NULL)
	{
		mb_shared->extensions_created++;
		SetLatch(mb_shared->launcher_latch);
	}
	if (scheduler == NULL)
		return;
	if (prepared->nroots < 0)
	{
		HASH_SEQ_STATUS status;
		MbSourceCommits *counter;

		hash_seq_init(&status, mb_source_hash);
		while ((counter = hash_seq_search(&status)) != NULL)
			if (counter->key.dboid == prepared->dboid)
			{
				pg_atomic_fetch_add_u64(&counter->commits, 1);
				wake |= pg_atomic_read_u32(&counter->wanted) != 0;
			}
	}
	for (int i = 0; i < prepared->nroots; i++)
		wake |= mb_count_root_commit(prepared->dboid, prepared->roots[i]);
	wake |= mb_count_database_commit(scheduler);
	if (wake)
		SetLatch(scheduler->latch);
}

/*
 * Wake for the prepared transactions that wrote into sources and have been
 * committed since, and forget those that are over.
 */
static void
mb_wake_for_finished_prepared(void)
{
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < mb_prepared_wakes->size; i++)
	{
		MbPreparedWake *prepared = &mb_prepared_wakes->entries[i];
		TransactionId xid = XidFromFullTransactionId(prepared->xid);

		if (!FullTransactionIdIsValid(prepared->xid) ||
			TransactionIdIsInProgress(xid))
			continue;
		if (TransactionIdDidCommit(xid))
			mb_wake_for_prepared(prepared);
		prepared->xid = InvalidFullTransactionId;
		pg_atomic_fetch_sub_u32(&mb_prepared_wakes->used, 1);
	}
	LWLockRelease(mb_shared->lock);
}

/* This transaction, which wrote into sources or created the extension, is being prepared */
static void
mb_remember_prepared(void)
{
	MbPreparedWake *prepared = NULL;

	if (mb_prepared_wakes->size == 0)
		return;
	if ((int) pg_atomic_read_u32(&mb_prepared_wakes->used) >= mb_prepared_wakes->size)
		mb_wake_for_finished_prepared();

	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < mb_prepared_wakes->size && prepared == NULL; i++)
		if (!FullTransactionIdIsValid(mb_prepared_wakes->entries[i].xid))
			prepared = &mb_prepared_wakes->entries[i];
	if (prepared != NULL)
	{
		ListCell   *lc;

		prepared->xid = GetTopFullTransactionId();
		prepared->dboid = MyDatabaseId;
		prepared->extension_created = wake_launcher;
		prepared->nroots = 0;
		foreach(lc, woken_roots)
		{
			if (prepared->nroots == MB_PREPARED_ROOTS)
			{
				prepared->nroots = -1;
				break;
			}
			prepared->roots[prepared->nroots++] = lfirst_oid(lc);
		}
		pg_atomic_fetch_add_u32(&mb_prepared_wakes->used, 1);
	}
	LWLockRelease(mb_shared->lock);
}

static void
mb_xact_callback(XactEvent event, void *arg)
{
	MbSlot	   *slot;

	if (event == XACT_EVENT_PRE_PREPARE && (wake_for_source || wake_launcher) &&
		mb_shared != NULL)
		mb_remember_prepared();
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_ABORT && event != XACT_EVENT_PREPARE)
		return;
	if (event == XACT_EVENT_COMMIT && mb_shared != NULL &&
		(wake_for_source || wake_for_catalog || wake_launcher))
	{
		LWLockAcquire(mb_shared->lock, wake_launcher ? LW_EXCLUSIVE : LW_SHARED);
		if (wake_launcher && mb_shared->launcher_latch != NULL)
		{
			mb_shared->extensions_created++;
			SetLatch(mb_shared->launcher_latch);
		}
		slot = mb_scheduler_slot(MyDatabaseId);
		if (slot != NULL)
		{
			bool		wake = false;

			if (wake_for_source)
			{
				ListCell   *lc;

				foreach(lc, woken_roots)
					wake |= mb_count_root_commit(MyDatabaseId, lfirst_oid(lc));
				wake |= mb_count_database_commit(slot);
			}
			if (wake_for_catalog)
			{
				pg_atomic_write_u32(&slot->reload_requested, 1);
				wake = true;
			}
			if (wake)
				SetLatch(slot->latch);
		}
		LWLockRelease(mb_shared->lock);
	}
	if (event == XACT_EVENT_COMMIT && mb_shared != NULL &&
		pg_atomic_read_u32(&mb_prepared_wakes->used) != 0)
		mb_wake_for_finished_prepared();
	list_free(woken_roots);
	woken_roots = NIL;
	wake_for_source = wake_for_catalog = wake_launcher = false;
}

void
mb_register_xact_callback(void)
{
	RegisterXactCallback(mb_xact_callback, NULL);
}

/*
 * The counter of commits into a source hierarchy, created if needed, for
 * the scheduler of the database; NULL when the table is full.  Counters
 * live as long as the scheduler.
 */
MbSourceCommits *
mb_source_commits(Oid dboid, Oid root)
{
	MbSourceKey key;
	MbSourceCommits *counter;
	bool		found;

	memset(&key, 0, sizeof(key));
	key.dboid = dboid;
	key.root = root;
	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	counter = hash_search(mb_source_hash, &key, HASH_ENTER_NULL, &found);
	if (counter != NULL && !found)
	{
		pg_atomic_init_u64(&counter->commits, 0);
		pg_atomic_init_u32(&counter->wanted, 0);
	}
	LWLockRelease(mb_shared->lock);
	return counter;
}

void
mb_source_commits_forget_database(Oid dboid)
{
	HASH_SEQ_STATUS status;
	MbSourceCommits *counter;

	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&status, mb_source_hash);
	while ((counter = hash_seq_search(&status)) != NULL)
		if (counter->key.dboid == dboid)
			hash_search(mb_source_hash, &counter->key, HASH_REMOVE, NULL);
	LWLockRelease(mb_shared->lock);
}

/*
 * Statement trigger on the tables of sources: a transaction that wrote rows
 * tells the scheduler when it commits.
 */
Datum
microbatch_source_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("microbatch.source_changed() must be called as a trigger")));
	mb_wake_for_source(RelationGetRelid(trigdata->tg_relation));
	PG_RETURN_POINTER(NULL);
}

/*
 * Called by the install script: start a scheduler here once committed.
 * Outside CREATE or ALTER EXTENSION microbatch it would only make the
 * launcher look at every database.
 */
Datum
microbatch_extension_created(PG_FUNCTION_ARGS)
{
	if (!creating_extension ||
		CurrentExtensionObject != get_extension_oid("microbatch", true))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("microbatch.extension_created() can only be called by CREATE EXTENSION microbatch")));
	wake_launcher = true;
	mb_warn_if_no_workers();
	/* pipeline ids start again at 1: what a dropped extension counted is not theirs */
	mb_stats_forget_database_at_commit();
	PG_RETURN_VOID();
}
