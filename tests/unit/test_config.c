/* Unit tests of config: defaults, validation, the secret rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

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
    const char *env[] = {NULL};
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
}

static void each_service_uses_its_own_role_url_with_fallback(void **state)
{
    (void)state;
    const char *env[] = {"TODO_PG_URL", "postgresql://admin@h/db", "TODO_QUERY_PG_URL", "postgresql://q@h/db", NULL};
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
    const char *env[] = {"TODO_ENV", "production", NULL};
    todo_config cfg;
    todo_err err;
    assert_int_equal(load(CONFIG_COMMAND, env, &cfg, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "TODO_JWT_SECRET"));
}

static void short_secrets_are_refused(void **state)
{
    (void)state;
    const char *env[] = {"TODO_ENV", "production", "TODO_JWT_SECRET", "short", NULL};
    todo_config cfg;
    todo_err err;
    assert_int_equal(load(CONFIG_QUERY, env, &cfg, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "at least 32"));
    const char *ok[] = {"TODO_ENV", "production", "TODO_JWT_SECRET", "0123456789abcdef0123456789abcdef", NULL};
    assert_int_equal(load(CONFIG_QUERY, ok, &cfg, &err), TODO_OK);
    assert_false(cfg.jwt_secret_is_default);
}

static void bad_values_name_the_variable(void **state)
{
    (void)state;
    struct { const char *name, *value; } cases[] = {
        {"TODO_ENV", "staging"},          {"TODO_GRPC_THREADS", "0"},   {"TODO_GRPC_THREADS", "abc"},
        {"TODO_GRPC_THREADS", "8x"},      {"TODO_RELAY_BATCH", "100000"}, {"TODO_LOG_LEVEL", "verbose"},
        {"TODO_GRPC_MAX_MESSAGE_BYTES", "10"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *env[] = {cases[i].name, cases[i].value, NULL};
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
    const char *env[] = {"TODO_KAFKA_BROKERS", big, NULL};
    todo_config cfg;
    todo_err err;
    assert_int_equal(load(CONFIG_PROJECTOR, env, &cfg, &err), TODO_EINVAL);
    assert_non_null(strstr(err.msg, "TODO_KAFKA_BROKERS"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_describe_the_local_dev_stack),
        cmocka_unit_test(each_service_uses_its_own_role_url_with_fallback),
        cmocka_unit_test(production_refuses_to_start_without_a_secret),
        cmocka_unit_test(short_secrets_are_refused),
        cmocka_unit_test(bad_values_name_the_variable),
        cmocka_unit_test(overlong_strings_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
