#include "plugin_loader.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

#include "trust_win.h"
#else
#include <dlfcn.h>
#include <link.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

struct plugin_module {
  void *library;
  /* The host's copy: the plugin's first min(struct_size, sizeof) bytes, the
   * rest zero. Never the plugin's own struct, which may be shorter. */
  iocphost_plugin_t descriptor;
  uint32_t struct_size; /* as the plugin declared it */
  uint16_t abi_minor;
  char *config_name;
  char *path;
  char *name;
  char *version;
};

/* Room for a reason that quotes a path or two. */
#define PATH_MAX_REASON 2048

/* The header every descriptor of every ABI starts with. */
#define DESCRIPTOR_HEADER_SIZE                                                 \
  (offsetof(iocphost_plugin_t, abi_minor) +                                    \
   sizeof(((iocphost_plugin_t *)0)->abi_minor))

static void set_error(char *err, size_t err_len, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void set_error(char *err, size_t err_len, const char *fmt, ...) {
  if (err == NULL || err_len == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, err_len, fmt, ap);
  va_end(ap);
}

static char *copy_string(const char *text) {
  size_t len = strlen(text);
  char *copy = malloc(len + 1);
  if (copy != NULL)
    memcpy(copy, text, len + 1);
  return copy;
}

/* The platform's library calls. Each failing call writes the system's own
 * reason into reason. */
#ifdef _WIN32

static void system_reason(char *reason, size_t len) {
  DWORD code = GetLastError();
  DWORD n =
      FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
                     NULL, code, 0, reason, (DWORD)len, NULL);
  /* FormatMessage ends its text with a line break; a message is one line. */
  while (n > 0 && (reason[n - 1] == '\r' || reason[n - 1] == '\n' ||
                   reason[n - 1] == ' ' || reason[n - 1] == '.'))
    reason[--n] = '\0';
  if (n == 0)
    snprintf(reason, len, "error %lu", (unsigned long)code);
}

static void *library_open(const char *path, char *reason, size_t len) {
  /* By full path, so the plugin's own folder (and not the current one) is
   * searched for its dependencies, and with no error dialog. */
  int wlen =
      MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, NULL, 0);
  if (wlen <= 0) {
    snprintf(reason, len, "the path is not valid UTF-8");
    return NULL;
  }
  wchar_t *wide = malloc((size_t)wlen * sizeof *wide);
  if (wide == NULL) {
    snprintf(reason, len, "out of memory");
    return NULL;
  }
  MultiByteToWideChar(CP_UTF8, 0, path, -1, wide, wlen);
  DWORD full_len = GetFullPathNameW(wide, 0, NULL, NULL);
  wchar_t *full = full_len > 0 ? malloc(full_len * sizeof *full) : NULL;
  if (full == NULL || GetFullPathNameW(wide, full_len, full, NULL) == 0) {
    snprintf(reason, len, "cannot resolve the full path");
    free(full);
    free(wide);
    return NULL;
  }
  /* Windows says "module not found" both for a missing file and for a
   * missing dependency: tell them apart. */
  DWORD attributes = GetFileAttributesW(full);
  if (attributes == INVALID_FILE_ATTRIBUTES ||
      (attributes & FILE_ATTRIBUTE_DIRECTORY)) {
    snprintf(reason, len, "%s",
             attributes == INVALID_FILE_ATTRIBUTES
                 ? "No such file or directory"
                 : "it is a folder, not a file");
    free(full);
    free(wide);
    return NULL;
  }
  /* Dependencies are searched in the plugin's own folder, then in the
   * process's safe default folders (System32 and folders added on purpose:
   * main.c calls SetDefaultDllDirectories), never the current folder. */
  DWORD old_mode = 0;
  SetThreadErrorMode(SEM_FAILCRITICALERRORS | SEM_NOOPENFILEERRORBOX,
                     &old_mode);
  HMODULE library =
      LoadLibraryExW(full, NULL,
                     LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR |
                         LOAD_LIBRARY_SEARCH_DEFAULT_DIRS);
  if (library == NULL) {
    DWORD code = GetLastError();
    char text[PATH_MAX_REASON / 2];
    system_reason(text, sizeof text);
    if (code == ERROR_MOD_NOT_FOUND)
      snprintf(reason, len,
               "a DLL it depends on was not found (%s): put it beside the "
               "plugin",
               text);
    else
      snprintf(reason, len, "%s", text);
  }
  SetThreadErrorMode(old_mode, NULL);
  free(full);
  free(wide);
  return (void *)library;
}

