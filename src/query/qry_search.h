/*
 * qry_search: turns what a person typed into a PostgreSQL tsquery for
 * SearchTasks. Words are runs of letters and digits (any UTF-8 letter;
 * everything else separates words and is dropped, so no tsquery operator or
 * quote from the input survives); all words must match, the last one as a
 * prefix ("buy mil" finds "Buy milk"). The result goes to to_tsquery('simple',
 * $n) as a bind parameter. Pure and thread-safe.
 */
#ifndef TODO_QRY_SEARCH_H
#define TODO_QRY_SEARCH_H

#include <stddef.h>

#include "todo_err.h"

#define QRY_SEARCH_MAX_WORDS 16
#define QRY_SEARCH_MAX_WORD 64

/* Writes the tsquery for text into out (cap bytes). Returns the number of
 * words, or TODO_EINVAL ("query: ...") when there is no word, too many, or
 * the text is not UTF-8. */
int qry_search_tsquery(const char *text, char *out, size_t cap, todo_err *err);

/* Offset page tokens for ranked results ("s1|<offset>", base64url):
 * encode writes at most 40 bytes; decode refuses anything else and offsets
 * above QRY_SEARCH_MAX_OFFSET. */
#define QRY_SEARCH_MAX_OFFSET 10000
void qry_search_token_encode(int offset, char out[40]);
int qry_search_token_decode(const char *token, int *offset, todo_err *err);

#endif
