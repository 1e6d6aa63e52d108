/* proj_analytics: the analytics model as a projection definition
 * (proj_def.h): schema analytics (migration 0028), consumer group
 * projection-analytics-v1, topics tasks.events.v1 and users.events.v1.
 *
 * It keeps facts, not totals (GetProductivityStats groups them into the
 * user's days when asked):
 *   - task.created: the task (created_at, due_at) and a 'created' activity;
 *   - task.updated naming due_at: the task's due time;
 *   - task.completed: the task done at its time, and a 'completed' activity
 *     with the seconds since the task was created;
 *   - task.reopened: the task open again, and a 'reopened' activity;
 *   - task.deleted, task.restored: the task hidden from overdue counts, or
 *     back;
 *   - the other task events: their version is claimed, nothing written;
 *   - user.notification_preferences_set: the user's time zone ("" or a zone
 *     the database does not know: UTC, todo_meta.time_zone_or_utc);
 *   - user.erased: the user's rows deleted (their later events never come:
 *     proj_apply skips an erased user's events);
 *   - every other record of those topics is not this projection's: skipped
 *     (not claimed).
 */
#include <stdio.h>
#include <string.h>

#include "lock_keys.h"
#include "proj_def.h"
#include "text.h"
#include "todo/v1/events.pb-c.h"
#include "topic_names.h"

#define ACTIVITY(kind, seconds)                                                                          \
    "insert into activity (task_id, version, user_id, kind, at, seconds_to_complete) select $1::uuid,"   \
    " $2::bigint, $4, '" kind "', $3::timestamptz, " seconds " where" PROJ_CLAIMED " on conflict do nothing"

static proj_outcome plan_created(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p, const char **why)
{
    Todo__V1__TaskCreatedV2 *ev = proj_task_created(env, a, why);
    if (ev == NULL) return PROJ_DEAD;
    if (strcmp(ev->task_id, env->aggregate_id) != 0 || !text_is_uuid(ev->task_id) || ev->created_at == NULL) {
        *why = "task.created payload is inconsistent (task id or created_at)";
        return PROJ_DEAD;
    }
    proj_plan_base(p, env, a, proj_ts_text(a, ev->created_at));
    p->params[p->n++] = env->user_id;
    p->params[p->n++] = proj_ts_text(a, ev->due_at);
    p->write = "insert into tasks (id, user_id, created_at, due_at) select $1::uuid, $4, $3::timestamptz,"
               " $5::timestamptz where" PROJ_CLAIMED " on conflict (id) do nothing";
    p->also[0] = ACTIVITY("created", "null");
    return PROJ_APPLIED;
}

static proj_outcome plan_updated(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p, const char **why)
{
    Todo__V1__TaskUpdated *ev = (Todo__V1__TaskUpdated *)proj_payload(env, &todo__v1__task_updated__descriptor, a, why);
    if (ev == NULL) return PROJ_DEAD;
    proj_plan_base(p, env, a, proj_ts_text(a, env->time));
    for (size_t i = 0; i < ev->n_changed_fields; i++) {
        if (strcmp(ev->changed_fields[i], "due_at") != 0) continue;
        p->params[p->n++] = proj_ts_text(a, ev->due_at);
        p->write = "update tasks set due_at = $4::timestamptz where id = $1::uuid and" PROJ_CLAIMED;
        break;
    }
    return PROJ_APPLIED;
}

/* task.completed, .reopened, .deleted, .restored and the task events this
 * projection only claims. */
