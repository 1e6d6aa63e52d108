/*
 * seed_requests: one valid request (a few for some) for every method our
 * servers host, built from the generated protobuf-c structs: the seeds of
 * fuzz_requests, written by make_seeds.c. Ids, times and tokens are fixed
 * so that the seeds are the same on every run.
 */
#ifndef TODO_SEED_REQUESTS_H
#define TODO_SEED_REQUESTS_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"

#define SEED_TASK_ID "6f1c2b9e-3d4a-4e5f-8a7b-9c0d1e2f3a4b"
#define SEED_REMINDER_ID "0b7e4a52-91c3-4d8e-a6f0-2c5d8e1b3f79"
#define SEED_PATTERN_ID "c4a8e2f6-1b3d-4c5e-9f70-8a2b4c6d8e0f"
#define SEED_EVENT_ID "1e2d3c4b-5a69-4788-9a0b-1c2d3e4f5a6b"
#define SEED_CAUSE_ID "9d8c7b6a-5f4e-4d3c-8b2a-190f8e7d6c5b"

typedef struct seed_request {
    ProtobufCMessage *msg;  /* in the arena */
    const char *suffix;     /* "" for the first, else what the variant shows */
} seed_request;

/* Fills out (up to cap) with requests for service (its short name,
 * "TaskCommandService") and method, allocated in a; schema (len bytes) is
 * a descriptor set for the registry's requests. Returns how many; 0 for a
 * method this file does not know yet. */
size_t seed_requests(const char *service, const char *method, arena *a, const uint8_t *schema, size_t len,
                     seed_request *out, size_t cap);

#endif
