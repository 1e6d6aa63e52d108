/* seed_requests: see seed_requests.h. */
#include "seed_requests.h"

#include <string.h>

#include "ctoken.h"
#include "event.h"
#include "fuzz_common.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "qry_page.h"
#include "qry_search.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/query.pb-c.h"
#include "todo/v1/registry.pb-c.h"

#define DUE_US (1893488400LL * 1000000)    /* 2030-01-01T09:00:00Z */
#define REMIND_US (1893484800LL * 1000000) /* an hour before */

typedef struct seeds {
    arena *a;
    seed_request *out;
    size_t cap, n;
} seeds;

static void add(seeds *s, void *msg, const char *suffix)
{
    if (s->n < s->cap) s->out[s->n++] = (seed_request){(ProtobufCMessage *)msg, suffix};
}

static void *dup_init(arena *a, const void *init, size_t size)
{
    void *p = arena_alloc(a, size);
    memcpy(p, init, size);
    return p;
}

/* A T in the arena, initialised with its INIT macro. */
#define NEW(s, T, INIT) ((T *)dup_init((s)->a, &(T)INIT, sizeof(T)))

/* The token a command reply gives FUZZ_USER for version 3 of aggregate. */
static char *consistency_token(seeds *s, const char *aggregate)
{
    ctoken_key key;
    char *t = arena_alloc(s->a, CTOKEN_MAX);
    ctoken_key_derive(FUZZ_SECRET, &key);
    ctoken_encode(&key, FUZZ_USER, aggregate, 3, t);
    return t;
}

static char **strings(seeds *s, const char *first, const char *second)
{
    char **v = arena_alloc(s->a, 2 * sizeof *v);
    v[0] = arena_strdup(s->a, first);
    v[1] = arena_strdup(s->a, second);
    return v;
}

/* The requests of the task commands that name a task and a version. */
static void *task_request(seeds *s, const char *method)
{
    if (strcmp(method, "CompleteTask") == 0) {
        Todo__V1__CompleteTaskRequest *r = NEW(s, Todo__V1__CompleteTaskRequest, TODO__V1__COMPLETE_TASK_REQUEST__INIT);
        *r = (Todo__V1__CompleteTaskRequest){r->base, "complete-1", SEED_TASK_ID, 2};
        return r;
    }
    if (strcmp(method, "ReopenTask") == 0) {
        Todo__V1__ReopenTaskRequest *r = NEW(s, Todo__V1__ReopenTaskRequest, TODO__V1__REOPEN_TASK_REQUEST__INIT);
        *r = (Todo__V1__ReopenTaskRequest){r->base, "reopen-1", SEED_TASK_ID, 3};
        return r;
    }
    if (strcmp(method, "DeleteTask") == 0) {
        Todo__V1__DeleteTaskRequest *r = NEW(s, Todo__V1__DeleteTaskRequest, TODO__V1__DELETE_TASK_REQUEST__INIT);
        *r = (Todo__V1__DeleteTaskRequest){r->base, "delete-1", SEED_TASK_ID, 4};
        return r;
    }
    if (strcmp(method, "RestoreTask") == 0) {
        Todo__V1__RestoreTaskRequest *r = NEW(s, Todo__V1__RestoreTaskRequest, TODO__V1__RESTORE_TASK_REQUEST__INIT);
        *r = (Todo__V1__RestoreTaskRequest){r->base, "restore-1", SEED_TASK_ID, 5};
        return r;
    }
    return NULL;
}