static iocphost_plugin_entry_fn library_entry(void *library) {
  FARPROC symbol = GetProcAddress((HMODULE)library, IOCPHOST_PLUGIN_ENTRY_NAME);
  return (iocphost_plugin_entry_fn)(void (*)(void))symbol;
}

static void library_close(void *library) { FreeLibrary((HMODULE)library); }

#else

static void *library_open(const char *path, char *reason, size_t len) {
  /* A path without a slash would make dlopen search the library path. */
  char *relative = NULL;
  if (strchr(path, '/') == NULL) {
    size_t path_len = strlen(path);
    relative = malloc(path_len + 3);
    if (relative == NULL) {
      snprintf(reason, len, "out of memory");
      return NULL;
    }
    memcpy(relative, "./", 2);
    memcpy(relative + 2, path, path_len + 1);
  }
  dlerror();
  void *library = dlopen(relative ? relative : path, RTLD_NOW | RTLD_LOCAL);
  if (library == NULL) {
    /* dlerror usually starts with the path, which the message has already. */
    const char *text = dlerror();
    size_t path_len = strlen(path);
    if (text == NULL)
      text = "unknown dlopen error";
    else if (strncmp(text, path, path_len) == 0 &&
             strncmp(text + path_len, ": ", 2) == 0)
      text += path_len + 2;
    snprintf(reason, len, "%s", text);
  }
  free(relative);
  return library;
}

static iocphost_plugin_entry_fn library_entry(void *library) {
  dlerror();
  void *symbol = dlsym(library, IOCPHOST_PLUGIN_ENTRY_NAME);
  if (symbol == NULL)
    dlerror();
  /* POSIX guarantees a data pointer from dlsym converts to a function. */
  return (iocphost_plugin_entry_fn)symbol;
}

static void library_close(void *library) { dlclose(library); }

#endif

/* Checks a descriptor read from the plugin; on success fills the module's
 * copy. Reads nothing beyond the plugin's struct_size. */
static int check_descriptor(plugin_module_t *m, const iocphost_plugin_t *d,
                            char *err, size_t err_len) {
  const char *cname = m->config_name;
  const char *path = m->path;
  uint32_t size = d->struct_size;
  if (size < DESCRIPTOR_HEADER_SIZE) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): descriptor too small: expected struct_size "
              "of at least %u bytes (ABI %d.%d, up to on_disconnected), found "
              "%u; initialise the descriptor with IOCPHOST_PLUGIN_HEADER",
              cname, path, (unsigned)IOCPHOST_PLUGIN_MIN_SIZE,
              IOCPHOST_ABI_MAJOR, IOCPHOST_ABI_MINOR, (unsigned)size);
    return -1;
  }
  if (d->abi_major != IOCPHOST_ABI_MAJOR) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): ABI major %u is not supported: this host "
              "speaks ABI %d.x; rebuild the plugin against this host's SDK",
              cname, path, (unsigned)d->abi_major, IOCPHOST_ABI_MAJOR);
    return -1;
  }
  if (d->abi_minor > IOCPHOST_ABI_MINOR) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): ABI %u.%u is newer than this host's ABI "
              "%d.%d: expected minor %d or lower, found %u; upgrade the host "
              "or rebuild the plugin against this host's SDK",
              cname, path, (unsigned)d->abi_major, (unsigned)d->abi_minor,
              IOCPHOST_ABI_MAJOR, IOCPHOST_ABI_MINOR, IOCPHOST_ABI_MINOR,
              (unsigned)d->abi_minor);
    return -1;
  }
  if (size < IOCPHOST_PLUGIN_MIN_SIZE) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): descriptor too small: expected struct_size "
              "of at least %u bytes (ABI %d.%d, up to on_disconnected), found "
              "%u; initialise the descriptor with IOCPHOST_PLUGIN_HEADER",
              cname, path, (unsigned)IOCPHOST_PLUGIN_MIN_SIZE,
              IOCPHOST_ABI_MAJOR, IOCPHOST_ABI_MINOR, (unsigned)size);
    return -1;
  }

  iocphost_plugin_t *c = &m->descriptor;
  memset(c, 0, sizeof *c);
  memcpy(c, d, size < sizeof *c ? size : sizeof *c);
  m->struct_size = size;
  m->abi_minor = d->abi_minor;

  if (c->name == NULL || c->name[0] == '\0') {
    set_error(err, err_len,
              "plugin \"%s\" (%s): descriptor has no name: expected a "
              "non-empty name, found %s; set .name in the descriptor",
              cname, path, c->name == NULL ? "NULL" : "\"\"");
    return -1;
  }
  if (c->version == NULL) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): descriptor has no version: expected a "
              "version string such as \"1.0.0\", found NULL; set .version in "
              "the descriptor",
              cname, path);
    return -1;
  }
  const char *missing = NULL;
  if (c->on_connected == NULL)
    missing = "on_connected";
  else if (c->on_disconnected == NULL)
    missing = "on_disconnected";
  if (missing != NULL) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): required callback %s is missing: expected "
              "a function, found NULL; set .%s in the descriptor",
              cname, path, missing, missing);
    return -1;
  }
  if (c->on_recv == NULL && c->on_packet == NULL) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): no receive callback: expected on_recv "
              "(raw framing) or on_packet (packet framing), found neither; "
              "set at least one in the descriptor",
              cname, path);
    return -1;
  }
  return 0;
}

