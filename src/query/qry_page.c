/* qry_page: see qry_page.h. */
#include "qry_page.h"

#include <stdio.h>
#include <string.h>

#include "text.h"

void qry_page_encode(const qry_page_key *key, char out[QRY_PAGE_TOKEN_MAX])
{
    char raw[96];
    int n = snprintf(raw, sizeof raw, "p1|%s|%s", key->created_at, key->id);
    text_b64url_encode((const unsigned char *)raw, (size_t)n, out);
}

/* True for "YYYY-MM-DDTHH:MM:SS.ffffffZ". */
static int is_timestamp(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    if (strlen(s) != sizeof shape - 1) return 0;
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i]) return 0;
    }
    return 1;
}

int qry_page_decode(const char *token, qry_page_key *key, todo_err *err)
{
    unsigned char raw[96];
    size_t n = strlen(token);
    long len = n < QRY_PAGE_TOKEN_MAX ? text_b64url_decode(token, n, raw, sizeof raw - 1) : -1;
    if (len < 0) goto bad;
    raw[len] = '\0';
    const char *s = (const char *)raw;
    const char *bar1 = strchr(s, '|'), *bar2 = bar1 ? strchr(bar1 + 1, '|') : NULL;
    if (strncmp(s, "p1|", 3) != 0 || bar2 == NULL || (size_t)(bar2 - bar1 - 1) >= sizeof key->created_at) goto bad;
    memcpy(key->created_at, bar1 + 1, (size_t)(bar2 - bar1 - 1));
    key->created_at[bar2 - bar1 - 1] = '\0';
    if (!is_timestamp(key->created_at) || strlen(bar2 + 1) != 36 || !text_is_uuid(bar2 + 1)) goto bad;
    memcpy(key->id, bar2 + 1, 37);
    return TODO_OK;
bad:
    return todo_err_set(err, TODO_EINVAL, "page_token: not a token from a previous ListTasks response");
}
