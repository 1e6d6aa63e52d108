/*
 * todo-sealbench: what sealing personal fields costs per event (issue 17),
 * against the work the same event costs without it, in the same run.
 *
 *   todo-sealbench [--events N]
 *
 * For N task.created events (a 40-byte title, a 120-byte description, two
 * tags, a category), measures on one core:
 *   write:  encoding the envelope as todo-command does (baseline), and
 *           sealing the personal fields first, then encoding (sealed);
 *   read:   decoding the envelope and the payload as the projector does
 *           (baseline), and also opening the sealed fields and re-encoding
 *           the payload (sealed).
 * Prints JSON: microseconds per event of each, and the ratios sealed /
 * baseline. The end-to-end figures (CreateTask through todo-command,
 * a rebuild) are in docs/PERFORMANCE.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "event.h"
#include "seal.h"
#include "todo/v1/events.pb-c.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One event's payload, as a command builds it. */
static void fill(Todo__V1__TaskCreatedV2 *ev, Google__Protobuf__Timestamp *at, char **tags)
{
    todo__v1__task_created_v2__init(ev);
    ev->task_id = "11111111-2222-4333-8444-555555555555";
    ev->title = "Call the plumber about the kitchen sink";
    ev->description = "The tap drips at night; ask about the valve under the sink, the price, and whether Tuesday "
                      "morning works for them.";
    ev->priority = TODO__V1__PRIORITY__PRIORITY_HIGH;
    ev->n_tags = 2;
    ev->tags = tags;
    ev->category = "home";
    ev->created_at = at;
}

static int encode(arena *a, const seal_key *k, bool sealed, uint8_t **out, size_t *len)
{
    Todo__V1__TaskCreatedV2 ev;
    Google__Protobuf__Timestamp at = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    char *tags[] = {"house", "urgent"};
    todo_err err;
    at.seconds = 1700000000;
    fill(&ev, &at, tags);
    if (sealed && seal_event(&ev.base, k, seal_event_aad(a, "bench-user", ev.task_id, "task.created"), a, &err) != 0) return -1;
    event_meta m = {.event_id = "99999999-2222-4333-8444-555555555555", .event_type = "task.created",
                    .source = "todo-command", .time_us = 1700000000000000, .user_id = "bench-user",
                    .aggregate_type = "task", .aggregate_id = ev.task_id, .aggregate_version = 1,
                    .schema_version = 2, .correlation_id = "c", .causation_id = "call:1"};
    return event_encode(&m, &ev.base, a, out, len, &err);
}

static int decode(arena *a, const seal_key *k, bool sealed, const uint8_t *bytes, size_t len)
{
    Todo__V1__EventEnvelope *env;
    todo_err err;
    ProtobufCAllocator alloc;
    if (event_decode(bytes, len, a, &env, &err) != 0) return -1;
    arena_pbc_allocator(a, &alloc);
    Todo__V1__TaskCreatedV2 *ev = todo__v1__task_created_v2__unpack(&alloc, env->data.len, env->data.data);
    if (ev == NULL) return -1;
    if (sealed) { /* as proj_apply's open_sealed: open, re-encode, decode again in the handler */
        if (seal_open_event(&ev->base, k, seal_event_aad(a, env->user_id, env->aggregate_id, env->event_type), a, &err) != 0) return -1;
        size_t n = protobuf_c_message_get_packed_size(&ev->base);
        uint8_t *buf = arena_alloc(a, n + 1);
        protobuf_c_message_pack(&ev->base, buf);
        ev = todo__v1__task_created_v2__unpack(&alloc, n, buf);
        if (ev == NULL || strcmp(ev->title, "Call the plumber about the kitchen sink") != 0) return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    long n = 200000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--events") == 0 && i + 1 < argc) n = strtol(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: todo-sealbench [--events N]\n");
            return 2;
        }
    }
    seal_key k;
    todo_err err;
    if (seal_key_new(&k, &err) != 0) return 1;
    arena *a = arena_new();
    double us[4];
    size_t sizes[2] = {0, 0};
    /* Alternating rounds of the two variants (a noisy box slows both). */
    double total[4] = {0, 0, 0, 0};
    for (int round = 0; round < 4; round++) {
        for (int sealed = 0; sealed < 2; sealed++) {
            uint8_t *bytes = NULL;
            size_t len = 0;
            double t0 = now_s();
            for (long i = 0; i < n / 4; i++) {
                arena_reset(a);
                if (encode(a, &k, sealed, &bytes, &len) != 0) return 1;
            }
            total[sealed] += now_s() - t0;
            sizes[sealed] = len;
            arena_reset(a);
            if (encode(a, &k, sealed, &bytes, &len) != 0) return 1;
            uint8_t *copy = malloc(len);
            memcpy(copy, bytes, len);
            t0 = now_s();
            for (long i = 0; i < n / 4; i++) {
                arena_reset(a);
                if (decode(a, &k, sealed, copy, len) != 0) return 1;
            }
            total[2 + sealed] += now_s() - t0;
            free(copy);
        }
    }
    for (int i = 0; i < 4; i++) us[i] = total[i] / (double)(n / 4 * 4) * 1e6;
    printf("{\"events\": %ld, \"envelope_bytes\": {\"baseline\": %zu, \"sealed\": %zu},\n"
           " \"write_us_per_event\": {\"baseline\": %.3f, \"sealed\": %.3f, \"ratio\": %.2f},\n"
           " \"read_us_per_event\": {\"baseline\": %.3f, \"sealed\": %.3f, \"ratio\": %.2f}}\n",
           n, sizes[0], sizes[1], us[0], us[1], us[1] / us[0], us[2], us[3], us[3] / us[2]);
    arena_free(a);
    return 0;
}
