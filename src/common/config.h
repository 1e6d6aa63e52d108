/*
 * config: every setting of every process, read once at start-up from the
 * environment, validated, and passed down as an immutable struct. A bad value
 * stops start-up with a message naming the variable. docs/OPERATIONS.md lists
 * the variables and their defaults.
 */
#ifndef TODO_CONFIG_H
#define TODO_CONFIG_H

#include "todo_err.h"

#include <stdbool.h>

#include "ctoken.h"

#define CONFIG_STR_MAX 512

typedef struct todo_config {
    bool local;                           /* TODO_ENV=local; production when unset or "production" */
    char pg_url[CONFIG_STR_MAX];          /* the process's own role: TODO_<SERVICE>_PG_URL or TODO_PG_URL */
    char admin_pg_url[CONFIG_STR_MAX];    /* TODO_PG_URL: migrations */
    char kafka_brokers[CONFIG_STR_MAX];   /* TODO_KAFKA_BROKERS */
    char kafka_config[2048];              /* TODO_KAFKA_CONFIG: "key=value;..." security settings of every Kafka client (kafkax_set_security) */
    char instance[CONFIG_STR_MAX];                  /* TODO_INSTANCE: this instance's name among its service's (static Kafka group membership; default none) */
    char redis_url[CONFIG_STR_MAX];       /* TODO_REDIS_URL */
    char command_addr[CONFIG_STR_MAX];    /* TODO_COMMAND_ADDR: where todo-command listens */
    char query_addr[CONFIG_STR_MAX];      /* TODO_QUERY_ADDR */
    char metrics_addr[CONFIG_STR_MAX];    /* TODO_<SERVICE>_METRICS_ADDR: the Prometheus endpoint ("": none) */
    /* gRPC over TLS (docs/SECURITY.md). Servers: their certificate and key,
     * and a client CA that makes TLS mutual. Clients: the CA of the
     * servers' certificates (set: TLS), their own certificate and key (for
     * mutual TLS), the name the servers' certificates carry when it is not
     * the host of the address. PEM file paths; "" unset. */
    char grpc_tls_cert[CONFIG_STR_MAX];        /* TODO_GRPC_TLS_CERT */
    char grpc_tls_key[CONFIG_STR_MAX];         /* TODO_GRPC_TLS_KEY */
    char grpc_tls_client_ca[CONFIG_STR_MAX];   /* TODO_GRPC_TLS_CLIENT_CA */
    char grpc_tls_ca[CONFIG_STR_MAX];          /* TODO_GRPC_TLS_CA */
    char grpc_tls_client_cert[CONFIG_STR_MAX]; /* TODO_GRPC_TLS_CLIENT_CERT */
    char grpc_tls_client_key[CONFIG_STR_MAX];  /* TODO_GRPC_TLS_CLIENT_KEY */
    char grpc_tls_server_name[CONFIG_STR_MAX]; /* TODO_GRPC_TLS_SERVER_NAME */
    char jwt_secret[CONFIG_STR_MAX];      /* TODO_JWT_SECRET: HS256 user tokens ("" none) */
    bool jwt_secret_is_default;           /* the built-in local secret is in use */
    char jwt_public_keys[CONFIG_STR_MAX]; /* TODO_JWT_PUBLIC_KEYS: PEM or JWKS file verifying RS256/ES256 user tokens */
    struct auth_keys *jwt_keys;           /* those keys once loaded (auth_keys_load, by the service's main); NULL none */
    char jwt_signing_key[CONFIG_STR_MAX]; /* TODO_JWT_SIGNING_KEY: todoctl signs user tokens with this PEM private key */
    char jwt_signing_kid[CONFIG_STR_MAX]; /* TODO_JWT_SIGNING_KID: their kid ("" none) */
    char jwt_issuer[CONFIG_STR_MAX];      /* TODO_JWT_ISSUER: user tokens' iss must be it ("" any) */
    char jwt_audience[CONFIG_STR_MAX];    /* TODO_JWT_AUDIENCE: user tokens' aud must name it ("" any) */
    int jwt_max_lifetime_s;               /* TODO_JWT_MAX_LIFETIME_S: exp - iat at most (86400; 0: no limit) */
    int jwt_leeway_s;                     /* TODO_JWT_LEEWAY_S: clock skew on exp, nbf, iat (30) */
    int query_batch;                      /* TODO_QUERY_BATCH: GetTask lookups per statement (32; 1: alone) */
    int query_pumps;                      /* TODO_QUERY_PUMPS: threads answering GetTask and first pages (1; 0: the workers) */
    int query_read_threads;               /* TODO_QUERY_READ_THREADS: threads running the reads that wait (6; 0: the workers) */
    int token_cache;                      /* TODO_TOKEN_CACHE: verified tokens kept per worker thread (256; 0 off) */
    char service_secret[CONFIG_STR_MAX];  /* TODO_SERVICE_SECRET: service tokens (todo-saga signs, todo-command verifies); "" none */
    char master_key[65];                  /* TODO_MASTER_KEY: 64 hex digits, wraps the users' data keys (seal.h); "" none */
    ctoken_key token_key;                 /* consistency tokens' MAC key, from TODO_CONSISTENCY_SECRET (ctoken.h) */
    int token_wait_ms;                    /* TODO_QUERY_TOKEN_WAIT_MS: longest a query waits for its token (3000) */
    int watch_keepalive_ms;               /* TODO_WATCH_KEEPALIVE_MS: a WatchUpdates stream hears this often at least (15000) */
    int watch_max_streams;                /* TODO_WATCH_MAX_STREAMS: open WatchUpdates streams per todo-query (1000) */
    int watch_stall_ms;                   /* TODO_WATCH_STALL_MS: a stream whose client reads nothing this long while behind is ended (30000) */
    int feed_retention_hours;             /* TODO_FEED_RETENTION_HOURS: the update feed keeps this much (168) */
    int grpc_threads;                     /* TODO_GRPC_THREADS, 1..64 */
    int max_message_bytes;                /* TODO_GRPC_MAX_MESSAGE_BYTES, 1 KiB..64 MiB (320 KiB) */
    int call_memory_bytes;                /* TODO_GRPC_CALL_MEMORY_BYTES: decoding one request, 64 KiB..1 GiB (8 MiB) */
    int shutdown_grace_ms;                /* TODO_SHUTDOWN_GRACE_MS */
    int grpc_max_streams;                 /* TODO_GRPC_MAX_STREAMS: concurrent calls per connection (100) */
    int grpc_max_connection_idle_ms;      /* TODO_GRPC_MAX_CONNECTION_IDLE_MS (600000; 0: never) */
    int grpc_max_connection_age_ms;       /* TODO_GRPC_MAX_CONNECTION_AGE_MS (1800000; 0: never) */
    int grpc_max_connection_age_grace_ms; /* TODO_GRPC_MAX_CONNECTION_AGE_GRACE_MS (30000) */
    int grpc_keepalive_ms;                /* TODO_GRPC_KEEPALIVE_MS (60000) */
    int grpc_keepalive_timeout_ms;        /* TODO_GRPC_KEEPALIVE_TIMEOUT_MS (20000) */
    int grpc_memory_mb;                   /* TODO_GRPC_MEMORY_MB: memory of all connections (1024; 0: no limit) */
    int relay_batch;                      /* TODO_RELAY_BATCH, 1..10000 */
    int event_max_bytes;                  /* TODO_EVENT_MAX_BYTES: largest event a command writes or the relay sends (64 KiB) */
    int relay_poll_ms;                    /* TODO_RELAY_POLL_MS: fallback poll when no NOTIFY arrives */
    int group_committers;                 /* TODO_GROUP_COMMITTERS: group-commit groups of todo-command (batches written at once), 0..16 (0: off) */
    int projector_threads;                /* TODO_PROJECTOR_THREADS: consume-apply loops of todo-projector, 1..8 */
    int rebuild_threads;                  /* TODO_REBUILD_THREADS: replaying loops of a rebuild, 1..8 */
    int group_commit_max;                 /* TODO_GROUP_COMMIT_MAX: saves per group transaction, 1..1000 */
    int group_lock_timeout_ms;            /* TODO_GROUP_LOCK_TIMEOUT_MS: a save waits this long for a lock inside a group transaction (50) */
    int projector_batch;                  /* TODO_PROJECTOR_BATCH, 1..10000 */
    int consumer_max_attempts;           /* TODO_CONSUMER_MAX_ATTEMPTS: tries of a record that fails alone, every consumer (5) */
    int request_ttl_s;                    /* TODO_REQUEST_TTL_S: how long a handled request_id is remembered */
    char topic_profile[16];               /* TODO_TOPIC_PROFILE: dev (default when local) or production */
    char zoneinfo_dir[CONFIG_STR_MAX];    /* TODO_ZONEINFO_DIR: the tz database (default /usr/share/zoneinfo) */
    char projector_group[CONFIG_STR_MAX];  /* TODO_PROJECTOR_GROUP: consumer group (a new one replays the topic) */
    int log_level;                        /* TODO_LOG_LEVEL: debug, info, warn, error */
    char migrations_dir[CONFIG_STR_MAX];  /* TODO_MIGRATIONS_DIR */
    char saga_instance[CONFIG_STR_MAX];             /* TODO_SAGA_INSTANCE: this todo-saga's name (default TODO_INSTANCE, else host-pid) */
    int saga_lease_s;
    int saga_workers;                     /* TODO_SAGA_WORKERS: sagas driven at once, 1..64 */                     /* TODO_SAGA_LEASE_S: how long a saga stays with an instance that went silent */
    int scheduler_parallel;               /* TODO_SCHEDULER_PARALLEL: reminders fired at once, 1..64 */
    int scheduler_poll_ms;                /* TODO_SCHEDULER_POLL_MS: how often due reminders are looked for */
    char notify_webhook_url[CONFIG_STR_MAX]; /* TODO_NOTIFY_WEBHOOK_URL: where notifications are POSTed ("": log them) */
    int notify_attempts;                  /* TODO_NOTIFY_ATTEMPTS: deliveries tried per notification */
    char notify_webhook_secret[CONFIG_STR_MAX]; /* TODO_NOTIFY_WEBHOOK_SECRET: HMAC-SHA256 key of webhook signatures ("": unsigned) */
    char notify_smtp_url[CONFIG_STR_MAX]; /* TODO_NOTIFY_SMTP_URL: smtp:// or smtps:// server of the EMAIL channel ("": none) */
    char notify_smtp_from[CONFIG_STR_MAX]; /* TODO_NOTIFY_SMTP_FROM: the sender address */
    int notify_smtp_starttls;             /* TODO_NOTIFY_SMTP_STARTTLS: 1 = require STARTTLS on smtp:// */
    char notify_smtp_ca_file[CONFIG_STR_MAX]; /* TODO_NOTIFY_SMTP_CA_FILE: CAs the SMTP server's certificate is checked against ("": the system's) */
    int saga_step_delay_ms;               /* TODO_SAGA_STEP_DELAY_MS: a pause before every saga step (tests, demos) */
} todo_config;

