/*
 * todoctl: the operators' and developers' command line.
 *
 *   todoctl token --user ID [--ttl SECONDS]      print a user token (TODO_JWT_SIGNING_KEY, else HS256)
 *   todoctl migrate                             apply pending migrations
 *   todoctl topics apply [--profile P] [--fix]  create missing topics, report (and fix) drift
 *   todoctl topics list [--profile P]           the topic table
 *   todoctl add TITLE [--priority P] [--due WHEN] [--category C] [--tag T]... [--description D]
 *   todoctl list [--completed|--pending] [--priority P] [--limit N] [--all]
 *   todoctl get TASK_ID
 *   todoctl history TASK_ID                     each event of the task and what it changed
 *   todoctl done|reopen|rm|restore TASK_ID [--expect VERSION]
 *   todoctl health [command|query]
 *   todoctl health --watch command|query [SERVICE]
 *   todoctl outbox [--saga] [parked|retry POS|drop POS]   relay lag, parked events (todoctl_outbox.c)
 *   todoctl projection status [NAME] [--group G]  each projection's progress, lag per partition, last error
 *   todoctl projection rebuild [NAME]           rebuild one projection (tasks, analytics) from a replay, swap it in
 *   todoctl user erase USER [--reason TEXT]     EraseUser: destroy the user's key, purge their data (crypto-shredding)
 *   todoctl saga list|show|retry|compensate     sagas (todoctl_saga.c)
 *   todoctl registry list|show|check|register|set-mode   the schema registry (todoctl_registry.c)
 *
 * Task commands act as --user (default $TODO_USER, else "alice"), with a
 * token minted from the configured secret, or $TODO_TOKEN when set. Settings
 * come from the environment like the services' (docs/OPERATIONS.md). Exit
 * status: 0 ok, 1 the operation failed, 2 bad usage.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth.h"
#include "config.h"
#include "event.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpcx_client.h"
#include "grpcx_status.h"
#include "log.h"
#include "kafkax.h"
#include "migrate.h"
#include "pgx.h"
#include "proj_apply.h"
#include "proj_rebuild.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/query.pb-c.h"
#include "todoctl.h"
#include "topics.h"

#define TIMEOUT_MS 10000

static todo_config cfg;

static int usage(void)
{
    fputs("usage:\n"
          "  todoctl token --user ID [--ttl SECONDS]   (signed with TODO_JWT_SIGNING_KEY, else TODO_JWT_SECRET)\n"
          "  todoctl token --service NAME --scope SCOPE [--user ID] [--ttl SECONDS]   (TODO_SERVICE_SECRET; e.g. registry:write)\n"
          "  todoctl migrate\n"
          "  todoctl topics apply [--profile dev|production] [--fix] | topics list [--profile P]\n"
          "  todoctl add TITLE [--priority low|medium|high|urgent] [--due WHEN] [--category C] [--tag T]...\n"
          "                    [--description TEXT]\n"
          "      WHEN: today, tomorrow, +Nd, +Nh, YYYY-MM-DD or an RFC 3339 time (UTC)\n"
          "  todoctl list [--completed|--pending] [--priority P] [--limit N] [--all]\n"
          "  todoctl get TASK_ID\n"
          "  todoctl history TASK_ID   (each event of the task: who, when, what changed)\n"
          "  todoctl done|reopen|rm|restore TASK_ID [--expect VERSION]\n"
          "  todoctl remind TASK_ID WHEN [--channel email|push|sms|in_app[,...]]\n"
          "  todoctl reminders [--task TASK_ID] [--all]   (--all: also cancelled and fired ones)\n"
          "  todoctl health [command|query]\n"
          "  todoctl health --watch command|query [SERVICE]   (each change, until the server goes)\n"
          "  todoctl outbox [--saga] | outbox [--saga] parked | outbox [--saga] retry POSITION\n"
          "  todoctl outbox [--saga] drop POSITION [--reason TEXT]   (--saga: todo-saga's outbox)\n"
          "  todoctl projection status [NAME] [--group G]   (NAME: tasks or analytics; none: every projection)\n"
          "  todoctl projection rebuild [NAME]   (NAME: tasks (the default) or analytics, or its consumer group)\n"
          "  todoctl user erase USER [--reason TEXT]\n"
          "  todoctl saga list [--state S] [--user U] [--task T] [--limit N] | saga show ID | saga retry ID | saga compensate ID\n"
          "  todoctl saga failed [--limit N] | saga resolve ID --why TEXT [--by NAME]\n"
          "  todoctl registry list | show SUBJECT [VERSION] | check|register SUBJECT FILE [--message M] [-I DIR]\n"
          "                   | set-mode SUBJECT|--global MODE   (FILE: a descriptor set or a .proto)\n"
          "  todoctl dlq list|stats [--group G] [--reason CODE] [--type T] [--user U] [--since 2h] | dlq show ID\n"
          "  todoctl dlq redrive ID|--all [filters] [--force]\n"
          "  todoctl dlq discard ID|--all [filters] --why TEXT [--by NAME]\n"
          "  todoctl dlq decisions [--since 7d]\n"
          "task commands take --user ID (default $TODO_USER or alice) or use $TODO_TOKEN\n",
          stderr);
    return 2;
}

/* The value after flag name at argv[*i], advancing *i; NULL when missing. */
static const char *flag_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "todoctl: %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

