/*
 * sluice_plugin.h: the Sluice filter plugin ABI, version 1, for C.
 *
 * The contract is plugins/ABI.md; this header declares the same imports and
 * exports with C types (on wasm32 a pointer is an i32). Build a plugin with
 * a freestanding clang, no libc needed:
 *
 *   clang --target=wasm32-unknown-unknown -O2 -nostdlib -ffreestanding \
 *         -I plugins/include -Wl,--no-entry -Wl,-z,stack-size=65536 \
 *         -fuse-ld=wasm-ld -o my_filter.wasm my_filter.c
 *
 * In exactly one .c file, #define SLUICE_PLUGIN_MAIN before including this
 * header: that emits the required `sluice_abi_v1` marker and a `sluice_alloc`
 * that hands out one static exchange buffer (SLUICE_XBUF_SIZE bytes, 64 KiB
 * unless defined first), which is enough for every hook argument and a
 * modest config. Then export the hooks you need, with the signatures below:
 *
 *   SLUICE_EXPORT(sluice_on_rcpt)
 *   int32_t sluice_on_rcpt(const char *forward_path, int32_t len) { ... }
 *
 * Strings are (pointer, length) pairs, never NUL-terminated. Plugins keep
 * no transaction state in their own memory: use the notes.
 */
#ifndef SLUICE_PLUGIN_H
#define SLUICE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SLUICE_IMPORT(name) __attribute__((import_module("sluice"), import_name(#name)))
#define SLUICE_EXPORT(name) __attribute__((export_name(#name)))

/* Verdicts: what a hook returns. */
#define SLUICE_CONTINUE 0   /* next plugin; the stage is accepted after the last */
#define SLUICE_ACCEPT 1     /* accept this stage; later plugins skipped for it */
#define SLUICE_REJECT 2     /* 5xx: 550 5.7.1 unless set_reply chose another */
#define SLUICE_TEMPFAIL 3   /* 4xx: 451 4.7.1 unless set_reply chose another */
#define SLUICE_DISCONNECT 4 /* 421 and close */
#define SLUICE_DISCARD 5    /* end of data: 250, then drop */
#define SLUICE_QUARANTINE 6 /* end of data: 250, then hold in the queue */

/* Bits of the optional export `int32_t sluice_hooks(void)`: the hooks the
 * plugin's configuration needs, asked once after sluice_init; the host never
 * calls an exported hook whose bit is clear. Without the export, every
 * exported hook is called. */
#define SLUICE_HOOK_CONNECT (1 << 0)
#define SLUICE_HOOK_HELO (1 << 1)
#define SLUICE_HOOK_MAIL (1 << 2)
#define SLUICE_HOOK_RCPT (1 << 3)
#define SLUICE_HOOK_DATA (1 << 4)
#define SLUICE_HOOK_RESET (1 << 5)
#define SLUICE_HOOK_CLOSE (1 << 6)

/* Note scopes. */
#define SLUICE_SCOPE_CONNECTION 0
#define SLUICE_SCOPE_TRANSACTION 1

/* Log levels. */
#define SLUICE_LOG_ERROR 0
#define SLUICE_LOG_WARN 1
#define SLUICE_LOG_INFO 2
#define SLUICE_LOG_DEBUG 3
#define SLUICE_LOG_TRACE 4

/* DNS record types and dns_lookup's negative results. */
#define SLUICE_DNS_A 1
#define SLUICE_DNS_AAAA 28
#define SLUICE_DNS_MX 15
#define SLUICE_DNS_TXT 16
#define SLUICE_DNS_PTR 12
#define SLUICE_DNS_NXDOMAIN (-3)
#define SLUICE_DNS_FAILED (-2)

/* "No value", from the getters. */
#define SLUICE_NONE (-1)

/* Email authentication properties (ABI.md): text, words separated by
 * spaces. RESULT is one of pass, fail, softfail, neutral, none, temperror,
 * permerror; POLICY one of none, quarantine, reject. No value when the
 * check did not run (trusted or logged-in client, or switched off). */
#define SLUICE_AUTH_SPF "auth.spf"           /* RESULT DOMAIN (MAIL on) */
#define SLUICE_AUTH_SPF_HELO "auth.spf_helo" /* RESULT DOMAIN (MAIL on) */
#define SLUICE_AUTH_IPREV "auth.iprev"       /* RESULT [NAME] (MAIL on) */
#define SLUICE_AUTH_DKIM "auth.dkim"         /* RESULT DOMAIN SELECTOR per line (data) */
#define SLUICE_AUTH_ARC "auth.arc"           /* RESULT (data) */
#define SLUICE_AUTH_DMARC "auth.dmarc"       /* RESULT POLICY FROM-DOMAIN (data) */

