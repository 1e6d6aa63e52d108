/* config: see config.h. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"

static const char *env_get(const char *name, void *ctx)
{
    (void)ctx;
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

static int get_str(char *dst, const char *name, const char *def, config_getter get, void *ctx,
                   todo_err *err)
{
    const char *v = get(name, ctx);
    if (v == NULL) v = def;
    if (strlen(v) >= CONFIG_STR_MAX)
        return todo_err_set(err, TODO_EINVAL, "%s is longer than %d bytes", name, CONFIG_STR_MAX - 1);
    strcpy(dst, v);
    return TODO_OK;
}

static int get_int(int *dst, const char *name, int def, int min, int max, config_getter get,
                   void *ctx, todo_err *err)
{
    const char *v = get(name, ctx);
    char *end;
    long n;
    if (v == NULL) {
        *dst = def;
        return TODO_OK;
    }
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || n < min || n > max)
        return todo_err_set(err, TODO_EINVAL, "%s must be an integer from %d to %d, got \"%s\"",
                            name, min, max, v);
    *dst = (int)n;
    return TODO_OK;
}

bool config_addr_is_loopback(const char *addr)
{
    /* "host:port", "[v6]:port", and gRPC's "ipv4:" / "ipv6:" forms; a list
     * ("a:1,b:2", clients only) when every entry is. */
    if (strncmp(addr, "ipv4:", 5) == 0 || strncmp(addr, "ipv6:", 5) == 0) addr += 5;
    const char *comma = strchr(addr, ',');
    if (comma != NULL) {
        char first[256];
        if ((size_t)(comma - addr) >= sizeof first) return false;
        snprintf(first, sizeof first, "%.*s", (int)(comma - addr), addr);
        return config_addr_is_loopback(first) && config_addr_is_loopback(comma + 1);
    }
    char host[256];
    const char *end;
    if (addr[0] == '[') {
        end = strchr(addr, ']');
        if (end == NULL || end[1] != ':') return false;
        snprintf(host, sizeof host, "%.*s", (int)(end - addr - 1), addr + 1);
    } else {
        end = strrchr(addr, ':');
        if (end == NULL || (size_t)(end - addr) >= sizeof host) return false;
        snprintf(host, sizeof host, "%.*s", (int)(end - addr), addr);
    }
    if (strcmp(host, "localhost") == 0) return true;
    struct in_addr v4;
    struct in6_addr v6;
    if (inet_pton(AF_INET, host, &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, host, &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

/* The TLS settings: both of a pair or neither; outside local, a gRPC server
 * that listens beyond loopback needs TLS, and so does a service's client of
 * such a server. */
static int load_tls(todo_config *cfg, config_service svc, config_getter get, void *ctx, todo_err *err)
{
    static const struct {
        const char *name;
        size_t off;
    } files[] = {
        {"TODO_GRPC_TLS_CERT", offsetof(todo_config, grpc_tls_cert)},
        {"TODO_GRPC_TLS_KEY", offsetof(todo_config, grpc_tls_key)},
        {"TODO_GRPC_TLS_CLIENT_CA", offsetof(todo_config, grpc_tls_client_ca)},
        {"TODO_GRPC_TLS_CA", offsetof(todo_config, grpc_tls_ca)},
        {"TODO_GRPC_TLS_CLIENT_CERT", offsetof(todo_config, grpc_tls_client_cert)},
        {"TODO_GRPC_TLS_CLIENT_KEY", offsetof(todo_config, grpc_tls_client_key)},
        {"TODO_GRPC_TLS_SERVER_NAME", offsetof(todo_config, grpc_tls_server_name)},
    };
    int rc;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if ((rc = get_str((char *)cfg + files[i].off, files[i].name, "", get, ctx, err)) != 0) return rc;
    if ((cfg->grpc_tls_cert[0] != '\0') != (cfg->grpc_tls_key[0] != '\0'))
        return todo_err_set(err, TODO_EINVAL, "TODO_GRPC_TLS_CERT and TODO_GRPC_TLS_KEY go together: set both or neither");
    if ((cfg->grpc_tls_client_cert[0] != '\0') != (cfg->grpc_tls_client_key[0] != '\0'))
        return todo_err_set(err, TODO_EINVAL,
                            "TODO_GRPC_TLS_CLIENT_CERT and TODO_GRPC_TLS_CLIENT_KEY go together: set both or neither");
    if (cfg->grpc_tls_client_ca[0] != '\0' && cfg->grpc_tls_cert[0] == '\0')
        return todo_err_set(err, TODO_EINVAL, "TODO_GRPC_TLS_CLIENT_CA needs TODO_GRPC_TLS_CERT and TODO_GRPC_TLS_KEY");
    if (cfg->grpc_tls_client_cert[0] != '\0' && cfg->grpc_tls_ca[0] == '\0')
        return todo_err_set(err, TODO_EINVAL, "TODO_GRPC_TLS_CLIENT_CERT needs TODO_GRPC_TLS_CA");
    const char *listen = svc == CONFIG_COMMAND ? cfg->command_addr : svc == CONFIG_QUERY ? cfg->query_addr : NULL;
    if (listen != NULL && strchr(listen, ',') != NULL)
        return todo_err_set(err, TODO_EINVAL,
                            "%s is \"%s\": a server listens on one address (lists of instances are for clients)",
                            svc == CONFIG_COMMAND ? "TODO_COMMAND_ADDR" : "TODO_QUERY_ADDR", listen);
    if (cfg->local) return TODO_OK;
    if (listen != NULL && cfg->grpc_tls_cert[0] == '\0' && !config_addr_is_loopback(listen))
        return todo_err_set(err, TODO_EINVAL,
                            "%s listens on %s in plaintext: outside TODO_ENV=local set TODO_GRPC_TLS_CERT and "
                            "TODO_GRPC_TLS_KEY (or listen on loopback behind a proxy that terminates TLS)",
                            svc == CONFIG_COMMAND ? "TODO_COMMAND_ADDR" : "TODO_QUERY_ADDR", listen);
    if (svc == CONFIG_SAGA && cfg->grpc_tls_ca[0] == '\0' && !config_addr_is_loopback(cfg->command_addr))
        return todo_err_set(err, TODO_EINVAL,
                            "todo-saga would call %s in plaintext: outside TODO_ENV=local set TODO_GRPC_TLS_CA",
                            cfg->command_addr);
    return TODO_OK;
}

int config_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

int config_load(todo_config *cfg, config_service svc, config_getter get, void *ctx, todo_err *err)
{
    static const char *const role_vars[] = {
        [CONFIG_COMMAND] = "TODO_COMMAND_PG_URL",
        [CONFIG_QUERY] = "TODO_QUERY_PG_URL",
        [CONFIG_PROJECTOR] = "TODO_PROJECTOR_PG_URL",
        [CONFIG_SAGA] = "TODO_SAGA_PG_URL",
        [CONFIG_CLI] = "TODO_PG_URL",
    };
    static const char *const metrics_vars[][2] = {
        [CONFIG_COMMAND] = {"TODO_COMMAND_METRICS_ADDR", "127.0.0.1:9464"},
        [CONFIG_QUERY] = {"TODO_QUERY_METRICS_ADDR", "127.0.0.1:9465"},
        [CONFIG_PROJECTOR] = {"TODO_PROJECTOR_METRICS_ADDR", "127.0.0.1:9466"},
        [CONFIG_SAGA] = {"TODO_SAGA_METRICS_ADDR", "127.0.0.1:9467"},
        [CONFIG_CLI] = {"TODO_CLI_METRICS_ADDR", ""},
    };
    const char *envname, *level;
    int rc;

    if (get == NULL) get = env_get;
    memset(cfg, 0, sizeof *cfg);

    /* Unset means production: a deployment that forgets TODO_ENV gets the
     * safe rules, not the development secret. */
    envname = get("TODO_ENV", ctx);
    if (envname != NULL && strcmp(envname, "local") == 0)
        cfg->local = true;
    else if (envname == NULL || strcmp(envname, "production") == 0)
        cfg->local = false;
    else
        return todo_err_set(err, TODO_EINVAL, "TODO_ENV must be \"local\" or \"production\", got \"%s\"",
                            envname);

    if ((rc = get_str(cfg->admin_pg_url, "TODO_PG_URL", "postgresql://postgres@127.0.0.1:54329/todo",
                      get, ctx, err)) != 0)
        return rc;
    /* Outside local a service connects with its own role, named by its own
     * variable: never by falling back to the administrator's URL. */
    if (!cfg->local && svc != CONFIG_CLI && get(role_vars[svc], ctx) == NULL)
        return todo_err_set(err, TODO_EINVAL,
                            "%s is not set: outside TODO_ENV=local every service connects with its own database role "
                            "(docs/SECURITY.md), never the administrator's TODO_PG_URL",
                            role_vars[svc]);
    if ((rc = get_str(cfg->pg_url, role_vars[svc], cfg->admin_pg_url, get, ctx, err)) != 0) return rc;
    if ((rc = get_str(cfg->kafka_brokers, "TODO_KAFKA_BROKERS", "127.0.0.1:19092", get, ctx, err)) != 0)
        return rc;
    const char *kc = get("TODO_KAFKA_CONFIG", ctx);
    if (kc != NULL && strlen(kc) >= sizeof cfg->kafka_config)
        return todo_err_set(err, TODO_EINVAL, "TODO_KAFKA_CONFIG is longer than %zu bytes", sizeof cfg->kafka_config - 1);
    snprintf(cfg->kafka_config, sizeof cfg->kafka_config, "%s", kc != NULL ? kc : "");
    if ((rc = get_str(cfg->instance, "TODO_INSTANCE", "", get, ctx, err)) != 0) return rc;
    if ((rc = get_str(cfg->redis_url, "TODO_REDIS_URL", "redis://127.0.0.1:63799", get, ctx, err)) != 0)
        return rc;
    if ((rc = get_str(cfg->command_addr, "TODO_COMMAND_ADDR", "127.0.0.1:50051", get, ctx, err)) != 0)
        return rc;
    if ((rc = get_str(cfg->query_addr, "TODO_QUERY_ADDR", "127.0.0.1:50052", get, ctx, err)) != 0)
        return rc;
    if ((rc = get_str(cfg->metrics_addr, metrics_vars[svc][0], metrics_vars[svc][1], get, ctx, err)) != 0)
        return rc;
    if ((rc = load_tls(cfg, svc, get, ctx, err)) != 0) return rc;
    if ((rc = get_str(cfg->projector_group, "TODO_PROJECTOR_GROUP", "projection-task-read-v1", get, ctx, err)) != 0)
        return rc;
    if ((rc = get_str(cfg->zoneinfo_dir, "TODO_ZONEINFO_DIR", "/usr/share/zoneinfo", get, ctx, err)) != 0) return rc;
    if ((rc = get_str(cfg->migrations_dir, "TODO_MIGRATIONS_DIR", "migrations", get, ctx, err)) != 0)
        return rc;

    /* The development secrets are published: only a stack nobody else can
     * reach may use them. */
    const char *beyond = NULL;
    if (svc == CONFIG_COMMAND && !config_addr_is_loopback(cfg->command_addr)) beyond = "TODO_COMMAND_ADDR";
    if (svc == CONFIG_QUERY && !config_addr_is_loopback(cfg->query_addr)) beyond = "TODO_QUERY_ADDR";
    if (cfg->metrics_addr[0] != '\0' && !config_addr_is_loopback(cfg->metrics_addr)) beyond = metrics_vars[svc][0];
    /* User tokens: HS256 with TODO_JWT_SECRET (the local stack), or RS256 /
     * ES256 verified with TODO_JWT_PUBLIC_KEYS, never both in a verifying
     * service. Outside local only public keys: a service that verifies with
     * a shared secret could sign any user's token with it. */
    bool verifies = svc == CONFIG_COMMAND || svc == CONFIG_QUERY;
    if ((rc = get_str(cfg->jwt_public_keys, "TODO_JWT_PUBLIC_KEYS", "", get, ctx, err)) != 0 ||
        (rc = get_str(cfg->jwt_signing_key, "TODO_JWT_SIGNING_KEY", "", get, ctx, err)) != 0 ||
        (rc = get_str(cfg->jwt_signing_kid, "TODO_JWT_SIGNING_KID", "", get, ctx, err)) != 0)
        return rc;
    if (verifies && !cfg->local && cfg->jwt_public_keys[0] == '\0')
        return todo_err_set(err, TODO_EINVAL,
                            "TODO_JWT_PUBLIC_KEYS is not set: outside TODO_ENV=local user tokens are verified with "
                            "public keys (RS256/ES256, a PEM or JWKS file; an unset TODO_ENV means production)");
    if (verifies && cfg->jwt_public_keys[0] != '\0' && get("TODO_JWT_SECRET", ctx) != NULL)
        return todo_err_set(err, TODO_EINVAL,
                            "TODO_JWT_SECRET and TODO_JWT_PUBLIC_KEYS are both set: a service that verifies user "
                            "tokens with public keys must not hold a secret that can sign them; unset TODO_JWT_SECRET");
    if (get("TODO_JWT_SECRET", ctx) == NULL) {
        if (cfg->local && cfg->jwt_public_keys[0] == '\0') {
            if (beyond != NULL)
                return todo_err_set(err, TODO_EINVAL,
                                    "%s listens beyond loopback: the built-in development secret is only for a "
                                    "loopback-only local stack; set TODO_JWT_SECRET or TODO_JWT_PUBLIC_KEYS",
                                    beyond);
            strcpy(cfg->jwt_secret, CONFIG_DEV_JWT_SECRET);
            cfg->jwt_secret_is_default = true;
        }
    } else {
        if ((rc = get_str(cfg->jwt_secret, "TODO_JWT_SECRET", "", get, ctx, err)) != 0) return rc;
        if (verifies && !cfg->local)
            return todo_err_set(err, TODO_EINVAL,
                                "TODO_JWT_SECRET is set: outside TODO_ENV=local user tokens are verified with public "
                                "keys (TODO_JWT_PUBLIC_KEYS); a service holding the secret could sign any user's token");
        if (strlen(cfg->jwt_secret) < 32)
            return todo_err_set(err, TODO_EINVAL, "TODO_JWT_SECRET must be at least 32 bytes long");
        if (strcmp(cfg->jwt_secret, CONFIG_DEV_JWT_SECRET) == 0 || strcmp(cfg->jwt_secret, CONFIG_DEV_SERVICE_SECRET) == 0)
            return todo_err_set(err, TODO_EINVAL,
                                "TODO_JWT_SECRET is the published development secret: anyone could sign tokens "
                                "with it; choose your own");
    }
    /* The master key wrapping the users' data keys (seal.h): todo-command
     * makes keys, todo-projector and todoctl's rebuild open them. */
    const char *mk = get("TODO_MASTER_KEY", ctx);
    if (mk == NULL) {
        if (!cfg->local && (svc == CONFIG_COMMAND || svc == CONFIG_PROJECTOR || svc == CONFIG_SAGA))
            return todo_err_set(err, TODO_EINVAL,
                                "TODO_MASTER_KEY is not set: outside TODO_ENV=local todo-command, todo-projector and "
                                "todo-saga need the master key that wraps the users' data keys (64 hex digits; "
                                "docs/SECURITY.md)");
        if (cfg->local && beyond == NULL) strcpy(cfg->master_key, CONFIG_DEV_MASTER_KEY);
    } else {
        size_t n = strlen(mk), hex = strspn(mk, "0123456789abcdefABCDEF");
        if (n != 64 || hex != 64)
            return todo_err_set(err, TODO_EINVAL, "TODO_MASTER_KEY must be 64 hex digits (32 bytes), got %zu characters",
                                n);
        if (!cfg->local && strcasecmp(mk, CONFIG_DEV_MASTER_KEY) == 0)
            return todo_err_set(err, TODO_EINVAL, "TODO_MASTER_KEY is the published development key; choose your own");
        snprintf(cfg->master_key, sizeof cfg->master_key, "%s", mk);
    }
    /* The service secret: todo-saga signs with it, todo-command verifies;
     * never the users' secret, so a user token can never claim a service. */
    if (get("TODO_SERVICE_SECRET", ctx) == NULL) {
        if (!cfg->local && (svc == CONFIG_COMMAND || svc == CONFIG_SAGA))
            return todo_err_set(err, TODO_EINVAL,
                                "TODO_SERVICE_SECRET is not set; outside TODO_ENV=local todo-command and todo-saga "
                                "need the service secret (docs/SECURITY.md)");
        if (cfg->local && beyond == NULL) strcpy(cfg->service_secret, CONFIG_DEV_SERVICE_SECRET);
    } else {
        if ((rc = get_str(cfg->service_secret, "TODO_SERVICE_SECRET", "", get, ctx, err)) != 0) return rc;
        if (strlen(cfg->service_secret) < 32)
            return todo_err_set(err, TODO_EINVAL, "TODO_SERVICE_SECRET must be at least 32 bytes long");
        if (strcmp(cfg->service_secret, cfg->jwt_secret) == 0)
            return todo_err_set(err, TODO_EINVAL,
                                "TODO_SERVICE_SECRET must differ from TODO_JWT_SECRET: a user token must never pass "
                                "for a service's");
        if (strcmp(cfg->service_secret, CONFIG_DEV_SERVICE_SECRET) == 0 ||
            strcmp(cfg->service_secret, CONFIG_DEV_JWT_SECRET) == 0)
            return todo_err_set(err, TODO_EINVAL, "TODO_SERVICE_SECRET is a published development secret; choose your own");
    }
    if ((rc = get_str(cfg->jwt_issuer, "TODO_JWT_ISSUER", "", get, ctx, err)) != 0 ||
        (rc = get_str(cfg->jwt_audience, "TODO_JWT_AUDIENCE", "", get, ctx, err)) != 0 ||
        (rc = get_int(&cfg->jwt_max_lifetime_s, "TODO_JWT_MAX_LIFETIME_S", 86400, 0, 31536000, get, ctx, err)) != 0 ||
        (rc = get_int(&cfg->jwt_leeway_s, "TODO_JWT_LEEWAY_S", 30, 0, 600, get, ctx, err)) != 0 ||
        (rc = get_int(&cfg->token_cache, "TODO_TOKEN_CACHE", 256, 0, 65536, get, ctx, err)) != 0 ||
        (rc = get_int(&cfg->query_batch, "TODO_QUERY_BATCH", 32, 1, 1024, get, ctx, err)) != 0 ||
        (rc = get_int(&cfg->query_pumps, "TODO_QUERY_PUMPS", 1, 0, 8, get, ctx, err)) != 0 ||
        (rc = get_int(&cfg->query_read_threads, "TODO_QUERY_READ_THREADS", 6, 0, 64, get, ctx, err)) != 0)
        return rc;
    /* Consistency tokens: their own key, so todo-query (which checks them)
     * holds nothing that signs a user's or a service's token. */
    char consistency[CONFIG_STR_MAX] = "";
    if (get("TODO_CONSISTENCY_SECRET", ctx) == NULL) {
        if (verifies && (!cfg->local || beyond != NULL))
            return todo_err_set(err, TODO_EINVAL,
                                "TODO_CONSISTENCY_SECRET is not set: outside a loopback-only TODO_ENV=local stack "
                                "todo-command and todo-query share their own secret for consistency tokens");
        strcpy(consistency, CONFIG_DEV_CONSISTENCY_SECRET);
    } else {
        if ((rc = get_str(consistency, "TODO_CONSISTENCY_SECRET", "", get, ctx, err)) != 0) return rc;
        if (strlen(consistency) < 32)
            return todo_err_set(err, TODO_EINVAL, "TODO_CONSISTENCY_SECRET must be at least 32 bytes long");
        if (strcmp(consistency, CONFIG_DEV_CONSISTENCY_SECRET) == 0 || strcmp(consistency, CONFIG_DEV_JWT_SECRET) == 0 ||
            strcmp(consistency, CONFIG_DEV_SERVICE_SECRET) == 0)
            return todo_err_set(err, TODO_EINVAL, "TODO_CONSISTENCY_SECRET is a published development secret; choose your own");
        if (strcmp(consistency, cfg->jwt_secret) == 0 || strcmp(consistency, cfg->service_secret) == 0)
            return todo_err_set(err, TODO_EINVAL,
                                "TODO_CONSISTENCY_SECRET must differ from TODO_JWT_SECRET and TODO_SERVICE_SECRET: "
                                "todo-query holds it");
    }
    ctoken_key_derive(consistency, &cfg->token_key);
    if ((rc = get_int(&cfg->token_wait_ms, "TODO_QUERY_TOKEN_WAIT_MS", 3000, 0, 60000, get, ctx, err)) != 0) return rc;
    /* WatchUpdates (todo-query) and the update feed it streams (todo-projector). */
    if ((rc = get_int(&cfg->watch_keepalive_ms, "TODO_WATCH_KEEPALIVE_MS", 15000, 100, 600000, get, ctx, err)) != 0)
        return rc;
    if ((rc = get_int(&cfg->watch_max_streams, "TODO_WATCH_MAX_STREAMS", 1000, 1, 100000, get, ctx, err)) != 0)
        return rc;
    if ((rc = get_int(&cfg->watch_stall_ms, "TODO_WATCH_STALL_MS", 30000, 100, 3600000, get, ctx, err)) != 0)
        return rc;
    if ((rc = get_int(&cfg->feed_retention_hours, "TODO_FEED_RETENTION_HOURS", 168, 1, 87600, get, ctx, err)) != 0)
        return rc;

    /* todo-command's handlers wait on PostgreSQL (group commit): 8 workers.
     * todo-query's workers never wait (pumps and read threads do): one per
     * core (issue 19: 0.85-0.91x the CPU per call of 8, docs/PERFORMANCE.md). */
    if ((rc = get_int(&cfg->grpc_threads, "TODO_GRPC_THREADS", svc == CONFIG_QUERY ? config_cores() : 8, 1, 64, get, ctx,
                      err)) != 0)
        return rc;
    /* The largest request the API needs is a 256 KiB descriptor set
     * (RegisterSchema); a task is a few KB. */
    if ((rc = get_int(&cfg->max_message_bytes, "TODO_GRPC_MAX_MESSAGE_BYTES", 320 << 10, 1024, 64 << 20,
                      get, ctx, err)) != 0)
        return rc;
    if ((rc = get_int(&cfg->call_memory_bytes, "TODO_GRPC_CALL_MEMORY_BYTES", 8 << 20, 64 << 10, 1 << 30,
                      get, ctx, err)) != 0)
        return rc;
    if ((rc = get_int(&cfg->shutdown_grace_ms, "TODO_SHUTDOWN_GRACE_MS", 10000, 0, 600000, get, ctx,
                      err)) != 0)
        return rc;
    {
        static const struct {
            const char *name;
            size_t off;
            int def, min, max;
        } limits[] = {
            {"TODO_GRPC_MAX_STREAMS", offsetof(todo_config, grpc_max_streams), 100, 1, 100000},
            {"TODO_GRPC_MAX_CONNECTION_IDLE_MS", offsetof(todo_config, grpc_max_connection_idle_ms), 600000, 0, 86400000},
            {"TODO_GRPC_MAX_CONNECTION_AGE_MS", offsetof(todo_config, grpc_max_connection_age_ms), 1800000, 0, 86400000},
            {"TODO_GRPC_MAX_CONNECTION_AGE_GRACE_MS", offsetof(todo_config, grpc_max_connection_age_grace_ms), 30000, 0,
             3600000},
            {"TODO_GRPC_KEEPALIVE_MS", offsetof(todo_config, grpc_keepalive_ms), 60000, 1000, 86400000},
            {"TODO_GRPC_KEEPALIVE_TIMEOUT_MS", offsetof(todo_config, grpc_keepalive_timeout_ms), 20000, 1000, 3600000},
            {"TODO_GRPC_MEMORY_MB", offsetof(todo_config, grpc_memory_mb), 1024, 0, 1 << 20},
        };
        for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++)
            if ((rc = get_int((int *)((char *)cfg + limits[i].off), limits[i].name, limits[i].def, limits[i].min,
                              limits[i].max, get, ctx, err)) != 0)
                return rc;
    }
    if ((rc = get_int(&cfg->relay_batch, "TODO_RELAY_BATCH", 500, 1, 10000, get, ctx, err)) != 0) return rc;
    /* Well under Kafka's message.max.bytes (1 MB): our largest event, a task
     * with a 4,000-character description, is under 20 KB. */
    if ((rc = get_int(&cfg->event_max_bytes, "TODO_EVENT_MAX_BYTES", 64 << 10, 1024, 900 << 10, get, ctx, err)) != 0)
        return rc;
    if ((rc = get_int(&cfg->group_committers, "TODO_GROUP_COMMITTERS", 1, 0, 16, get, ctx, err)) != 0) return rc;
    if ((rc = get_int(&cfg->projector_threads, "TODO_PROJECTOR_THREADS", 2, 1, 8, get, ctx, err)) != 0) return rc;
    if ((rc = get_int(&cfg->rebuild_threads, "TODO_REBUILD_THREADS", 2, 1, 8, get, ctx, err)) != 0) return rc;
    if ((rc = get_int(&cfg->group_commit_max, "TODO_GROUP_COMMIT_MAX", 64, 1, 1000, get, ctx, err)) != 0) return rc;
    if ((rc = get_int(&cfg->group_lock_timeout_ms, "TODO_GROUP_LOCK_TIMEOUT_MS", 50, 1, 60000, get, ctx, err)) != 0)
        return rc;
    if ((rc = get_int(&cfg->relay_poll_ms, "TODO_RELAY_POLL_MS", 1000, 10, 60000, get, ctx, err)) != 0)
        return rc;
    if ((rc = get_int(&cfg->projector_batch, "TODO_PROJECTOR_BATCH", 500, 1, 10000, get, ctx, err)) != 0)
        return rc;
    if ((rc = get_int(&cfg->consumer_max_attempts, "TODO_CONSUMER_MAX_ATTEMPTS", 5, 1, 100, get, ctx, err)) != 0)
        return rc;

    char host[64] = "todo-saga", fallback[128];
    gethostname(host, sizeof host - 1);
    snprintf(fallback, sizeof fallback, "%.63s-%ld", host, (long)getpid());
    if (cfg->instance[0] != '\0') snprintf(fallback, sizeof fallback, "%.127s", cfg->instance);
    if ((rc = get_str(cfg->saga_instance, "TODO_SAGA_INSTANCE", fallback, get, ctx, err)) != 0) return rc;
    if ((rc = get_int(&cfg->saga_lease_s, "TODO_SAGA_LEASE_S", 15, 2, 3600, get, ctx, err)) != 0) return rc;
    if ((rc = get_int(&cfg->saga_workers, "TODO_SAGA_WORKERS", 4, 1, 64, get, ctx, err)) != 0) return rc;
    if ((rc = get_int(&cfg->scheduler_parallel, "TODO_SCHEDULER_PARALLEL", 4, 1, 64, get, ctx, err)) != 0) return rc;
    if ((rc = get_int(&cfg->scheduler_poll_ms, "TODO_SCHEDULER_POLL_MS", 200, 10, 60000, get, ctx, err)) != 0)
        return rc;
    if ((rc = get_str(cfg->notify_webhook_url, "TODO_NOTIFY_WEBHOOK_URL", "", get, ctx, err)) != 0) return rc;
    if (cfg->notify_webhook_url[0] != '\0' && strncmp(cfg->notify_webhook_url, "http://", 7) != 0 &&
        strncmp(cfg->notify_webhook_url, "https://", 8) != 0)
        return todo_err_set(err, TODO_EINVAL, "TODO_NOTIFY_WEBHOOK_URL must be an http:// or https:// URL");
    if (!cfg->local && strncmp(cfg->notify_webhook_url, "http://", 7) == 0)
        return todo_err_set(err, TODO_EINVAL,
                            "TODO_NOTIFY_WEBHOOK_URL must be https:// outside TODO_ENV=local (notifications carry "
                            "users' task titles)");
    if ((rc = get_int(&cfg->notify_attempts, "TODO_NOTIFY_ATTEMPTS", 5, 1, 100, get, ctx, err)) != 0) return rc;
    if ((rc = get_str(cfg->notify_webhook_secret, "TODO_NOTIFY_WEBHOOK_SECRET", "", get, ctx, err)) != 0) return rc;
    if (cfg->notify_webhook_secret[0] != '\0' && strlen(cfg->notify_webhook_secret) < 32)
        return todo_err_set(err, TODO_EINVAL, "TODO_NOTIFY_WEBHOOK_SECRET must be at least 32 bytes");
    if ((rc = get_str(cfg->notify_smtp_url, "TODO_NOTIFY_SMTP_URL", "", get, ctx, err)) != 0) return rc;
    if (cfg->notify_smtp_url[0] != '\0' && strncmp(cfg->notify_smtp_url, "smtp://", 7) != 0 &&
        strncmp(cfg->notify_smtp_url, "smtps://", 8) != 0)
        return todo_err_set(err, TODO_EINVAL, "TODO_NOTIFY_SMTP_URL must be an smtp:// or smtps:// URL");
    if ((rc = get_str(cfg->notify_smtp_from, "TODO_NOTIFY_SMTP_FROM", "todo@localhost", get, ctx, err)) != 0) return rc;
    if ((rc = get_int(&cfg->notify_smtp_starttls, "TODO_NOTIFY_SMTP_STARTTLS", cfg->local ? 0 : 1, 0, 1, get, ctx, err)) != 0)
        return rc;
    if ((rc = get_str(cfg->notify_smtp_ca_file, "TODO_NOTIFY_SMTP_CA_FILE", "", get, ctx, err)) != 0) return rc;
    if (cfg->notify_smtp_ca_file[0] != '\0' && access(cfg->notify_smtp_ca_file, R_OK) != 0)
        return todo_err_set(err, TODO_EINVAL, "TODO_NOTIFY_SMTP_CA_FILE: cannot read %s", cfg->notify_smtp_ca_file);
    if (!cfg->local && strncmp(cfg->notify_smtp_url, "smtp://", 7) == 0 && cfg->notify_smtp_starttls == 0)
        return todo_err_set(err, TODO_EINVAL,
                            "TODO_NOTIFY_SMTP_URL smtp:// needs TODO_NOTIFY_SMTP_STARTTLS=1 outside TODO_ENV=local "
                            "(mail carries users' task titles), or use smtps://");
    if ((rc = get_int(&cfg->saga_step_delay_ms, "TODO_SAGA_STEP_DELAY_MS", 0, 0, 60000, get, ctx, err)) != 0)
        return rc;
    if (get("TODO_REGISTRY_WRITERS", ctx) != NULL)
        return todo_err_set(err, TODO_EINVAL,
                            "TODO_REGISTRY_WRITERS is gone: registry writers hold a token with scope registry:write "
                            "(todoctl token --service NAME --scope registry:write; docs/SECURITY.md)");

    if ((rc = get_int(&cfg->request_ttl_s, "TODO_REQUEST_TTL_S", 86400, 60, 30 * 86400, get, ctx, err)) != 0)
        return rc;

    const char *profile = get("TODO_TOPIC_PROFILE", ctx);
    if (profile == NULL) profile = cfg->local ? "dev" : "production";
    if (strcmp(profile, "dev") != 0 && strcmp(profile, "production") != 0)
        return todo_err_set(err, TODO_EINVAL, "TODO_TOPIC_PROFILE must be dev or production, got \"%s\"", profile);
    strcpy(cfg->topic_profile, profile);

    level = get("TODO_LOG_LEVEL", ctx);
    cfg->log_level = level == NULL ? LOG_INFO : log_level_parse(level);
    if (cfg->log_level < 0)
        return todo_err_set(err, TODO_EINVAL, "TODO_LOG_LEVEL must be debug, info, warn or error, got \"%s\"",
                            level);
    return TODO_OK;
}
