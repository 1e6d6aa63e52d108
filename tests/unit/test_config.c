/* Unit tests of config: defaults, validation, the secret rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

/* A fake environment: NULL-terminated name/value pairs. */
static const char *fake_get(const char *name, void *ctx)
{
    const char *const *kv = ctx;
    for (; kv[0] != NULL; kv += 2)
        if (strcmp(kv[0], name) == 0) return kv[1];
    return NULL;
}

static int load(config_service svc, const char *const *env, todo_config *cfg, todo_err *err)
{
    return config_load(cfg, svc, fake_get, (void *)env, err);
}

static void defaults_describe_the_local_dev_stack(void **state)
{
    (void)state;
    const char *env[] = {"TODO_ENV", "local", NULL};
    todo_config cfg;
    todo_err err;
    assert_int_equal(load(CONFIG_COMMAND, env, &cfg, &err), TODO_OK);
    assert_true(cfg.local);
    assert_true(cfg.jwt_secret_is_default);
    assert_string_equal(cfg.jwt_secret, CONFIG_DEV_JWT_SECRET);
    assert_string_equal(cfg.command_addr, "127.0.0.1:50051");
    assert_string_equal(cfg.query_addr, "127.0.0.1:50052");
    assert_int_equal(cfg.grpc_threads, 8);
    assert_int_equal(cfg.relay_batch, 500);
    assert_string_equal(cfg.projector_group, "projection-task-read-v1");
    /* The gRPC connection limits (docs/SECURITY.md). */
    assert_int_equal(cfg.grpc_max_streams, 100);
    assert_int_equal(cfg.grpc_max_connection_idle_ms, 600000);
    assert_int_equal(cfg.grpc_max_connection_age_ms, 1800000);
    assert_int_equal(cfg.grpc_keepalive_ms, 60000);
    assert_int_equal(cfg.grpc_memory_mb, 1024);
    /* Token rules (docs/SECURITY.md). */
    assert_string_equal(cfg.jwt_issuer, "");
    assert_int_equal(cfg.jwt_max_lifetime_s, 86400);
    assert_int_equal(cfg.jwt_leeway_s, 30);
    assert_int_equal(cfg.token_cache, 256);
    assert_int_equal(cfg.query_batch, 32);
    assert_int_equal(cfg.query_pumps, 1);
    assert_int_equal(cfg.query_read_threads, 6);
}

/* todo-query's workers never wait: one per core by default; todo-command
 * keeps 8 (its handlers wait on PostgreSQL). */
static void query_workers_default_to_the_cores(void **state)
{
    (void)state;
    const char *env[] = {"TODO_ENV", "local", NULL};
    todo_config cfg;
    todo_err err;
    assert_int_equal(load(CONFIG_QUERY, env, &cfg, &err), TODO_OK);
    assert_int_equal(cfg.grpc_threads, (int)sysconf(_SC_NPROCESSORS_ONLN));
    assert_int_equal(load(CONFIG_COMMAND, env, &cfg, &err), TODO_OK);
    assert_int_equal(cfg.grpc_threads, 8);
    const char *set[] = {"TODO_ENV", "local", "TODO_GRPC_THREADS", "5", NULL};
    assert_int_equal(load(CONFIG_QUERY, set, &cfg, &err), TODO_OK);
    assert_int_equal(cfg.grpc_threads, 5);
}

static void each_service_uses_its_own_role_url_with_fallback(void **state)
{
    (void)state;
    const char *env[] = {"TODO_ENV", "local", "TODO_PG_URL", "postgresql://admin@h/db", "TODO_QUERY_PG_URL",
                         "postgresql://q@h/db", NULL};
    todo_config cfg;
    todo_err err;
    assert_int_equal(load(CONFIG_QUERY, env, &cfg, &err), TODO_OK);
    assert_string_equal(cfg.pg_url, "postgresql://q@h/db");
    assert_string_equal(cfg.admin_pg_url, "postgresql://admin@h/db");
    assert_int_equal(load(CONFIG_COMMAND, env, &cfg, &err), TODO_OK);
    assert_string_equal(cfg.pg_url, "postgresql://admin@h/db");
}

