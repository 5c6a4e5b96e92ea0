/*-------------------------------------------------------------------------
 *
 * ingest.c
 *	  SQL entry points of identity stitching: cdp.identify(), cdp.track(),
 *	  cdp.ingest() and cdp.process_inbox().
 *
 * All of them build IngestMessages and hand them to identity_process() in
 * one batch.  The single-message functions raise on bad input (they are
 * called by code that wants to know); the batch functions never raise for
 * a bad message: it is reported (cdp.ingest) or set aside in
 * cdp.inbox_rejects (cdp.process_inbox) and the others are kept.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "identity/identity.h"
#include "identity/store.h"
#include "types/identifier.h"

#define INBOX_CHUNK 5000

static void
init_message(IngestMessage *m, int index)
{
	memset(m, 0, sizeof(*m));
	m->index = index;
	m->received_at = GetCurrentTransactionStartTimestamp();
}

/* Identifiers from a cdp.identifier[] argument (already normalised). */
static void
message_ids_from_array(IngestMessage *m, ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("identifiers must be a one-dimensional array")));
	deconstruct_array(arr, ARR_ELEMTYPE(arr), -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	m->ids = palloc(sizeof(char *) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		char	   *key;
		bool		dup = false;

		if (nulls[i])
			continue;
		key = text_to_cstring((text *) PG_DETOAST_DATUM_PACKED(elems[i]));
		for (int j = 0; j < m->nids && !dup; j++)
			dup = strcmp(m->ids[j], key) == 0;
		if (!dup)
			m->ids[m->nids++] = key;
	}
}

static void
require_object(Jsonb *j, const char *what)
{
	if (!JB_ROOT_IS_OBJECT(j) || JB_ROOT_IS_SCALAR(j))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", what)));
}

/*
 * Run one message built by cdp.identify() / cdp.track(); returns the profile
 * id (for a re-sent message id: the profile of the original).
 */
static int64
run_single(IngestMessage *m)
{
	IngestStats stats = {0};
	int64		result;

	if (m->nids == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a message needs at least one identifier"),
				 errhint("Pass identifiers such as ARRAY['user_id:42', 'email:jane@example.com']::cdp.identifier[].")));
	if (m->occurred_at < 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("occurred_at must not be before 1970")));

	SPI_connect();
	identity_process(m, 1, &stats);
	if (m->duplicate)
	{
		Oid			type = TEXTOID;
		Datum		arg = CStringGetTextDatum(m->message_id);
		bool		isnull;

		SPI_execute_with_args("SELECT coalesce(p.merged_into, p.profile_id) FROM cdp.message_ids i "
							  "JOIN cdp.event_data e ON e.event_id = i.event_id "
							  "JOIN cdp.profile_data p ON p.profile_id = e.profile_id "
							  "WHERE i.message_id = $1",
							  1, &type, &arg, NULL, false, 1);
		result = SPI_processed == 1
			? DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull))
			: 0;
	}
	else
		result = m->profile_id;

	/* m->error lives in SPI's memory: raise before SPI_finish() frees it */
	if (m->error != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("message rejected: %s", m->error),
				 errhint("See cdp.identity_conflicts and cdp.identity_rules for why identifiers were not used.")));
	SPI_finish();
	return result;
}

static void
common_args(IngestMessage *m, FunctionCallInfo fcinfo, int first)
{
	if (!PG_ARGISNULL(first))
		m->occurred_at = PG_GETARG_TIMESTAMPTZ(first);
	else
		m->occurred_at = m->received_at;
	m->source = PG_ARGISNULL(first + 1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(first + 1));
	m->message_id = PG_ARGISNULL(first + 2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(first + 2));
}

/* cdp.identify(identifiers, traits, occurred_at, source, message_id) */
PG_FUNCTION_INFO_V1(cdp_identify);
Datum
cdp_identify(PG_FUNCTION_ARGS)
{
	IngestMessage m;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	init_message(&m, 0);
	message_ids_from_array(&m, PG_GETARG_ARRAYTYPE_P(0));
	m.type = "identify";
	m.event = "identify";
	if (!PG_ARGISNULL(1))
	{
		m.traits = PG_GETARG_JSONB_P(1);
		require_object(m.traits, "traits");
	}
	else
		m.traits = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	m.properties = m.traits;
	common_args(&m, fcinfo, 2);
	PG_RETURN_INT64(run_single(&m));
}

/* cdp.track(identifiers, event, properties, occurred_at, source, message_id) */
PG_FUNCTION_INFO_V1(cdp_track);
Datum
cdp_track(PG_FUNCTION_ARGS)
{
	IngestMessage m;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	if (PG_ARGISNULL(1) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(1)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event name must not be empty")));
	init_message(&m, 0);
	message_ids_from_array(&m, PG_GETARG_ARRAYTYPE_P(0));
	m.type = "track";
	m.event = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!PG_ARGISNULL(2))
	{
		m.properties = PG_GETARG_JSONB_P(2);
		require_object(m.properties, "properties");
	}
	else
		m.properties = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	common_args(&m, fcinfo, 3);
	PG_RETURN_INT64(run_single(&m));
}

