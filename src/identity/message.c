/*-------------------------------------------------------------------------
 *
 * message.c
 *	  Segment-spec messages (identify, track, page, screen, group, alias)
 *	  parsed into IngestMessage, without raising: a bad message gets an
 *	  error sentence and the rest of its batch goes on.
 *
 * Identifiers are found through cdp.identifier_mappings (JSON path ->
 * kind).  What is stored as the event:
 *	track			event = the event name, properties = properties
 *	page, screen	event = name (or the type), properties = properties
 *	identify		event = 'identify', properties = traits (also written as
 *					profile traits, last write wins per key)
 *	group			event = 'group', properties = {group_id, traits}
 *	alias			event = 'alias', properties = {previous_id}
 * occurred_at is the ISO 8601 "timestamp" (else "originalTimestamp", else
 * the time of receipt); the source is context.library.name unless the
 * caller gives one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "identity/identity.h"
#include "types/identifier.h"

typedef struct Mapping
{
	int			npath;
	char	  **path;
	char	   *kind;
} Mapping;

/* Read cdp.identifier_mappings (connected to SPI); copied into the caller's context. */
List *
mappings_load(void)
{
	MemoryContext target = CurrentMemoryContext;
	List	   *result = NIL;
	int			rc;

	rc = SPI_execute("SELECT path, kind FROM cdp.identifier_mappings ORDER BY path", true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "cdp: reading cdp.identifier_mappings failed: %s", SPI_result_code_string(rc));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum	   *elems;
		int			n;
		MemoryContext old = MemoryContextSwitchTo(target);
		Mapping    *m = palloc(sizeof(Mapping));

		deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)),
						  TEXTOID, -1, false, TYPALIGN_INT, &elems, NULL, &n);
		m->npath = n;
		m->path = palloc(sizeof(char *) * n);
		for (int j = 0; j < n; j++)
			m->path[j] = TextDatumGetCString(elems[j]);
		m->kind = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		result = lappend(result, m);
		MemoryContextSwitchTo(old);
	}
	return result;
}

static bool
get_key(JsonbContainer *c, const char *key, JsonbValue *out)
{
	JsonbValue *v;

	if (c == NULL || !JsonContainerIsObject(c))
		return false;
	v = getKeyJsonValueFromContainer(c, key, strlen(key), out);
	return v != NULL && out->type != jbvNull;
}

static JsonbContainer *
container_of(JsonbValue *v)
{
	return v->type == jbvBinary ? v->val.binary.data : NULL;
}

static bool
get_path(Jsonb *j, char **path, int n, JsonbValue *out)
{
	JsonbContainer *c = &j->root;

	for (int i = 0; i < n; i++)
	{
		if (!get_key(c, path[i], out))
			return false;
		if (i < n - 1 && (c = container_of(out)) == NULL)
			return false;
	}
	return true;
}

