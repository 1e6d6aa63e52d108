/*
 * reg_compat: compatibility of two versions of an event schema under
 * protobuf's wire rules, for the schema registry.
 *
 * A schema is a FileDescriptorSet (dependencies included) and the full name
 * of its message ("todo.v1.TaskCreated"). reg_compat_check says whether data
 * written with one version can be read with the other, in a mode:
 *
 *   BACKWARD  the new schema reads data written with the old one
 *   FORWARD   the old schema reads data written with the new one
 *   FULL      both
 *   NONE      anything goes
 *   (the TRANSITIVE forms compare with every earlier version: the caller
 *    runs the check once per version)
 *
 * The rules, modelled on Buf's breaking-change categories (WIRE and
 * WIRE_JSON) and Confluent Schema Registry's protobuf checks, each named in
 * the message of a violation:
 *
 *   MESSAGE_SAME_NAME          the root message keeps its full name (package
 *                              and name); a version suffix V<N> on the name
 *                              does not count (TaskCreated -> TaskCreatedV2:
 *                              generated code holds both versions side by
 *                              side under two names)
 *   FIELD_SAME_NAME            a field number keeps its name
 *   FIELD_WIRE_COMPATIBLE_TYPE a field number keeps a wire-compatible type:
 *                              int32/uint32/int64/uint64/bool/enum (varint),
 *                              sint32/sint64, fixed32/sfixed32,
 *                              fixed64/sfixed64, string/bytes; a message
 *                              field keeps its message (checked in turn)
 *   FIELD_SAME_CARDINALITY     a repeated numeric field does not become
 *                              singular (packed data would not decode), and
 *                              a map stays a map of the same key and value
 *   FIELD_SAME_ONEOF           a field stays in (or out of) the same oneof
 *   FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED
 *                              a field removed from the new version has its
 *                              number reserved there
 *   FIELD_NO_REQUIRED_ADDED    the reader has no required (proto2) field the
 *                              writer lacks
 *   ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED
 *                              an enum value removed from the new version has
 *                              its number reserved there
 *
 * Rules about the reader and the writer are applied in the direction(s) of
 * the mode; the two "removed" rules compare the old and the new version in
 * every mode but NONE. Message types are compared recursively, each pair
 * once, so the work is polynomial in the schemas' size; it is also bounded
 * (a budget of lookups and comparisons, and message fields followed at most
 * 64 deep): past the bound the check answers TODO_ETOOBIG rather than run
 * for long or pass a schema it did not finish reading.
 */
#ifndef TODO_REG_COMPAT_H
#define TODO_REG_COMPAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "todo_err.h"

typedef enum reg_mode {
    REG_NONE,
    REG_BACKWARD,
    REG_FORWARD,
    REG_FULL,
    REG_BACKWARD_TRANSITIVE,
    REG_FORWARD_TRANSITIVE,
    REG_FULL_TRANSITIVE
} reg_mode;

/* "BACKWARD"... <-> reg_mode; parse returns TODO_EINVAL for anything else. */
const char *reg_mode_name(reg_mode m);
int reg_mode_parse(const char *name, reg_mode *out);
/* True for the TRANSITIVE forms. */
bool reg_mode_transitive(reg_mode m);

/* True when two full names name the same message up to a version suffix
 * ("todo.v1.TaskCreated" and "todo.v1.TaskCreatedV2"). */
bool reg_same_message_name(const char *a, const char *b);

typedef struct reg_schema {
    const Google__Protobuf__FileDescriptorSet *set;   /* borrowed */
    const char *message;                              /* full name, no leading dot */
} reg_schema;

#define REG_MAX_VIOLATIONS 16

typedef struct reg_report {
    int n;                                            /* violations found (up to REG_MAX_VIOLATIONS kept) */
    char violations[REG_MAX_VIOLATIONS][256];         /* "RULE: message.field: what" */
} reg_report;

/* Checks new against old in mode m (a TRANSITIVE mode checks like its
 * plain form). Returns TODO_OK with the report filled (n == 0: compatible),
 * TODO_EINVAL when a schema does not name a message its set holds, or
 * TODO_ETOOBIG when the check would take more than its bound (above). */
int reg_compat_check(const reg_schema *old_schema, const reg_schema *new_schema, reg_mode m, reg_report *report,
                     todo_err *err);

/* Decodes a descriptor set that comes from outside (a user, a file, the
 * database): checks its bytes first (pbx_check: nesting at most 64 deep,
 * well-formed), then decodes it with protobuf-c's allocator and drops
 * unknown fields. TODO_EINVAL says what is wrong. Free the result with
 * google__protobuf__file_descriptor_set__free_unpacked(set, NULL). */
int reg_set_decode(const uint8_t *bytes, size_t len, Google__Protobuf__FileDescriptorSet **out, todo_err *err);

#endif
