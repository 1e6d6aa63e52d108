/* seal: see seal.h. */
#include "seal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <openssl/rand.h>
#include <string.h>

#include "todo/v1/events.pb-c.h"

#define FORMAT 1

/* AES-256-GCM fetched once: an implicit fetch at each EVP_*Init_ex costs
 * more than sealing an event's fields (OpenSSL 3). */
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *gcm;

static void fetch_gcm(void) { gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL); }

static const EVP_CIPHER *aes_gcm(void)
{
    pthread_once(&fetch_once, fetch_gcm);
    return gcm != NULL ? gcm : EVP_aes_256_gcm();
}
#define NONCE 12
#define TAG 16

int seal_key_parse(const char *hex, seal_key *out, todo_err *err)
{
    if (hex == NULL || strlen(hex) != 2 * SEAL_KEY_LEN)
        return todo_err_set(err, TODO_EINVAL, "a key is %d hex digits (%d bytes)", 2 * SEAL_KEY_LEN, SEAL_KEY_LEN);
    for (int i = 0; i < SEAL_KEY_LEN; i++) {
        int v = 0;
        for (int j = 0; j < 2; j++) {
            char c = hex[2 * i + j];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0) return todo_err_set(err, TODO_EINVAL, "a key is hex digits only, got '%c'", c);
            v = v * 16 + d;
        }
        out->k[i] = (uint8_t)v;
    }
    return TODO_OK;
}

int seal_key_new(seal_key *out, todo_err *err)
{
    if (RAND_bytes(out->k, SEAL_KEY_LEN) != 1) return todo_err_set(err, TODO_EINTERNAL, "no randomness for a key");
    return TODO_OK;
}

int seal_bytes(const seal_key *k, const uint8_t *in, size_t n, const char *aad, arena *a, uint8_t **out,
               size_t *out_len, todo_err *err)
{
    if (n > (size_t)1 << 30) return todo_err_set(err, TODO_EINVAL, "too much to seal (%zu bytes)", n);
    uint8_t *o = arena_alloc(a, n + SEAL_OVERHEAD);
    o[0] = FORMAT;
    if (RAND_bytes(o + 1, NONCE) != 1) return todo_err_set(err, TODO_EINTERNAL, "no randomness for a nonce");
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0, ok = c != NULL && EVP_EncryptInit_ex(c, aes_gcm(), NULL, NULL, NULL) == 1 &&
                              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE, NULL) == 1 &&
                              EVP_EncryptInit_ex(c, NULL, NULL, k->k, o + 1) == 1 &&
                              EVP_EncryptUpdate(c, NULL, &len, (const uint8_t *)aad, (int)strlen(aad)) == 1 &&
                              EVP_EncryptUpdate(c, o + 1 + NONCE, &len, in, (int)n) == 1 &&
                              EVP_EncryptFinal_ex(c, o + 1 + NONCE + len, &fin) == 1 &&
                              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG, o + 1 + NONCE + n) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok || (size_t)(len + fin) != n) return todo_err_set(err, TODO_EINTERNAL, "AES-256-GCM encryption failed");
    *out = o;
    *out_len = n + SEAL_OVERHEAD;
    return TODO_OK;
}

int seal_open_bytes(const seal_key *k, const uint8_t *in, size_t n, const char *aad, arena *a, uint8_t **out,
                    size_t *out_len, todo_err *err)
{
    if (n < SEAL_OVERHEAD || in[0] != FORMAT || n - SEAL_OVERHEAD > (size_t)1 << 30)
        return todo_err_set(err, TODO_EINVAL, "not a sealed value (format or length)");
    size_t m = n - SEAL_OVERHEAD;
    uint8_t *o = arena_alloc(a, m + 1);
    uint8_t tag[TAG];
    memcpy(tag, in + 1 + NONCE + m, TAG);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0, ok = c != NULL && EVP_DecryptInit_ex(c, aes_gcm(), NULL, NULL, NULL) == 1 &&
                              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE, NULL) == 1 &&
                              EVP_DecryptInit_ex(c, NULL, NULL, k->k, in + 1) == 1 &&
                              EVP_DecryptUpdate(c, NULL, &len, (const uint8_t *)aad, (int)strlen(aad)) == 1 &&
                              EVP_DecryptUpdate(c, o, &len, in + 1 + NONCE, (int)m) == 1 &&
                              EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG, tag) == 1 &&
                              EVP_DecryptFinal_ex(c, o + len, &fin) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok || (size_t)(len + fin) != m)
        return todo_err_set(err, TODO_EINVAL, "a sealed value does not open with this key (another key, another "
                                              "event, or changed)");
    *out = o;
    *out_len = m;
    return TODO_OK;
}

/* The personal fields of each message that has some (documented in
 * proto/todo/v1/events.proto). */
