/* Unit tests of auth_keys: RS256 and ES256 user tokens verified with public
 * keys from PEM and JWKS files, key ids and rotation, and every way a key
 * or a token of the wrong kind is refused. Keys are made at test time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jwt.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "text.h"

#define NOW 1800000000L
#define SERVICE_SECRET "fedcba9876543210fedcba9876543210-svc"

static EVP_PKEY *rsa_a, *rsa_b, *ec_a, *rsa_small, *ec_384;
static char dir[256];

static char *path_of(const char *name)
{
    static char p[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", dir, name);
    return p[i];
}

static void write_file(const char *name, const char *text)
{
    FILE *f = fopen(path_of(name), "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Writes pkey's public (or private) half as PEM to name; returns its path. */
static const char *write_pem(const char *name, EVP_PKEY *pkey, int private_key)
{
    const char *p = path_of(name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(private_key ? PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) : PEM_write_PUBKEY(f, pkey), 1);
    fclose(f);
    return p;
}

static void b64url_bn(EVP_PKEY *pkey, const char *param, size_t pad, char *out)
{
    BIGNUM *bn = NULL;
    unsigned char buf[600];
    assert_int_equal(EVP_PKEY_get_bn_param(pkey, param, &bn), 1);
    int n = pad > 0 ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
    text_b64url_encode(buf, (size_t)n, out);
    BN_free(bn);
}

/* The JWK of pkey (public), with kid when not NULL and extra members. */
static void jwk_of(EVP_PKEY *pkey, const char *kid, const char *extra, char *out, size_t cap)
{
    char a[400], b[400], k[160] = "";
    if (kid != NULL) snprintf(k, sizeof k, "\"kid\":\"%s\",", kid);
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        b64url_bn(pkey, OSSL_PKEY_PARAM_RSA_N, 0, a);
        b64url_bn(pkey, OSSL_PKEY_PARAM_RSA_E, 0, b);
        snprintf(out, cap, "{%s\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"%s}", k, a, b, extra);
    } else {
        b64url_bn(pkey, OSSL_PKEY_PARAM_EC_PUB_X, 32, a);
        b64url_bn(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, 32, b);
        snprintf(out, cap, "{%s\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"%s}", k, a, b, extra);
    }
}

/* A token signed by pkey with our own code (not libjwt's): header with alg
 * and kid, payload as given; ES256 signatures as JOSE's R || S. */
static char *sign_raw(EVP_PKEY *pkey, const char *alg, const char *kid, const char *payload)
{
    char header[256], h64[400], p64[1200], input[1700], s64[800];
    if (kid != NULL) snprintf(header, sizeof header, "{\"alg\":\"%s\",\"kid\":\"%s\",\"typ\":\"JWT\"}", alg, kid);
    else snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    text_b64url_encode((const unsigned char *)header, strlen(header), h64);
    text_b64url_encode((const unsigned char *)payload, strlen(payload), p64);
    snprintf(input, sizeof input, "%s.%s", h64, p64);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[600], jose[64];
    size_t n = sizeof sig;
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &n, (const unsigned char *)input, strlen(input)), 1);
    EVP_MD_CTX_free(md);
    if (strcmp(alg, "ES256") == 0) {
        const unsigned char *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
        assert_non_null(es);
        BN_bn2binpad(ECDSA_SIG_get0_r(es), jose, 32);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), jose + 32, 32);
        ECDSA_SIG_free(es);
        memcpy(sig, jose, 64);
        n = 64;
    }
    text_b64url_encode(sig, n, s64);
    char *out = malloc(strlen(input) + strlen(s64) + 2);
    sprintf(out, "%s.%s", input, s64);
    return out;
}

static char *user_payload(const char *sub)
{
    static char p[256];
    snprintf(p, sizeof p, "{\"sub\":\"%s\",\"iat\":%ld,\"exp\":%ld}", sub, NOW - 10, NOW + 600);
    return p;
}

/* Verifies token with keys (and the service secret), no user secret. */
static int verify(const auth_keys *keys, const char *token, auth_identity *id, todo_err *err)
{
    char h[4200];
    auth_rules rules = {.user_keys = keys, .leeway_s = 30};
    snprintf(h, sizeof h, "Bearer %s", token);
    return auth_verify_with(NULL, SERVICE_SECRET, h, NOW, &rules, id, err);
}

