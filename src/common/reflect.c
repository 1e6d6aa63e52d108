/*
 * reflect: see reflect.h.
 *
 * The set is walked at the wire level (field 1, length-delimited) so that each
 * file is served byte for byte as protoc wrote it; protobuf-c's generated
 * descriptor.proto code decodes each file once to learn its name,
 * dependencies and symbols.
 */
#include "reflect.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"

typedef struct rfile {
    char *name;
    const unsigned char *bytes;  /* the serialized FileDescriptorProto, borrowed */
    size_t len;
    size_t *deps;                /* indexes of the files it imports */
    size_t n_deps;
} rfile;

typedef struct rsym {
    char *name;   /* fully qualified, no leading dot */
    size_t file;
} rsym;

struct reflect_index {
    rfile *files;
    size_t n_files;
    rsym *syms;
    size_t n_syms, cap_syms;
};

/* Reads a base-128 varint; returns bytes consumed or 0 on malformed input. */
static size_t read_varint(const unsigned char *p, size_t n, unsigned long long *v)
{
    *v = 0;
    for (size_t i = 0; i < n && i < 10; i++) {
        *v |= (unsigned long long)(p[i] & 0x7F) << (7 * i);
        if ((p[i] & 0x80) == 0) return i + 1;
    }
    return 0;
}

static int add_sym(reflect_index *idx, const char *prefix, const char *name, size_t file)
{
    if (idx->n_syms == idx->cap_syms) {
        size_t cap = idx->cap_syms ? idx->cap_syms * 2 : 64;
        rsym *s = realloc(idx->syms, cap * sizeof *s);
        if (s == NULL) return -1;
        idx->syms = s;
        idx->cap_syms = cap;
    }
    size_t lp = strlen(prefix), ln = strlen(name);
    char *full = malloc(lp + ln + 2);
    if (full == NULL) return -1;
    if (lp > 0) {
        memcpy(full, prefix, lp);
        full[lp] = '.';
        memcpy(full + lp + 1, name, ln + 1);
    } else {
        memcpy(full, name, ln + 1);
    }
    idx->syms[idx->n_syms].name = full;
    idx->syms[idx->n_syms].file = file;
    idx->n_syms++;
    return 0;
}

static int add_message(reflect_index *idx, const char *prefix,
                       const Google__Protobuf__DescriptorProto *m, size_t file)
{
    if (add_sym(idx, prefix, m->name, file) != 0) return -1;
    const char *full = idx->syms[idx->n_syms - 1].name;
    for (size_t i = 0; i < m->n_nested_type; i++)
        if (add_message(idx, full, m->nested_type[i], file) != 0) return -1;
    for (size_t i = 0; i < m->n_enum_type; i++)
        if (add_sym(idx, full, m->enum_type[i]->name, file) != 0) return -1;
    return 0;
}

static int index_file(reflect_index *idx, const Google__Protobuf__FileDescriptorProto *f, size_t file)
{
    const char *pkg = f->package != NULL ? f->package : "";
    for (size_t i = 0; i < f->n_message_type; i++)
        if (add_message(idx, pkg, f->message_type[i], file) != 0) return -1;
    for (size_t i = 0; i < f->n_enum_type; i++)
        if (add_sym(idx, pkg, f->enum_type[i]->name, file) != 0) return -1;
    for (size_t i = 0; i < f->n_service; i++) {
        if (add_sym(idx, pkg, f->service[i]->name, file) != 0) return -1;
        char *svc = idx->syms[idx->n_syms - 1].name;
        for (size_t j = 0; j < f->service[i]->n_method; j++)
            if (add_sym(idx, svc, f->service[i]->method[j]->name, file) != 0) return -1;
    }
    return 0;
}

static long find_file(const reflect_index *idx, const char *name)
{
    for (size_t i = 0; i < idx->n_files; i++)
        if (strcmp(idx->files[i].name, name) == 0) return (long)i;
    return -1;
}

