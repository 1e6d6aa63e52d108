/*
 * qry_page: ListTasks' sort orders and their opaque keyset page tokens.
 *
 * order_by is one of created_at (the default), updated_at, due_at, priority,
 * optionally followed by " asc" or " desc" (default desc). Ties are broken
 * by the task id, so the order is total. A task without a due date sorts as
 * if due at infinity (last in asc, first in desc).
 *
 * A token names the last row of the previous page by its sort key and id,
 * so the next page starts strictly after it however many rows were inserted
 * meanwhile. It also names the order it belongs to: a token from another
 * order_by is refused. Clients treat tokens as opaque; the format is
 * versioned ("p2|field|dir|key|id", base64url).
 */
#ifndef TODO_QRY_PAGE_H
#define TODO_QRY_PAGE_H

#include <stdbool.h>

#include "arena.h"
#include "todo_err.h"

#define QRY_PAGE_TOKEN_MAX 200

typedef enum qry_sort_field {
    QRY_SORT_CREATED_AT, QRY_SORT_UPDATED_AT, QRY_SORT_DUE_AT, QRY_SORT_PRIORITY,
    QRY_SORT_REMIND_AT /* ListReminders' only order (read.reminders); not an order_by */
} qry_sort_field;

typedef struct qry_sort {
    qry_sort_field field;
    bool asc;
} qry_sort;

/* Parses order_by ("" means created_at desc); TODO_EINVAL names order_by. */
int qry_sort_parse(const char *order_by, qry_sort *out, todo_err *err);

/* SQL for the sort key of read.tasks, the type its bind parameter is cast
 * to, and an expression giving the key as the text a token stores. */
const char *qry_sort_expr(qry_sort_field f);
const char *qry_sort_cast(qry_sort_field f);
const char *qry_sort_text(qry_sort_field f);

/* The columns of a task as the query service reads them (task_of in
 * qry_service.c decodes them in this order). */
extern const char *const qry_task_select;

/* ListTasks' statement: qry_task_select and the page key from read.tasks,
 * where (" where ..." with its placeholders), ordered by sort with the task
 * id as the tie-break, limited by placeholder $limit_param. In a for the
 * call. */
char *qry_list_sql(arena *a, const char *where, qry_sort sort, int limit_param);

typedef struct qry_page_key {
    qry_sort sort;
    char value[40];       /* the key as text: a UTC timestamp with microseconds, "infinity", or a priority */
    char id[37];          /* UUID */
} qry_page_key;

/* Writes the token for key into out. */
void qry_page_encode(const qry_page_key *key, char out[QRY_PAGE_TOKEN_MAX]);

/* Decodes a token for a request sorted by sort; TODO_EINVAL ("page_token:
 * ...") for anything that is not one of ours for that order. */
int qry_page_decode(const char *token, const qry_sort *sort, qry_page_key *key, todo_err *err);

#endif
