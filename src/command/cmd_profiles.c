/*
 * cmd_profiles: the user's notification profile, an aggregate of its own
 * (aggregate type "user_profile"; one per user, its id a UUID derived from
 * the user id, so the caller never names it).
 *
 *   SetNotificationPreferences  replaces the profile: the email address
 *                               (EMAIL channel), the webhook URL (PUSH
 *                               channel), the time zone and the quiet hours.
 *                               The first call creates it (version 1).
 *
 * Its events (user.notification_preferences_set) go to users.events.v1;
 * todo-saga's notifier reads write.user_profiles to deliver.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_core.h"
#include "cmd_validate.h"
#include "event.h"
#include "pgx.h"
#include "text.h"
#include "todo/v1/events.pb-c.h"

typedef struct profile {
    char id[37];
    const char *email, *webhook_url, *time_zone, *quiet_start, *quiet_end;
    int64_t created_us;
} profile;

/* The profile id of user: a name-based UUID. */
void cmd_profile_id(const char *user, char out[37])
{
    char name[AUTH_USER_MAX + 32];
    snprintf(name, sizeof name, "todo:user_profile:%s", user);
    text_name_uuid(name, out);
}

static int load_profile(cmd_ctx *x, const char *id, void **agg, int64_t *version, todo_err *err)
{
    const char *p[2] = {id, x->user};
    PGresult *r = pgx_exec(x->t->pg,
                           "select email, webhook_url, time_zone, quiet_hours_start, quiet_hours_end, version,"
                           " (extract(epoch from created_at) * 1000000)::bigint"
                           " from write.user_profiles where id = $1::uuid and user_id = $2",
                           2, p, err);
    if (r == NULL) return err->code;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return todo_err_set(err, TODO_ENOTFOUND, "the notification profile of %s does not exist yet", x->user);
    }
    profile *pf = arena_calloc(x->a, sizeof *pf);
    snprintf(pf->id, sizeof pf->id, "%s", id);
    pf->email = arena_strdup(x->a, PQgetvalue(r, 0, 0));
    pf->webhook_url = arena_strdup(x->a, PQgetvalue(r, 0, 1));
    pf->time_zone = arena_strdup(x->a, PQgetvalue(r, 0, 2));
    pf->quiet_start = arena_strdup(x->a, PQgetvalue(r, 0, 3));
    pf->quiet_end = arena_strdup(x->a, PQgetvalue(r, 0, 4));
    *version = strtoll(PQgetvalue(r, 0, 5), NULL, 10);
    pf->created_us = cmd_store_us(r, 6, NULL);
    PQclear(r);
    *agg = pf;
    return TODO_OK;
}

static void profile_state(cmd_ctx *x, const void *agg, int64_t version, int64_t now, const char **sql,
                          const char *const **params, int *n)
{
    const profile *pf = agg;
    arena *a = x->a;
    const char **p = arena_alloc(a, 10 * sizeof *p);
    p[0] = pf->id;
    p[1] = x->user;
    p[2] = pf->email;
    p[3] = pf->webhook_url;
    p[4] = pf->time_zone;
    p[5] = pf->quiet_start;
    p[6] = pf->quiet_end;
    p[7] = arena_printf(a, "%" PRId64, version);
    p[8] = cmd_store_time(a, true, now);
    *n = 9;
    if (version == 1) {
        /* on conflict: a concurrent first call made it; nothing is written. */
        *sql = "insert into write.user_profiles (id, user_id, email, webhook_url, time_zone, quiet_hours_start,"
               " quiet_hours_end, version, created_at, updated_at) values ($1::uuid, $2, $3, $4, $5, $6, $7,"
               " $8::bigint, $9::timestamptz, $9::timestamptz) on conflict do nothing returning 1";
    } else {
        *sql = "update write.user_profiles set email = $3, webhook_url = $4, time_zone = $5, quiet_hours_start = $6,"
               " quiet_hours_end = $7, version = $8::bigint, updated_at = $9::timestamptz"
               " where id = $1::uuid and user_id = $2 and version = $8::bigint - 1 returning 1";
    }
    *params = p;
}

