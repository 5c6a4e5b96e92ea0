/*-------------------------------------------------------------------------
 *
 * rule.c
 *	  Checking the SQL expressions analysts write: audience rules and the
 *	  filters of computed traits.
 *
 * An expression is text that cdp splices into its own queries, so it must
 * be exactly one expression and nothing else: it is parsed on its own as
 * "SELECT <expression>", and anything but a single unnamed target with no
 * other clause (a second statement, a FROM, a trailing comment that
 * swallows what follows) is refused.  It must also be a pure function of
 * the row it is evaluated against, or incremental evaluation would
 * disagree with evaluating it from scratch: subqueries (other tables) and
 * volatile functions are refused.  Then it is analysed against the row it
 * will see, which reports unknown columns, unknown functions and a result
 * that is not boolean with PostgreSQL's own errors and positions.
 *
 * cdp.in_audience('name') is the one way a rule reads other data: it is
 * rewritten into a test of the membership table for the current row, and
 * the audience names are returned so that the caller can order audiences
 * by their dependencies (and refuse cycles).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "optimizer/optimizer.h"
#include "parser/parser.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

/* What the walk over the raw expression collects. */
typedef struct RuleScan
{
	const char *text;			/* "SELECT " || expression */
	int			offset;			/* length of "SELECT " */
	bool		allow_in_audience;
	List	   *columns;		/* column names referenced (String) */
	List	   *audiences;		/* cdp.in_audience() names (String) */
	List	   *calls;			/* their spans: start, end (int pairs) */
} RuleScan;

#define PREFIX "SELECT "

static int
position_in_rule(const RuleScan *s, int location)
{
	return location < 0 ? 0 : location + 1;
}

/* Where the expression sits in the text being parsed. */
typedef struct ErrorSpot
{
	const char *expr;			/* the expression as the user sees it */
	int			start;			/* its offset in the parsed text */
} ErrorSpot;

/*
 * Positions in errors point into the text cdp parsed, not into the
 * statement the user typed: report them against the expression alone, as
 * an internal query (as PL/pgSQL does), so that psql shows the expression
 * with a cursor under the problem.
 */
static void
expression_error_callback(void *arg)
{
	ErrorSpot  *spot = (ErrorSpot *) arg;
	int			pos = geterrposition();
	int			len = strlen(spot->expr);

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(Max(1, Min(pos - spot->start, len + 1)));
		internalerrquery(spot->expr);
	}
}

/* The end (one past the ')') of in_audience('...') whose argument starts at pos. */
static int
call_end(const RuleScan *s, int pos)
{
	const char *t = s->text;

	if (t[pos] != '\'')
		return -1;
	for (pos++; t[pos] != '\0'; pos++)
	{
		if (t[pos] == '\'')
		{
			if (t[pos + 1] == '\'')
				pos++;
			else
				break;
		}
	}
	if (t[pos] != '\'')
		return -1;
	for (pos++; t[pos] == ' ' || t[pos] == '\t' || t[pos] == '\n' || t[pos] == '\r'; pos++)
		;
	return t[pos] == ')' ? pos + 1 : -1;
}

static bool
is_in_audience(FuncCall *fc)
{
	const char *schema = NULL;
	const char *name;

	if (list_length(fc->funcname) == 2)
		schema = strVal(linitial(fc->funcname));
	else if (list_length(fc->funcname) != 1)
		return false;
	name = strVal(llast(fc->funcname));
	return strcmp(name, "in_audience") == 0 && (schema == NULL || strcmp(schema, "cdp") == 0);
}

