/* event: see event.h. */
#include "event.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "text.h"
#include "topic_names.h"

int64_t event_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

char *event_time_text(arena *a, int64_t us)
{
    char *out = arena_alloc(a, 40);
    event_format_time(us, out, 40);
    return out;
}

Google__Protobuf__Timestamp *event_timestamp(arena *a, int64_t us)
{
    Google__Protobuf__Timestamp *ts = arena_alloc(a, sizeof *ts);
    google__protobuf__timestamp__init(ts);
    ts->seconds = us / 1000000;
    ts->nanos = (int32_t)(us % 1000000) * 1000;
    if (ts->nanos < 0) {
        ts->seconds -= 1;
        ts->nanos += 1000000000;
    }
    return ts;
}

int64_t event_timestamp_us(const Google__Protobuf__Timestamp *ts)
{
    return ts->seconds * 1000000 + ts->nanos / 1000;
}

void event_format_time(int64_t us, char *out, size_t cap)
{
    time_t secs = (time_t)(us / 1000000);
    long frac = (long)(us % 1000000);
    struct tm tm;
    char base[24];
    if (frac < 0) {
        frac += 1000000;
        secs -= 1;
    }
    gmtime_r(&secs, &tm);
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%06ldZ", base, frac);
}

static char *dup_or_empty(arena *a, const char *s) { return arena_strdup(a, s != NULL ? s : ""); }

int event_encode(const event_meta *m, const ProtobufCMessage *payload, arena *a, uint8_t **out, size_t *len,
                 todo_err *err)
{
    Todo__V1__EventEnvelope env = TODO__V1__EVENT_ENVELOPE__INIT;

    if (m->event_id == NULL || !text_is_uuid(m->event_id) || m->event_type == NULL || m->user_id == NULL ||
        m->aggregate_id == NULL || m->aggregate_version < 1)
        return todo_err_set(err, TODO_EINTERNAL, "event metadata is incomplete");
    env.event_id = dup_or_empty(a, m->event_id);
    env.event_type = dup_or_empty(a, m->event_type);
    env.source = dup_or_empty(a, m->source);
    env.time = event_timestamp(a, m->time_us);
    env.user_id = dup_or_empty(a, m->user_id);
    env.aggregate_type = dup_or_empty(a, m->aggregate_type);
    env.aggregate_id = dup_or_empty(a, m->aggregate_id);
    env.aggregate_version = m->aggregate_version;
    env.schema_version = m->schema_version;
    env.schema_id = event_schema_id(m->event_type, m->schema_version);
    env.correlation_id = dup_or_empty(a, m->correlation_id);
    env.causation_id = dup_or_empty(a, m->causation_id);
    Todo__V1__EventEnvelope__MetadataEntry tp = TODO__V1__EVENT_ENVELOPE__METADATA_ENTRY__INIT,
                                           ac = TODO__V1__EVENT_ENVELOPE__METADATA_ENTRY__INIT, *entries[2];
    if (m->traceparent != NULL && m->traceparent[0] != '\0') {
        tp.key = "traceparent";
        tp.value = (char *)m->traceparent;
        entries[env.n_metadata++] = &tp;
    }
    if (m->actor != NULL && m->actor[0] != '\0') {
        ac.key = "actor";
        ac.value = (char *)m->actor;
        entries[env.n_metadata++] = &ac;
    }
    if (env.n_metadata > 0) env.metadata = entries;
    env.data.len = protobuf_c_message_get_packed_size(payload);
    env.data.data = arena_alloc(a, env.data.len + 1);
    protobuf_c_message_pack(payload, env.data.data);
    *len = todo__v1__event_envelope__get_packed_size(&env);
    *out = arena_alloc(a, *len + 1);
    todo__v1__event_envelope__pack(&env, *out);
    return TODO_OK;
}

/* google.protobuf.Timestamp's range: years 1 to 9999 UTC. */
#define MIN_SECONDS (-62135596800LL)
#define MAX_SECONDS 253402300799LL

bool event_timestamp_valid(const Google__Protobuf__Timestamp *ts)
{
    return ts->seconds >= MIN_SECONDS && ts->seconds <= MAX_SECONDS && ts->nanos >= 0 && ts->nanos <= 999999999;
}