static void
append_stats(StringInfo buf, IngestStats *stats)
{
	appendStringInfo(buf, "\"accepted\": " INT64_FORMAT ", \"duplicates\": " INT64_FORMAT
					 ", \"new_profiles\": " INT64_FORMAT ", \"merges\": " INT64_FORMAT
					 ", \"conflicts\": " INT64_FORMAT,
					 stats->accepted, stats->duplicates, stats->new_profiles, stats->merges,
					 stats->conflicts);
}

/* cdp.ingest(payload jsonb): one Segment message or {"batch": [...]} */
PG_FUNCTION_INFO_V1(cdp_ingest);
Datum
cdp_ingest(PG_FUNCTION_ARGS)
{
	Jsonb	   *payload = PG_GETARG_JSONB_P(0);
	IngestMessage *msgs;
	int			n = 0;
	IngestStats stats = {0};
	StringInfoData buf;
	JsonbValue	batch;
	List	   *mappings;
	bool		first = true;
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext scratch;

	SPI_connect();
	mappings = mappings_load();

	if (JB_ROOT_IS_OBJECT(payload) && !JB_ROOT_IS_SCALAR(payload) &&
		getKeyJsonValueFromContainer(&payload->root, "batch", 5, &batch) != NULL)
	{
		JsonbIterator *it;
		JsonbValue	v;
		JsonbIteratorToken tok;
		int			cap = 16;

		if (batch.type != jbvBinary || !JsonContainerIsArray(batch.val.binary.data))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("\"batch\" must be a JSON array of messages")));
		msgs = palloc(sizeof(IngestMessage) * cap);
		scratch = AllocSetContextCreate(CurrentMemoryContext, "cdp message", ALLOCSET_DEFAULT_SIZES);
		it = JsonbIteratorInit(batch.val.binary.data);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			MemoryContext old;

			if (tok != WJB_ELEM)
				continue;
			if (n == cap)
				msgs = repalloc(msgs, sizeof(IngestMessage) * (cap *= 2));
			init_message(&msgs[n], n);
			old = MemoryContextSwitchTo(scratch);
			if (v.type == jbvBinary)
				message_from_jsonb(&msgs[n], JsonbValueToJsonb(&v), mappings, NULL);
			else
				msgs[n].error = pstrdup("message is not a JSON object");
			MemoryContextSwitchTo(old);
			message_keep(&msgs[n]);
			MemoryContextReset(scratch);
			n++;
		}
	}
	else
	{
		msgs = palloc(sizeof(IngestMessage));
		init_message(&msgs[0], 0);
		message_from_jsonb(&msgs[0], payload, mappings, NULL);
		n = 1;
	}

	identity_process(msgs, n, &stats);

	/* The messages live in SPI's memory: report on them before SPI_finish(). */
	MemoryContextSwitchTo(outer);
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	append_stats(&buf, &stats);
	appendStringInfoString(&buf, ", \"rejected\": [");
	for (int i = 0; i < n; i++)
	{
		if (msgs[i].error == NULL || msgs[i].duplicate)
			continue;
		appendStringInfo(&buf, "%s{\"index\": %d, \"error\": ", first ? "" : ", ", msgs[i].index);
		escape_json(&buf, msgs[i].error);
		appendStringInfoChar(&buf, '}');
		first = false;
	}
	appendStringInfoString(&buf, "]}");
	SPI_finish();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/*
 * Parse JSON text without raising for bad input: the error comes back as a
 * sentence.  jsonb_in parses in one pass; what it raises for the text
 * (syntax, a \u0000 escape: the detail names the problem; a number out of
 * numeric's range, nesting too deep) is caught here.  It allocates nothing
 * but memory and holds no lock or buffer, so its errors can be caught
 * without a subtransaction; anything that is not about the input (an
 * interrupt, out of memory) is raised again.
 */
static Jsonb *
parse_json_text(char *text, char **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *volatile result = NULL;

	PG_TRY();
	{
		result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int			category = ERRCODE_TO_CATEGORY(geterrcode());

		if (category != ERRCODE_DATA_EXCEPTION && category != ERRCODE_PROGRAM_LIMIT_EXCEEDED)
			PG_RE_THROW();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		*error = psprintf("invalid JSON: %s",
						  edata->detail != NULL && edata->sqlerrcode != ERRCODE_PROGRAM_LIMIT_EXCEEDED
						  ? edata->detail : edata->message);
	}
	PG_END_TRY();
	return result;
}