reflect_index *reflect_index_new(const unsigned char *set, size_t len, todo_err *err)
{
    reflect_index *idx = calloc(1, sizeof *idx);
    Google__Protobuf__FileDescriptorProto **decoded = NULL;
    size_t pos = 0, cap = 0;

    if (idx == NULL) goto oom;
    while (pos < len) {
        unsigned long long key, flen;
        size_t k = read_varint(set + pos, len - pos, &key);
        if (k == 0 || key != ((1 << 3) | 2)) goto bad;
        pos += k;
        k = read_varint(set + pos, len - pos, &flen);
        if (k == 0 || flen > len - pos - k) goto bad;
        pos += k;
        if (idx->n_files == cap) {
            cap = cap ? cap * 2 : 16;
            rfile *nf = realloc(idx->files, cap * sizeof *nf);
            Google__Protobuf__FileDescriptorProto **nd = realloc(decoded, cap * sizeof *nd);
            if (nf != NULL) idx->files = nf;
            if (nd != NULL) decoded = nd;
            if (nf == NULL || nd == NULL) goto oom;
        }
        Google__Protobuf__FileDescriptorProto *f =
            google__protobuf__file_descriptor_proto__unpack(NULL, (size_t)flen, set + pos);
        if (f == NULL || f->name == NULL) {
            if (f != NULL) google__protobuf__file_descriptor_proto__free_unpacked(f, NULL);
            goto bad;
        }
        rfile *rf = &idx->files[idx->n_files];
        memset(rf, 0, sizeof *rf);
        rf->bytes = set + pos;
        rf->len = (size_t)flen;
        rf->name = strdup(f->name);
        decoded[idx->n_files++] = f;
        if (rf->name == NULL) goto oom;
        pos += (size_t)flen;
    }
    for (size_t i = 0; i < idx->n_files; i++) {
        Google__Protobuf__FileDescriptorProto *f = decoded[i];
        idx->files[i].deps = calloc(f->n_dependency + 1, sizeof(size_t));
        if (idx->files[i].deps == NULL) goto oom;
        for (size_t d = 0; d < f->n_dependency; d++) {
            long j = find_file(idx, f->dependency[d]);
            if (j < 0) {
                todo_err_set(err, TODO_EINVAL, "descriptor set lacks %s, imported by %s",
                             f->dependency[d], f->name);
                goto fail;
            }
            idx->files[i].deps[idx->files[i].n_deps++] = (size_t)j;
        }
        if (index_file(idx, f, i) != 0) goto oom;
    }
    for (size_t i = 0; i < idx->n_files; i++)
        google__protobuf__file_descriptor_proto__free_unpacked(decoded[i], NULL);
    free(decoded);
    return idx;

bad:
    todo_err_set(err, TODO_EINVAL, "descriptor set is malformed at byte %zu", pos);
    goto fail;
oom:
    todo_err_set(err, TODO_EINTERNAL, "out of memory indexing the descriptor set");
fail:
    if (idx != NULL)
        for (size_t i = 0; i < idx->n_files; i++)
            google__protobuf__file_descriptor_proto__free_unpacked(decoded[i], NULL);
    free(decoded);
    reflect_index_free(idx);
    return NULL;
}

void reflect_index_free(reflect_index *idx)
{
    if (idx == NULL) return;
    for (size_t i = 0; i < idx->n_files; i++) {
        free(idx->files[i].name);
        free(idx->files[i].deps);
    }
    for (size_t i = 0; i < idx->n_syms; i++) free(idx->syms[i].name);
    free(idx->files);
    free(idx->syms);
    free(idx);
}

static long find_symbol(const reflect_index *idx, const char *symbol)
{
    if (symbol[0] == '.') symbol++;
    for (size_t i = 0; i < idx->n_syms; i++)
        if (strcmp(idx->syms[i].name, symbol) == 0) return (long)idx->syms[i].file;
    return -1;
}

