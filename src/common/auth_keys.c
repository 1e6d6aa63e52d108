/* auth_keys: the public keys that verify user tokens (auth.h), read from a
 * PEM file or a JWKS file, and the private-key signing todoctl and the tests
 * use. The key arithmetic is OpenSSL's; a JWK's numbers become a public key
 * with OpenSSL 3's parameter builder and are kept as PEM, the form libjwt
 * verifies with. */
#include "auth.h"

#include <ctype.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEYS_FILE_MAX (1 << 20)
#define KEYS_MAX 32
#define RSA_MIN_BITS 2048

typedef struct auth_key {
    char kid[AUTH_KID_MAX]; /* "" when the key has none (a PEM file's) */
    auth_key_type type;
    char *pem; /* the public key as PEM */
} auth_key;

struct auth_keys {
    auth_key keys[KEYS_MAX];
    size_t n;
};

void auth_keys_free(auth_keys *ks)
{
    if (ks == NULL) return;
    for (size_t i = 0; i < ks->n; i++) free(ks->keys[i].pem);
    free(ks);
}

size_t auth_keys_count(const auth_keys *ks) { return ks != NULL ? ks->n : 0; }

const char *auth_key_type_alg(auth_key_type t) { return t == AUTH_KEY_RSA ? "RS256" : "ES256"; }

/* The type of pkey when it is one we verify with (RSA of 2048 bits or
 * more, EC on P-256), else -1 with err set (what names the key). */
static int key_type(EVP_PKEY *pkey, const char *what, todo_err *err)
{
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        if (EVP_PKEY_get_bits(pkey) < RSA_MIN_BITS)
            return todo_err_set(err, TODO_EINVAL, "%s: an RSA key of %d bits; at least %d are required", what,
                                EVP_PKEY_get_bits(pkey), RSA_MIN_BITS), -1;
        return AUTH_KEY_RSA;
    }
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64] = "";
        size_t n = 0;
        if (EVP_PKEY_get_group_name(pkey, group, sizeof group, &n) != 1 ||
            (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0))
            return todo_err_set(err, TODO_EINVAL, "%s: an EC key on curve %s; only P-256 (ES256) is supported", what,
                                group[0] ? group : "?"), -1;
        return AUTH_KEY_EC;
    }
    return todo_err_set(err, TODO_EINVAL, "%s: only RSA (RS256) and EC P-256 (ES256) keys are supported", what), -1;
}

/* Adds pkey (its public half) under kid. */
static int add_key(auth_keys *ks, EVP_PKEY *pkey, const char *kid, const char *what, todo_err *err)
{
    int t = key_type(pkey, what, err);
    if (t < 0) return TODO_EINVAL;
    if (ks->n == KEYS_MAX) return todo_err_set(err, TODO_EINVAL, "%s: more than %d keys", what, KEYS_MAX);
    if (kid[0] != '\0')
        for (size_t i = 0; i < ks->n; i++)
            if (strcmp(ks->keys[i].kid, kid) == 0)
                return todo_err_set(err, TODO_EINVAL, "%s: key id \"%s\" appears twice", what, kid);
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL;
    long len;
    if (b == NULL || PEM_write_bio_PUBKEY(b, pkey) != 1 || (len = BIO_get_mem_data(b, &data)) <= 0) {
        BIO_free(b);
        return todo_err_set(err, TODO_EINTERNAL, "%s: could not write the key as PEM", what);
    }
    auth_key *k = &ks->keys[ks->n];
    if ((k->pem = strndup(data, (size_t)len)) == NULL) {
        BIO_free(b);
        return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    }
    BIO_free(b);
    snprintf(k->kid, sizeof k->kid, "%s", kid);
    k->type = (auth_key_type)t;
    ks->n++;
    return TODO_OK;
}

/* base64url (no padding) → bytes; NULL when s is not base64url. */
static unsigned char *b64url_decode(const char *s, size_t *out_len)
{
    size_t n = strlen(s), padded = (n + 3) / 4 * 4;
    if (n == 0 || n % 4 == 1) return NULL;
    char *std = malloc(padded + 1);
    unsigned char *out = malloc(padded / 4 * 3 + 1);
    if (std == NULL || out == NULL) {
        free(std);
        free(out);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+' || c == '/' || c == '=') c = '!'; /* standard alphabet: not base64url */
        std[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    for (size_t i = n; i < padded; i++) std[i] = '=';
    std[padded] = '\0';
    int len = EVP_DecodeBlock(out, (const unsigned char *)std, (int)padded);
    free(std);
    if (len < 0) {
        free(out);
        return NULL;
    }
    *out_len = (size_t)len - (padded - n); /* EVP_DecodeBlock counts the padding as zero bytes */
    return out;
}

/* The JWK member name as bytes (base64url), or NULL with err set. */
static unsigned char *jwk_bytes(json_t *jwk, const char *name, size_t *len, const char *what, todo_err *err)
{
    const char *s = json_string_value(json_object_get(jwk, name));
    unsigned char *b = s != NULL ? b64url_decode(s, len) : NULL;
    if (b == NULL) todo_err_set(err, TODO_EINVAL, "%s: \"%s\" is missing or not base64url", what, name);
    return b;
}

/* A public EVP_PKEY of type name ("RSA", "EC") from params. */
static EVP_PKEY *from_params(const char *name, OSSL_PARAM *params)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, name, NULL);
    EVP_PKEY *pkey = NULL;
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    return pkey;
}