int plugin_module_open(const char *config_name, const char *path,
                       plugin_module_t **out, char *err, size_t err_len) {
  *out = NULL;
  if (config_name == NULL)
    config_name = "";
  if (path == NULL || path[0] == '\0') {
    set_error(err, err_len,
              "plugin \"%s\": no path: expected the path of a plugin library, "
              "found none",
              config_name);
    return -1;
  }
  plugin_module_t *m = calloc(1, sizeof *m);
  if (m == NULL || (m->config_name = copy_string(config_name)) == NULL ||
      (m->path = copy_string(path)) == NULL) {
    set_error(err, err_len, "plugin \"%s\" (%s): out of memory", config_name,
              path);
    plugin_module_close(m);
    return -1;
  }

  /* Whether the file may be trusted at all is decided before, from the
   * file the caller copies (admission.h). */
  char reason[PATH_MAX_REASON];
  m->library = library_open(path, reason, sizeof reason);
  if (m->library == NULL) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): cannot load the library: expected a shared "
              "library built for this platform, found: %s; check the path, "
              "the file and its dependencies",
              config_name, path, reason);
    plugin_module_close(m);
    return -1;
  }

  iocphost_plugin_entry_fn entry = library_entry(m->library);
  if (entry == NULL) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): no entry point: expected the exported "
              "function %s, found no such symbol; declare it with "
              "IOCPHOST_PLUGIN_ENTRY and build with iocphost_add_plugin()",
              config_name, path, IOCPHOST_PLUGIN_ENTRY_NAME);
    plugin_module_close(m);
    return -1;
  }

  /* The one piece of plugin code run before the checks: it must only
   * return the address of its descriptor. */
  const iocphost_plugin_t *descriptor = entry();
  if (descriptor == NULL) {
    set_error(err, err_len,
              "plugin \"%s\" (%s): no descriptor: expected %s() to return the "
              "address of the plugin's iocphost_plugin_t, found NULL; return "
              "a static descriptor",
              config_name, path, IOCPHOST_PLUGIN_ENTRY_NAME);
    plugin_module_close(m);
    return -1;
  }
  if (check_descriptor(m, descriptor, err, err_len) != 0) {
    plugin_module_close(m);
    return -1;
  }

  m->name = copy_string(m->descriptor.name);
  m->version = copy_string(m->descriptor.version);
  if (m->name == NULL || m->version == NULL) {
    set_error(err, err_len, "plugin \"%s\" (%s): out of memory", config_name,
              path);
    plugin_module_close(m);
    return -1;
  }
  *out = m;
  return 0;
}

