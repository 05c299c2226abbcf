/*
 * Loading a plugin module and checking its descriptor (SPEC section 4).
 *
 * plugin_module_open maps the shared library, calls its entry symbol and
 * checks the descriptor it returns. It runs no other plugin code: on_load
 * is the caller's business, once every module of a configuration (or of a
 * reload) has passed its checks. Every refusal is one line naming the
 * plugin (its config name), the path, what the host expected and what it
 * found, and what to do about it.
 *
 * The host keeps its own zero-filled copy of the descriptor, made from the
 * first min(struct_size, sizeof) bytes of the plugin's, so a plugin built
 * against an older, shorter descriptor is never read past its end and the
 * fields it does not have read as NULL / 0.
 */
#ifndef IOCPHOST_PLUGIN_LOADER_H
#define IOCPHOST_PLUGIN_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "iocphost/plugin.h"

typedef struct plugin_module plugin_module_t;

/* Loads the library at path (RTLD_NOW | RTLD_LOCAL; on Windows by full
 * path with LOAD_WITH_ALTERED_SEARCH_PATH) and checks its descriptor.
 * config_name is the plugin's name in the config, used in messages.
 * Returns 0 and a module in *out, or -1 with *out = NULL, the library
 * unloaded again and the reason in err. */
int plugin_module_open(const char *config_name, const char *path,
                       plugin_module_t **out, char *err, size_t err_len);

/* Unloads the library. The caller has run on_unload already, if on_load
 * ran; after this no pointer from the descriptor may be used. NULL is
 * allowed. */
void plugin_module_close(plugin_module_t *module);

/* The host's copy of the descriptor: every field of this host's ABI, the
 * ones the plugin's struct_size does not cover set to NULL / 0. Its
 * callbacks and strings point into the library: valid until close. */
const iocphost_plugin_t *
plugin_module_descriptor(const plugin_module_t *module);

/* Host-owned copies, valid until close (also after on_unload). */
const char *plugin_module_name(const plugin_module_t *module); /* descriptor */
const char *plugin_module_version(const plugin_module_t *module);
const char *plugin_module_config_name(const plugin_module_t *module);
const char *plugin_module_path(const plugin_module_t *module);

/* What the plugin was built with: its struct_size and ABI minor, for
 * status and for guarding callbacks appended in later minors. */
uint32_t plugin_module_struct_size(const plugin_module_t *module);
uint16_t plugin_module_abi_minor(const plugin_module_t *module);

/* Refuses to serve a service with a plugin that lacks the callback its
 * framing needs: on_packet for needs_packet = 1, on_recv for 0. Returns 0,
 * or -1 with a message naming the service, the plugin and its path. */
int plugin_module_check_framing(const plugin_module_t *module, int needs_packet,
                                const char *service_name, char *err,
                                size_t err_len);

/* Where the module is mapped: its lowest to its highest loaded byte (code,
 * constants and data). The host tells by address which generation a plugin
 * function belongs to. Returns 0, or -1 if that cannot be found. */
int plugin_module_image(const plugin_module_t *module, uintptr_t *start,
                        uintptr_t *end);

#endif /* IOCPHOST_PLUGIN_LOADER_H */