static void production_refuses_to_start_without_a_secret(void **state)
{
    (void)state;
    const char *env[] = {"TODO_ENV", "production", "TODO_COMMAND_PG_URL", "postgresql://c@db/todo", NULL};
    todo_config cfg;
    todo_err err;
    assert_int_equal(load(CONFIG_COMMAND, env, &cfg, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "TODO_JWT_PUBLIC_KEYS"));
}

static void short_secrets_are_refused(void **state)
{
    (void)state;
    const char *env[] = {"TODO_ENV", "local", "TODO_JWT_SECRET", "short", NULL};
    todo_config cfg;
    todo_err err;
    assert_int_equal(load(CONFIG_QUERY, env, &cfg, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "at least 32"));
    const char *consistency[] = {"TODO_ENV", "local", "TODO_CONSISTENCY_SECRET", "short", NULL};
    assert_int_equal(load(CONFIG_QUERY, consistency, &cfg, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "TODO_CONSISTENCY_SECRET must be at least 32"));
    const char *ok[] = {"TODO_ENV", "local", "TODO_JWT_SECRET", "0123456789abcdef0123456789abcdef", NULL};
    assert_int_equal(load(CONFIG_QUERY, ok, &cfg, &err), TODO_OK);
    assert_false(cfg.jwt_secret_is_default);
    /* The consistency-token key is not derived from the users' secret. */
    ctoken_key users;
    ctoken_key_derive(ok[3], &users);
    assert_memory_not_equal(users.bytes, cfg.token_key.bytes, sizeof users.bytes);
}