static EVP_PKEY *jwk_rsa(json_t *jwk, const char *what, todo_err *err)
{
    size_t nl = 0, el = 0;
    unsigned char *n = jwk_bytes(jwk, "n", &nl, what, err), *e = n != NULL ? jwk_bytes(jwk, "e", &el, what, err) : NULL;
    BIGNUM *bn = n != NULL ? BN_bin2bn(n, (int)nl, NULL) : NULL, *be = e != NULL ? BN_bin2bn(e, (int)el, NULL) : NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY *pkey = NULL;
    if (bn != NULL && be != NULL && bld != NULL && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1 && (params = OSSL_PARAM_BLD_to_param(bld)) != NULL)
        pkey = from_params("RSA", params);
    if (pkey == NULL && n != NULL && e != NULL) todo_err_set(err, TODO_EINVAL, "%s: not a valid RSA public key", what);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return pkey;
}

static EVP_PKEY *jwk_ec(json_t *jwk, const char *what, todo_err *err)
{
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    if (crv == NULL || strcmp(crv, "P-256") != 0) {
        todo_err_set(err, TODO_EINVAL, "%s: EC curve %s; only P-256 (ES256) is supported", what, crv ? crv : "(none)");
        return NULL;
    }
    size_t xl = 0, yl = 0;
    unsigned char *x = jwk_bytes(jwk, "x", &xl, what, err), *y = x != NULL ? jwk_bytes(jwk, "y", &yl, what, err) : NULL;
    EVP_PKEY *pkey = NULL;
    if (x != NULL && y != NULL) {
        unsigned char point[65];
        OSSL_PARAM params[3];
        if (xl == 32 && yl == 32) {
            point[0] = 0x04; /* uncompressed: 04 || x || y */
            memcpy(point + 1, x, 32);
            memcpy(point + 33, y, 32);
            params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1", 0);
            params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point);
            params[2] = OSSL_PARAM_construct_end();
            pkey = from_params("EC", params);
        }
        if (pkey == NULL) todo_err_set(err, TODO_EINVAL, "%s: not a valid P-256 public key", what);
    }
    free(x);
    free(y);
    return pkey;
}

static int load_jwks(auth_keys *ks, const char *text, const char *path, todo_err *err)
{
    json_error_t jerr;
    json_t *root = json_loads(text, 0, &jerr), *keys = json_object_get(root, "keys"), *jwk;
    size_t i;
    int rc = TODO_OK;
    if (!json_is_array(keys)) {
        json_decref(root);
        return todo_err_set(err, TODO_EINVAL, "%s: not a JWKS (a JSON object with a \"keys\" array)", path);
    }
    json_array_foreach(keys, i, jwk) {
        char what[AUTH_KID_MAX + 64];
        const char *kty = json_string_value(json_object_get(jwk, "kty"));
        const char *kid = json_string_value(json_object_get(jwk, "kid"));
        const char *use = json_string_value(json_object_get(jwk, "use"));
        const char *alg = json_string_value(json_object_get(jwk, "alg"));
        snprintf(what, sizeof what, "%s key %zu", path, i + 1);
        if (kid != NULL && (kid[0] == '\0' || strlen(kid) >= AUTH_KID_MAX)) {
            rc = todo_err_set(err, TODO_EINVAL, "%s: kid must be 1..%d characters", what, AUTH_KID_MAX - 1);
            break;
        }
        if (kid != NULL) snprintf(what, sizeof what, "%s key \"%s\"", path, kid);
        if (use != NULL && strcmp(use, "sig") != 0) continue; /* an encryption key: not ours */
        EVP_PKEY *pkey = NULL;
        if (kty != NULL && strcmp(kty, "RSA") == 0) pkey = jwk_rsa(jwk, what, err);
        else if (kty != NULL && strcmp(kty, "EC") == 0) pkey = jwk_ec(jwk, what, err);
        else todo_err_set(err, TODO_EINVAL, "%s: kty %s; only RSA and EC keys are supported", what, kty ? kty : "(none)");
        if (pkey == NULL) {
            rc = TODO_EINVAL;
            break;
        }
        if (json_object_get(jwk, "d") != NULL) {
            EVP_PKEY_free(pkey);
            rc = todo_err_set(err, TODO_EINVAL, "%s is a private key: a verifying service holds public keys only", what);
            break;
        }
        size_t before = ks->n;
        rc = add_key(ks, pkey, kid != NULL ? kid : "", what, err);
        EVP_PKEY_free(pkey);
        if (rc != TODO_OK) break;
        if (alg != NULL && strcmp(alg, auth_key_type_alg(ks->keys[before].type)) != 0) {
            rc = todo_err_set(err, TODO_EINVAL, "%s: alg %s does not fit its key (%s)", what, alg,
                              auth_key_type_alg(ks->keys[before].type));
            break;
        }
    }
    json_decref(root);
    return rc;
}