/* Which process reads the config: picks the PostgreSQL role variable. */
typedef enum config_service {
    CONFIG_COMMAND, CONFIG_QUERY, CONFIG_PROJECTOR, CONFIG_SAGA, CONFIG_CLI
} config_service;

/* A source of settings: returns the value of name or NULL when unset. */
typedef const char *(*config_getter)(const char *name, void *ctx);

/* The development JWT secret, accepted only when TODO_ENV=local. */
#define CONFIG_DEV_JWT_SECRET "todo-local-development-secret-do-not-use-in-production"
/* The development service secret (todo-saga's service tokens), the same way. */
#define CONFIG_DEV_SERVICE_SECRET "todo-local-development-service-secret-do-not-use-in-production"
/* The local stack's published master key (TODO_ENV=local, loopback only). */
#define CONFIG_DEV_MASTER_KEY "746f646f2d6c6f63616c2d6d61737465722d6b65792d6e6f742d736563726574"
/* The development consistency-token secret (todo-command and todo-query), the same way. */
#define CONFIG_DEV_CONSISTENCY_SECRET "todo-local-development-consistency-secret-do-not-use-in-production"

/* True when addr ("host:port") listens on or points to a loopback address
 * only (127.0.0.0/8, [::1], localhost). */
bool config_addr_is_loopback(const char *addr);

/* The cores online, 1..64: todo-query's default worker count. */
int config_cores(void);

/* Fills cfg from get (getenv when NULL). Returns TODO_OK or TODO_EINVAL with
 * the variable named in err. */
int config_load(todo_config *cfg, config_service svc, config_getter get, void *ctx, todo_err *err);

#endif