static void bad_values_name_the_variable(void **state)
{
    (void)state;
    struct { const char *name, *value; } cases[] = {
        {"TODO_ENV", "staging"},          {"TODO_GRPC_THREADS", "0"},   {"TODO_GRPC_THREADS", "abc"},
        {"TODO_GRPC_THREADS", "8x"},      {"TODO_RELAY_BATCH", "100000"}, {"TODO_LOG_LEVEL", "verbose"},
        {"TODO_GRPC_MAX_MESSAGE_BYTES", "10"}, {"TODO_GRPC_MAX_STREAMS", "0"}, {"TODO_GRPC_KEEPALIVE_MS", "10"},
        {"TODO_GRPC_MEMORY_MB", "-1"}, {"TODO_JWT_LEEWAY_S", "3600"}, {"TODO_JWT_MAX_LIFETIME_S", "-5"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *env[] = {cases[i].name, cases[i].value, "TODO_ENV", "local", NULL}; /* the first wins */
        todo_config cfg;
        todo_err err;
        assert_int_equal(load(CONFIG_COMMAND, env, &cfg, &err), TODO_EINVAL);
        assert_non_null(strstr(err.msg, cases[i].name));
    }
}

static void overlong_strings_are_refused(void **state)
{
    (void)state;
    char big[CONFIG_STR_MAX + 10];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *env[] = {"TODO_ENV", "local", "TODO_KAFKA_BROKERS", big, NULL};
    todo_config cfg;
    todo_err err;
    assert_int_equal(load(CONFIG_PROJECTOR, env, &cfg, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "TODO_KAFKA_BROKERS"));
}

#define SECRET "0123456789abcdef0123456789abcdef"
#define MKEY "TODO_MASTER_KEY", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define SSECRET "fedcba9876543210fedcba9876543210"
#define CSECRET "0f1e2d3c4b5a69780f1e2d3c4b5a6978"
/* What todo-command and todo-query verify with in production. */
#define PUBKEYS "TODO_JWT_PUBLIC_KEYS", "/keys.json", "TODO_CONSISTENCY_SECRET", CSECRET

/* The rules of issue 13: each unsafe setting stops the start, naming what
 * to change. */
static void unsafe_settings_are_refused(void **state)
{
    (void)state;
    struct {
        config_service svc;
        const char *env[24];
        const char *says; /* NULL: accepted */
    } cases[] = {
        /* An unset TODO_ENV is production: no development secret. */
        {CONFIG_QUERY, {"TODO_QUERY_PG_URL", "postgresql://q@db/t", NULL}, "an unset TODO_ENV means production"},
        {CONFIG_COMMAND, {NULL}, "TODO_COMMAND_PG_URL is not set"},
        /* The development secret: loopback-only local stacks. */
        {CONFIG_COMMAND, {"TODO_ENV", "local", "TODO_COMMAND_ADDR", "0.0.0.0:50051", NULL}, "TODO_COMMAND_ADDR listens beyond"},
        {CONFIG_QUERY, {"TODO_ENV", "local", "TODO_QUERY_ADDR", "[::]:50052", NULL}, "TODO_QUERY_ADDR listens beyond"},
        {CONFIG_PROJECTOR, {"TODO_ENV", "local", "TODO_PROJECTOR_METRICS_ADDR", "0.0.0.0:9466", NULL},
         "TODO_PROJECTOR_METRICS_ADDR listens beyond"},
        {CONFIG_COMMAND, {"TODO_ENV", "local", "TODO_COMMAND_ADDR", "localhost:50051", NULL}, NULL},
        {CONFIG_COMMAND, {"TODO_ENV", "local", "TODO_COMMAND_ADDR", "0.0.0.0:50051", "TODO_JWT_SECRET", SECRET,
                          "TODO_CONSISTENCY_SECRET", CSECRET, NULL}, NULL},
        {CONFIG_COMMAND, {"TODO_ENV", "local", "TODO_COMMAND_ADDR", "0.0.0.0:50051", "TODO_JWT_SECRET", SECRET, NULL},
         "TODO_CONSISTENCY_SECRET is not set"},
        /* User tokens in production: public keys, never a secret that signs. */
        {CONFIG_QUERY, {"TODO_ENV", "production", "TODO_JWT_SECRET", SECRET, "TODO_QUERY_PG_URL", "postgresql://q@db/t",
                        NULL}, "TODO_JWT_PUBLIC_KEYS is not set"},
        {CONFIG_QUERY, {"TODO_ENV", "production", PUBKEYS, "TODO_JWT_SECRET", SECRET, "TODO_QUERY_PG_URL",
                        "postgresql://q@db/t", NULL}, "must not hold a secret that can sign them"},
        {CONFIG_QUERY, {"TODO_ENV", "local", "TODO_JWT_PUBLIC_KEYS", "/k.pem", "TODO_JWT_SECRET", SECRET, NULL},
         "unset TODO_JWT_SECRET"},
        {CONFIG_QUERY, {"TODO_ENV", "production", "TODO_JWT_PUBLIC_KEYS", "/k.pem", "TODO_QUERY_PG_URL",
                        "postgresql://q@db/t", NULL}, "TODO_CONSISTENCY_SECRET is not set"},
        {CONFIG_QUERY, {"TODO_ENV", "local", "TODO_CONSISTENCY_SECRET", CONFIG_DEV_CONSISTENCY_SECRET, NULL}, "published"},
        {CONFIG_COMMAND, {"TODO_ENV", "local", "TODO_CONSISTENCY_SECRET", SSECRET, "TODO_SERVICE_SECRET", SSECRET, NULL},
         "must differ from TODO_JWT_SECRET and TODO_SERVICE_SECRET"},
        /* Those that verify no user token need no user key at all. */
        {CONFIG_SAGA, {"TODO_ENV", "production", "TODO_SAGA_PG_URL", "postgresql://s@db/t", MKEY, "TODO_SERVICE_SECRET", SSECRET,
                       NULL}, NULL},
        /* ... and never as a configured secret. */
        {CONFIG_QUERY, {"TODO_ENV", "local", "TODO_JWT_SECRET", CONFIG_DEV_JWT_SECRET, NULL}, "published development"},
        /* Production: each service's own database role, named. */
        {CONFIG_SAGA, {"TODO_ENV", "production", "TODO_PG_URL", "postgresql://postgres@db/todo",
                       NULL}, "TODO_SAGA_PG_URL is not set"},
        {CONFIG_PROJECTOR, {"TODO_ENV", "production", NULL}, "TODO_PROJECTOR_PG_URL is not set"},
        {CONFIG_CLI, {"TODO_ENV", "production", NULL}, NULL},
        /* Production: plaintext gRPC only on loopback. */
        {CONFIG_COMMAND, {"TODO_ENV", "production", PUBKEYS, "TODO_COMMAND_PG_URL", "postgresql://c@db/t",
                          "TODO_COMMAND_ADDR", "0.0.0.0:50051", NULL}, "TODO_COMMAND_ADDR listens on 0.0.0.0:50051 in plaintext"},
        {CONFIG_COMMAND, {"TODO_ENV", "production", PUBKEYS, "TODO_COMMAND_PG_URL", "postgresql://c@db/t",
                          "TODO_COMMAND_ADDR", "0.0.0.0:50051", "TODO_GRPC_TLS_CERT", "/c.pem", "TODO_GRPC_TLS_KEY",
                          "/c.key", "TODO_SERVICE_SECRET", SSECRET, MKEY, NULL}, NULL},
        {CONFIG_COMMAND, {"TODO_ENV", "production", PUBKEYS, "TODO_COMMAND_PG_URL", "postgresql://c@db/t",
                          "TODO_SERVICE_SECRET", SSECRET, MKEY, NULL}, NULL}, /* loopback, behind a proxy */
        /* The master key wrapping the users' data keys: required by
         * todo-command and todo-projector in production, 64 hex digits,
         * never the published one there. */
        {CONFIG_COMMAND, {"TODO_ENV", "production", PUBKEYS, "TODO_COMMAND_PG_URL", "postgresql://c@db/t",
                          "TODO_SERVICE_SECRET", SSECRET, NULL}, "TODO_MASTER_KEY is not set"},
        {CONFIG_PROJECTOR, {"TODO_ENV", "production", "TODO_PROJECTOR_PG_URL", "postgresql://p@db/t", NULL},
         "TODO_MASTER_KEY is not set"},
        {CONFIG_PROJECTOR, {"TODO_ENV", "production", "TODO_PROJECTOR_PG_URL", "postgresql://p@db/t", MKEY, NULL}, NULL},
        {CONFIG_PROJECTOR, {"TODO_ENV", "production", "TODO_PROJECTOR_PG_URL", "postgresql://p@db/t", "TODO_MASTER_KEY",
                            CONFIG_DEV_MASTER_KEY, NULL}, "published development key"},
        {CONFIG_PROJECTOR, {"TODO_ENV", "local", "TODO_MASTER_KEY", "abc", NULL}, "must be 64 hex digits"},
        {CONFIG_QUERY, {"TODO_ENV", "local", "TODO_QUERY_PUMPS", "9", NULL}, "TODO_QUERY_PUMPS"},
        {CONFIG_QUERY, {"TODO_ENV", "local", "TODO_QUERY_PUMPS", "0", NULL}, NULL},
        {CONFIG_QUERY, {"TODO_ENV", "local", "TODO_QUERY_READ_THREADS", "65", NULL}, "TODO_QUERY_READ_THREADS"},
        {CONFIG_QUERY, {"TODO_ENV", "local", "TODO_QUERY_READ_THREADS", "0", NULL}, NULL},
        {CONFIG_SAGA, {"TODO_ENV", "production", "TODO_SAGA_PG_URL", "postgresql://s@db/t", "TODO_SERVICE_SECRET", SSECRET,
                       NULL}, "TODO_MASTER_KEY is not set"},
        {CONFIG_QUERY, {"TODO_ENV", "production", PUBKEYS, "TODO_QUERY_PG_URL", "postgresql://q@db/t",
                        NULL}, NULL}, /* todo-query holds no key */
        {CONFIG_SAGA, {"TODO_ENV", "production", "TODO_SAGA_PG_URL", "postgresql://s@db/t", MKEY,
                       "TODO_COMMAND_ADDR", "command.internal:50051", NULL}, "set TODO_GRPC_TLS_CA"},
        {CONFIG_SAGA, {"TODO_ENV", "production", "TODO_SAGA_PG_URL", "postgresql://s@db/t", MKEY,
                       "TODO_COMMAND_ADDR", "command.internal:50051", "TODO_GRPC_TLS_CA", "/ca.pem",
                       "TODO_SERVICE_SECRET", SSECRET, NULL}, NULL},
        /* The service secret: required by todo-command and todo-saga in
         * production, never the users' secret nor a published one. */
        {CONFIG_COMMAND, {"TODO_ENV", "production", PUBKEYS, "TODO_COMMAND_PG_URL", "postgresql://c@db/t",
                          MKEY, NULL}, "TODO_SERVICE_SECRET is not set"},
        {CONFIG_QUERY, {"TODO_ENV", "production", PUBKEYS, "TODO_QUERY_PG_URL", "postgresql://q@db/t",
                        NULL}, NULL},
        {CONFIG_SAGA, {"TODO_ENV", "local", "TODO_JWT_SECRET", SECRET, "TODO_SERVICE_SECRET", SECRET, NULL},
         "must differ from TODO_JWT_SECRET"},
        {CONFIG_SAGA, {"TODO_ENV", "local", "TODO_SERVICE_SECRET", CONFIG_DEV_SERVICE_SECRET, NULL}, "published"},
        {CONFIG_SAGA, {"TODO_ENV", "local", "TODO_JWT_SECRET", CONFIG_DEV_SERVICE_SECRET, NULL}, "published"},
        {CONFIG_SAGA, {"TODO_ENV", "local", "TODO_SERVICE_SECRET", "short", NULL}, "at least 32"},
        /* Webhooks: https outside local. */
        {CONFIG_SAGA, {"TODO_ENV", "production", "TODO_SAGA_PG_URL", "postgresql://s@db/t", MKEY,
                       "TODO_SERVICE_SECRET", SSECRET, "TODO_NOTIFY_WEBHOOK_URL", "http://hooks.example.com/x", NULL},
         "must be https:// outside TODO_ENV=local"},
        {CONFIG_SAGA, {"TODO_ENV", "production", "TODO_SAGA_PG_URL", "postgresql://s@db/t", MKEY,
                       "TODO_SERVICE_SECRET", SSECRET, "TODO_NOTIFY_WEBHOOK_URL", "https://hooks.example.com/x", NULL},
         NULL},
        {CONFIG_SAGA, {"TODO_ENV", "local", "TODO_NOTIFY_WEBHOOK_URL", "http://127.0.0.1:8080/x", NULL}, NULL},
        /* Registry writers are a scope now, not user ids anyone with the
         * users' key could claim. */
        {CONFIG_COMMAND, {"TODO_ENV", "local", "TODO_REGISTRY_WRITERS", "registry-admin", NULL},
         "TODO_REGISTRY_WRITERS is gone"},
        /* A list of instances is for clients; a server listens on one. */
        {CONFIG_COMMAND, {"TODO_ENV", "local", "TODO_COMMAND_ADDR", "127.0.0.1:1,127.0.0.1:2", NULL},
         "a server listens on one address"},
        {CONFIG_CLI, {"TODO_ENV", "local", "TODO_COMMAND_ADDR", "127.0.0.1:1,127.0.0.1:2", NULL}, NULL},
        {CONFIG_SAGA, {"TODO_ENV", "local", "TODO_COMMAND_ADDR", "127.0.0.1:1,127.0.0.1:2", NULL}, NULL},
        /* TLS files come in pairs. */
        {CONFIG_COMMAND, {"TODO_ENV", "local", "TODO_GRPC_TLS_CERT", "/c.pem", NULL}, "TODO_GRPC_TLS_CERT and TODO_GRPC_TLS_KEY go together"},
        {CONFIG_CLI, {"TODO_ENV", "local", "TODO_GRPC_TLS_CA", "/ca.pem", "TODO_GRPC_TLS_CLIENT_KEY", "/k", NULL}, "go together"},
        {CONFIG_QUERY, {"TODO_ENV", "local", "TODO_GRPC_TLS_CLIENT_CA", "/ca.pem", NULL}, "TODO_GRPC_TLS_CLIENT_CA needs"},
        {CONFIG_CLI, {"TODO_ENV", "local", "TODO_GRPC_TLS_CLIENT_CERT", "/c", "TODO_GRPC_TLS_CLIENT_KEY", "/k", NULL},
         "TODO_GRPC_TLS_CLIENT_CERT needs TODO_GRPC_TLS_CA"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        todo_config cfg;
        todo_err err;
        int rc = load(cases[i].svc, cases[i].env, &cfg, &err);
        if (cases[i].says == NULL) {
            if (rc != TODO_OK) fail_msg("case %zu refused: %s", i, err.msg);
        } else if (rc != TODO_EINVAL || strstr(err.msg, cases[i].says) == NULL) {
            fail_msg("case %zu: wanted a refusal saying \"%s\", got %d \"%s\"", i, cases[i].says, rc,
                     rc == TODO_OK ? "" : err.msg);
        }
    }
}

static void loopback_addresses_are_recognised(void **state)
{
    (void)state;
    assert_true(config_addr_is_loopback("127.0.0.1:50051"));
    assert_true(config_addr_is_loopback("127.1.2.3:1"));
    assert_true(config_addr_is_loopback("[::1]:50051"));
    assert_true(config_addr_is_loopback("localhost:9464"));
    assert_false(config_addr_is_loopback("0.0.0.0:50051"));
    assert_false(config_addr_is_loopback("[::]:50051"));
    assert_false(config_addr_is_loopback("10.0.0.1:50051"));
    assert_false(config_addr_is_loopback("localhost.example.com:1"));
    assert_false(config_addr_is_loopback("127x:1"));
    assert_false(config_addr_is_loopback("127.evil.example:50051")); /* a name, not an address */
    assert_false(config_addr_is_loopback("localhost"));              /* no port */
    assert_true(config_addr_is_loopback("ipv4:127.0.0.1:50051"));
    assert_false(config_addr_is_loopback("[::2]:1"));
    /* A client's list of instances: loopback when every entry is. */
    assert_true(config_addr_is_loopback("127.0.0.1:1,127.0.0.1:2,[::1]:3"));
    assert_false(config_addr_is_loopback("127.0.0.1:1,10.0.0.1:2"));
    assert_false(config_addr_is_loopback("127.0.0.1:1,"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_describe_the_local_dev_stack),
        cmocka_unit_test(query_workers_default_to_the_cores),
        cmocka_unit_test(each_service_uses_its_own_role_url_with_fallback),
        cmocka_unit_test(production_refuses_to_start_without_a_secret),
        cmocka_unit_test(short_secrets_are_refused),
        cmocka_unit_test(bad_values_name_the_variable),
        cmocka_unit_test(overlong_strings_are_refused),
        cmocka_unit_test(unsafe_settings_are_refused),
        cmocka_unit_test(loopback_addresses_are_recognised),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
