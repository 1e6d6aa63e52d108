/*
 * A libFuzzer target for the opaque tokens clients hand back to us: the
 * consistency tokens of command replies (ctoken_decode), ListTasks' and
 * ListReminders' keyset page tokens (qry_page_decode, for every sort
 * order) and SearchTasks' offset tokens (qry_search_token_decode).
 *
 * The input, as a NUL-terminated string, goes to every decoder. A token
 * that decodes is encoded again from the decoded values, and that token
 * must decode to the same values: otherwise a client paging or reading its
 * writes would silently get another page or wait for another write
 * (abort()). A consistency token accepted for one user must be refused for
 * another: tokens are bound to the caller.
 *
 * Any crash, sanitizer report, leak or abort() is a finding. Built and
 * run by scripts/fuzz.sh; seeds (real tokens of each kind) come from
 * make_seeds.c.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctoken.h"
#include "fuzz_common.h"
#include "qry_page.h"
#include "qry_search.h"

static ctoken_key token_key;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ctoken_key_derive(FUZZ_SECRET, &token_key);
    return 0;
}

static void consistency_token(const char *s)
{
    char id[37], id_again[37], token[CTOKEN_MAX];
    int64_t version, again;
    todo_err err;
    if (ctoken_decode(&token_key, FUZZ_USER, s, id, &version, &err) != TODO_OK) return;
    if (ctoken_decode(&token_key, FUZZ_OTHER_USER, s, id_again, &again, &err) == TODO_OK)
        fuzz_fail("ctoken_decode", "a consistency token is accepted for two users");
    ctoken_encode(&token_key, FUZZ_USER, id, version, token);
    if (ctoken_decode(&token_key, FUZZ_USER, token, id_again, &again, &err) != TODO_OK)
        fuzz_fail("ctoken_decode", "a re-encoded consistency token does not decode");
    if (again != version || strcmp(id, id_again) != 0)
        fuzz_fail("ctoken_decode", "a re-encoded consistency token names another write");
}

static void page_token(const char *s, qry_sort sort)
{
    qry_page_key key, again;
    char token[QRY_PAGE_TOKEN_MAX];
    todo_err err;
    if (qry_page_decode(s, &sort, &key, &err) != TODO_OK) return;
    qry_page_encode(&key, token);
    if (qry_page_decode(token, &sort, &again, &err) != TODO_OK)
        fuzz_fail("qry_page_decode", "a re-encoded page token does not decode");
    if (again.sort.field != key.sort.field || again.sort.asc != key.sort.asc || strcmp(again.value, key.value) != 0 ||
        strcmp(again.id, key.id) != 0)
        fuzz_fail("qry_page_decode", "a re-encoded page token names another row");
}

static void search_token(const char *s)
{
    int offset, again;
    char token[40];
    todo_err err;
    if (qry_search_token_decode(s, &offset, &err) != TODO_OK) return;
    qry_search_token_encode(offset, token);
    if (qry_search_token_decode(token, &again, &err) != TODO_OK || again != offset)
        fuzz_fail("qry_search_token_decode", "a re-encoded search token does not give the same offset");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy, so that a read past the NUL is an ASan report. */
    char *s = malloc(size + 1);
    if (s == NULL) return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    consistency_token(s);
    for (int f = QRY_SORT_CREATED_AT; f <= QRY_SORT_REMIND_AT; f++) {
        page_token(s, (qry_sort){.field = (qry_sort_field)f, .asc = false});
        page_token(s, (qry_sort){.field = (qry_sort_field)f, .asc = true});
    }
    search_token(s);
    free(s);
    return 0;
}