static int parse_priority(const char *s)
{
    static const char *const names[] = {"", "low", "medium", "high", "urgent"};
    for (int i = 1; i <= 4; i++)
        if (strcasecmp(s, names[i]) == 0) return i;
    return -1;
}

/* Parses WHEN (see usage) into seconds since the epoch; -1 when invalid. */
static long long parse_due(const char *s, time_t now)
{
    struct tm tm;
    int n;
    char unit;
    memset(&tm, 0, sizeof tm);
    if (strcmp(s, "today") == 0 || strcmp(s, "tomorrow") == 0) {
        time_t day = now + (s[1] == 'o' && s[2] == 'm' ? 86400 : 0);
        gmtime_r(&day, &tm);
        tm.tm_hour = 23, tm.tm_min = 59, tm.tm_sec = 59;
        return (long long)timegm(&tm);
    }
    if (sscanf(s, "+%d%c", &n, &unit) == 2 && n >= 0 && (unit == 'd' || unit == 'h'))
        return (long long)now + (long long)n * (unit == 'd' ? 86400 : 3600);
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end != NULL && (*end == 'Z' || *end == '\0')) return (long long)timegm(&tm);
    memset(&tm, 0, sizeof tm);
    end = strptime(s, "%Y-%m-%d", &tm);
    if (end != NULL && *end == '\0') {
        tm.tm_hour = 23, tm.tm_min = 59, tm.tm_sec = 59;
        return (long long)timegm(&tm);
    }
    return -1;
}

/* A user token for user: signed with TODO_JWT_SIGNING_KEY (a stack whose
 * services verify with public keys) or else TODO_JWT_SECRET. */
static char *user_token(const char *user, long ttl, todo_err *err)
{
    auth_rules rules = AUTH_RULES_OF(&cfg);
    if (cfg.jwt_signing_key[0] != '\0')
        return auth_issue_signed(cfg.jwt_signing_key, cfg.jwt_signing_kid, user, ttl, (long)time(NULL), &rules, err);
    if (cfg.jwt_secret[0] == '\0') {
        todo_err_set(err, TODO_EINVAL, "no key to sign a user token: set TODO_TOKEN (a token from your identity "
                                       "provider), TODO_JWT_SIGNING_KEY or, on a local stack, TODO_JWT_SECRET");
        return NULL;
    }
    return auth_issue_for(cfg.jwt_secret, user, ttl, (long)time(NULL), &rules, err);
}

/* "Bearer <token>" for the acting user, malloc'ed. */
static char *authorization(const char *user)
{
    const char *env = getenv("TODO_TOKEN");
    todo_err err;
    char *tok = env != NULL && env[0] ? strdup(env) : user_token(user, 3600, &err);
    if (tok == NULL) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return NULL;
    }
    size_t n = strlen(tok) + 8;
    char *h = malloc(n);
    if (h != NULL) snprintf(h, n, "Bearer %s", tok);
    free(tok);
    return h;
}

/* Calls one RPC and prints a failure; returns 0 on OK. */
static int call(const char *addr, const char *path, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
                const char *auth, ProtobufCMessage **resp)
{
    todo_err err;
    grpcx_tls_client tls = grpcx_tls_client_of(&cfg);
    grpcx_channel *ch = grpcx_channel_open(addr, &tls, &err);
    grpcx_result res;
    if (ch == NULL) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    grpcx_unary(ch, path, req, rd, auth, TIMEOUT_MS, resp, &res);
    grpcx_channel_free(ch);
    if (res.code != GRPC_STATUS_OK) {
        fprintf(stderr, "todoctl: %s: %s\n", grpcx_code_name(res.code), res.message);
        return 1;
    }
    return 0;
}

static void print_time(const Google__Protobuf__Timestamp *ts, char *out, size_t cap)
{
    if (ts == NULL) {
        snprintf(out, cap, "-");
        return;
    }
    time_t t = (time_t)ts->seconds;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%d %H:%M", &tm);
}

static void print_task(const Todo__V1__Task *t)
{
    static const char *const prio[] = {"-", "low", "medium", "high", "urgent"};
    char due[32];
    print_time(t->due_at, due, sizeof due);
    printf("%s  %-6s  %-16s  %s  %s%s\n", t->id, prio[t->priority >= 0 && t->priority <= 4 ? t->priority : 0], due,
           t->completed ? "[x]" : "[ ]", t->title, t->overdue ? "  (overdue)" : "");
}

/* todoctl token --user U [--ttl S]: a user token (TODO_JWT_SIGNING_KEY,
 * else TODO_JWT_SECRET).
 * todoctl token --service NAME --scope SCOPE [--user U] [--ttl S]: a
 * service token (TODO_SERVICE_SECRET) acting for U (default: NAME), e.g.
 * --scope registry:write for an operator who registers schemas. */