static auth_keys *load_ok(const char *path)
{
    auth_keys *ks = NULL;
    todo_err err = {0};
    int rc = auth_keys_load(path, &ks, &err);
    if (rc != TODO_OK) fprintf(stderr, "load %s: %s\n", path, err.msg);
    assert_int_equal(rc, TODO_OK);
    return ks;
}

static void load_fails(const char *path, const char *why)
{
    auth_keys *ks = NULL;
    todo_err err = {0};
    assert_int_equal(auth_keys_load(path, &ks, &err), TODO_EINVAL);
    assert_null(ks);
    if (strstr(err.msg, why) == NULL) fprintf(stderr, "message: %s\n", err.msg);
    assert_non_null(strstr(err.msg, why));
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "%s/auth_keys.XXXXXX", TEST_TMP);
    assert_non_null(mkdtemp(dir));
    rsa_a = EVP_RSA_gen(2048);
    rsa_b = EVP_RSA_gen(2048);
    rsa_small = EVP_RSA_gen(1024);
    ec_a = EVP_EC_gen("P-256");
    ec_384 = EVP_EC_gen("P-384");
    return rsa_a && rsa_b && rsa_small && ec_a && ec_384 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(rsa_a);
    EVP_PKEY_free(rsa_b);
    EVP_PKEY_free(rsa_small);
    EVP_PKEY_free(ec_a);
    EVP_PKEY_free(ec_384);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void rs256_and_es256_tokens_verify_with_pem_keys(void **state)
{
    (void)state;
    auth_identity id;
    todo_err err;
    /* One PEM file holding two keys: each verifies its own tokens. */
    const char *a = write_pem("a.pem", rsa_a, 0), *e = write_pem("e.pem", ec_a, 0);
    char both[2048], *ta = NULL, *te = NULL;
    FILE *fa = fopen(a, "r"), *fe = fopen(e, "r");
    size_t n = fread(both, 1, sizeof both / 2, fa);
    n += fread(both + n, 1, sizeof both / 2 - 1, fe);
    both[n] = '\0';
    fclose(fa);
    fclose(fe);
    write_file("both.pem", both);
    auth_keys *ks = load_ok(path_of("both.pem"));
    assert_int_equal(auth_keys_count(ks), 2);

    ta = sign_raw(rsa_a, "RS256", NULL, user_payload("alice"));
    assert_int_equal(verify(ks, ta, &id, &err), TODO_OK);
    assert_string_equal(id.user, "alice");
    assert_string_equal(id.service, "");
    te = sign_raw(ec_a, "ES256", NULL, user_payload("bob")); /* JOSE R || S, not libjwt's */
    assert_int_equal(verify(ks, te, &id, &err), TODO_OK);
    assert_string_equal(id.user, "bob");
    free(ta);
    free(te);

    /* libjwt-signed tokens from the private keys (todoctl's way) verify too. */
    const char *pa = write_pem("a.key", rsa_a, 1), *pe = write_pem("e.key", ec_a, 1);
    auth_rules rules = {.user_keys = ks};
    ta = auth_issue_signed(pa, NULL, "carol", 300, NOW, &rules, &err);
    te = auth_issue_signed(pe, "k1", "dave", 300, NOW, &rules, &err);
    assert_non_null(ta);
    assert_non_null(te);
    assert_int_equal(verify(ks, ta, &id, &err), TODO_OK);
    assert_string_equal(id.user, "carol");
    /* te names kid k1, which no PEM key carries. */
    assert_int_equal(verify(ks, te, &id, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "unknown key id"));
    free(ta);
    free(te);

    /* A key that is not in the file does not verify. */
    ta = sign_raw(rsa_b, "RS256", NULL, user_payload("alice"));
    assert_int_equal(verify(ks, ta, &id, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "signature does not verify"));
    free(ta);
    auth_keys_free(ks);
}

