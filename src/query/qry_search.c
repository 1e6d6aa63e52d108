/* qry_search: see qry_search.h. */
#include "qry_search.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

static bool word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

int qry_search_tsquery(const char *text, char *out, size_t cap, todo_err *err)
{
    size_t n = strlen(text), o = 0;
    int words = 0;
    if (n > 1000 || text_utf8_chars(text, n) < 0)
        return todo_err_set(err, TODO_EINVAL, "query: must be valid UTF-8 of at most 1000 bytes");
    for (size_t i = 0; i < n;) {
        if (!word_byte((unsigned char)text[i])) {
            i++;
            continue;
        }
        size_t start = i;
        while (i < n && word_byte((unsigned char)text[i])) i++;
        size_t len = i - start;
        if (len > QRY_SEARCH_MAX_WORD) len = QRY_SEARCH_MAX_WORD;
        while (len > 0 && ((unsigned char)text[start + len] & 0xC0) == 0x80 && start + len < i) len--; /* whole characters */
        if (++words > QRY_SEARCH_MAX_WORDS)
            return todo_err_set(err, TODO_EINVAL, "query: at most %d words", QRY_SEARCH_MAX_WORDS);
        if (o + len + 8 >= cap) return todo_err_set(err, TODO_EINVAL, "query: too long");
        if (words > 1) o += (size_t)snprintf(out + o, cap - o, " & ");
        out[o++] = '\'';
        for (size_t k = 0; k < len; k++) {
            char c = text[start + k];
            out[o++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        out[o++] = '\'';
        out[o] = '\0';
    }
    if (words == 0) return todo_err_set(err, TODO_EINVAL, "query: needs at least one word");
    if (o + 3 >= cap) return todo_err_set(err, TODO_EINVAL, "query: too long");
    memcpy(out + o, ":*", 3); /* the last word as a prefix */
    return words;
}

void qry_search_token_encode(int offset, char out[40])
{
    char raw[24];
    int n = snprintf(raw, sizeof raw, "s1|%d", offset);
    text_b64url_encode((const unsigned char *)raw, (size_t)n, out);
}

int qry_search_token_decode(const char *token, int *offset, todo_err *err)
{
    unsigned char raw[24];
    size_t n = strlen(token);
    long len = n < 40 ? text_b64url_decode(token, n, raw, sizeof raw - 1) : -1;
    char *end;
    if (len > 3 && memcmp(raw, "s1|", 3) == 0) {
        raw[len] = '\0';
        long v = strtol((const char *)raw + 3, &end, 10);
        if (*end == '\0' && end != (char *)raw + 3 && v > 0 && v <= QRY_SEARCH_MAX_OFFSET) {
            *offset = (int)v;
            return TODO_OK;
        }
    }
    return todo_err_set(err, TODO_EINVAL, "page_token: not a token from a previous SearchTasks response");
}