static proj_outcome plan_state(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p, const char **why)
{
    const char *t = env->event_type;
    const Google__Protobuf__Timestamp *at = env->time;
    if (strcmp(t, "task.completed") == 0) {
        Todo__V1__TaskCompleted *ev =
            (Todo__V1__TaskCompleted *)proj_payload(env, &todo__v1__task_completed__descriptor, a, why);
        if (ev == NULL) return PROJ_DEAD;
        if (ev->completed_at != NULL) at = ev->completed_at;
        proj_plan_base(p, env, a, proj_ts_text(a, at));
        p->params[p->n++] = env->user_id;
        p->write = "update tasks set completed = true, completed_at = $3::timestamptz where id = $1::uuid and"
                   PROJ_CLAIMED;
        p->also[0] = ACTIVITY("completed", "(select extract(epoch from $3::timestamptz - created_at) from tasks"
                                        " where id = $1::uuid)");
        return PROJ_APPLIED;
    }
    static const struct {
        const char *type;
        const ProtobufCMessageDescriptor *desc;
        const char *write, *also;
    } kinds[] = {
        {"task.reopened", &todo__v1__task_reopened__descriptor,
         "update tasks set completed = false, completed_at = null where id = $1::uuid and" PROJ_CLAIMED,
         ACTIVITY("reopened", "null")},
        {"task.deleted", &todo__v1__task_deleted__descriptor,
         "update tasks set deleted = true where id = $1::uuid and" PROJ_CLAIMED, NULL},
        {"task.restored", &todo__v1__task_restored__descriptor,
         "update tasks set deleted = false where id = $1::uuid and" PROJ_CLAIMED, NULL},
    };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        if (strcmp(t, kinds[k].type) != 0) continue;
        if (proj_payload(env, kinds[k].desc, a, why) == NULL) return PROJ_DEAD;
        proj_plan_base(p, env, a, proj_ts_text(a, at));
        if (kinds[k].also != NULL) p->params[p->n++] = env->user_id; /* $4 of ACTIVITY */
        p->write = kinds[k].write;
        p->also[0] = kinds[k].also;
        return PROJ_APPLIED;
    }
    /* Another task event: its version is claimed (the next one then sees
     * no gap), nothing written. */
    proj_plan_base(p, env, a, proj_ts_text(a, at));
    return PROJ_APPLIED;
}

static proj_outcome plan_profile(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p, const char **why)
{
    Todo__V1__NotificationPreferencesSet *ev = (Todo__V1__NotificationPreferencesSet *)proj_payload(
        env, &todo__v1__notification_preferences_set__descriptor, a, why);
    if (ev == NULL) return PROJ_DEAD;
    proj_plan_base(p, env, a, proj_ts_text(a, env->time));
    p->params[p->n++] = env->user_id;
    p->params[p->n++] = ev->time_zone;
    p->write = "insert into users (user_id, time_zone) select $4, todo_meta.time_zone_or_utc($5) where" PROJ_CLAIMED
               " on conflict (user_id) do update set time_zone = excluded.time_zone";
    return PROJ_APPLIED;
}

/* proj_def.plan. */
static proj_outcome plan(const Todo__V1__EventEnvelope *env, arena *a, proj_plan *p, const char **why)
{
    const char *t = env->event_type;
    bool ours = strncmp(t, "task.", 5) == 0 || strcmp(t, "user.notification_preferences_set") == 0 ||
                strcmp(t, "user.erased") == 0;
    if (!ours) return PROJ_SKIPPED; /* patterns, the inbox, the rest of a user's lifecycle: not counted */
    if (env->time == NULL) {
        *why = "envelope has no time";
        return PROJ_DEAD;
    }
    if (strcmp(t, "user.notification_preferences_set") == 0) return plan_profile(env, a, p, why);
    if (strcmp(t, "user.erased") == 0) { /* the user's rows go */
        static const char *const deletes[] = {"delete from activity where user_id = $4 and" PROJ_CLAIMED,
                                              "delete from tasks where user_id = $4 and" PROJ_CLAIMED,
                                              "delete from users where user_id = $4 and" PROJ_CLAIMED, NULL};
        return proj_plan_user_erased(env, a, p, deletes, why);
    }
    if (!text_is_uuid(env->aggregate_id)) {
        *why = "task event's aggregate id is not a UUID";
        return PROJ_DEAD;
    }
    if (strcmp(t, "task.created") == 0) return plan_created(env, a, p, why);
    if (strcmp(t, "task.updated") == 0) return plan_updated(env, a, p, why);
    return plan_state(env, a, p, why);
}

static const char *const topics[] = {TOPIC_TASKS, TOPIC_USERS};

const proj_def proj_analytics = {
    .name = "analytics",
    .schema = "analytics",
    .group = "projection-analytics-v1",
    .topics = topics,
    .n_topics = sizeof topics / sizeof topics[0],
    .plan = plan,
    .fetch_wait_ms = 100, /* statistics: a tenth of a second late is invisible, one fetch per event is not */
    .swap_lock = LOCK_ANALYTICS_SWAP,
    .rebuild_lock = LOCK_ANALYTICS_REBUILD,
};