static const struct {
    const char *message;
    const ProtobufCMessageDescriptor *desc;
    const char *const fields[5];
} personal[] = {
    {"todo.v1.TaskCreatedV2", &todo__v1__task_created_v2__descriptor, {"title", "description", "tags", "category", NULL}},
    {"todo.v1.TaskUpdated", &todo__v1__task_updated__descriptor, {"title", "description", "category", "tags", NULL}},
    {"todo.v1.InboxEntryAdded", &todo__v1__inbox_entry_added__descriptor, {"subject", "body", NULL}},
    {"todo.v1.NotificationPreferencesSet", &todo__v1__notification_preferences_set__descriptor,
     {"email", "webhook_url", NULL}},
    {"todo.v1.SendNotification", &todo__v1__send_notification__descriptor, {"subject", "body", NULL}},
};

const ProtobufCMessageDescriptor *seal_descriptor(const char *message)
{
    for (size_t i = 0; i < sizeof personal / sizeof personal[0]; i++)
        if (strcmp(personal[i].message, message) == 0) return personal[i].desc;
    return NULL;
}

const char *const *seal_personal_fields(const char *message)
{
    for (size_t i = 0; i < sizeof personal / sizeof personal[0]; i++)
        if (strcmp(personal[i].message, message) == 0) return personal[i].fields;
    return NULL;
}

const char *seal_event_aad(arena *a, const char *user_id, const char *aggregate_id, const char *event_type)
{
    return arena_printf(a, "%s\n%s\n%s", user_id, aggregate_id, event_type);
}

static ProtobufCBinaryData *sealed_field(const ProtobufCMessage *msg)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, "sealed");
    if (f == NULL || f->type != PROTOBUF_C_TYPE_BYTES || f->label == PROTOBUF_C_LABEL_REPEATED) return NULL;
    return (ProtobufCBinaryData *)((char *)msg + f->offset);
}

/* Copies the personal fields from src to dst (same type); with clear, sets
 * them empty in src afterwards. Only strings and repeated strings. */
static void move_fields(ProtobufCMessage *dst, ProtobufCMessage *src, const char *const *names, bool clear)
{
    for (const char *const *n = names; *n != NULL; n++) {
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(src->descriptor, *n);
        if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING) continue;
        char **from = (char **)((char *)src + f->offset), **to = (char **)((char *)dst + f->offset);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t *nf = (size_t *)((char *)src + f->quantifier_offset), *nt = (size_t *)((char *)dst + f->quantifier_offset);
            *nt = *nf;
            *to = *from;
            if (clear) {
                *nf = 0;
                *from = NULL;
            }
        } else {
            *to = *from;
            if (clear) *from = (char *)"";
        }
    }
}

int seal_event(ProtobufCMessage *msg, const seal_key *k, const char *aad, arena *a, todo_err *err)
{
    const char *const *names = seal_personal_fields(msg->descriptor->name);
    ProtobufCBinaryData *sealed = sealed_field(msg);
    if (names == NULL || sealed == NULL || sealed->len > 0) return TODO_OK; /* nothing to seal, or sealed already */
    ProtobufCMessage *p = arena_alloc(a, msg->descriptor->sizeof_message);
    msg->descriptor->message_init(p);
    move_fields(p, msg, names, true);
    size_t n = protobuf_c_message_get_packed_size(p);
    uint8_t *plain = arena_alloc(a, n + 1);
    protobuf_c_message_pack(p, plain);
    uint8_t *out;
    size_t out_len;
    int rc = seal_bytes(k, plain, n, aad, a, &out, &out_len, err);
    OPENSSL_cleanse(plain, n);
    if (rc != TODO_OK) return rc;
    sealed->data = out;
    sealed->len = out_len;
    return TODO_OK;
}

bool seal_event_is_sealed(const ProtobufCMessage *msg)
{
    const ProtobufCBinaryData *s = sealed_field(msg);
    return s != NULL && s->len > 0;
}

int seal_open_event(ProtobufCMessage *msg, const seal_key *k, const char *aad, arena *a, todo_err *err)
{
    const char *const *names = seal_personal_fields(msg->descriptor->name);
    ProtobufCBinaryData *sealed = sealed_field(msg);
    if (names == NULL || sealed == NULL || sealed->len == 0) return TODO_OK;
    uint8_t *plain;
    size_t n;
    int rc = seal_open_bytes(k, sealed->data, sealed->len, aad, a, &plain, &n, err);
    if (rc != TODO_OK) return rc;
    ProtobufCAllocator alloc;
    arena_pbc_allocator(a, &alloc);
    ProtobufCMessage *p = protobuf_c_message_unpack(msg->descriptor, &alloc, n, plain);
    if (p == NULL) return todo_err_set(err, TODO_EINVAL, "the sealed fields of a %s do not decode", msg->descriptor->name);
    move_fields(msg, p, names, false);
    sealed->data = NULL;
    sealed->len = 0;
    return TODO_OK;
}
