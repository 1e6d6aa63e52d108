/* fuzz_common: see fuzz_common.h. */
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "todo/v1/command.pb-c.h"
#include "todo/v1/events.pb-c.h"
#include "todo/v1/query.pb-c.h"
#include "todo/v1/registry.pb-c.h"

#define MAX_METHODS 64

size_t fuzz_methods(const fuzz_method **out)
{
    /* Whole services, then the one method of each built-in service that a
     * server hosts (Health/Watch is not served). */
    static const ProtobufCServiceDescriptor *const whole[] = {
        &todo__v1__task_command_service__descriptor,
        &todo__v1__task_query_service__descriptor,
        &todo__v1__schema_registry_service__descriptor,
    };
    static const struct {
        const ProtobufCServiceDescriptor *service;
        const char *method;
    } single[] = {
        {&grpc__health__v1__health__descriptor, "Check"},
        {&grpc__reflection__v1__server_reflection__descriptor, "ServerReflectionInfo"},
    };
    static fuzz_method table[MAX_METHODS];
    static size_t n;

    if (n == 0) {
        for (size_t s = 0; s < sizeof whole / sizeof whole[0]; s++)
            for (unsigned m = 0; m < whole[s]->n_methods && n < MAX_METHODS; m++)
                table[n++] = (fuzz_method){whole[s], &whole[s]->methods[m]};
        for (size_t s = 0; s < sizeof single / sizeof single[0] && n < MAX_METHODS; s++) {
            const ProtobufCMethodDescriptor *md =
                protobuf_c_service_descriptor_get_method_by_name(single[s].service, single[s].method);
            if (md != NULL) table[n++] = (fuzz_method){single[s].service, md};
        }
    }
    *out = table;
    return n;
}

const ProtobufCMessageDescriptor *fuzz_event_payload(const char *full_name)
{
    static const ProtobufCMessageDescriptor *const payloads[] = {
        &todo__v1__task_created__descriptor,
        &todo__v1__task_created_v2__descriptor,
        &todo__v1__task_updated__descriptor,
        &todo__v1__task_completed__descriptor,
        &todo__v1__task_reopened__descriptor,
        &todo__v1__task_deleted__descriptor,
        &todo__v1__task_restored__descriptor,
        &todo__v1__reminder_scheduled__descriptor,
        &todo__v1__reminder_cancelled__descriptor,
        &todo__v1__reminder_snoozed__descriptor,
        &todo__v1__reminder_restored__descriptor,
        &todo__v1__reminder_triggered__descriptor,
        &todo__v1__recurring_pattern_created__descriptor,
        &todo__v1__recurring_pattern_updated__descriptor,
        &todo__v1__create_next_occurrence__descriptor,
        &todo__v1__recurring_task_generated__descriptor,
        &todo__v1__send_notification__descriptor,
        &todo__v1__notification_sent__descriptor,
        &todo__v1__notification_failed__descriptor,
        &todo__v1__saga_event__descriptor,
        &todo__v1__dead_letter__descriptor,
        &todo__v1__audit_record__descriptor,
    };
    if (full_name == NULL) return NULL;
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++)
        if (strcmp(payloads[i]->name, full_name) == 0) return payloads[i];
    return NULL;
}

void fuzz_fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz finding: %s: %s\n", what, detail);
    abort();
}

void fuzz_check_repack(const ProtobufCMessage *m, arena *a, const pbx_limits *lim, const char *what)
{
    todo_err err;
    ProtobufCMessage *again;
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = arena_alloc(a, n + 1);
    if (protobuf_c_message_pack(m, buf) != n) fuzz_fail(what, "pack wrote another size than get_packed_size said");
    if (pbx_decode(m->descriptor, buf, n, a, lim, &again, &err) != TODO_OK) {
        char detail[sizeof err.msg + 64];
        snprintf(detail, sizeof detail, "the repacked %s does not decode: %s", m->descriptor->name, err.msg);
        fuzz_fail(what, detail);
    }
    /* Unknown fields are gone and every field is in canonical form after
     * one round, so a second round must give the same bytes. */
    size_t n2 = protobuf_c_message_get_packed_size(again);
    uint8_t *buf2 = arena_alloc(a, n2 + 1);
    if (protobuf_c_message_pack(again, buf2) != n2 || n2 != n || memcmp(buf, buf2, n) != 0)
        fuzz_fail(what, "packing the repacked message again gives other bytes");
}
