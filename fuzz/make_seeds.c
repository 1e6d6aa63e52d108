/*
 * make_seeds: writes the seed inputs of every fuzz target, made of real,
 * valid inputs, into <corpus>/<target>/seed-<what>:
 *
 *   fuzz_descriptors  pairs of descriptor sets (the registry's test schemas
 *                     and our own set), as fuzz_descriptors.c reads them
 *   fuzz_envelope     one envelope per event schema, from event_encode, with
 *                     a payload whose every field is set
 *   fuzz_tokens       consistency tokens (and the old position formats),
 *                     page tokens of every sort order, search tokens, from
 *                     their encoders
 *   fuzz_auth         authorization values: tokens from auth_issue, and ones
 *                     auth_verify refuses (expired, other secret, other
 *                     algorithm, no exp, bad sub, not a bearer)
 *   fuzz_headers      the headers event_kafka_headers and dlq.c write, in
 *                     fuzz_headers.c's input form
 *   fuzz_requests     one valid request per hosted method (three for
 *                     reflection), packed from the generated structs
 *
 * Usage: make_seeds CORPUS_DIR DESCRIPTOR_SET... (scripts/fuzz.sh seeds).
 * The output depends on nothing but the arguments (fixed ids, times and
 * secret), so remaking the seeds changes only what the code changed.
 */
#include <errno.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arena.h"
#include "auth.h"
#include "ctoken.h"
#include "event.h"
#include "fuzz_common.h"
#include "seed_requests.h"
#include "qry_page.h"
#include "qry_search.h"

#define MAX_SETS 64
#define TS_2030 1893488400LL /* 2030-01-01T09:00:00Z */

static const char *corpus;
static arena *mem;
static int written;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "make_seeds: %s: %s\n", what, detail);
    exit(1);
}

/* Writes <corpus>/<target>/seed-<name>. */
static void seed(const char *target, const char *name, const void *bytes, size_t len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", corpus, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) die(path, strerror(errno));
    snprintf(path, sizeof path, "%s/%s/seed-%s", corpus, target, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(bytes, 1, len, f) != len || fclose(f) != 0) die(path, "cannot write");
    written++;
}

static void seed_text(const char *target, const char *name, const char *text)
{
    seed(target, name, text, strlen(text));
}

/* ---- fuzz_descriptors ---- */

typedef struct blob {
    char name[128];
    uint8_t *bytes;
    size_t len;
} blob;

static void read_blob(const char *path, blob *b)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) die(path, strerror(errno));
    const char *base = strrchr(path, '/') != NULL ? strrchr(path, '/') + 1 : path;
    snprintf(b->name, sizeof b->name, "%.*s", (int)strcspn(base, "."), base);
    b->bytes = arena_alloc(mem, 1 << 20);
    b->len = fread(b->bytes, 1, 1 << 20, f);
    fclose(f);
}

/* The pairs the test command used to make at run time: each of the first
 * six sets (in argument order) with every set below 64 KiB, the first one's
 * length in two bytes (fuzz_descriptors.c). */
static void descriptor_seeds(const blob *sets, size_t n)
{
    size_t firsts = 0;
    for (size_t i = 0; i < n && firsts < 6; i++) {
        if (sets[i].len >= 65536) continue;
        firsts++;
        for (size_t j = 0; j < n; j++) {
            if (sets[j].len >= 65536) continue;
            size_t len = 2 + sets[i].len + sets[j].len;
            uint8_t *p = arena_alloc(mem, len);
            p[0] = (uint8_t)(sets[i].len & 0xff);
            p[1] = (uint8_t)(sets[i].len >> 8);
            memcpy(p + 2, sets[i].bytes, sets[i].len);
            memcpy(p + 2 + sets[i].len, sets[j].bytes, sets[j].len);
            char name[300];
            snprintf(name, sizeof name, "%s+%s", sets[i].name, sets[j].name);
            seed("fuzz_descriptors", name, p, len);
        }
    }
}

/* ---- fuzz_envelope and fuzz_headers ---- */

static size_t value_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    default: return 4;
    }
}

static const char *string_for(const char *field)
{
    size_t n = strlen(field);
    if (strcmp(field, "id") == 0 || (n > 3 && strcmp(field + n - 3, "_id") == 0)) return SEED_TASK_ID;
    if (strcmp(field, "time_zone") == 0) return "Europe/Berlin";
    if (strcmp(field, "channel") == 0) return "log";
    if (strcmp(field, "recipient") == 0) return "alice";
    return "Buy milk";
}

static ProtobufCMessage *filled(const ProtobufCMessageDescriptor *d, int depth);

/* Sets the value of field f at slot to something plausible for its type
 * and name. */