/* A scalar as text (strings as is, numbers printed), or NULL. */
static char *
scalar_text(JsonbValue *v)
{
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	if (v->type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	return NULL;
}

static bool
is_object(JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

/*
 * Strict ISO 8601 date-time with a zone: YYYY-MM-DD[T ]HH:MM[:SS[.f]](Z|+HH[:MM]|-HH[:MM]).
 * Returns false for anything else (never raises).
 */
static bool
parse_iso8601(const char *s, TimestampTz *result)
{
	struct pg_tm tm = {0};
	fsec_t		fsec = 0;
	int			tz = 0;
	const char *p = s;
	int			n;

#define DIGITS(dst, count) \
	do { \
		(dst) = 0; \
		for (int d_ = 0; d_ < (count); d_++) \
		{ \
			if (*p < '0' || *p > '9') \
				return false; \
			(dst) = (dst) * 10 + (*p++ - '0'); \
		} \
	} while (0)

	DIGITS(tm.tm_year, 4);
	if (*p++ != '-')
		return false;
	DIGITS(tm.tm_mon, 2);
	if (*p++ != '-')
		return false;
	DIGITS(tm.tm_mday, 2);
	if (*p != 'T' && *p != 't' && *p != ' ')
		return false;
	p++;
	DIGITS(tm.tm_hour, 2);
	if (*p++ != ':')
		return false;
	DIGITS(tm.tm_min, 2);
	if (*p == ':')
	{
		p++;
		DIGITS(tm.tm_sec, 2);
		if (*p == '.' || *p == ',')
		{
			int			scale = 100000;

			p++;
			if (*p < '0' || *p > '9')
				return false;
			while (*p >= '0' && *p <= '9')
			{
				fsec += (*p++ - '0') * scale;
				scale /= 10;
			}
		}
	}
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-')
	{
		int			sign = (*p++ == '+') ? -1 : 1;	/* PostgreSQL counts west */
		int			hh,
					mm = 0;

		DIGITS(hh, 2);
		if (*p == ':')
			p++;
		if (*p >= '0' && *p <= '9')
			DIGITS(mm, 2);
		if (hh > 15 || mm > 59)
			return false;
		tz = sign * (hh * 3600 + mm * 60);
	}
	else
		return false;
	if (*p != '\0')
		return false;
#undef DIGITS

	if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
		tm.tm_mday > day_tab[isleap(tm.tm_year)][tm.tm_mon - 1] ||
		tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60 || tm.tm_year < 1970)
		return false;
	if (tm.tm_sec == 60)
		tm.tm_sec = 59;			/* a leap second: close enough */
	n = tm2timestamp(&tm, fsec, &tz, result);
	return n == 0;
}

static char *
describe_invalid(List *invalid)
{
	InvalidIdentifier *inv = linitial(invalid);

	return psprintf("message has no valid identifier: %s \"%s\": %s", inv->kind, inv->raw, inv->why);
}

void
message_add_identifier(IngestMessage *m, const char *kind, const char *raw, int len)
{
	StringInfoData buf;
	char	   *err;

	initStringInfo(&buf);
	err = identifier_normalize(kind, raw, len, &buf);
	if (err != NULL)
	{
		InvalidIdentifier *inv = palloc(sizeof(InvalidIdentifier));

		inv->kind = pstrdup(kind);
		inv->raw = pnstrdup(raw, len);
		inv->why = err;
		m->invalid = lappend(m->invalid, inv);
		return;
	}
	for (int i = 0; i < m->nids; i++)
		if (strcmp(m->ids[i], buf.data) == 0)
			return;
	m->ids = m->ids ? repalloc(m->ids, sizeof(char *) * (m->nids + 1)) : palloc(sizeof(char *));
	m->ids[m->nids++] = buf.data;
}

static Jsonb *
object_of(const char *key1, JsonbValue *v1, const char *key2, JsonbValue *v2)
{
	JsonbParseState *state = NULL;
	JsonbValue	k;
	JsonbValue *res;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	if (v1 != NULL)
	{
		k.type = jbvString;
		k.val.string.val = (char *) key1;
		k.val.string.len = strlen(key1);
		pushJsonbValue(&state, WJB_KEY, &k);
		pushJsonbValue(&state, WJB_VALUE, v1);
	}
	if (v2 != NULL)
	{
		k.type = jbvString;
		k.val.string.val = (char *) key2;
		k.val.string.len = strlen(key2);
		pushJsonbValue(&state, WJB_KEY, &k);
		pushJsonbValue(&state, WJB_VALUE, v2);
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

static Jsonb *
empty_object(void)
{
	return object_of(NULL, NULL, NULL, NULL);
}

/*
 * Fill m from a Segment-spec message.  On bad input m->error says why; the
 * caller has set index, inbox_id and received_at.
 */
void
message_from_jsonb(IngestMessage *m, Jsonb *payload, List *mappings, const char *default_source)
{
	JsonbValue	v;
	JsonbValue	props;
	JsonbContainer *root = &payload->root;
	char	   *type;
	ListCell   *lc;

	if (!JB_ROOT_IS_OBJECT(payload) || JB_ROOT_IS_SCALAR(payload))
	{
		m->error = pstrdup("message is not a JSON object");
		return;
	}
	if (!get_key(root, "type", &v) || v.type != jbvString)
	{
		m->error = pstrdup("message has no \"type\" (identify, track, page, screen, group or alias)");
		return;
	}
	type = pnstrdup(v.val.string.val, v.val.string.len);
	if (strcmp(type, "identify") != 0 && strcmp(type, "track") != 0 && strcmp(type, "page") != 0 &&
		strcmp(type, "screen") != 0 && strcmp(type, "group") != 0 && strcmp(type, "alias") != 0)
	{
		m->error = psprintf("unknown message type \"%s\": expected identify, track, page, screen, group or alias", type);
		return;
	}
	m->type = type;

	/* when */
	m->occurred_at = m->received_at;
	if (get_key(root, "timestamp", &v) || get_key(root, "originalTimestamp", &v))
	{
		char	   *ts = scalar_text(&v);

		if (ts == NULL || v.type != jbvString || !parse_iso8601(ts, &m->occurred_at))
		{
			m->error = psprintf("timestamp \"%s\" is not an ISO 8601 date-time with a time zone (e.g. 2026-11-22T17:50:55.123Z)",
								ts ? ts : "(not a string)");
			return;
		}
	}

	if (get_key(root, "messageId", &v))
	{
		m->message_id = scalar_text(&v);
		if (m->message_id == NULL || m->message_id[0] == '\0')
		{
			m->error = pstrdup("\"messageId\" must be a non-empty string");
			return;
		}
	}

	m->source = default_source ? pstrdup(default_source) : NULL;
	if (m->source == NULL)
	{
		char	   *lib[3] = {"context", "library", "name"};

		if (get_path(payload, lib, 3, &v))
			m->source = scalar_text(&v);
	}

	/* what */
	if (get_key(root, "properties", &props) && !is_object(&props))
	{
		m->error = pstrdup("\"properties\" must be a JSON object");
		return;
	}
	if (strcmp(type, "track") == 0)
	{
		if (!get_key(root, "event", &v) || v.type != jbvString || v.val.string.len == 0)
		{
			m->error = pstrdup("track message has no \"event\" name");
			return;
		}
		m->event = pnstrdup(v.val.string.val, v.val.string.len);
	}
	else if (strcmp(type, "page") == 0 || strcmp(type, "screen") == 0)
		m->event = (get_key(root, "name", &v) && v.type == jbvString && v.val.string.len > 0)
			? pnstrdup(v.val.string.val, v.val.string.len) : pstrdup(type);
	else
		m->event = pstrdup(type);

	if (strcmp(type, "track") == 0 || strcmp(type, "page") == 0 || strcmp(type, "screen") == 0)
		m->properties = get_key(root, "properties", &props) ? JsonbValueToJsonb(&props) : empty_object();
	else if (strcmp(type, "identify") == 0)
	{
		if (get_key(root, "traits", &v))
		{
			if (!is_object(&v))
			{
				m->error = pstrdup("\"traits\" must be a JSON object");
				return;
			}
			m->traits = JsonbValueToJsonb(&v);
			m->properties = m->traits;
		}
		else
			m->properties = empty_object();
	}
	else if (strcmp(type, "group") == 0)
	{
		JsonbValue	gid;
		bool		has_gid = get_key(root, "groupId", &gid);
		bool		has_traits = get_key(root, "traits", &v);

		if (has_traits && !is_object(&v))
		{
			m->error = pstrdup("\"traits\" must be a JSON object");
			return;
		}
		m->properties = object_of("group_id", has_gid ? &gid : NULL, "traits", has_traits ? &v : NULL);
	}
	else
	{
		JsonbValue	prev;

		m->properties = object_of("previous_id", get_key(root, "previousId", &prev) ? &prev : NULL, NULL, NULL);
	}

	/* who */
	foreach(lc, mappings)
	{
		Mapping    *map = lfirst(lc);
		char	   *raw;

		if (!get_path(payload, map->path, map->npath, &v))
			continue;
		raw = scalar_text(&v);
		if (raw == NULL)
		{
			InvalidIdentifier *inv = palloc(sizeof(InvalidIdentifier));

			inv->kind = map->kind;
			inv->raw = pstrdup("(not a string)");
			inv->why = pstrdup("identifier values must be strings or numbers");
			m->invalid = lappend(m->invalid, inv);
			continue;
		}
		message_add_identifier(m, map->kind, raw, strlen(raw));
	}
	if (m->nids == 0)
		m->error = m->invalid ? describe_invalid(m->invalid)
			: pstrdup("message has no identifier (userId, anonymousId or another mapped in cdp.identifier_mappings)");
}

static char *
keep_string(const char *s)
{
	return s ? pstrdup(s) : NULL;
}

static Jsonb *
keep_jsonb(const Jsonb *j)
{
	return j == NULL ? NULL : DatumGetJsonbPCopy(JsonbPGetDatum(j));
}

/*
 * Copy what message_from_jsonb() filled in into CurrentMemoryContext.
 * Parsing and normalising leave many times more garbage than they keep:
 * callers reading many messages parse each in a scratch context, keep the
 * message, and reset the scratch context (rather than letting a batch's
 * garbage grow until the batch is done).
 */
void
message_keep(IngestMessage *m)
{
	ListCell   *lc;
	List	   *invalid = NIL;
	const char **ids = m->nids > 0 ? palloc(sizeof(char *) * m->nids) : NULL;
	Jsonb	   *properties = keep_jsonb(m->properties);

	m->traits = m->traits == m->properties ? properties : keep_jsonb(m->traits);
	m->properties = properties;
	for (int i = 0; i < m->nids; i++)
		ids[i] = pstrdup(m->ids[i]);
	m->ids = ids;
	foreach(lc, m->invalid)
	{
		InvalidIdentifier *from = lfirst(lc);
		InvalidIdentifier *to = palloc(sizeof(InvalidIdentifier));

		to->kind = pstrdup(from->kind);
		to->raw = pstrdup(from->raw);
		to->why = pstrdup(from->why);
		invalid = lappend(invalid, to);
	}
	m->invalid = invalid;
	m->type = keep_string(m->type);
	m->event = keep_string(m->event);
	m->source = keep_string(m->source);
	m->message_id = keep_string(m->message_id);
	m->error = keep_string(m->error);
}