static int cmd_token(int argc, char **argv)
{
    const char *user = NULL, *service = NULL, *scope = NULL;
    long ttl = 3600;
    todo_err err;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--user") == 0) {
            if ((user = flag_value(argc, argv, &i)) == NULL) return 2;
        } else if (strcmp(argv[i], "--service") == 0) {
            if ((service = flag_value(argc, argv, &i)) == NULL) return 2;
        } else if (strcmp(argv[i], "--scope") == 0) {
            if ((scope = flag_value(argc, argv, &i)) == NULL) return 2;
        } else if (strcmp(argv[i], "--ttl") == 0) {
            const char *v = flag_value(argc, argv, &i);
            if (v == NULL || (ttl = strtol(v, NULL, 10)) <= 0) return usage();
        } else {
            return usage();
        }
    }
    if ((service != NULL) != (scope != NULL) || (service == NULL && user == NULL)) return usage();
    if (service != NULL && cfg.service_secret[0] == '\0') {
        fprintf(stderr, "todoctl: service tokens need TODO_SERVICE_SECRET\n");
        return 2;
    }
    char *tok = service != NULL ? auth_issue_service(cfg.service_secret, service, scope, user != NULL ? user : service,
                                                     ttl, (long)time(NULL), &err)
                                : user_token(user, ttl, &err);
    if (tok == NULL) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    printf("%s\n", tok);
    free(tok);
    return 0;
}

static int cmd_migrate(void)
{
    todo_err err;
    int applied;
    if (migrate_run(cfg.admin_pg_url, cfg.migrations_dir, &applied, &err) != 0) {
        fprintf(stderr, "todoctl: migrate: %s\n", err.msg);
        return 1;
    }
    printf("migrations: %d applied now, database up to date\n", applied);
    return 0;
}

static void say_line(const char *line, void *ctx)
{
    (void)ctx;
    printf("%s\n", line);
}

static int cmd_topics(int argc, char **argv)
{
    topics_profile p;
    bool fix = false;
    const char *profile = cfg.topic_profile;
    todo_err err;
    int n;
    if (argc < 3 || (strcmp(argv[2], "list") != 0 && strcmp(argv[2], "apply") != 0)) return usage();
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--profile") == 0) {
            if ((profile = flag_value(argc, argv, &i)) == NULL) return 2;
        } else if (strcmp(argv[i], "--fix") == 0 && argv[2][0] == 'a') {
            fix = true;
        } else {
            return usage();
        }
    }
    if (topics_profile_parse(profile, &p, &err) != 0) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 2;
    }
    if (strcmp(argv[2], "list") == 0) {
        const topics_spec *t = topics_table(p, &n);
        printf("profile %s\n%-28s %10s %11s %7s  %-8s  %s\n", topics_profile_name(p), "topic", "partitions",
               "replication", "min.isr", "cleanup", "retention.ms");
        for (int i = 0; i < n; i++)
            printf("%-28s %10d %11d %7d  %-8s  %s\n", t[i].name, t[i].partitions, t[i].replication, t[i].min_isr,
                   t[i].cleanup_policy, t[i].retention_ms);
        return 0;
    }
    if (topics_apply(cfg.kafka_brokers, p, fix, 15000, say_line, NULL, &err) != 0) {
        fprintf(stderr, "todoctl: topics: %s\n", err.msg);
        return 1;
    }
    printf("topics: %s profile in place on %s\n", topics_profile_name(p), cfg.kafka_brokers);
    return 0;
}

static const char *acting_user(int argc, char **argv)
{
    for (int i = 2; i + 1 < argc; i++)
        if (strcmp(argv[i], "--user") == 0) return argv[i + 1];
    const char *u = getenv("TODO_USER");
    return u != NULL && u[0] ? u : "alice";
}

static int cmd_add(int argc, char **argv)
{
    Todo__V1__CreateTaskRequest rq = TODO__V1__CREATE_TASK_REQUEST__INIT;
    Google__Protobuf__Timestamp due = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    char *tags[32];
    ProtobufCMessage *resp = NULL;
    rq.tags = tags;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        if (a[0] != '-' || a[1] != '-') {
            if (rq.title[0] != '\0') return usage();
            rq.title = (char *)a;
            continue;
        }
        if ((v = flag_value(argc, argv, &i)) == NULL) return 2;
        if (strcmp(a, "--priority") == 0) {
            int p = parse_priority(v);
            if (p < 0) {
                fprintf(stderr, "todoctl: --priority must be low, medium, high or urgent\n");
                return 2;
            }
            rq.priority = (Todo__V1__Priority)p;
        } else if (strcmp(a, "--due") == 0) {
            long long s = parse_due(v, time(NULL));
            if (s < 0) {
                fprintf(stderr, "todoctl: --due: cannot read \"%s\"\n", v);
                return 2;
            }
            due.seconds = s;
            rq.due_at = &due;
        } else if (strcmp(a, "--category") == 0) {
            rq.category = (char *)v;
        } else if (strcmp(a, "--description") == 0) {
            rq.description = (char *)v;
        } else if (strcmp(a, "--tag") == 0) {
            if (rq.n_tags == 32) return usage();
            tags[rq.n_tags++] = (char *)v;
        } else if (strcmp(a, "--user") != 0) {
            return usage();
        }
    }
    if (rq.title[0] == '\0') return usage();
    char *auth = authorization(acting_user(argc, argv));
    if (auth == NULL) return 1;
    int rc = call(cfg.command_addr, "/todo.v1.TaskCommandService/CreateTask", &rq.base,
                  &todo__v1__command_reply__descriptor, auth, &resp);
    free(auth);
    if (rc != 0) return rc;
    Todo__V1__CommandReply *rp = (Todo__V1__CommandReply *)resp;
    printf("created %s (version %lld)\n", rp->id, (long long)rp->version);
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