static int load_pem(auth_keys *ks, const char *text, size_t len, const char *path, todo_err *err)
{
    if (strstr(text, "PRIVATE KEY-----") != NULL)
        return todo_err_set(err, TODO_EINVAL, "%s holds a private key: a verifying service holds public keys only", path);
    BIO *b = BIO_new_mem_buf(text, (int)len);
    int rc = TODO_OK;
    if (b == NULL) return todo_err_set(err, TODO_EINTERNAL, "out of memory");
    for (;;) {
        EVP_PKEY *pkey = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
        if (pkey == NULL) break;
        char what[512];
        snprintf(what, sizeof what, "%s key %zu", path, ks->n + 1);
        rc = add_key(ks, pkey, "", what, err);
        EVP_PKEY_free(pkey);
        if (rc != TODO_OK) break;
    }
    BIO_free(b);
    if (rc == TODO_OK && ks->n == 0)
        rc = todo_err_set(err, TODO_EINVAL, "%s: no public key (-----BEGIN PUBLIC KEY-----) in it", path);
    return rc;
}

/* The whole file at path (at most KEYS_FILE_MAX bytes), malloc'ed. */
static char *read_all(const char *path, size_t *len, todo_err *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        todo_err_set(err, TODO_EINVAL, "cannot read %s", path);
        return NULL;
    }
    char *buf = malloc(KEYS_FILE_MAX + 1);
    size_t n = buf != NULL ? fread(buf, 1, KEYS_FILE_MAX + 1, f) : 0;
    fclose(f);
    if (buf == NULL || n > KEYS_FILE_MAX) {
        free(buf);
        todo_err_set(err, TODO_EINVAL, "%s is larger than %d bytes", path, KEYS_FILE_MAX);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

int auth_keys_load(const char *path, auth_keys **out, todo_err *err)
{
    size_t len = 0;
    char *text = read_all(path, &len, err);
    *out = NULL;
    if (text == NULL) return TODO_EINVAL;
    auth_keys *ks = calloc(1, sizeof *ks);
    const char *p = text;
    while (isspace((unsigned char)*p)) p++;
    int rc = ks == NULL ? todo_err_set(err, TODO_EINTERNAL, "out of memory")
             : *p == '{' ? load_jwks(ks, text, path, err)
                         : load_pem(ks, text, len, path, err);
    free(text);
    if (rc != TODO_OK) {
        auth_keys_free(ks);
        return rc;
    }
    *out = ks;
    return TODO_OK;
}

int auth_keys_pick(const auth_keys *ks, const char *kid, auth_key_type type, size_t from, const char **pem,
                   todo_err *err)
{
    for (size_t i = from; i < ks->n; i++) {
        const auth_key *k = &ks->keys[i];
        if (kid != NULL && strcmp(k->kid, kid) != 0) continue;
        if (k->type != type) {
            if (kid == NULL) continue;
            return todo_err_set(err, TODO_EUNAUTH, "bearer token is signed with %s but key \"%s\" is for %s",
                                auth_key_type_alg(type), kid, auth_key_type_alg(k->type)), -1;
        }
        *pem = k->pem;
        return (int)i;
    }
    if (from > 0) return -1;
    if (kid != NULL) return todo_err_set(err, TODO_EUNAUTH, "bearer token names an unknown key id (kid)"), -1;
    return todo_err_set(err, TODO_EUNAUTH, "bearer token is signed with %s, but no %s key verifies user tokens here",
                        auth_key_type_alg(type), type == AUTH_KEY_RSA ? "RSA" : "EC"), -1;
}

char *auth_issue_signed(const char *private_key_path, const char *kid, const char *user, long ttl_s, long now,
                        const auth_rules *rules, todo_err *err)
{
    size_t len = 0;
    char *text = read_all(private_key_path, &len, err), *pem = NULL, *out = NULL;
    if (text == NULL) return NULL;
    BIO *in = BIO_new_mem_buf(text, (int)len), *mem = BIO_new(BIO_s_mem());
    EVP_PKEY *pkey = in != NULL ? PEM_read_bio_PrivateKey(in, NULL, NULL, NULL) : NULL;
    int t = -1;
    long pl = 0;
    if (pkey == NULL) todo_err_set(err, TODO_EINVAL, "%s: no private key in it", private_key_path);
    else if ((t = key_type(pkey, private_key_path, err)) >= 0 &&
             (mem == NULL || PEM_write_bio_PrivateKey(mem, pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
              (pl = BIO_get_mem_data(mem, &pem)) <= 0)) {
        todo_err_set(err, TODO_EINTERNAL, "could not write the signing key");
        t = -1;
    }
    if (t >= 0)
        out = auth_issue_alg(t == AUTH_KEY_RSA ? "RS256" : "ES256", pem, (size_t)pl, kid, user, ttl_s, now, rules, err);
    EVP_PKEY_free(pkey);
    BIO_free(in);
    BIO_free(mem);
    OPENSSL_cleanse(text, len);
    free(text);
    return out;
}