static void fill_value(const ProtobufCFieldDescriptor *f, void *slot, int depth)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
        *(int64_t *)slot = 3;
        break;
    case PROTOBUF_C_TYPE_DOUBLE: *(double *)slot = 0.5; break;
    case PROTOBUF_C_TYPE_FLOAT: *(float *)slot = 0.5f; break;
    case PROTOBUF_C_TYPE_BOOL: *(protobuf_c_boolean *)slot = 1; break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *e = f->descriptor;
        *(int *)slot = e->values[e->n_values > 1 ? 1 : 0].value;
        break;
    }
    case PROTOBUF_C_TYPE_STRING: *(const char **)slot = string_for(f->name); break;
    case PROTOBUF_C_TYPE_BYTES: *(ProtobufCBinaryData *)slot = (ProtobufCBinaryData){3, (uint8_t *)"\x01\x02\x03"}; break;
    case PROTOBUF_C_TYPE_MESSAGE: *(ProtobufCMessage **)slot = filled(f->descriptor, depth + 1); break;
    default: *(int32_t *)slot = 3; break;
    }
}

/* A d message with every field set (one element per repeated field, the
 * first member of each oneof), timestamps in 2030. */
static ProtobufCMessage *filled(const ProtobufCMessageDescriptor *d, int depth)
{
    ProtobufCMessage *m = arena_calloc(mem, d->sizeof_message);
    protobuf_c_message_init(d, m);
    if (d == &google__protobuf__timestamp__descriptor) {
        ((Google__Protobuf__Timestamp *)m)->seconds = TS_2030;
        return m;
    }
    if (depth > 4) return m;
    char *base = (char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        void *slot = base + f->offset;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t *which = (uint32_t *)(base + f->quantifier_offset);
            if (*which != 0) continue;
            *which = f->id;
        } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            *(size_t *)(base + f->quantifier_offset) = 1;
            void *arr = arena_calloc(mem, value_size(f->type));
            *(void **)slot = arr;
            slot = arr;
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
                   f->type != PROTOBUF_C_TYPE_MESSAGE) {
            *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
        }
        fill_value(f, slot, depth);
    }
    return m;
}

static const char *aggregate_of(const char *type)
{
    if (strncmp(type, "reminder.", 9) == 0) return "reminder";
    if (strncmp(type, "recurring_pattern.", 18) == 0) return "recurring_pattern";
    if (strncmp(type, "saga.", 5) == 0) return "saga";
    if (strncmp(type, "notification.", 13) == 0) return "notification";
    return "task";
}

/* fuzz_headers' input for a record keyed user with headers h. */
static void header_seed(const char *name, const char *user, const rd_kafka_headers_t *h)
{
    uint8_t *p = arena_alloc(mem, 1 << 16);
    size_t n = 0, k = strlen(user);
    p[n++] = (uint8_t)k;
    memcpy(p + n, user, k);
    n += k;
    for (size_t i = 0; i < rd_kafka_header_cnt(h) && i < 64; i++) {
        const char *hn;
        const void *v;
        size_t vlen;
        if (rd_kafka_header_get_all(h, i, &hn, &v, &vlen) != RD_KAFKA_RESP_ERR_NO_ERROR) break;
        size_t nl = strlen(hn) < 254 ? strlen(hn) : 254;
        p[n++] = (uint8_t)nl;
        memcpy(p + n, hn, nl);
        n += nl;
        if (v == NULL) {
            p[n++] = 255;
            continue;
        }
        if (vlen > 254) vlen = 254;
        p[n++] = (uint8_t)vlen;
        memcpy(p + n, v, vlen);
        n += vlen;
    }
    seed("fuzz_headers", name, p, n);
}