/* Prints one page of a list response; returns the items printed and sets
 * *next to its next_page_token. */
typedef int (*page_printer)(const ProtobufCMessage *resp, const char **next);

/* Calls rpc of TaskQueryService page by page (req's page_token field is
 * *token_field): every page when all, else the first (saying when there is
 * more). Prints `none` when nothing was listed. */
static int paged_query(int argc, char **argv, const char *rpc, ProtobufCMessage *req, char **token_field,
                       const ProtobufCMessageDescriptor *resp_desc, bool all, page_printer print, const char *none)
{
    char path[96], *token = NULL;
    int rc = 0, shown = 0;
    char *auth = authorization(acting_user(argc, argv));
    if (auth == NULL) return 1;
    snprintf(path, sizeof path, "/todo.v1.TaskQueryService/%s", rpc);
    do {
        ProtobufCMessage *resp = NULL;
        const char *next = "";
        *token_field = token != NULL ? token : (char *)"";
        rc = call(cfg.query_addr, path, req, resp_desc, auth, &resp);
        free(token);
        token = NULL;
        if (rc != 0) break;
        shown += print(resp, &next);
        if (all && next[0] != '\0') token = strdup(next);
        else if (next[0] != '\0') printf("(more: use --all or --limit)\n");
        protobuf_c_message_free_unpacked(resp, NULL);
    } while (token != NULL);
    free(auth);
    if (rc == 0 && shown == 0) printf("%s\n", none);
    return rc;
}

static int print_tasks(const ProtobufCMessage *resp, const char **next)
{
    const Todo__V1__ListTasksResponse *rs = (const Todo__V1__ListTasksResponse *)resp;
    for (size_t i = 0; i < rs->n_tasks; i++) print_task(rs->tasks[i]);
    *next = rs->next_page_token;
    return (int)rs->n_tasks;
}

static int cmd_list(int argc, char **argv)
{
    Todo__V1__ListTasksRequest rq = TODO__V1__LIST_TASKS_REQUEST__INIT;
    Google__Protobuf__BoolValue completed = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
    bool all = false;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        if (strcmp(a, "--completed") == 0 || strcmp(a, "--pending") == 0) {
            completed.value = a[2] == 'c';
            rq.completed = &completed;
        } else if (strcmp(a, "--all") == 0) {
            all = true;
        } else if (strcmp(a, "--priority") == 0 || strcmp(a, "--limit") == 0 || strcmp(a, "--user") == 0) {
            if ((v = flag_value(argc, argv, &i)) == NULL) return 2;
            if (a[2] == 'p' && (rq.priority = (Todo__V1__Priority)parse_priority(v)) < 0) return usage();
            if (a[2] == 'l') rq.page_size = atoi(v);
        } else {
            return usage();
        }
    }
    return paged_query(argc, argv, "ListTasks", &rq.base, &rq.page_token, &todo__v1__list_tasks_response__descriptor,
                       all, print_tasks, "no tasks");
}