static void jwks_key_ids_select_the_key_and_allow_rotation(void **state)
{
    (void)state;
    auth_identity id;
    todo_err err;
    char ja[2048], jb[2048], je[2048], jwks[8192];
    jwk_of(rsa_a, "2026-old", ",\"use\":\"sig\",\"alg\":\"RS256\"", ja, sizeof ja);
    jwk_of(rsa_b, "2026-new", "", jb, sizeof jb);
    jwk_of(ec_a, "ec-1", ",\"alg\":\"ES256\"", je, sizeof je);
    snprintf(jwks, sizeof jwks, "{\"keys\":[%s,%s,%s,{\"kty\":\"RSA\",\"use\":\"enc\",\"kid\":\"x\"}]}", ja, jb, je);
    write_file("keys.json", jwks);
    auth_keys *ks = load_ok(path_of("keys.json"));
    assert_int_equal(auth_keys_count(ks), 3); /* the encryption key is not one of ours */

    /* Old and new keys both verify during a rotation, each by its kid. */
    char *old = sign_raw(rsa_a, "RS256", "2026-old", user_payload("alice"));
    char *new = sign_raw(rsa_b, "RS256", "2026-new", user_payload("alice"));
    char *ec = sign_raw(ec_a, "ES256", "ec-1", user_payload("erin"));
    assert_int_equal(verify(ks, old, &id, &err), TODO_OK);
    assert_int_equal(verify(ks, new, &id, &err), TODO_OK);
    assert_int_equal(verify(ks, ec, &id, &err), TODO_OK);
    assert_string_equal(id.user, "erin");
    free(old);
    free(new);
    free(ec);

    /* A kid decides the key: signed by the old key but naming the new one. */
    char *lie = sign_raw(rsa_a, "RS256", "2026-new", user_payload("alice"));
    assert_int_equal(verify(ks, lie, &id, &err), TODO_EUNAUTH);
    free(lie);
    char *unknown = sign_raw(rsa_a, "RS256", "2025", user_payload("alice"));
    assert_int_equal(verify(ks, unknown, &id, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "unknown key id"));
    free(unknown);
    /* Without a kid, each key of the type is tried. */
    char *nokid = sign_raw(rsa_b, "RS256", NULL, user_payload("alice"));
    assert_int_equal(verify(ks, nokid, &id, &err), TODO_OK);
    free(nokid);

    /* After the rotation the old key is gone: its tokens are refused. */
    snprintf(jwks, sizeof jwks, "{\"keys\":[%s]}", jb);
    write_file("rotated.json", jwks);
    auth_keys *rot = load_ok(path_of("rotated.json"));
    old = sign_raw(rsa_a, "RS256", "2026-old", user_payload("alice"));
    assert_int_equal(verify(rot, old, &id, &err), TODO_EUNAUTH);
    free(old);
    auth_keys_free(rot);
    auth_keys_free(ks);
}