static void *reminder_request(seeds *s, const char *method)
{
    if (strcmp(method, "ScheduleReminder") == 0) {
        Todo__V1__ScheduleReminderRequest *r =
            NEW(s, Todo__V1__ScheduleReminderRequest, TODO__V1__SCHEDULE_REMINDER_REQUEST__INIT);
        r->request_id = "remind-1";
        r->task_id = SEED_TASK_ID;
        r->remind_at = event_timestamp(s->a, REMIND_US);
        r->channel = TODO__V1__REMINDER_CHANNEL__REMINDER_CHANNEL_EMAIL;
        return r;
    }
    if (strcmp(method, "CancelReminder") == 0) {
        Todo__V1__CancelReminderRequest *r =
            NEW(s, Todo__V1__CancelReminderRequest, TODO__V1__CANCEL_REMINDER_REQUEST__INIT);
        r->reminder_id = SEED_REMINDER_ID;
        return r;
    }
    if (strcmp(method, "SnoozeReminder") == 0) {
        Todo__V1__SnoozeReminderRequest *r =
            NEW(s, Todo__V1__SnoozeReminderRequest, TODO__V1__SNOOZE_REMINDER_REQUEST__INIT);
        r->request_id = "snooze-1";
        r->reminder_id = SEED_REMINDER_ID;
        r->remind_at = event_timestamp(s->a, REMIND_US + 600000000);
        return r;
    }
    if (strcmp(method, "RestoreReminder") == 0) {
        Todo__V1__RestoreReminderRequest *r =
            NEW(s, Todo__V1__RestoreReminderRequest, TODO__V1__RESTORE_REMINDER_REQUEST__INIT);
        r->reminder_id = SEED_REMINDER_ID;
        return r;
    }
    if (strcmp(method, "TriggerReminder") == 0) {
        Todo__V1__TriggerReminderRequest *r =
            NEW(s, Todo__V1__TriggerReminderRequest, TODO__V1__TRIGGER_REMINDER_REQUEST__INIT);
        r->reminder_id = SEED_REMINDER_ID;
        r->expected_version = 1;
        return r;
    }
    return NULL;
}

static void command(seeds *s, const char *method)
{
    void *r;
    if (strcmp(method, "CreateTask") == 0) {
        Todo__V1__CreateTaskRequest *c = NEW(s, Todo__V1__CreateTaskRequest, TODO__V1__CREATE_TASK_REQUEST__INIT);
        c->request_id = "r-1";
        c->title = "Buy milk";
        c->description = "Oat, two litres.\nFrom the shop on the corner.";
        c->priority = TODO__V1__PRIORITY__PRIORITY_HIGH;
        c->due_at = event_timestamp(s->a, DUE_US);
        c->category = "shop";
        c->n_tags = 2;
        c->tags = strings(s, "shop", "errand");
        add(s, c, "");
    } else if (strcmp(method, "UpdateTask") == 0) {
        Todo__V1__UpdateTaskRequest *u = NEW(s, Todo__V1__UpdateTaskRequest, TODO__V1__UPDATE_TASK_REQUEST__INIT);
        Google__Protobuf__FieldMask *mask = NEW(s, Google__Protobuf__FieldMask, GOOGLE__PROTOBUF__FIELD_MASK__INIT);
        mask->n_paths = 2;
        mask->paths = strings(s, "title", "priority");
        u->request_id = "u-1";
        u->task_id = SEED_TASK_ID;
        u->expected_version = 1;
        u->title = "Buy oat milk";
        u->priority = TODO__V1__PRIORITY__PRIORITY_URGENT;
        u->update_mask = mask;
        add(s, u, "");
    } else if (strcmp(method, "CreateRecurringPattern") == 0) {
        Todo__V1__CreateRecurringPatternRequest *p =
            NEW(s, Todo__V1__CreateRecurringPatternRequest, TODO__V1__CREATE_RECURRING_PATTERN_REQUEST__INIT);
        Todo__V1__RecurrenceRule *rule = NEW(s, Todo__V1__RecurrenceRule, TODO__V1__RECURRENCE_RULE__INIT);
        Todo__V1__Weekday *days = arena_alloc(s->a, 2 * sizeof *days);
        days[0] = TODO__V1__WEEKDAY__WEEKDAY_MONDAY;
        days[1] = TODO__V1__WEEKDAY__WEEKDAY_THURSDAY;
        rule->frequency = TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_WEEKLY;
        rule->n_by_weekday = 2;
        rule->by_weekday = days;
        rule->time_zone = "Europe/Berlin";
        rule->max_occurrences = 10;
        p->request_id = "pattern-1";
        p->task_id = SEED_TASK_ID;
        p->rule = rule;
        add(s, p, "");
    } else if (strcmp(method, "UpdateRecurringPattern") == 0) {
        Todo__V1__UpdateRecurringPatternRequest *p =
            NEW(s, Todo__V1__UpdateRecurringPatternRequest, TODO__V1__UPDATE_RECURRING_PATTERN_REQUEST__INIT);
        Todo__V1__RecurrenceRule *rule = NEW(s, Todo__V1__RecurrenceRule, TODO__V1__RECURRENCE_RULE__INIT);
        rule->frequency = TODO__V1__RECURRENCE_FREQUENCY__RECURRENCE_FREQUENCY_MONTHLY;
        rule->day_of_month = 31;
        rule->time_zone = "America/New_York";
        rule->ends_at = event_timestamp(s->a, DUE_US + 365LL * 86400 * 1000000);
        p->pattern_id = SEED_PATTERN_ID;
        p->expected_version = 1;
        p->rule = rule;
        add(s, p, "");
    } else if (strcmp(method, "CreateNextOccurrence") == 0) {
        Todo__V1__CreateNextOccurrenceRequest *o =
            NEW(s, Todo__V1__CreateNextOccurrenceRequest, TODO__V1__CREATE_NEXT_OCCURRENCE_REQUEST__INIT);
        o->request_id = "next-1";
        o->pattern_id = SEED_PATTERN_ID;
        o->completed_task_id = SEED_TASK_ID;
        add(s, o, "");
    } else if ((r = task_request(s, method)) != NULL || (r = reminder_request(s, method)) != NULL) {
        add(s, r, "");
    }
}