static int cmd_remind(int argc, char **argv)
{
    static const char *const channels[] = {"", "email", "push", "sms", "in_app"};
    Todo__V1__ScheduleReminderRequest rq = TODO__V1__SCHEDULE_REMINDER_REQUEST__INIT;
    Google__Protobuf__Timestamp at = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ProtobufCMessage *resp = NULL;
    if (argc < 4) return usage();
    rq.task_id = argv[2];
    long long when = parse_due(argv[3], time(NULL));
    if (when < 0) {
        fprintf(stderr, "todoctl: remind: cannot read the time \"%s\"\n", argv[3]);
        return 2;
    }
    at.seconds = when;
    rq.remind_at = &at;
    Todo__V1__ReminderChannel chosen[4];
    rq.channel = TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_PUSH;
    for (int i = 4; i < argc; i++) {
        const char *v;
        if (strcmp(argv[i], "--channel") == 0) { /* one, or several: email,push */
            if ((v = flag_value(argc, argv, &i)) == NULL) return 2;
            rq.channel = TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_UNSPECIFIED;
            rq.n_channels = 0;
            rq.channels = chosen;
            while (*v != '\0') {
                size_t len = strcspn(v, ",");
                int found = 0;
                for (int c = 1; c <= 4; c++)
                    if (strlen(channels[c]) == len && strncasecmp(v, channels[c], len) == 0) found = c;
                if (found == 0 || rq.n_channels == 4) {
                    fprintf(stderr, "todoctl: --channel must be email, push, sms or in_app, or a list of them (email,push)\n");
                    return 2;
                }
                chosen[rq.n_channels++] = (Todo__V1__ReminderChannel)found;
                v += len + (v[len] == ',');
            }
            if (rq.n_channels == 0) {
                fprintf(stderr, "todoctl: --channel must be email, push, sms or in_app\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--user") == 0) {
            if (flag_value(argc, argv, &i) == NULL) return 2;
        } else {
            return usage();
        }
    }
    char *auth = authorization(acting_user(argc, argv));
    if (auth == NULL) return 1;
    int rc = call(cfg.command_addr, "/todo.v1.TaskCommandService/ScheduleReminder", &rq.base,
                  &todo__v1__command_reply__descriptor, auth, &resp);
    free(auth);
    if (rc != 0) return rc;
    printf("reminder %s scheduled\n", ((Todo__V1__CommandReply *)resp)->id);
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

static int print_reminders(const ProtobufCMessage *resp, const char **next)
{
    static const char *const channels[] = {"-", "email", "push", "sms", "in_app"};
    static const char *const statuses[] = {"-", "scheduled", "cancelled", "fired"};
    const Todo__V1__ListRemindersResponse *rs = (const Todo__V1__ListRemindersResponse *)resp;
    for (size_t i = 0; i < rs->n_reminders; i++) {
        const Todo__V1__Reminder *m = rs->reminders[i];
        char at[32];
        print_time(m->remind_at, at, sizeof at);
        printf("%s  %s UTC  %-5s %-9s task %s\n", m->id, at, channels[(unsigned)m->channel % 5],
               statuses[(unsigned)m->status % 4], m->task_id);
    }
    *next = rs->next_page_token;
    return (int)rs->n_reminders;
}

static int cmd_reminders(int argc, char **argv)
{
    Todo__V1__ListRemindersRequest rq = TODO__V1__LIST_REMINDERS_REQUEST__INIT;
    for (int i = 2; i < argc; i++) {
        const char *v;
        if (strcmp(argv[i], "--all") == 0) {
            rq.include_inactive = true;
        } else if (strcmp(argv[i], "--task") == 0 || strcmp(argv[i], "--user") == 0) {
            if ((v = flag_value(argc, argv, &i)) == NULL) return 2;
            if (argv[i - 1][2] == 't') rq.task_id = (char *)v;
        } else {
            return usage();
        }
    }
    return paged_query(argc, argv, "ListReminders", &rq.base, &rq.page_token,
                       &todo__v1__list_reminders_response__descriptor, true, print_reminders, "no reminders");
}

static int cmd_get(int argc, char **argv)
{
    Todo__V1__GetTaskRequest rq = TODO__V1__GET_TASK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    if (argc < 3) return usage();
    rq.task_id = argv[2];
    char *auth = authorization(acting_user(argc, argv));
    if (auth == NULL) return 1;
    int rc = call(cfg.query_addr, "/todo.v1.TaskQueryService/GetTask", &rq.base, &todo__v1__task__descriptor, auth, &resp);
    free(auth);
    if (rc != 0) return rc;
    Todo__V1__Task *t = (Todo__V1__Task *)resp;
    char created[32];
    print_task(t);
    print_time(t->created_at, created, sizeof created);
    printf("  created %s UTC, version %lld, category \"%s\", %zu tag(s)\n", created, (long long)t->version, t->category,
           t->n_tags);
    if (t->description[0]) printf("  %s\n", t->description);
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

/* history: the task's events, oldest first, each with what it changed. */
static int cmd_history(int argc, char **argv)
{
    Todo__V1__GetTaskHistoryRequest rq = TODO__V1__GET_TASK_HISTORY_REQUEST__INIT;
    if (argc < 3 || argv[2][0] == '-') return usage();
    rq.task_id = argv[2];
    rq.page_size = 100;
    char *auth = authorization(acting_user(argc, argv));
    if (auth == NULL) return 1;
    char token[32] = "";
    int rc = 0;
    do {
        ProtobufCMessage *resp = NULL;
        rq.page_token = token;
        if ((rc = call(cfg.query_addr, "/todo.v1.TaskQueryService/GetTaskHistory", &rq.base,
                       &todo__v1__task_history__descriptor, auth, &resp)) != 0)
            break;
        Todo__V1__TaskHistory *h = (Todo__V1__TaskHistory *)resp;
        for (size_t i = 0; i < h->n_changes; i++) {
            const Todo__V1__TaskChange *ch = h->changes[i];
            char at[32];
            print_time(ch->time, at, sizeof at);
            printf("v%-3lld %s UTC  %-16s by %s\n", (long long)ch->version, at, ch->event_type,
                   ch->actor[0] ? ch->actor : "(not recorded)");
            for (size_t f = 0; f < ch->n_fields; f++)
                printf("      %-12s \"%s\" -> \"%s\"\n", ch->fields[f]->field, ch->fields[f]->old_value,
                       ch->fields[f]->new_value);
        }
        snprintf(token, sizeof token, "%s", h->next_page_token);
        protobuf_c_message_free_unpacked(resp, NULL);
    } while (token[0] != '\0');
    free(auth);
    return rc;
}

/* done, reopen, rm, restore: the commands that take a task id only. */
static int cmd_simple(int argc, char **argv, const char *rpc)
{
    Todo__V1__CompleteTaskRequest rq = TODO__V1__COMPLETE_TASK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    char path[96];
    if (argc < 3 || argv[2][0] == '-') return usage();
    rq.task_id = argv[2];
    for (int i = 3; i < argc; i++) {
        const char *v;
        if (strcmp(argv[i], "--expect") == 0) {
            if ((v = flag_value(argc, argv, &i)) == NULL) return 2;
            rq.expected_version = strtoll(v, NULL, 10);
        } else if (strcmp(argv[i], "--user") == 0) {
            if (flag_value(argc, argv, &i) == NULL) return 2;
        } else {
            return usage();
        }
    }
    char *auth = authorization(acting_user(argc, argv));
    if (auth == NULL) return 1;
    snprintf(path, sizeof path, "/todo.v1.TaskCommandService/%s", rpc);
    int rc = call(cfg.command_addr, path, &rq.base, &todo__v1__command_reply__descriptor, auth, &resp);
    free(auth);
    if (rc != 0) return rc;
    Todo__V1__CommandReply *rp = (Todo__V1__CommandReply *)resp;
    printf("%s: %s is now at version %lld\n", rpc, rp->id, (long long)rp->version);
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

/* todoctl user erase USER [--reason TEXT]: EraseUser with a service token
 * of scope users:erase (TODO_SERVICE_SECRET). */
static int cmd_user(int argc, char **argv)
{
    Todo__V1__EraseUserRequest rq = TODO__V1__ERASE_USER_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    todo_err err;
    if (argc < 4 || strcmp(argv[2], "erase") != 0 || argv[3][0] == '-') return usage();
    rq.user_id = argv[3];
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--reason") == 0) {
            if ((rq.reason = (char *)flag_value(argc, argv, &i)) == NULL) return 2;
        } else {
            return usage();
        }
    }
    if (cfg.service_secret[0] == '\0') {
        fprintf(stderr, "todoctl: user erase needs TODO_SERVICE_SECRET (a service token with scope %s)\n",
                AUTH_SCOPE_USERS_ERASE);
        return 2;
    }
    char *tok = auth_issue_service(cfg.service_secret, "todoctl", AUTH_SCOPE_USERS_ERASE, rq.user_id, 300,
                                   (long)time(NULL), &err);
    if (tok == NULL) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    char auth[1200];
    snprintf(auth, sizeof auth, "Bearer %s", tok);
    free(tok);
    int rc = call(cfg.command_addr, "/todo.v1.TaskCommandService/EraseUser", &rq.base,
                  &todo__v1__command_reply__descriptor, auth, &resp);
    if (rc != 0) return rc;
    Todo__V1__CommandReply *rp = (Todo__V1__CommandReply *)resp;
    printf("user %s erased (user aggregate %s at version %lld): their data key is destroyed; the projections delete"
           " their rows as they apply user.erased\n",
           rq.user_id, rp->id, (long long)rp->version);
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

static int is_interrupted(void *ctx)
{
    (void)ctx;
    return interrupted;
}

static void show_progress(const proj_rebuild_progress *p, void *ctx)
{
    (void)ctx;
    double eta = p->rate > 0 ? (double)p->remaining / p->rate : 0;
    printf("rebuild: %s%s: %lld records, %.0f records/s, %lld left (~%.0f s)\n", p->resumed ? "(resumed) " : "",
           p->phase, (long long)p->applied, p->rate, (long long)p->remaining, eta);
    fflush(stdout);
}

/* The projection NAME names (a definition's name or its live group), or
 * NULL after saying which there are. */
static const proj_def *find_projection(const char *name)
{
    const proj_def *d = proj_def_find(name, &cfg);
    if (d != NULL) return d;
    fprintf(stderr, "todoctl: no projection named \"%s\"; there are:", name);
    for (int i = 0; i < PROJ_N_DEFS; i++)
        fprintf(stderr, " %s (group %s)", proj_defs[i]->name, proj_def_group(proj_defs[i], &cfg));
    fprintf(stderr, "\n");
    return NULL;
}

static int cmd_rebuild(int argc, char **argv)
{
    todo_err err;
    const proj_def *d = find_projection(argc >= 4 ? argv[3] : proj_tasks.name);
    if (d == NULL) return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    proj_rebuild_opts o = {.cfg = &cfg, .def = d, .projection = proj_def_group(d, &cfg), .progress = show_progress,
                           .interrupted = is_interrupted};
    if (proj_rebuild(&o, &err) != 0) {
        fprintf(stderr, "todoctl: rebuild: %s\n", err.msg);
        return 1;
    }
    printf("rebuild: done; the new %s model is live\n", d->name);
    return 0;
}

/* Prints the status of projection d as consumer group group. */
static int projection_status(PGconn *pg, const proj_def *d, const char *group)
{
    todo_err err;
    char sql[512];
    const char *p[1] = {group};
    snprintf(sql, sizeof sql,
             "select batches, events, applied, dead, coalesce(to_char(last_batch_at, 'YYYY-MM-DD HH24:MI:SS'), '-'),"
             " coalesce(last_error, '-'), coalesce(to_char(last_error_at, 'YYYY-MM-DD HH24:MI:SS'), '')"
             " from %s.projection_status where projection = $1",
             d->schema);
    PGresult *r = pgx_exec(pg, sql, 1, p, &err);
    if (r == NULL) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    printf("projection %s (group %s, schema %s)\n", d->name, group, d->schema);
    if (PQntuples(r) == 0) {
        printf("  no batch applied yet\n");
    } else {
        printf("  batches %s, events %s (applied %s, dead-lettered %s), last batch %s UTC\n", PQgetvalue(r, 0, 0),
               PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4));
        printf("  last error: %s %s\n", PQgetvalue(r, 0, 5), PQgetvalue(r, 0, 6));
    }
    PQclear(r);
    /* The last rebuild's replay: its group's counters, kept by the swap. */
    snprintf(sql, sizeof sql,
             "select projection, events, to_char(last_batch_at, 'YYYY-MM-DD HH24:MI:SS') from %s.projection_status"
             " where starts_with(projection, $1 || '-rebuild-') order by last_batch_at desc nulls last limit 1",
             d->schema);
    r = pgx_exec(pg, sql, 1, p, &err);
    if (r != NULL && PQntuples(r) == 1)
        printf("  last rebuild: %s events replayed by %s, last batch %s UTC\n", PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 0),
               PQgetvalue(r, 0, 2));
    PQclear(r);
    long long total = 0;
    double oldest = 0;
    printf("  %-20s %-10s %12s %12s %10s %12s\n", "topic", "partition", "committed", "end", "lag", "oldest (s)");
    for (int t = 0; t < d->n_topics; t++) {
        kafkax_lag lag[64];
        int n;
        if (kafkax_group_lag(cfg.kafka_brokers, group, d->topics[t], lag, 64, &n, &err) != 0) {
            fprintf(stderr, "todoctl: %s\n", err.msg);
            return 1;
        }
        for (int i = 0; i < n; i++) {
            printf("  %-20s %-10d %12lld %12lld %10lld %12.1f\n", d->topics[t], lag[i].partition,
                   (long long)lag[i].committed, (long long)lag[i].end, (long long)lag[i].lag, lag[i].oldest_age_s);
            total += lag[i].lag;
            if (lag[i].oldest_age_s > oldest) oldest = lag[i].oldest_age_s;
        }
    }
    printf("  behind by %lld events, oldest unapplied %.1f s\n", total, oldest);
    return 0;
}

static int cmd_projection(int argc, char **argv)
{
    const char *group = NULL, *name = NULL;
    todo_err err;
    if (argc >= 3 && strcmp(argv[2], "rebuild") == 0) return cmd_rebuild(argc, argv);
    if (argc < 3 || strcmp(argv[2], "status") != 0) return usage();
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--group") == 0) {
            if ((group = flag_value(argc, argv, &i)) == NULL) return 2;
        } else if (argv[i][0] != '-' && name == NULL) {
            name = argv[i];
        } else {
            return usage();
        }
    }
    /* NAME: that projection; --group G: G's progress, in the schema of the
     * projection whose group it is (the task model's when none: a rebuild's
     * or an older group); neither: every projection. */
    const proj_def *one = NULL;
    if (name != NULL && (one = find_projection(name)) == NULL) return 2;
    for (int i = 0; one == NULL && group != NULL && i < PROJ_N_DEFS; i++) { /* its group, or a rebuild's */
        const char *g = proj_def_group(proj_defs[i], &cfg);
        if (strcmp(group, g) == 0 || (strncmp(group, g, strlen(g)) == 0 && strncmp(group + strlen(g), "-rebuild-", 9) == 0))
            one = proj_defs[i];
    }
    if (one == NULL && group != NULL) one = &proj_tasks;
    PGconn *pg = pgx_connect(cfg.admin_pg_url, "todoctl", &err);
    if (pg == NULL) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < PROJ_N_DEFS && rc == 0; i++) {
        const proj_def *d = one != NULL ? one : proj_defs[i];
        rc = projection_status(pg, d, group != NULL ? group : proj_def_group(d, &cfg));
        if (one != NULL) break;
    }
    pgx_close(pg);
    return rc;
}