static void a_token_signed_with_the_wrong_key_type_is_refused(void **state)
{
    (void)state;
    auth_identity id;
    todo_err err;
    char ja[2048], jwks[4096];
    jwk_of(rsa_a, "r1", "", ja, sizeof ja);
    snprintf(jwks, sizeof jwks, "{\"keys\":[%s]}", ja);
    write_file("rsa.json", jwks);
    auth_keys *ks = load_ok(path_of("rsa.json"));

    /* ES256 naming the RSA key's kid, and ES256 with no EC key at all. */
    char *t = sign_raw(ec_a, "ES256", "r1", user_payload("alice"));
    assert_int_equal(verify(ks, t, &id, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "is for RS256"));
    free(t);
    t = sign_raw(ec_a, "ES256", NULL, user_payload("alice"));
    assert_int_equal(verify(ks, t, &id, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "no EC key"));
    free(t);

    /* Algorithm confusion: an HS256 token whose HMAC key is the public key's
     * PEM text must not pass for a user. */
    const char *pub = write_pem("r1.pem", rsa_a, 0);
    char pem[2048];
    FILE *f = fopen(pub, "r");
    size_t n = fread(pem, 1, sizeof pem - 1, f);
    fclose(f);
    pem[n] = '\0';
    t = auth_issue_alg("HS256", pem, n, NULL, "alice", 300, NOW, NULL, &err);
    assert_non_null(t);
    auth_keys *pk = load_ok(pub);
    assert_int_equal(verify(pk, t, &id, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "RS256 or ES256"));
    free(t);
    auth_keys_free(pk);

    /* HS256 with a shared secret is not a user token on such a service... */
    t = auth_issue_for("0123456789abcdef0123456789abcdef", "alice", 300, NOW, NULL, &err);
    assert_int_equal(verify(ks, t, &id, &err), TODO_EUNAUTH);
    free(t);
    /* ...while service tokens keep their own secret. */
    t = auth_issue_service(SERVICE_SECRET, "todo-saga", AUTH_SCOPE_INTERNAL, "alice", 300, NOW, &err);
    assert_int_equal(verify(ks, t, &id, &err), TODO_OK);
    assert_string_equal(id.service, "todo-saga");
    assert_string_equal(id.user, "alice");
    free(t);
    /* A public-key token claiming to be a service's is refused. */
    char payload[256];
    snprintf(payload, sizeof payload, "{\"typ\":\"service\",\"sub\":\"todo-saga\",\"act\":\"alice\",\"scope\":\"internal\",\"exp\":%ld}", NOW + 60);
    t = sign_raw(rsa_a, "RS256", "r1", payload);
    assert_int_equal(verify(ks, t, &id, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "service secret"));
    free(t);
    /* RS256 and ES256 tokens where the service holds only a secret. */
    char h[4200];
    t = sign_raw(rsa_a, "RS256", NULL, user_payload("alice"));
    snprintf(h, sizeof h, "Bearer %s", t);
    assert_int_equal(auth_verify_with("0123456789abcdef0123456789abcdef", NULL, h, NOW, NULL, &id, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "HS256"));
    free(t);
    /* Claims are checked as for every token: expired. */
    snprintf(payload, sizeof payload, "{\"sub\":\"alice\",\"exp\":%ld}", NOW - 100);
    t = sign_raw(rsa_a, "RS256", "r1", payload);
    assert_int_equal(verify(ks, t, &id, &err), TODO_EUNAUTH);
    assert_non_null(strstr(err.msg, "expired"));
    free(t);
    auth_keys_free(ks);
}

static void unusable_key_files_are_refused_at_load(void **state)
{
    (void)state;
    char j[2048], jwks[8192];
    load_fails(path_of("absent.pem"), "cannot read");
    write_file("empty.pem", "\n");
    load_fails(path_of("empty.pem"), "no public key");
    load_fails(write_pem("private.pem", rsa_a, 1), "private key");
    load_fails(write_pem("small.pem", rsa_small, 0), "1024 bits");
    load_fails(write_pem("p384.pem", ec_384, 0), "P-256");
    write_file("notjwks.json", "{\"keys\": 3}");
    load_fails(path_of("notjwks.json"), "not a JWKS");
    write_file("okp.json", "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AAAA\"}]}");
    load_fails(path_of("okp.json"), "kty OKP");
    jwk_of(rsa_a, "a", ",\"d\":\"AAAA\"", j, sizeof j);
    snprintf(jwks, sizeof jwks, "{\"keys\":[%s]}", j);
    write_file("d.json", jwks);
    load_fails(path_of("d.json"), "private key");
    jwk_of(ec_a, "same", "", j, sizeof j);
    snprintf(jwks, sizeof jwks, "{\"keys\":[%s,%s]}", j, j);
    write_file("dup.json", jwks);
    load_fails(path_of("dup.json"), "appears twice");
    jwk_of(ec_a, "e", ",\"alg\":\"RS256\"", j, sizeof j);
    snprintf(jwks, sizeof jwks, "{\"keys\":[%s]}", j);
    write_file("alg.json", jwks);
    load_fails(path_of("alg.json"), "does not fit");
    write_file("badx.json", "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA+A\",\"y\":\"AAAA\"}]}");
    load_fails(path_of("badx.json"), "base64url");
    write_file("offcurve.json", "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
                                "\"y\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}");
    load_fails(path_of("offcurve.json"), "not a valid P-256");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rs256_and_es256_tokens_verify_with_pem_keys),
        cmocka_unit_test(jwks_key_ids_select_the_key_and_allow_rotation),
        cmocka_unit_test(a_token_signed_with_the_wrong_key_type_is_refused),
        cmocka_unit_test(unusable_key_files_are_refused_at_load),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