/* cdp.process_inbox(max_messages integer) */
PG_FUNCTION_INFO_V1(cdp_process_inbox);
Datum
cdp_process_inbox(PG_FUNCTION_ARGS)
{
	int64		limit = PG_ARGISNULL(0) ? PG_INT64_MAX : PG_GETARG_INT32(0);
	int64		processed = 0;
	int64		last_id = 0;
	IngestStats stats = {0};
	StringInfoData buf;
	MemoryContext chunkcxt;
	MemoryContext scratch;
	MemoryContext outer = CurrentMemoryContext;
	List	   *mappings;

	if (limit < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_messages must not be negative")));

	SPI_connect();
	chunkcxt = AllocSetContextCreate(outer, "cdp inbox chunk", ALLOCSET_DEFAULT_SIZES);
	scratch = AllocSetContextCreate(outer, "cdp message", ALLOCSET_DEFAULT_SIZES);
	{
		MemoryContext old = MemoryContextSwitchTo(outer);

		mappings = mappings_load();
		MemoryContextSwitchTo(old);
	}

	while (processed < limit)
	{
		Datum		arg = Int32GetDatum((int32) Min(INBOX_CHUNK, limit - processed));
		IngestMessage *msgs;
		int			n;
		ArrayBuild	done,
					rej_id,
					rej_error;
		MemoryContext old;

		/* The chunk's rows stay locked until commit: concurrent callers skip them. */
		/*
		 * Resume after the last row taken: the rows this call already
		 * deleted are dead only once it commits, and an index scan from the
		 * start would step over all of them for every chunk.
		 */
		Oid			types[2] = {INT4OID, INT8OID};
		Datum		args[2] = {arg, Int64GetDatum(last_id)};

		store_exec(PLAN_INBOX_FETCH,
				   "SELECT inbox_id, payload, source, received_at, ctid FROM cdp.inbox "
				   "WHERE inbox_id > $2 ORDER BY inbox_id LIMIT $1 FOR UPDATE SKIP LOCKED",
				   2, types, args, NULL, false);
		n = (int) SPI_processed;
		if (n == 0)
			break;

		/*
		 * Lock the graph exclusively for the whole call, as any chunk with
		 * many identifiers does (store.c).  A first chunk with few would
		 * take it shared, and a later chunk would then upgrade it: two
		 * calls doing so at once deadlock.
		 */
		if (processed == 0)
			identity_lock_graph(true);

		old = MemoryContextSwitchTo(chunkcxt);
		msgs = palloc(sizeof(IngestMessage) * n);
		ab_init(&done, TIDOID);
		for (int i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			char	   *error = NULL;
			Jsonb	   *j;

			init_message(&msgs[i], i);
			msgs[i].inbox_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			{
				ItemPointer tid = palloc(sizeof(ItemPointerData));

				ItemPointerCopy((ItemPointer) DatumGetPointer(SPI_getbinval(tup, desc, 5, &isnull)), tid);
				ab_add(&done, PointerGetDatum(tid), false);
			}
			last_id = Max(last_id, msgs[i].inbox_id);
			msgs[i].received_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
			MemoryContextSwitchTo(scratch);
			j = parse_json_text(SPI_getvalue(tup, desc, 2), &error);
			if (j == NULL)
				msgs[i].error = error;
			else
				message_from_jsonb(&msgs[i], j, mappings, SPI_getvalue(tup, desc, 3));
			MemoryContextSwitchTo(chunkcxt);
			message_keep(&msgs[i]);
			MemoryContextReset(scratch);
		}
		SPI_freetuptable(SPI_tuptable);

		identity_process(msgs, n, &stats);

		ab_init(&rej_id, INT8OID);
		ab_init(&rej_error, TEXTOID);
		for (int i = 0; i < n; i++)
		{
			if (msgs[i].error != NULL && !msgs[i].duplicate)
			{
				ab_add(&rej_id, Int64GetDatum(msgs[i].inbox_id), false);
				ab_add_text(&rej_error, msgs[i].error);
			}
		}
		if (rej_id.n > 0)
		{
			Oid			types[2] = {INT8ARRAYOID, TEXTARRAYOID};
			Datum		args[2] = {ab_result(&rej_id), ab_result(&rej_error)};

			store_exec(PLAN_INBOX_REJECT,
					   "INSERT INTO cdp.inbox_rejects (inbox_id, payload, source, received_at, error) "
					   "SELECT i.inbox_id, i.payload, i.source, i.received_at, r.error "
					   "FROM unnest($1, $2) AS r(id, error) JOIN cdp.inbox i ON i.inbox_id = r.id",
					   2, types, args, NULL, false);
		}
		{
			Oid			t = TIDARRAYOID;
			Datum		a = ab_result(&done);

			/*
			 * By the rows' addresses, which the row locks keep stable: a
			 * TID scan instead of an index probe per row.
			 */
			store_exec(PLAN_INBOX_DELETE, "DELETE FROM cdp.inbox WHERE ctid = ANY ($1)",
					   1, &t, &a, NULL, false);
		}
		processed += n;
		MemoryContextSwitchTo(old);
		MemoryContextReset(chunkcxt);
	}
	SPI_finish();

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"processed\": " INT64_FORMAT ", \"rejected\": " INT64_FORMAT ", ",
					 processed, stats.rejected);
	append_stats(&buf, &stats);
	appendStringInfoChar(&buf, '}');
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