/* The Health/Check answer of server addr for service ("" the server):
 * 1 serving, 0 not, -1 no answer (said on stderr). */
static int health_of(const char *addr, const char *service)
{
    Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rq.service = (char *)service;
    if (call(addr, "/grpc.health.v1.Health/Check", &rq.base, &grpc__health__v1__health_check_response__descriptor,
             NULL, &resp) != 0)
        return -1;
    int up = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status ==
             GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    protobuf_c_message_free_unpacked(resp, NULL);
    return up;
}

/* todoctl health [command|query]: each server and what it depends on
 * (postgresql; kafka for the command side's outbox); exit 1 when anything
 * is down, naming it. */
/* todoctl health --watch command|query [SERVICE]: one line per status the
 * server sends (Health/Watch) until it ends the stream; exit 0 when the
 * server ended it by shutting down, 1 when it could not be watched. */
static int health_watch(const char *name, const char *addr, const char *service)
{
    static const char *const names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
    Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    grpcx_result res;
    todo_err err;
    grpcx_tls_client tls = grpcx_tls_client_of(&cfg);
    grpcx_channel *ch = grpcx_channel_open(addr, &tls, &err);
    if (ch == NULL) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 1;
    }
    rq.service = (char *)service;
    grpcx_stream *st = grpcx_stream_open(ch, "/grpc.health.v1.Health/Watch", &rq.base, NULL, 0, &res);
    ProtobufCMessage *m = NULL;
    int seen = 0;
    while (st != NULL && grpcx_stream_next(st, &grpc__health__v1__health_check_response__descriptor, -1, &m, &res) > 0) {
        unsigned status = (unsigned)((Grpc__Health__V1__HealthCheckResponse *)m)->status;
        protobuf_c_message_free_unpacked(m, NULL);
        seen++;
        char when[32];
        time_t now = time(NULL);
        struct tm tm;
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
        printf("%s %-8s %s%s%s\n", when, name, service[0] ? service : "", service[0] ? " " : "",
               status < 4 ? names[status] : "UNKNOWN");
        fflush(stdout);
    }
    grpcx_stream_close(st);
    grpcx_channel_free(ch);
    fprintf(stderr, "todoctl: the stream ended: %s: %s\n", grpcx_code_name(res.code), res.message);
    return seen > 0 && res.code == GRPC_STATUS_UNAVAILABLE ? 0 : 1;
}