static bool
scan_walker(Node *node, RuleScan *s)
{
	if (node == NULL)
		return false;
	if (IsA(node, SubLink))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("subqueries are not allowed in cdp expressions"),
				 errdetail("An expression is evaluated against one row at a time; a subquery would read other data behind incremental evaluation's back."),
				 errhint("Use a computed trait (cdp.create_trait) or cdp.in_audience('name')."),
				 errposition(position_in_rule(s, ((SubLink *) node)->location))));
	if (IsA(node, ColumnRef))
	{
		ColumnRef  *cr = (ColumnRef *) node;
		Node	   *last = llast(cr->fields);

		if (IsA(last, String))
			s->columns = lappend(s->columns, last);
		return false;
	}
	if (IsA(node, FuncCall) && is_in_audience((FuncCall *) node))
	{
		FuncCall   *fc = (FuncCall *) node;
		A_Const    *arg = list_length(fc->args) == 1 ? (A_Const *) linitial(fc->args) : NULL;
		int			end;

		if (!s->allow_in_audience)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cdp.in_audience() can only be used in audience rules"),
					 errposition(position_in_rule(s, fc->location))));
		if (arg == NULL || !IsA(arg, A_Const) || arg->isnull || !IsA(&arg->val, String) ||
			fc->agg_filter || fc->over || fc->agg_order || fc->agg_star || fc->func_variadic ||
			(end = call_end(s, arg->location)) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_SYNTAX_ERROR),
					 errmsg("cdp.in_audience() takes the name of an audience as a string literal"),
					 errhint("Write e.g. cdp.in_audience('open_critical_ticket')."),
					 errposition(position_in_rule(s, fc->location))));
		s->audiences = lappend(s->audiences, makeString(pstrdup(strVal(&arg->val))));
		s->calls = lappend_int(s->calls, fc->location);
		s->calls = lappend_int(s->calls, end);
		return false;
	}
	return raw_expression_tree_walker(node, scan_walker, (void *) s);
}

/*
 * Rules run inside the audience pass with the extension owner's rights.
 * A function a non-superuser wrote (even a stable one: it may read any
 * table) would run with those rights too, so rules and filters may only
 * call functions owned by a superuser: the built-in ones, cdp's, and those
 * of extensions a superuser installed.
 */
static bool
function_untrusted(Oid funcid, void *context)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcid));
	bool		untrusted;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", funcid);
	untrusted = !superuser_arg(((Form_pg_proc) GETSTRUCT(tup))->proowner);
	ReleaseSysCache(tup);
	if (untrusted)
		*(Oid *) context = funcid;
	return untrusted;
}

static bool
untrusted_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (check_functions_in_node(node, function_untrusted, context))
		return true;
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, untrusted_walker, context, 0);
	return expression_tree_walker(node, untrusted_walker, context);
}

static Datum
string_list_array(List *names)
{
	ArrayBuildState *astate = NULL;
	ListCell   *lc;

	foreach(lc, names)
	{
		bool		seen = false;

		/* Keep the first occurrence of each name. */
		for (ListCell *prev = list_head(names); prev != lc; prev = lnext(names, prev))
			if (strcmp(strVal(lfirst(prev)), strVal(lfirst(lc))) == 0)
			{
				seen = true;
				break;
			}
		if (!seen)
			astate = accumArrayResult(astate, CStringGetTextDatum(strVal(lfirst(lc))), false,
									  TEXTOID, CurrentMemoryContext);
	}
	if (astate == NULL)
		return PointerGetDatum(construct_empty_array(TEXTOID));
	return makeArrayResult(astate, CurrentMemoryContext);
}

/*
 * cdp._check_expression(expression text, source text, membership text)
 *	 RETURNS TABLE (expression text, columns text[], audiences text[])
 *
 * source: a FROM item with alias t providing the columns the expression may
 * use.  membership: the SQL template an in_audience('x') call becomes, with
 * %s for the quoted name; NULL if in_audience() is not allowed.
 */