int event_decode(const uint8_t *bytes, size_t len, arena *a, Todo__V1__EventEnvelope **out, todo_err *err)
{
    ProtobufCAllocator alloc;
    arena_pbc_allocator(a, &alloc);
    Todo__V1__EventEnvelope *env = todo__v1__event_envelope__unpack(&alloc, len, bytes);
    if (env == NULL) return todo_err_set(err, TODO_EINVAL, "value is not a todo.v1.EventEnvelope");
    if (!text_is_uuid(env->event_id)) return todo_err_set(err, TODO_EINVAL, "envelope event_id is not a UUID");
    if (env->event_type[0] == '\0') return todo_err_set(err, TODO_EINVAL, "envelope event_type is empty");
    if (env->user_id[0] == '\0') return todo_err_set(err, TODO_EINVAL, "envelope user_id is empty");
    if (env->aggregate_id[0] == '\0') return todo_err_set(err, TODO_EINVAL, "envelope aggregate_id is empty");
    if (env->aggregate_version < 1) return todo_err_set(err, TODO_EINVAL, "envelope aggregate_version is below 1");
    /* Out of range, the time overflows event_timestamp_us (and the
     * ce_time header) wherever the envelope goes next. */
    if (env->time != NULL && !event_timestamp_valid(env->time))
        return todo_err_set(err, TODO_EINVAL, "envelope time is not a timestamp of years 1 to 9999");
    *out = env;
    return TODO_OK;
}

/* The event schemas this build knows, oldest version of a type first; the
 * last entry of a type is the version producers write. */
static const event_schema schemas[] = {
    {"task.created", 1, "todo.v1.TaskCreated", "todo-command"},
    {"task.created", 2, "todo.v1.TaskCreatedV2", "todo-command"},
    {"task.updated", 1, "todo.v1.TaskUpdated", "todo-command"},
    {"task.completed", 1, "todo.v1.TaskCompleted", "todo-command"},
    {"task.reopened", 1, "todo.v1.TaskReopened", "todo-command"},
    {"task.deleted", 1, "todo.v1.TaskDeleted", "todo-command"},
    {"task.restored", 1, "todo.v1.TaskRestored", "todo-command"},
    {"reminder.scheduled", 1, "todo.v1.ReminderScheduled", "todo-command"},
    {"reminder.cancelled", 1, "todo.v1.ReminderCancelled", "todo-command"},
    {"reminder.snoozed", 1, "todo.v1.ReminderSnoozed", "todo-command"},
    {"reminder.triggered", 1, "todo.v1.ReminderTriggered", "todo-command"},
    {"reminder.restored", 1, "todo.v1.ReminderRestored", "todo-command"},
    {"recurring.task.generated", 1, "todo.v1.RecurringTaskGenerated", "todo-saga"},
    {"notification.requested", 1, "todo.v1.SendNotification", "todo-saga"},
    {"notification.sent", 1, "todo.v1.NotificationSent", "todo-saga"},
    {"notification.failed", 1, "todo.v1.NotificationFailed", "todo-saga"},
    {"notification.delivered", 1, "todo.v1.NotificationDelivered", "todo-saga"},
    {"recurring_pattern.created", 1, "todo.v1.RecurringPatternCreated", "todo-command"},
    {"recurring_pattern.updated", 1, "todo.v1.RecurringPatternUpdated", "todo-command"},
    {"user.notification_preferences_set", 1, "todo.v1.NotificationPreferencesSet", "todo-command"},
    {"inbox.entry_added", 1, "todo.v1.InboxEntryAdded", "todo-command"},
    {"user.registered", 1, "todo.v1.UserRegistered", "todo-command"},
    {"user.erasure_requested", 1, "todo.v1.UserErasureRequested", "todo-command"},
    {"user.erased", 1, "todo.v1.UserErased", "todo-command"},
    {"inbox.entry_read", 1, "todo.v1.InboxEntryRead", "todo-command"},
    {"saga.started", 1, "todo.v1.SagaEvent", "todo-saga"},
    {"saga.step.completed", 1, "todo.v1.SagaEvent", "todo-saga"},
    {"saga.step.failed", 1, "todo.v1.SagaEvent", "todo-saga"},
    {"saga.step.compensated", 1, "todo.v1.SagaEvent", "todo-saga"},
    {"saga.step.compensation_failed", 1, "todo.v1.SagaEvent", "todo-saga"},
    {"saga.compensating", 1, "todo.v1.SagaEvent", "todo-saga"},
    {"saga.compensated", 1, "todo.v1.SagaEvent", "todo-saga"},
    {"saga.completed", 1, "todo.v1.SagaEvent", "todo-saga"},
    {"saga.failed", 1, "todo.v1.SagaEvent", "todo-saga"},
};
#define N_SCHEMAS (sizeof schemas / sizeof schemas[0])

/* The registry's id of each entry (0: not registered by this process). */
static _Atomic int32_t schema_ids[N_SCHEMAS];

size_t event_schemas(const event_schema **out)
{
    *out = schemas;
    return N_SCHEMAS;
}