static int cmd_health(int argc, char **argv)
{
    int rc = 0;
    if (argc >= 3 && strcmp(argv[2], "--watch") == 0) {
        if (argc < 4 || (strcmp(argv[3], "command") != 0 && strcmp(argv[3], "query") != 0)) return usage();
        bool command = strcmp(argv[3], "command") == 0;
        return health_watch(argv[3], command ? cfg.command_addr : cfg.query_addr, argc >= 5 ? argv[4] : "");
    }
    for (int which = 0; which < 2; which++) {
        const char *name = which == 0 ? "command" : "query";
        if (argc >= 3 && strcmp(argv[2], name) != 0) continue;
        const char *addr = which == 0 ? cfg.command_addr : cfg.query_addr;
        int up = health_of(addr, "");
        if (up < 0) {
            rc = 1;
            continue;
        }
        printf("%-8s %-22s %s", name, addr, up ? "SERVING" : "NOT_SERVING");
        const char *parts[] = {"postgresql", which == 0 ? "kafka" : NULL};
        for (int i = 0; i < 2 && parts[i] != NULL; i++) {
            int p = health_of(addr, parts[i]);
            printf("   %s %s", parts[i], p > 0 ? "up" : p == 0 ? "DOWN" : "unknown");
            if (p <= 0) rc = 1;
        }
        printf("\n");
        if (!up) rc = 1;
    }
    return rc;
}