int reflect_has_symbol(const reflect_index *idx, const char *symbol) { return find_symbol(idx, symbol) >= 0; }

/* Appends file f and (first) its dependencies to out, each once. */
static void collect(const reflect_index *idx, size_t f, bool *seen, ProtobufCBinaryData *out, size_t *n)
{
    if (seen[f]) return;
    seen[f] = true;
    out[(*n)++] = (ProtobufCBinaryData){.len = idx->files[f].len, .data = (uint8_t *)idx->files[f].bytes};
    for (size_t i = 0; i < idx->files[f].n_deps; i++) collect(idx, idx->files[f].deps[i], seen, out, n);
}

int reflect_answer(const reflect_index *idx, const char *const *services, size_t n,
                   const unsigned char *req, size_t req_len, arena *a,
                   unsigned char **out, size_t *out_len, todo_err *err)
{
    ProtobufCAllocator alloc;
    Grpc__Reflection__V1__ServerReflectionRequest *rq;
    Grpc__Reflection__V1__ServerReflectionResponse rs = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    Grpc__Reflection__V1__FileDescriptorResponse fdr = GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
    Grpc__Reflection__V1__ListServiceResponse lsr = GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1__ErrorResponse er = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
    Grpc__Reflection__V1__ExtensionNumberResponse enr = GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
    long file = -1;

    arena_pbc_allocator(a, &alloc);
    rq = grpc__reflection__v1__server_reflection_request__unpack(&alloc, req_len, req);
    if (rq == NULL) return todo_err_set(err, TODO_EINVAL, "reflection request does not decode");
    rs.valid_host = rq->host;
    rs.original_request = rq;

    switch (rq->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        lsr.n_service = n;
        lsr.service = arena_alloc(a, (n + 1) * sizeof *lsr.service);
        for (size_t i = 0; i < n; i++) {
            Grpc__Reflection__V1__ServiceResponse *sr = arena_alloc(a, sizeof *sr);
            grpc__reflection__v1__service_response__init(sr);
            sr->name = (char *)services[i];
            lsr.service[i] = sr;
        }
        rs.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        rs.list_services_response = &lsr;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        file = find_file(idx, rq->file_by_filename);
        er.error_message = arena_printf(a, "file %s not found", rq->file_by_filename);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        file = find_symbol(idx, rq->file_containing_symbol);
        er.error_message = arena_printf(a, "symbol %s not found", rq->file_containing_symbol);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        /* Our protos declare no extensions: a known type has none. */
        if (find_symbol(idx, rq->all_extension_numbers_of_type) >= 0) {
            enr.base_type_name = rq->all_extension_numbers_of_type;
            rs.message_response_case =
                GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
            rs.all_extension_numbers_response = &enr;
        } else {
            er.error_message = arena_printf(a, "type %s not found", rq->all_extension_numbers_of_type);
        }
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        er.error_message = arena_printf(a, "extension %d of %s not found",
                                        rq->file_containing_extension->extension_number,
                                        rq->file_containing_extension->containing_type);
        break;
    default:
        return todo_err_set(err, TODO_EINVAL, "reflection request names no known request");
    }

    if (file >= 0) {
        bool *seen = arena_calloc(a, idx->n_files * sizeof *seen);
        fdr.file_descriptor_proto = arena_alloc(a, idx->n_files * sizeof *fdr.file_descriptor_proto);
        collect(idx, (size_t)file, seen, fdr.file_descriptor_proto, &fdr.n_file_descriptor_proto);
        rs.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
        rs.file_descriptor_response = &fdr;
    } else if (rs.message_response_case == GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE__NOT_SET) {
        er.error_code = 5; /* NOT_FOUND */
        rs.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        rs.error_response = &er;
    }
    *out_len = grpc__reflection__v1__server_reflection_response__get_packed_size(&rs);
    *out = arena_alloc(a, *out_len + 1);
    grpc__reflection__v1__server_reflection_response__pack(&rs, *out);
    return TODO_OK;
}
