/*
 * qry_page: opaque keyset page tokens for ListTasks.
 *
 * A token names the last row of the previous page by its sort key
 * (created_at as an RFC 3339 string with microseconds, and the task id), so
 * the next page starts strictly after it, however many rows were inserted
 * meanwhile. Clients must treat tokens as opaque; the format is versioned
 * ("p1|<created_at>|<id>", base64url) so that it can change.
 */
#ifndef TODO_QRY_PAGE_H
#define TODO_QRY_PAGE_H

#include "todo_err.h"

#define QRY_PAGE_TOKEN_MAX 160

typedef struct qry_page_key {
    char created_at[40];  /* "2026-11-27T10:00:00.123456Z" */
    char id[37];          /* UUID */
} qry_page_key;

/* Writes the token for key into out (QRY_PAGE_TOKEN_MAX bytes). */
void qry_page_encode(const qry_page_key *key, char out[QRY_PAGE_TOKEN_MAX]);

/* Decodes a token; TODO_EINVAL ("page_token: ...") for anything that is not
 * one of ours. */
int qry_page_decode(const char *token, qry_page_key *key, todo_err *err);

#endif