PG_FUNCTION_INFO_V1(cdp_check_expression);
Datum
cdp_check_expression(PG_FUNCTION_ARGS)
{
	char	   *expr = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *source = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *membership = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	RuleScan	s = {0};
	List	   *parsed;
	RawStmt    *raw;
	SelectStmt *sel;
	ResTarget  *target;
	StringInfoData out;
	StringInfoData query;
	int			copied;
	ListCell   *lc;
	List	   *queries;
	Query	   *q;
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	ErrorContextCallback callback;
	ErrorSpot	spot;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "cdp._check_expression() must return a row");
	if (strspn(expr, " \t\r\n") == strlen(expr))
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("the expression is empty"),
				 errhint("Write an SQL boolean expression, e.g. orders_90d >= 3.")));

	s.text = psprintf(PREFIX "%s", expr);
	s.offset = strlen(PREFIX);
	s.allow_in_audience = membership != NULL;

	spot.expr = expr;
	spot.start = s.offset;
	callback.callback = expression_error_callback;
	callback.arg = (void *) &spot;
	callback.previous = error_context_stack;
	error_context_stack = &callback;

	parsed = raw_parser(s.text, RAW_PARSE_DEFAULT);
	raw = list_length(parsed) == 1 ? linitial_node(RawStmt, parsed) : NULL;
	sel = raw && IsA(raw->stmt, SelectStmt) ? (SelectStmt *) raw->stmt : NULL;
	if (sel == NULL || list_length(sel->targetList) != 1 ||
		sel->fromClause || sel->whereClause || sel->groupClause || sel->havingClause ||
		sel->windowClause || sel->sortClause || sel->limitCount || sel->limitOffset ||
		sel->lockingClause || sel->withClause || sel->intoClause || sel->distinctClause ||
		sel->valuesLists || sel->op != SETOP_NONE ||
		((ResTarget *) linitial(sel->targetList))->name != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("\"%s\" is not a single SQL expression", expr),
				 errdetail("A rule or filter is one boolean expression: no FROM, no second statement, no alias."),
				 errhint("E.g. orders_90d >= 3 AND traits->>'country' = 'DE'.")));
	target = linitial_node(ResTarget, sel->targetList);
	scan_walker(target->val, &s);

	/* Splice the membership tests in place of the in_audience() calls. */
	initStringInfo(&out);
	copied = s.offset;
	for (int i = 0; i < list_length(s.calls); i += 2)
	{
		int			start = list_nth_int(s.calls, i);
		int			end = list_nth_int(s.calls, i + 1);
		const char *name = strVal(list_nth(s.audiences, i / 2));

		appendBinaryStringInfo(&out, s.text + copied, start - copied);
		appendStringInfo(&out, membership, quote_literal_cstr(name));
		copied = end;
	}
	appendStringInfoString(&out, s.text + copied);

	/* Analyse it against the row it will see. */
	initStringInfo(&query);
	appendStringInfo(&query, "SELECT 1 FROM %s WHERE (%s\n)", source, out.data);
	spot.expr = out.data;
	spot.start = strlen("SELECT 1 FROM ") + strlen(source) + strlen(" WHERE (");
	parsed = raw_parser(query.data, RAW_PARSE_DEFAULT);
	queries = pg_analyze_and_rewrite_fixedparams(linitial_node(RawStmt, parsed), query.data,
												 NULL, 0, NULL);
	foreach(lc, queries)
	{
		Oid			untrusted = InvalidOid;

		q = lfirst_node(Query, lc);
		if (q->jointree && untrusted_walker(q->jointree->quals, &untrusted))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("\"%s\" calls %s, which is not owned by a superuser", expr,
							format_procedure(untrusted)),
					 errdetail("Rules and filters run inside the audience pass with the extension owner's rights."),
					 errhint("Use built-in functions, or ask a superuser to own the function.")));
		if (q->jointree && contain_volatile_functions(q->jointree->quals))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
					 errmsg("\"%s\" calls a volatile function", expr),
					 errdetail("A rule or filter must give the same answer for the same data each time it is evaluated."),
					 errhint("Use stable or immutable functions; for time windows use a computed trait with a window.")));
	}

	error_context_stack = callback.previous;

	values[0] = CStringGetTextDatum(out.data);
	values[1] = string_list_array(s.columns);
	values[2] = string_list_array(s.audiences);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
