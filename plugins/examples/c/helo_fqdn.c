/*
 * Example C plugin: refuses a HELO that is not a fully-qualified domain
 * (no dot, e.g. "localhost" or "PC-17") from clients outside the trusted
 * networks, and tags accepted messages with the HELO name it saw.
 * plugins/build.sh builds it to plugins/dist/c-helo_fqdn.wasm when clang and
 * wasm-ld are installed.
 */
#define SLUICE_PLUGIN_MAIN
#include "sluice_plugin.h"

static int client_is_trusted(void) {
    char v[4];
    int32_t n = sluice_get_property("conn.trusted", 12, v, sizeof v);
    return n == 1 && v[0] == '1';
}

SLUICE_EXPORT(sluice_on_helo)
int32_t sluice_on_helo(const char *helo, int32_t len) {
    if (client_is_trusted()) return SLUICE_CONTINUE;
    /* An address literal ([192.0.2.1]) is fine for a host without a name. */
    if (len > 0 && helo[0] == '[') return SLUICE_CONTINUE;
    for (int32_t i = 0; i < len; i++)
        if (helo[i] == '.') return SLUICE_CONTINUE;
    sluice_log_str(SLUICE_LOG_INFO, "refused a HELO without a domain");
    return sluice_reply(SLUICE_REJECT, 504, "5.5.2 Helo command rejected: need fully-qualified hostname");
}

SLUICE_EXPORT(sluice_on_data)
int32_t sluice_on_data(void) {
    char helo[256];
    int32_t n = sluice_get_property("conn.helo", 9, helo, sizeof helo);
    if (n < 0) return SLUICE_CONTINUE;
    if (n > (int32_t)sizeof helo) n = sizeof helo; /* cut, never overrun */
    sluice_add_header("X-Sluice-Helo", 13, helo, n);
    return SLUICE_CONTINUE;
}