/* ---- imports (module "sluice") -------------------------------------------
 * Getters copy up to buf_cap bytes and return the full length (call again
 * with a larger buffer if it is greater than buf_cap), or SLUICE_NONE. */

SLUICE_IMPORT(get_property)
int32_t sluice_get_property(const char *name, int32_t name_len, char *buf, int32_t buf_cap);

SLUICE_IMPORT(is_local_domain)
int32_t sluice_is_local_domain(const char *domain, int32_t len);

SLUICE_IMPORT(get_header)
int32_t sluice_get_header(const char *name, int32_t name_len, int32_t index, char *buf, int32_t buf_cap);

SLUICE_IMPORT(get_body)
int32_t sluice_get_body(int32_t offset, char *buf, int32_t buf_cap);

SLUICE_IMPORT(set_reply)
void sluice_set_reply(int32_t code, const char *text, int32_t text_len);

SLUICE_IMPORT(add_header)
void sluice_add_header(const char *name, int32_t name_len, const char *value, int32_t value_len);

SLUICE_IMPORT(add_score)
void sluice_add_score(const char *symbol, int32_t symbol_len, double score);

SLUICE_IMPORT(note_get)
int32_t sluice_note_get(int32_t scope, const char *key, int32_t key_len, char *buf, int32_t buf_cap);

SLUICE_IMPORT(note_set)
void sluice_note_set(int32_t scope, const char *key, int32_t key_len, const char *value, int32_t value_len);

SLUICE_IMPORT(log)
void sluice_log(int32_t level, const char *msg, int32_t len);

SLUICE_IMPORT(now_ms)
int64_t sluice_now_ms(void);

SLUICE_IMPORT(dns_lookup)
int32_t sluice_dns_lookup(int32_t qtype, const char *name, int32_t name_len, char *buf, int32_t buf_cap);

SLUICE_IMPORT(kv_get)
int32_t sluice_kv_get(const char *key, int32_t key_len, char *buf, int32_t buf_cap);

SLUICE_IMPORT(kv_set)
void sluice_kv_set(const char *key, int32_t key_len, const char *value, int32_t value_len, int32_t ttl_secs);

SLUICE_IMPORT(kv_incr)
int64_t sluice_kv_incr(const char *key, int32_t key_len, int64_t delta, int32_t ttl_secs);

/* ---- helpers for NUL-terminated literals ---------------------------------- */

static inline int32_t sluice_strlen(const char *s) {
    int32_t n = 0;
    while (s[n]) n++;
    return n;
}

/* Whether (s, len) equals the literal lit, ASCII case ignored. */
static inline int sluice_eq_ignore_case(const char *s, int32_t len, const char *lit) {
    int32_t i = 0;
    for (; i < len && lit[i]; i++) {
        char a = s[i], b = lit[i];
        if (a >= 'A' && a <= 'Z') a = (char)(a + 32);
        if (b >= 'A' && b <= 'Z') b = (char)(b + 32);
        if (a != b) return 0;
    }
    return i == len && lit[i] == 0;
}

static inline void sluice_log_str(int32_t level, const char *msg) {
    sluice_log(level, msg, sluice_strlen(msg));
}

/* Sets the reply and returns the verdict: return sluice_reply(SLUICE_REJECT, 550, "5.7.1 No"). */
static inline int32_t sluice_reply(int32_t verdict, int32_t code, const char *text) {
    sluice_set_reply(code, text, sluice_strlen(text));
    return verdict;
}

/* ---- the required exports ------------------------------------------------- */

/* What every plugin defines (SLUICE_PLUGIN_MAIN) or writes itself. */
void sluice_abi_v1(void);
int32_t sluice_alloc(int32_t size);

#ifdef SLUICE_PLUGIN_MAIN
#ifndef SLUICE_XBUF_SIZE
#define SLUICE_XBUF_SIZE 65536
#endif

SLUICE_EXPORT(sluice_abi_v1)
void sluice_abi_v1(void) {}

static char sluice_xbuf_[SLUICE_XBUF_SIZE];

/* The host writes a string argument here just before the call it is for and
 * never uses the pointer afterwards (ABI.md), so one buffer serves all
 * calls. 0 tells the host the argument does not fit. */
SLUICE_EXPORT(sluice_alloc)
int32_t sluice_alloc(int32_t size) {
    if (size < 0 || size > SLUICE_XBUF_SIZE) return 0;
    return (int32_t)(uintptr_t)sluice_xbuf_;
}
#endif /* SLUICE_PLUGIN_MAIN */

#ifdef __cplusplus
}
#endif

#endif /* SLUICE_PLUGIN_H */
