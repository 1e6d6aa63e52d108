/* reg_prune: a message's schema cut out of a descriptor set (reg_local.h).
 * Kept apart from the rest of reg_local: it depends on protobuf-c alone, so
 * the fuzz target (fuzz/) builds it without the database and Kafka. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "reg_compat.h"
#include "reg_local.h"

typedef Google__Protobuf__DescriptorProto msg_t;
typedef Google__Protobuf__FileDescriptorProto file_t;

/* One top-level message or enum of the set and whether the root reaches it. */
typedef struct top {
    size_t file;
    const msg_t *msg;   /* or */
    const Google__Protobuf__EnumDescriptorProto *en;
    char *full;         /* "pkg.Name" */
    bool kept;
} top;

typedef struct prune {
    const Google__Protobuf__FileDescriptorSet *set;
    top *tops;
    size_t n_tops;
    const msg_t **queue; /* messages whose fields are still to be followed */
    size_t n_queue, cap_queue;
    bool oom, too_deep;
} prune;

#define MAX_DEPTH 32 /* nesting accepted, as reg_compat does */

static void push(prune *p, const msg_t *m, int depth)
{
    if (depth > MAX_DEPTH) {
        p->too_deep = true;
        return;
    }
    if (p->n_queue == p->cap_queue) {
        size_t cap = p->cap_queue ? p->cap_queue * 2 : 32;
        const msg_t **q = realloc(p->queue, cap * sizeof *q);
        if (q == NULL) {
            p->oom = true;
            return;
        }
        p->queue = q;
        p->cap_queue = cap;
    }
    p->queue[p->n_queue++] = m;
    for (size_t i = 0; i < m->n_nested_type; i++) push(p, m->nested_type[i], depth + 1); /* they come along with m */
}

/* Marks the top-level declaration holding ref (".pkg.Name" or
 * ".pkg.Name.Nested") as kept. */
static void keep(prune *p, const char *ref)
{
    if (ref == NULL) return;
    if (ref[0] == '.') ref++;
    for (size_t i = 0; i < p->n_tops; i++) {
        size_t n = strlen(p->tops[i].full);
        if (strncmp(ref, p->tops[i].full, n) != 0 || (ref[n] != '\0' && ref[n] != '.')) continue;
        if (!p->tops[i].kept) {
            p->tops[i].kept = true;
            if (p->tops[i].msg != NULL) push(p, p->tops[i].msg, 0);
        }
        return;
    }
}

static char *full_name(const char *pkg, const char *name)
{
    size_t n = strlen(pkg ? pkg : "") + strlen(name ? name : "") + 2;
    char *s = malloc(n);
    if (s != NULL) snprintf(s, n, "%s%s%s", pkg && pkg[0] ? pkg : "", pkg && pkg[0] ? "." : "", name ? name : "");
    return s;
}

static int index_tops(prune *p)
{
    size_t n = 0;
    for (size_t f = 0; f < p->set->n_file; f++) n += p->set->file[f]->n_message_type + p->set->file[f]->n_enum_type;
    p->tops = calloc(n + 1, sizeof *p->tops);
    if (p->tops == NULL) return -1;
    for (size_t f = 0; f < p->set->n_file; f++) {
        const file_t *fd = p->set->file[f];
        for (size_t i = 0; i < fd->n_message_type; i++) {
            top *t = &p->tops[p->n_tops++];
            *t = (top){.file = f, .msg = fd->message_type[i], .full = full_name(fd->package, fd->message_type[i]->name)};
            if (t->full == NULL) return -1;
        }
        for (size_t i = 0; i < fd->n_enum_type; i++) {
            top *t = &p->tops[p->n_tops++];
            *t = (top){.file = f, .en = fd->enum_type[i], .full = full_name(fd->package, fd->enum_type[i]->name)};
            if (t->full == NULL) return -1;
        }
    }
    return 0;
}

/* Packs the kept declarations: shallow copies of the files that hold any,
 * in the set's order (protoc writes dependencies first). */
