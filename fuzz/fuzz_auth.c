/*
 * A libFuzzer target for caller authentication (auth.h): the value of the
 * `authorization` header of every call, which anyone can send.
 *
 * The input, as a NUL-terminated string, is verified against a fixed secret
 * at a fixed time. A value that is accepted must yield a user id that
 * auth_user_valid accepts (it becomes a Kafka key, a log value and an SQL
 * parameter), and must be refused under any other secret: acceptance that
 * does not depend on the secret means a token nobody signed gets in.
 *
 * Any crash, sanitizer report, leak or abort() is a finding. Built and
 * run by scripts/fuzz.sh; seeds (tokens from auth_issue, and refused ones:
 * expired, other secret, other algorithm, bad sub) come from make_seeds.c.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "fuzz_common.h"

#define OTHER_SECRET "another-secret-0123456789abcdef01234567"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char user[AUTH_USER_MAX], other[AUTH_USER_MAX];
    todo_err err;
    char *s = malloc(size + 1);
    if (s == NULL) return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    if (auth_verify(FUZZ_SECRET, s, FUZZ_NOW_S, user, &err) == TODO_OK) {
        if (!auth_user_valid(user)) fuzz_fail("auth_verify", "accepted a token whose user id is not valid");
        if (auth_verify(OTHER_SECRET, s, FUZZ_NOW_S, other, &err) == TODO_OK)
            fuzz_fail("auth_verify", "accepted a token under two different secrets");
    }
    free(s);
    return 0;
}