int main(int argc, char **argv)
{
    todo_err err;
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) return usage();
    if (config_load(&cfg, CONFIG_CLI, NULL, NULL, &err) != 0) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 2;
    }
    if (kafkax_set_security(cfg.kafka_config, &err) != 0) {
        fprintf(stderr, "todoctl: %s\n", err.msg);
        return 2;
    }
    log_set_level(cfg.log_level);
    const char *c = argv[1];
    if (strcmp(c, "token") == 0) return cmd_token(argc, argv);
    if (strcmp(c, "migrate") == 0) return cmd_migrate();
    if (strcmp(c, "topics") == 0) return cmd_topics(argc, argv);
    if (strcmp(c, "add") == 0) return cmd_add(argc, argv);
    if (strcmp(c, "list") == 0) return cmd_list(argc, argv);
    if (strcmp(c, "get") == 0) return cmd_get(argc, argv);
    if (strcmp(c, "history") == 0) return cmd_history(argc, argv);
    if (strcmp(c, "remind") == 0) return cmd_remind(argc, argv);
    if (strcmp(c, "reminders") == 0) return cmd_reminders(argc, argv);
    if (strcmp(c, "health") == 0) return cmd_health(argc, argv);
    if (strcmp(c, "outbox") == 0) {
        int rc = todoctl_outbox(&cfg, argc, argv);
        return rc == 2 ? usage() : rc;
    }
    if (strcmp(c, "projection") == 0) return cmd_projection(argc, argv);
    if (strcmp(c, "user") == 0) return cmd_user(argc, argv);
    if (strcmp(c, "registry") == 0) {
        int rc = todoctl_registry(&cfg, argc, argv);
        return rc == 2 ? usage() : rc;
    }
    if (strcmp(c, "saga") == 0) {
        int rc = todoctl_saga(&cfg, argc, argv);
        return rc == 2 ? usage() : rc;
    }
    if (strcmp(c, "dlq") == 0) {
        int rc = todoctl_dlq(&cfg, argc, argv);
        return rc == 2 ? usage() : rc;
    }
    if (strcmp(c, "done") == 0) return cmd_simple(argc, argv, "CompleteTask");
    if (strcmp(c, "reopen") == 0) return cmd_simple(argc, argv, "ReopenTask");
    if (strcmp(c, "rm") == 0) return cmd_simple(argc, argv, "DeleteTask");
    if (strcmp(c, "restore") == 0) return cmd_simple(argc, argv, "RestoreTask");
    fprintf(stderr, "todoctl: unknown command \"%s\"\n", c);
    return usage();
}
