/*
 * A libFuzzer target for the schema registry's descriptor parsing: the
 * bytes a user hands to `todoctl registry register` or RegisterSchema.
 *
 * The input is two descriptor sets (the first two bytes give the first
 * one's length): each is decoded as the registry decodes one
 * (reg_set_decode), pruned to its first message (reg_prune; what
 * prune writes must decode again) and compared with the other in every
 * mode (reg_compat_check), which validates sets that do not come from
 * protoc before walking them. Any crash, sanitizer report, leak or abort()
 * is a finding.
 *
 * Built and run by scripts/fuzz.sh (clang, -fsanitize=fuzzer,address,
 * undefined); its seeds, pairs of the registry's test schemas and our own
 * descriptor set, come from make_seeds.c.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "reg_compat.h"
#include "reg_local.h"

/* The full name of the first top-level message of set, in buf, or NULL. */
static const char *first_message(const Google__Protobuf__FileDescriptorSet *set, char *buf, size_t cap)
{
    for (size_t f = 0; f < set->n_file; f++) {
        const Google__Protobuf__FileDescriptorProto *fd = set->file[f];
        if (fd->n_message_type == 0 || fd->message_type[0]->name == NULL) continue;
        const char *pkg = fd->package != NULL ? fd->package : "";
        size_t n = strlen(pkg), m = strlen(fd->message_type[0]->name);
        if (n + m + 2 > cap) return NULL;
        memcpy(buf, pkg, n);
        if (n > 0) buf[n++] = '.';
        memcpy(buf + n, fd->message_type[0]->name, m + 1);
        return buf;
    }
    return NULL;
}

/* Decodes a set the way the registry does (reg_set_decode: the bytes are
 * checked before protobuf-c, which recurses without a limit, sees them). */
static Google__Protobuf__FileDescriptorSet *decode_set(const uint8_t *p, size_t n)
{
    Google__Protobuf__FileDescriptorSet *set;
    todo_err err;
    return reg_set_decode(p, n, &set, &err) == TODO_OK ? set : NULL;
}

static void prune_one(const uint8_t *data, size_t len, const char *message)
{
    uint8_t *out;
    size_t out_len;
    todo_err err;
    if (reg_prune(data, len, message, &out, &out_len, &err) != 0) return;
    /* What prune writes decodes again, and holds the message. */
    Google__Protobuf__FileDescriptorSet *again = google__protobuf__file_descriptor_set__unpack(NULL, out_len, out);
    if (again == NULL) abort();
    google__protobuf__file_descriptor_set__free_unpacked(again, NULL);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    size_t split = ((size_t)data[0] | (size_t)data[1] << 8) % (size - 1);
    const uint8_t *a = data + 2, *b = data + 2 + split;
    size_t na = split, nb = size - 2 - split;
    Google__Protobuf__FileDescriptorSet *sa = decode_set(a, na);
    Google__Protobuf__FileDescriptorSet *sb = decode_set(b, nb);
    char ma[512], mb[512];
    const char *name_a = sa != NULL ? first_message(sa, ma, sizeof ma) : NULL;
    const char *name_b = sb != NULL ? first_message(sb, mb, sizeof mb) : NULL;
    if (name_a != NULL) prune_one(a, na, name_a);
    if (name_b != NULL) prune_one(b, nb, name_b);
    if (sa != NULL && sb != NULL && name_a != NULL && name_b != NULL) {
        reg_schema old_s = {sa, name_a}, new_s = {sb, name_b};
        for (int m = REG_NONE; m <= REG_FULL_TRANSITIVE; m++) {
            reg_report report;
            todo_err err;
            (void)reg_compat_check(&old_s, &new_s, (reg_mode)m, &report, &err);
        }
    }
    if (sa != NULL) google__protobuf__file_descriptor_set__free_unpacked(sa, NULL);
    if (sb != NULL) google__protobuf__file_descriptor_set__free_unpacked(sb, NULL);
    return 0;
}