size_t event_types_of_producer(const char *producer, const char **out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < N_SCHEMAS; i++) {
        if (strcmp(schemas[i].producer, producer) != 0) continue;
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++) seen = strcmp(out[k], schemas[i].type) == 0;
        if (!seen && n < cap) out[n++] = schemas[i].type;
    }
    return n;
}

static long schema_index(const char *type, int32_t v)
{
    for (size_t i = 0; i < N_SCHEMAS; i++)
        if (strcmp(schemas[i].type, type) == 0 && schemas[i].version == v) return (long)i;
    return -1;
}

const char *event_message_name(const char *type, int32_t v)
{
    long i = schema_index(type, v);
    return i >= 0 ? schemas[i].message : NULL;
}

int32_t event_current_version(const char *type)
{
    int32_t v = 0;
    for (size_t i = 0; i < N_SCHEMAS; i++)
        if (strcmp(schemas[i].type, type) == 0 && schemas[i].version > v) v = schemas[i].version;
    return v;
}

void event_schema_id_set(const char *type, int32_t v, int32_t id)
{
    long i = schema_index(type, v);
    if (i >= 0) schema_ids[i] = id;
}

int32_t event_schema_id(const char *type, int32_t v)
{
    long i = schema_index(type, v);
    return i >= 0 ? schema_ids[i] : 0;
}

const char *const EVENT_TOPICS[] = {TOPIC_TASKS, TOPIC_REMINDERS, TOPIC_NOTIFICATIONS, TOPIC_USERS, TOPIC_SAGA};
const int EVENT_N_TOPICS = sizeof EVENT_TOPICS / sizeof EVENT_TOPICS[0];

const char *event_topic(const char *type)
{
    if (strncmp(type, "task.", 5) == 0 || strncmp(type, "recurring_pattern.", 18) == 0) return TOPIC_TASKS;
    if (strncmp(type, "reminder.", 9) == 0) return TOPIC_REMINDERS;
    if (strncmp(type, "notification.", 13) == 0) return TOPIC_NOTIFICATIONS;
    if (strncmp(type, "user.", 5) == 0 || strncmp(type, "inbox.", 6) == 0) return TOPIC_USERS;
    if (strncmp(type, "saga.", 5) == 0 || strncmp(type, "recurring.", 10) == 0) return TOPIC_SAGA;
    return NULL;
}

static void add(rd_kafka_headers_t *h, const char *name, const char *value)
{
    rd_kafka_header_add(h, name, -1, value, -1);
}

/* The value of metadata key of env, or NULL (also when empty). */
static const char *metadata(const Todo__V1__EventEnvelope *env, const char *key)
{
    for (size_t i = 0; i < env->n_metadata; i++)
        if (env->metadata[i] != NULL && strcmp(env->metadata[i]->key, key) == 0 && env->metadata[i]->value[0] != '\0')
            return env->metadata[i]->value;
    return NULL;
}

const char *event_traceparent(const Todo__V1__EventEnvelope *env) { return metadata(env, "traceparent"); }

const char *event_actor(const Todo__V1__EventEnvelope *env) { return metadata(env, "actor"); }

rd_kafka_headers_t *event_kafka_headers(const Todo__V1__EventEnvelope *env)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(15);
    char buf[96];
    const char *msg = event_message_name(env->event_type, env->schema_version);

    add(h, "ce_specversion", "1.0");
    add(h, "ce_id", env->event_id);
    add(h, "ce_type", env->event_type);
    add(h, "ce_source", env->source);
    if (env->time != NULL) {
        event_format_time(event_timestamp_us(env->time), buf, sizeof buf);
        add(h, "ce_time", buf);
    }
    add(h, "ce_subject", env->aggregate_id);
    snprintf(buf, sizeof buf, "%s/v%" PRId32, msg != NULL ? msg : env->event_type, env->schema_version);
    add(h, "ce_dataschema", buf);
    if (env->schema_id > 0) {
        snprintf(buf, sizeof buf, "%" PRId32, env->schema_id);
        add(h, "todo_schema_id", buf);
    }
    add(h, "content-type", "application/protobuf");
    if (env->correlation_id[0] != '\0') add(h, "correlation_id", env->correlation_id);
    if (env->causation_id[0] != '\0') add(h, "causation_id", env->causation_id);
    const char *tp = event_traceparent(env);
    if (tp != NULL) add(h, "traceparent", tp);
    snprintf(buf, sizeof buf, "%" PRId64, env->position);
    add(h, "todo_position", buf);
    snprintf(buf, sizeof buf, "%" PRId64, env->aggregate_version);
    add(h, "todo_aggregate_version", buf);
    return h;
}