static void query(seeds *s, const char *method)
{
    if (strcmp(method, "GetTask") == 0) {
        Todo__V1__GetTaskRequest *g = NEW(s, Todo__V1__GetTaskRequest, TODO__V1__GET_TASK_REQUEST__INIT);
        g->task_id = SEED_TASK_ID;
        g->consistency_token = consistency_token(s, SEED_TASK_ID);
        add(s, g, "");
    } else if (strcmp(method, "ListTasks") == 0) {
        Todo__V1__ListTasksRequest *l = NEW(s, Todo__V1__ListTasksRequest, TODO__V1__LIST_TASKS_REQUEST__INIT);
        Google__Protobuf__BoolValue *no = NEW(s, Google__Protobuf__BoolValue, GOOGLE__PROTOBUF__BOOL_VALUE__INIT);
        qry_page_key key = {.sort = {QRY_SORT_DUE_AT, true}, .value = "2030-01-01T09:00:00.000000Z", .id = SEED_TASK_ID};
        l->completed = no;
        l->priority = TODO__V1__PRIORITY__PRIORITY_HIGH;
        l->category = "shop";
        l->tag = "errand";
        l->due_after = event_timestamp(s->a, REMIND_US);
        l->due_before = event_timestamp(s->a, DUE_US + 86400LL * 1000000);
        l->text = "milk";
        l->order_by = "due_at asc";
        l->page_size = 10;
        l->page_token = arena_alloc(s->a, QRY_PAGE_TOKEN_MAX);
        qry_page_encode(&key, l->page_token);
        l->include_total = 1;
        l->consistency_token = consistency_token(s, SEED_TASK_ID);
        add(s, l, "");
    } else if (strcmp(method, "SearchTasks") == 0) {
        Todo__V1__SearchTasksRequest *q = NEW(s, Todo__V1__SearchTasksRequest, TODO__V1__SEARCH_TASKS_REQUEST__INIT);
        q->query = "buy mi";
        q->page_size = 10;
        q->page_token = arena_alloc(s->a, 40);
        qry_search_token_encode(20, q->page_token);
        add(s, q, "");
    } else if (strcmp(method, "GetTaskStats") == 0) {
        Todo__V1__GetTaskStatsRequest *g = NEW(s, Todo__V1__GetTaskStatsRequest, TODO__V1__GET_TASK_STATS_REQUEST__INIT);
        g->consistency_token = consistency_token(s, SEED_TASK_ID);
        add(s, g, "");
    } else if (strcmp(method, "ListReminders") == 0) {
        Todo__V1__ListRemindersRequest *l =
            NEW(s, Todo__V1__ListRemindersRequest, TODO__V1__LIST_REMINDERS_REQUEST__INIT);
        qry_page_key key = {.sort = {QRY_SORT_REMIND_AT, true}, .value = "2030-01-01T08:00:00.000000Z",
                            .id = SEED_REMINDER_ID};
        l->task_id = SEED_TASK_ID;
        l->include_inactive = 1;
        l->page_size = 5;
        l->page_token = arena_alloc(s->a, QRY_PAGE_TOKEN_MAX);
        qry_page_encode(&key, l->page_token);
        l->consistency_token = consistency_token(s, SEED_REMINDER_ID);
        add(s, l, "");
    }
}

