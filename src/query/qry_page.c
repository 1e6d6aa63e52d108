/* qry_page: see qry_page.h. */
#include "qry_page.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

static const char *const FIELDS[] = {"created_at", "updated_at", "due_at", "priority"};

#define TS_TEXT(col) "to_char(" col " at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

int qry_sort_parse(const char *order_by, qry_sort *out, todo_err *err)
{
    char name[16];
    size_t n = strcspn(order_by, " ");
    out->field = QRY_SORT_CREATED_AT;
    out->asc = false;
    if (order_by[0] == '\0') return TODO_OK;
    const char *dir = order_by + n;
    if (n < sizeof name) {
        memcpy(name, order_by, n);
        name[n] = '\0';
        for (int f = 0; f < 4; f++) {
            if (strcmp(name, FIELDS[f]) != 0) continue;
            if (*dir != '\0' && strcmp(dir, " asc") != 0 && strcmp(dir, " desc") != 0) break;
            out->field = (qry_sort_field)f;
            out->asc = strcmp(dir, " asc") == 0;
            return TODO_OK;
        }
    }
    return todo_err_set(err, TODO_EINVAL,
                        "order_by: must be created_at, updated_at, due_at or priority, optionally followed by \" asc\" "
                        "or \" desc\"; got \"%.64s\"", order_by);
}

const char *qry_sort_expr(qry_sort_field f)
{
    static const char *const e[] = {"created_at", "updated_at", "coalesce(due_at, 'infinity'::timestamptz)", "priority",
                                    "remind_at"};
    return e[f];
}

const char *qry_sort_cast(qry_sort_field f) { return f == QRY_SORT_PRIORITY ? "smallint" : "timestamptz"; }

const char *qry_sort_text(qry_sort_field f)
{
    static const char *const e[] = {
        TS_TEXT("created_at"), TS_TEXT("updated_at"),
        "case when due_at is null then 'infinity' else " TS_TEXT("due_at") " end", "priority::text",
        TS_TEXT("remind_at")};
    return e[f];
}

const char *const qry_task_select =
    "select id::text, user_id, title, description, priority,"
    " (extract(epoch from due_at) * 1000000)::bigint, completed,"
    " (extract(epoch from completed_at) * 1000000)::bigint, category, array_to_string(tags, E'\\x1f'),"
    " (extract(epoch from created_at) * 1000000)::bigint, (extract(epoch from updated_at) * 1000000)::bigint,"
    " version, (due_at is not null and due_at < now() and not completed),"
    " coalesce(recurring_pattern_id::text, '')";

char *qry_list_sql(arena *a, const char *where, qry_sort sort, int limit_param)
{
    const char *dir = sort.asc ? "asc" : "desc";
    /* "tasks.id", not "id": a bare id names the select list's id::text, and
     * ordering by text is neither the keyset's uuid order nor one the
     * (user_id, created_at, id) index serves: every task of the user would
     * be read and sorted. */
    return arena_printf(a, "%s, %s as page_key from read.tasks%s order by %s %s, tasks.id %s limit $%d",
                        qry_task_select, qry_sort_text(sort.field), where, qry_sort_expr(sort.field), dir, dir,
                        limit_param);
}

void qry_page_encode(const qry_page_key *key, char out[QRY_PAGE_TOKEN_MAX])
{
    char raw[128];
    int n = snprintf(raw, sizeof raw, "p2|%d|%c|%s|%s", (int)key->sort.field, key->sort.asc ? 'a' : 'd', key->value,
                     key->id);
    text_b64url_encode((const unsigned char *)raw, (size_t)n, out);
}

/* True for "YYYY-MM-DDTHH:MM:SS.ffffffZ". */
static int is_timestamp(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    if (strlen(s) != sizeof shape - 1) return 0;
    for (size_t i = 0; i < sizeof shape - 1; i++)
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i]) return 0;
    return 1;
}

static int valid_value(qry_sort_field f, const char *v)
{
    if (f == QRY_SORT_PRIORITY) return strlen(v) == 1 && v[0] >= '0' && v[0] <= '4';
    if (f == QRY_SORT_DUE_AT && strcmp(v, "infinity") == 0) return 1;
    return is_timestamp(v);
}

int qry_page_decode(const char *token, const qry_sort *sort, qry_page_key *key, todo_err *err)
{
    unsigned char raw[128];
    char *parts[6];
    int n = 0;
    size_t len = strlen(token);
    long got = len < QRY_PAGE_TOKEN_MAX ? text_b64url_decode(token, len, raw, sizeof raw - 1) : -1;
    if (got < 0) goto bad;
    raw[got] = '\0';
    for (char *p = (char *)raw, *save = NULL; n < 6 && (p = strtok_r(p, "|", &save)) != NULL; p = NULL) parts[n++] = p;
    if (n != 5 || strcmp(parts[0], "p2") != 0 || strlen(parts[1]) != 1 || parts[1][0] < '0' || parts[1][0] > '4' ||
        (strcmp(parts[2], "a") != 0 && strcmp(parts[2], "d") != 0))
        goto bad;
    key->sort.field = (qry_sort_field)(parts[1][0] - '0');
    key->sort.asc = parts[2][0] == 'a';
    if (!valid_value(key->sort.field, parts[3]) || strlen(parts[3]) >= sizeof key->value || !text_is_uuid(parts[4]))
        goto bad;
    if (key->sort.field != sort->field || key->sort.asc != sort->asc)
        return todo_err_set(err, TODO_EINVAL, "page_token: belongs to another order_by or call; start again without a token");
    strcpy(key->value, parts[3]);
    strcpy(key->id, parts[4]);
    return TODO_OK;
bad:
    return todo_err_set(err, TODO_EINVAL, "page_token: not a token from a previous response of this call");
}