void plugin_module_close(plugin_module_t *module) {
  if (module == NULL)
    return;
  if (module->library != NULL)
    library_close(module->library);
  free(module->config_name);
  free(module->path);
  free(module->name);
  free(module->version);
  free(module);
}

const iocphost_plugin_t *plugin_module_descriptor(const plugin_module_t *m) {
  return &m->descriptor;
}

const char *plugin_module_name(const plugin_module_t *m) { return m->name; }

const char *plugin_module_version(const plugin_module_t *m) {
  return m->version;
}

const char *plugin_module_config_name(const plugin_module_t *m) {
  return m->config_name;
}

const char *plugin_module_path(const plugin_module_t *m) { return m->path; }

uint32_t plugin_module_struct_size(const plugin_module_t *m) {
  return m->struct_size;
}

uint16_t plugin_module_abi_minor(const plugin_module_t *m) {
  return m->abi_minor;
}

int plugin_module_check_framing(const plugin_module_t *m, int needs_packet,
                                const char *service_name, char *err,
                                size_t err_len) {
  const iocphost_plugin_t *d = &m->descriptor;
  if (needs_packet ? d->on_packet != NULL : d->on_recv != NULL)
    return 0;
  set_error(
      err, err_len,
      "service \"%s\": plugin \"%s\" (%s) cannot serve %s framing: "
      "expected %s, found NULL (the plugin has only %s); implement %s "
      "or set the service's \"framing\" to \"%s\"",
      service_name ? service_name : "", m->config_name, m->path,
      needs_packet ? "packet" : "raw", needs_packet ? "on_packet" : "on_recv",
      needs_packet ? "on_recv" : "on_packet",
      needs_packet ? "on_packet" : "on_recv", needs_packet ? "raw" : "packet");
  return -1;
}

/* ---- where a module's code and data lie ---- */

#ifdef _WIN32

int plugin_module_image(const plugin_module_t *m, uintptr_t *start,
                        uintptr_t *end) {
  /* A module handle is the address its image is mapped at; the image is
   * SizeOfImage bytes from there, headers, code and data. */
  const unsigned char *base = (const unsigned char *)m->library;
  const IMAGE_DOS_HEADER *dos = (const IMAGE_DOS_HEADER *)base;
  if (base == NULL || dos->e_magic != IMAGE_DOS_SIGNATURE)
    return -1;
  const IMAGE_NT_HEADERS *nt =
      (const IMAGE_NT_HEADERS *)(base + dos->e_lfanew);
  if (nt->Signature != IMAGE_NT_SIGNATURE)
    return -1;
  *start = (uintptr_t)base;
  *end = (uintptr_t)base + nt->OptionalHeader.SizeOfImage;
  return 0;
}

#else

typedef struct image_search {
  uintptr_t address; /* one address known to lie in the module */
  uintptr_t start, end;
  int found;
} image_search_t;

/* dl_iterate_phdr's callback: the object whose loaded segments hold the
 * address gives the span from its lowest segment to its highest. */
static int find_image(struct dl_phdr_info *info, size_t size, void *data) {
  image_search_t *search = data;
  uintptr_t start = UINTPTR_MAX, end = 0;
  int inside = 0;
  for (size_t i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD)
      continue;
    uintptr_t lo = (uintptr_t)info->dlpi_addr + (uintptr_t)ph->p_vaddr;
    uintptr_t hi = lo + (uintptr_t)ph->p_memsz;
    if (lo < start)
      start = lo;
    if (hi > end)
      end = hi;
    if (search->address >= lo && search->address < hi)
      inside = 1;
  }
  if (!inside)
    return 0;
  search->start = start;
  search->end = end;
  search->found = 1;
  return 1;
}

int plugin_module_image(const plugin_module_t *m, uintptr_t *start,
                        uintptr_t *end) {
  if (m->library == NULL)
    return -1;
  image_search_t search = {0, 0, 0, 0};
  search.address = (uintptr_t)library_entry(m->library);
  if (search.address == 0)
    return -1;
  dl_iterate_phdr(find_image, &search);
  if (!search.found)
    return -1;
  *start = search.start;
  *end = search.end;
  return 0;
}

#endif