static void registry(seeds *s, const char *method, const uint8_t *schema, size_t len)
{
    if (strcmp(method, "ListSubjects") == 0) {
        add(s, NEW(s, Todo__V1__ListSubjectsRequest, TODO__V1__LIST_SUBJECTS_REQUEST__INIT), "");
    } else if (strcmp(method, "GetSchema") == 0) {
        Todo__V1__GetSchemaRequest *g = NEW(s, Todo__V1__GetSchemaRequest, TODO__V1__GET_SCHEMA_REQUEST__INIT);
        g->subject = "task.created";
        g->version = 2;
        add(s, g, "");
    } else if (strcmp(method, "CheckSchema") == 0 || strcmp(method, "RegisterSchema") == 0) {
        Todo__V1__SchemaRequest *r = NEW(s, Todo__V1__SchemaRequest, TODO__V1__SCHEMA_REQUEST__INIT);
        r->subject = "regtest.event";
        r->message = "regtest.v1.Event";
        r->descriptor_set.data = (uint8_t *)schema;
        r->descriptor_set.len = len;
        add(s, r, "");
    } else if (strcmp(method, "SetMode") == 0) {
        Todo__V1__SetModeRequest *m = NEW(s, Todo__V1__SetModeRequest, TODO__V1__SET_MODE_REQUEST__INIT);
        m->subject = "task.created";
        m->mode = "FULL_TRANSITIVE";
        add(s, m, "");
    }
}

static void reflection(seeds *s)
{
    static const struct {
        Grpc__Reflection__V1__ServerReflectionRequest__MessageRequestCase which;
        const char *value, *suffix;
    } asks[] = {
        {GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL,
         "todo.v1.TaskCommandService", ""},
        {GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME, "todo/v1/query.proto",
         "file"},
        {GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES, "*", "list"},
    };
    for (size_t i = 0; i < sizeof asks / sizeof asks[0]; i++) {
        Grpc__Reflection__V1__ServerReflectionRequest *r =
            NEW(s, Grpc__Reflection__V1__ServerReflectionRequest, GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT);
        r->host = "localhost";
        r->message_request_case = asks[i].which;
        r->file_by_filename = (char *)asks[i].value; /* the oneof's members share their storage */
        add(s, r, asks[i].suffix);
    }
}

size_t seed_requests(const char *service, const char *method, arena *a, const uint8_t *schema, size_t len,
                     seed_request *out, size_t cap)
{
    seeds s = {.a = a, .out = out, .cap = cap};
    if (strcmp(service, "TaskCommandService") == 0) command(&s, method);
    else if (strcmp(service, "TaskQueryService") == 0) query(&s, method);
    else if (strcmp(service, "SchemaRegistryService") == 0) registry(&s, method, schema, len);
    else if (strcmp(service, "Health") == 0 && strcmp(method, "Check") == 0) {
        Grpc__Health__V1__HealthCheckRequest *h =
            NEW(&s, Grpc__Health__V1__HealthCheckRequest, GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT);
        h->service = "todo.v1.TaskCommandService";
        add(&s, h, "");
    } else if (strcmp(service, "ServerReflection") == 0) {
        reflection(&s);
    }
    return s.n;
}
