/* ctoken: see ctoken.h. */
#include "ctoken.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "text.h"

#define FORMAT 3
#define RAW_LEN 41 /* format, 16 id bytes, 8 version bytes, 16 MAC bytes */
#define MAC_LEN 16

void ctoken_key_derive(const char *secret, ctoken_key *key)
{
    static const char label[] = "todo consistency token v3";
    unsigned len = sizeof key->bytes;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)label, sizeof label - 1, key->bytes, &len);
}

/* The MAC of the first 25 bytes of raw for user. */
static void mac(const ctoken_key *key, const char *user, const unsigned char *raw, unsigned char out[32])
{
    unsigned char msg[25 + 130];
    size_t ulen = strnlen(user, 129);
    memcpy(msg, raw, 25);
    memcpy(msg + 25, user, ulen);
    unsigned len = 32;
    HMAC(EVP_sha256(), key->bytes, sizeof key->bytes, msg, 25 + ulen, out, &len);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

void ctoken_encode(const ctoken_key *key, const char *user, const char *aggregate_id, int64_t version,
                   char out[CTOKEN_MAX])
{
    unsigned char raw[RAW_LEN], m[32];
    raw[0] = FORMAT;
    for (int i = 0, k = 0; aggregate_id[i] != '\0' && k < 16; i++) {
        if (aggregate_id[i] == '-') continue;
        int hi = hexval(aggregate_id[i]), lo = hexval(aggregate_id[i + 1]);
        raw[1 + k++] = (unsigned char)((hi < 0 ? 0 : hi) << 4 | (lo < 0 ? 0 : lo));
        i++;
    }
    for (int i = 0; i < 8; i++) raw[17 + i] = (unsigned char)((uint64_t)version >> (56 - 8 * i));
    mac(key, user, raw, m);
    memcpy(raw + 25, m, MAC_LEN);
    text_b64url_encode(raw, RAW_LEN, out);
}

int ctoken_decode(const ctoken_key *key, const char *user, const char *token, char aggregate_id[37],
                  int64_t *version, todo_err *err)
{
    unsigned char raw[RAW_LEN + 1], m[32];
    size_t n = strnlen(token, CTOKEN_MAX);
    long len = n < CTOKEN_MAX ? text_b64url_decode(token, n, raw, sizeof raw) : -1;
    if (len != RAW_LEN || raw[0] != FORMAT)
        return todo_err_set(err, TODO_EINVAL,
                            "consistency_token: not a token from a command reply of this service (tokens of older"
                            " versions are not accepted; read without it)");
    mac(key, user, raw, m);
    if (CRYPTO_memcmp(m, raw + 25, MAC_LEN) != 0)
        return todo_err_set(err, TODO_EINVAL, "consistency_token: not a token issued to this caller");
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | raw[17 + i];
    if (v < 1 || v > INT64_MAX) return todo_err_set(err, TODO_EINVAL, "consistency_token: not a valid token");
    static const char hex[] = "0123456789abcdef";
    for (int i = 0, o = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) aggregate_id[o++] = '-';
        aggregate_id[o++] = hex[raw[1 + i] >> 4];
        aggregate_id[o++] = hex[raw[1 + i] & 15];
        aggregate_id[o] = '\0';
    }
    *version = (int64_t)v;
    return TODO_OK;
}