static void envelope_seeds(void)
{
    const event_schema *schemas;
    size_t n = event_schemas(&schemas);
    todo_err err;
    for (size_t i = 0; i < n; i++) event_schema_id_set(schemas[i].type, schemas[i].version, (int32_t)(i + 1));
    for (size_t i = 0; i < n; i++) {
        const ProtobufCMessageDescriptor *d = fuzz_event_payload(schemas[i].message);
        if (d == NULL) die(schemas[i].message, "not in fuzz_common.c's payload table");
        event_meta meta = {
            .event_id = SEED_EVENT_ID, .event_type = schemas[i].type, .source = "todo-command",
            .time_us = TS_2030 * 1000000 + 123456, .user_id = "alice", .aggregate_type = aggregate_of(schemas[i].type),
            .aggregate_id = SEED_TASK_ID, .aggregate_version = 3, .schema_version = schemas[i].version,
            .correlation_id = "corr-1", .causation_id = SEED_CAUSE_ID,
        };
        uint8_t *out;
        size_t len;
        if (event_encode(&meta, filled(d, 0), mem, &out, &len, &err) != TODO_OK) die("event_encode", err.msg);
        char name[128];
        snprintf(name, sizeof name, "%s-v%d", schemas[i].type, (int)schemas[i].version);
        seed("fuzz_envelope", name, out, len);
        if (i > 0) continue;

        /* The first one again as the relay sends it: with its position and
         * metadata, and its Kafka headers. */
        ProtobufCAllocator alloc;
        arena_pbc_allocator(mem, &alloc);
        Todo__V1__EventEnvelope *env = todo__v1__event_envelope__unpack(&alloc, len, out);
        Todo__V1__EventEnvelope__MetadataEntry e1 = TODO__V1__EVENT_ENVELOPE__METADATA_ENTRY__INIT, *entries[] = {&e1};
        e1.key = "trace";
        e1.value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        env->position = 123456789;
        env->n_metadata = 1;
        env->metadata = entries;
        len = todo__v1__event_envelope__get_packed_size(env);
        out = arena_alloc(mem, len);
        todo__v1__event_envelope__pack(env, out);
        seed("fuzz_envelope", "task.created-v1-relayed", out, len);
        rd_kafka_headers_t *h = event_kafka_headers(env);
        header_seed("event", "alice", h);
        rd_kafka_headers_destroy(h);
    }

    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    rd_kafka_header_add(h, "dlq_reason", -1, "schema id 99 is not registered", -1);
    rd_kafka_header_add(h, "dlq_consumer_group", -1, "todo-projector", -1);
    rd_kafka_header_add(h, "dlq_original_topic", -1, "tasks.events.v1", -1);
    rd_kafka_header_add(h, "content-type", -1, "application/protobuf", -1);
    header_seed("dead-letter", SEED_TASK_ID, h);
    rd_kafka_headers_destroy(h);

    /* Duplicated names (the last one counts), a header without a value. */
    h = rd_kafka_headers_new(8);
    rd_kafka_header_add(h, "todo_schema_id", -1, "1", -1);
    rd_kafka_header_add(h, "ce_type", -1, NULL, 0);
    rd_kafka_header_add(h, "todo_schema_id", -1, "27", -1);
    rd_kafka_header_add(h, "", -1, "empty name", -1);
    header_seed("duplicates", "bob", h);
    rd_kafka_headers_destroy(h);
}

/* ---- fuzz_tokens ---- */

static void token_seeds(void)
{
    char t[QRY_PAGE_TOKEN_MAX];
    ctoken_key ck;
    ctoken_key_derive(FUZZ_SECRET, &ck);
    ctoken_encode(&ck, FUZZ_USER, SEED_TASK_ID, 1, t);
    seed_text("fuzz_tokens", "consistency-task", t);
    ctoken_encode(&ck, FUZZ_USER, SEED_REMINDER_ID, 9223372036854775807LL, t);
    seed_text("fuzz_tokens", "consistency-reminder-max", t);
    ctoken_encode(&ck, FUZZ_OTHER_USER, SEED_TASK_ID, 1, t);
    seed_text("fuzz_tokens", "consistency-other-user", t);
    /* The old position formats, refused now: "ct1:7" and "ct2:t:42". */
    seed_text("fuzz_tokens", "consistency-ct1", "Y3QxOjc");
    seed_text("fuzz_tokens", "consistency-ct2", "Y3QyOnQ6NDI");

    static const char *const fields[] = {"created_at", "updated_at", "due_at", "priority", "remind_at"};
    for (int f = QRY_SORT_CREATED_AT; f <= QRY_SORT_REMIND_AT; f++)
        for (int asc = 0; asc <= 1; asc++) {
            qry_page_key key = {.sort = {.field = (qry_sort_field)f, .asc = asc}};
            const char *value = f == QRY_SORT_PRIORITY                 ? "3"
                                : f == QRY_SORT_DUE_AT && !asc          ? "infinity"
                                                                        : "2030-01-01T09:00:00.123456Z";
            snprintf(key.value, sizeof key.value, "%s", value);
            snprintf(key.id, sizeof key.id, "%s", SEED_TASK_ID);
            qry_page_encode(&key, t);
            char name[64];
            snprintf(name, sizeof name, "page-%s-%s", fields[f], asc ? "asc" : "desc");
            seed_text("fuzz_tokens", name, t);
        }
    qry_search_token_encode(20, t);
    seed_text("fuzz_tokens", "search-20", t);
    qry_search_token_encode(QRY_SEARCH_MAX_OFFSET, t);
    seed_text("fuzz_tokens", "search-max", t);
}

/* ---- fuzz_auth ---- */