static const cmd_kind profile_kind = {"user_profile", load_profile, profile_state};

static Todo__V1__NotificationPreferencesSet *event_of(arena *a, const profile *pf)
{
    Todo__V1__NotificationPreferencesSet *ev = arena_alloc(a, sizeof *ev);
    todo__v1__notification_preferences_set__init(ev);
    ev->profile_id = (char *)pf->id;
    ev->email = (char *)pf->email;
    ev->webhook_url = (char *)pf->webhook_url;
    ev->time_zone = (char *)pf->time_zone;
    ev->quiet_hours_start = (char *)pf->quiet_start;
    ev->quiet_hours_end = (char *)pf->quiet_end;
    return ev;
}

static int change_profile(cmd_ctx *x, void *agg, const void *arg, int64_t now, const char **type, int *schema,
                          ProtobufCMessage **event, todo_err *err)
{
    profile *pf = agg;
    const profile *want = arg;
    (void)now;
    (void)schema;
    (void)err;
    pf->email = want->email;
    pf->webhook_url = want->webhook_url;
    pf->time_zone = want->time_zone;
    pf->quiet_start = want->quiet_start;
    pf->quiet_end = want->quiet_end;
    *type = "user.notification_preferences_set";
    *event = &event_of(x->a, pf)->base;
    return TODO_OK;
}

int cmd_set_preferences(grpcx_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp, todo_err *err)
{
    const Todo__V1__SetNotificationPreferencesRequest *rq = (const Todo__V1__SetNotificationPreferencesRequest *)req;
    cmd_ctx x;
    profile want;
    int rc;
    if ((rc = cmd_begin(&x, c, "SetNotificationPreferences", rq->request_id, req, err)) != 0) return rc;
    if ((rc = cmd_validate_email(rq->email, err)) != 0 ||
        (rc = cmd_validate_webhook_url(rq->webhook_url, x.t->cfg->local, err)) != 0 ||
        (rc = cmd_validate_quiet_hours(rq->quiet_hours_start, rq->quiet_hours_end, err)) != 0 ||
        (rc = cmd_validate_expected_version(rq->expected_version, err)) != 0)
        return rc;
    if (rq->time_zone[0] != '\0' &&
        (rc = cmd_validate_time_zone("time_zone", rq->time_zone, x.t->cfg->zoneinfo_dir, err)) != 0)
        return rc;
    memset(&want, 0, sizeof want);
    cmd_profile_id(x.user, want.id);
    want.email = rq->email;
    want.webhook_url = rq->webhook_url;
    want.time_zone = rq->time_zone;
    want.quiet_start = rq->quiet_hours_start;
    want.quiet_end = rq->quiet_hours_end;
    if ((rc = cmd_replay(&x, resp, err)) != 0 || *resp != NULL) return rc;
    for (int attempt = 0; attempt < 3; attempt++) {
        void *agg;
        int64_t version;
        rc = load_profile(&x, want.id, &agg, &version, err);
        if (rc == TODO_OK) return cmd_mutate(&x, &profile_kind, want.id, rq->expected_version, change_profile, &want, resp, err);
        if (rc != TODO_ENOTFOUND) return cmd_storage_error(&x, err);
        if (rq->expected_version != 0)
            return todo_err_set(err, TODO_ECONFLICT, "the notification profile does not exist yet (version 0), not at"
                                " the expected version %" PRId64, rq->expected_version);
        want.created_us = event_now_us();
        rc = cmd_create(&x, &profile_kind, want.id, &want, want.created_us, "user.notification_preferences_set", 1,
                        &event_of(x.a, &want)->base, resp, err);
        if (rc != TODO_ECONFLICT) return rc;
        /* made concurrently: set it as an update */
    }
    return todo_err_set(err, TODO_ECONFLICT, "the notification profile is changing too often; retry");
}
