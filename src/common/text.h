/*
 * text: small checks on strings from the outside world: UTF-8 validity,
 * length in characters, UUID syntax, UUID generation, base64url.
 * All functions are pure and thread-safe.
 */
#ifndef TODO_TEXT_H
#define TODO_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* Number of code points in the n bytes at s, or -1 when they are not valid
 * UTF-8 (overlongs, surrogates, values above U+10FFFF and NUL bytes are
 * refused). */
long text_utf8_chars(const char *s, size_t n);

/* The length of the longest prefix of s of at most max bytes that does
 * not end inside a UTF-8 character (for cutting text to a size). */
size_t text_utf8_prefix(const char *s, size_t max);

/* True when s is a UUID in canonical 8-4-4-4-12 lowercase or uppercase hex. */
bool text_is_uuid(const char *s);

/* Writes a random (version 4) UUID and a NUL to out. Returns 0, or -1 when
 * the system has no randomness to give. */
int text_uuid_v4(char out[37]);

/* base64url without padding. Encode: writes at most 4*ceil(n/3)+1 bytes to
 * out (NUL-terminated) and returns the length. Decode: returns the decoded
 * length, or -1 on a character outside the alphabet or a size over outcap. */
size_t text_b64url_encode(const unsigned char *in, size_t n, char *out);
long text_b64url_decode(const char *in, size_t n, unsigned char *out, size_t outcap);

/* Hex SHA-256 of the n bytes at data, NUL-terminated. */
void text_sha256_hex(const void *data, size_t n, char out[65]);

/* A name-based UUID of name (RFC 9562 version 8 from SHA-256): the same
 * name always gives the same id. */
void text_name_uuid(const char *name, char out[37]);

#endif