static int pack_kept(const prune *p, uint8_t **out, size_t *out_len)
{
    size_t nf = p->set->n_file;
    file_t *files = calloc(nf + 1, sizeof *files);
    file_t **kept_files = calloc(nf + 1, sizeof *kept_files);
    /* One array for every kept file's messages, enums and dependencies. */
    void **slots = calloc(p->n_tops + 1, sizeof(void *));
    size_t n_deps = 0;
    for (size_t f = 0; f < nf; f++) n_deps += p->set->file[f]->n_dependency;
    char **deps = calloc(n_deps + 1, sizeof *deps);
    bool *file_kept = calloc(nf + 1, sizeof *file_kept);
    int rc = -1;
    if (files == NULL || kept_files == NULL || slots == NULL || deps == NULL || file_kept == NULL) goto out;
    for (size_t i = 0; i < p->n_tops; i++)
        if (p->tops[i].kept) file_kept[p->tops[i].file] = true;
    size_t n_out = 0, used = 0, used_deps = 0;
    for (size_t f = 0; f < nf; f++) {
        if (!file_kept[f]) continue;
        const file_t *src = p->set->file[f];
        file_t *dst = &files[f];
        google__protobuf__file_descriptor_proto__init(dst);
        dst->name = src->name;
        dst->package = src->package;
        dst->syntax = src->syntax;
        dst->options = src->options;
        dst->message_type = (msg_t **)&slots[used];
        for (size_t i = 0; i < p->n_tops; i++)
            if (p->tops[i].kept && p->tops[i].file == f && p->tops[i].msg != NULL)
                slots[used++] = (void *)p->tops[i].msg, dst->n_message_type++;
        dst->enum_type = (Google__Protobuf__EnumDescriptorProto **)&slots[used];
        for (size_t i = 0; i < p->n_tops; i++)
            if (p->tops[i].kept && p->tops[i].file == f && p->tops[i].en != NULL)
                slots[used++] = (void *)p->tops[i].en, dst->n_enum_type++;
        dst->dependency = &deps[used_deps];
        for (size_t d = 0; d < src->n_dependency; d++)
            for (size_t g = 0; g < nf; g++)
                if (file_kept[g] && p->set->file[g]->name != NULL && strcmp(p->set->file[g]->name, src->dependency[d]) == 0) {
                    deps[used_deps++] = src->dependency[d];
                    dst->n_dependency++;
                    break;
                }
        kept_files[n_out++] = dst;
    }
    Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
    set.n_file = n_out;
    set.file = kept_files;
    *out_len = google__protobuf__file_descriptor_set__get_packed_size(&set);
    *out = malloc(*out_len + 1);
    if (*out == NULL) goto out;
    google__protobuf__file_descriptor_set__pack(&set, *out);
    rc = 0;
out:
    free(files);
    free(kept_files);
    free(slots);
    free(deps);
    free(file_kept);
    return rc;
}

int reg_prune(const uint8_t *all, size_t all_len, const char *message, uint8_t **out, size_t *out_len, todo_err *err)
{
    *out = NULL;
    *out_len = 0;
    Google__Protobuf__FileDescriptorSet *set;
    int rc = reg_set_decode(all, all_len, &set, err);
    if (rc != TODO_OK) return rc;
    prune p = {.set = set};
    if (index_tops(&p) != 0) {
        rc = todo_err_set(err, TODO_EINTERNAL, "out of memory");
        goto out;
    }
    size_t before = p.n_queue;
    for (size_t i = 0; i < p.n_tops; i++)
        if (p.tops[i].msg != NULL && strcmp(p.tops[i].full, message) == 0) keep(&p, message);
    if (p.n_queue == before) {
        rc = todo_err_set(err, TODO_EINVAL, "the descriptor set has no top-level message %s", message);
        goto out;
    }
    /* Follow every field's type from the root, each declaration once. */
    for (size_t q = 0; q < p.n_queue && !p.oom; q++)
        for (size_t i = 0; i < p.queue[q]->n_field; i++) keep(&p, p.queue[q]->field[i]->type_name);
    if (p.too_deep) rc = todo_err_set(err, TODO_EINVAL, "the descriptor set nests messages deeper than %d", MAX_DEPTH);
    else if (p.oom || pack_kept(&p, out, out_len) != 0) rc = todo_err_set(err, TODO_EINTERNAL, "out of memory");
    else if ((rc = reg_set_decode(*out, *out_len, &set, err)) == TODO_OK)
        google__protobuf__file_descriptor_set__free_unpacked(set, NULL); /* what we write decodes again */
    else {
        free(*out);
        *out = NULL;
        *out_len = 0;
        rc = todo_err_set(err, TODO_EINVAL, "the descriptor set does not decode again once pruned");
    }
out:
    for (size_t i = 0; i < p.n_tops; i++) free(p.tops[i].full);
    free(p.tops);
    free(p.queue);
    google__protobuf__file_descriptor_set__free_unpacked((Google__Protobuf__FileDescriptorSet *)p.set, NULL);
    return rc;
}