/* A token made with libjwt directly, for what auth_issue will not make. */
static void raw_token(const char *name, jwt_alg_t alg, const char *sub, long exp)
{
    jwt_t *jwt = NULL;
    char *tok = NULL;
    if (jwt_new(&jwt) != 0) die("jwt_new", "failed");
    if (sub != NULL) jwt_add_grant(jwt, "sub", sub);
    jwt_add_grant_int(jwt, "iat", FUZZ_NOW_S - 60);
    if (exp != 0) jwt_add_grant_int(jwt, "exp", exp);
    if (jwt_set_alg(jwt, alg, alg == JWT_ALG_NONE ? NULL : (const unsigned char *)FUZZ_SECRET,
                    alg == JWT_ALG_NONE ? 0 : (int)strlen(FUZZ_SECRET)) != 0 ||
        (tok = jwt_encode_str(jwt)) == NULL)
        die("jwt_encode_str", name);
    char *v = arena_printf(mem, "Bearer %s", tok);
    seed_text("fuzz_auth", name, v);
    free(tok);
    jwt_free(jwt);
}

static void issued(const char *name, const char *prefix, const char *secret, const char *user, long ttl, long at)
{
    todo_err err;
    char *tok = auth_issue(secret, user, ttl, at, &err);
    if (tok == NULL) die("auth_issue", err.msg);
    seed_text("fuzz_auth", name, arena_printf(mem, "%s%s", prefix, tok));
    free(tok);
}

static void auth_seeds(void)
{
    char user[AUTH_USER_MAX];
    memset(user, 'u', AUTH_USER_MAX - 1);
    memcpy(user, "a.b_c@d:e-0", 11);
    user[AUTH_USER_MAX - 1] = '\0';
    issued("valid", "Bearer ", FUZZ_SECRET, FUZZ_USER, 3600, FUZZ_NOW_S - 60);
    issued("valid-longest-user", "Bearer ", FUZZ_SECRET, user, 3600, FUZZ_NOW_S - 60);
    issued("valid-lowercase-spaces", "bearer    ", FUZZ_SECRET, "bob", 3600, FUZZ_NOW_S - 60);
    issued("expired", "Bearer ", FUZZ_SECRET, "alice", 3600, FUZZ_NOW_S - 7200);
    issued("other-secret", "Bearer ", "not-the-fuzz-secret-0123456789abcdef", "alice", 3600, FUZZ_NOW_S - 60);
    raw_token("hs512", JWT_ALG_HS512, "alice", FUZZ_NOW_S + 3600);
    raw_token("alg-none", JWT_ALG_NONE, "alice", FUZZ_NOW_S + 3600);
    raw_token("no-exp", JWT_ALG_HS256, "alice", 0);
    raw_token("bad-sub", JWT_ALG_HS256, "alice smith", FUZZ_NOW_S + 3600);
    raw_token("no-sub", JWT_ALG_HS256, NULL, FUZZ_NOW_S + 3600);
    seed_text("fuzz_auth", "basic", "Basic YWxpY2U6c2VjcmV0");
}

/* ---- fuzz_requests ---- */

static void request_seeds(const blob *schema)
{
    const fuzz_method *methods;
    size_t n = fuzz_methods(&methods);
    for (size_t i = 0; i < n; i++) {
        const ProtobufCMethodDescriptor *md = methods[i].method;
        seed_request variants[4];
        size_t nv = seed_requests(methods[i].service->short_name, md->name, mem, schema->bytes, schema->len,
                                  variants, 4);
        if (nv == 0) die(md->name, "no seed request for this method (seed_requests.c)");
        for (size_t v = 0; v < nv; v++) {
            if (variants[v].msg->descriptor != md->input) die(md->name, "the seed is not the method's input");
            size_t len = protobuf_c_message_get_packed_size(variants[v].msg);
            uint8_t *p = arena_alloc(mem, len + 1);
            p[0] = (uint8_t)i;
            protobuf_c_message_pack(variants[v].msg, p + 1);
            char name[160];
            snprintf(name, sizeof name, "%s.%s%s%s", methods[i].service->short_name, md->name,
                     variants[v].suffix[0] ? "-" : "", variants[v].suffix);
            seed("fuzz_requests", name, p, len + 1);
        }
    }
}

int main(int argc, char **argv)
{
    static blob sets[MAX_SETS];
    size_t n = 0, schema = 0;
    if (argc < 3) {
        fprintf(stderr, "usage: make_seeds CORPUS_DIR DESCRIPTOR_SET...\n");
        return 2;
    }
    corpus = argv[1];
    mem = arena_new();
    if (mem == NULL) die("arena_new", "out of memory");
    for (int i = 2; i < argc && n < MAX_SETS; i++, n++) {
        read_blob(argv[i], &sets[n]);
        if (strcmp(sets[n].name, "v1") == 0) schema = n; /* the registry tests' base schema */
    }
    descriptor_seeds(sets, n);
    envelope_seeds();
    token_seeds();
    auth_seeds();
    request_seeds(&sets[schema]);
    printf("make_seeds: %d seed files under %s\n", written, corpus);
    arena_free(mem);
    return 0;
}
