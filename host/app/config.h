/*
 * The host's configuration (SPEC section 6): parsed from JSON with cJSON,
 * strictly (unknown keys are errors), into plain C structs. Nothing outside
 * host/app sees cJSON: the engine gets numbers and addresses, plugins get
 * their settings as JSON text.
 */
#ifndef IOCPHOST_CONFIG_H
#define IOCPHOST_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "engine/address.h"
#include "engine/engine.h"

typedef enum config_service_type {
  CONFIG_SERVICE_SERVER = 1,
  CONFIG_SERVICE_CLIENT = 2
} config_service_type_t;

typedef enum config_framing {
  CONFIG_FRAMING_RAW = 1,
  CONFIG_FRAMING_PACKET = 2
} config_framing_t;

typedef enum config_transport {
  CONFIG_TRANSPORT_TCP = 0,
  CONFIG_TRANSPORT_WEBSOCKET = 1
} config_transport_t;

/* A service's "websocket" object (RFC 6455 upgrade and keepalive). */
typedef struct config_websocket {
  char *path;           /* default "/" */
  char **origins;       /* allowed Origin values; none: any */
  size_t origin_count;
  char *subprotocol;    /* NULL: none */
  uint32_t max_request_bytes; /* the upgrade request's cap; default 8192 */
  uint32_t ping_interval_ms;  /* 0 (default): no pings of ours */
  /* A client service's upgrade request: its Origin (NULL: none) and Host
   * (NULL: the address); path and subprotocol above are what it asks. */
  char *origin;
  char *host;
} config_websocket_t;

/* A service's "tls" object (SPEC section 14). Paths are absolute
 * (resolved against the config file's folder); NULL when not given. A
 * server needs cert_file and key_file, and with ca_file requires client
 * certificates; a client needs ca_file and server_name, and may present
 * cert_file and key_file. The files are read when the host opens
 * (tls_services.c), so `check` reads them too. */
typedef struct config_tls {
  int enabled; /* the service has a "tls" object */
  char *cert_file;
  char *key_file;
  char *ca_file;
  char *server_name;
} config_tls_t;

typedef struct config_core {
  char *name;
  int threads; /* as written; 0 = one per CPU (resolved by the host) */
  core_backend_t backend; /* CORE_BACKEND_DEFAULT when not given */
} config_core_t;

typedef struct config_plugin {
  char *name;
  char *path_given;    /* as written in the file */
  char *path;          /* resolved: absolute, platform suffix found */
  char *settings_json; /* the "settings" object printed unformatted; "{}" */
} config_plugin_t;

typedef struct config_service {
  char *name;
  config_service_type_t type;
  char *core;   /* name of a core in config_t.cores */
  char *plugin; /* name of a plugin in config_t.plugins */
  int core_index;
  int plugin_index;
  char *address_text;
  address_t address;
  config_framing_t framing;
  uint32_t max_recv_bytes;
  uint32_t max_packet_bytes; /* 4..65535 */
  uint64_t send_queue_limit_bytes;
  uint32_t idle_timeout_ms; /* 0 = never */
  int tcp_nodelay;          /* 0 or 1 */
  /* server only */
  uint32_t max_sessions;
  int backlog;
  /* client only */
  uint32_t sessions;
  uint32_t connect_timeout_ms;
  int reconnect; /* 0 when "reconnect": false */
  uint32_t reconnect_min_delay_ms;
  uint32_t reconnect_max_delay_ms;
  double reconnect_jitter; /* 0..1 */
  /* A session up this long resets the backoff; 0: max(max_delay_ms, 1 s). */
  uint32_t reconnect_reset_after_ms;
  /* Unconsumed input (an incomplete packet or message) must be consumed
   * within this time or the session ends with protocol_error; 0 = never.
   * Default 30000. */
  uint32_t incomplete_timeout_ms;
  /* After the host's FIN, how long to wait for the peer's before closing
   * the socket anyway; 0 = close at once. Default 2000. */
  uint32_t close_linger_ms;
  /* SPEC section 14: "transport" and its "websocket" object. */
  config_transport_t transport;
  uint32_t handshake_timeout_ms; /* default 10000; 0 = none */
  config_websocket_t websocket;  /* when transport is websocket */
  config_tls_t tls; /* under the transport, when enabled */
} config_service_t;

typedef struct config {
  char *file;       /* the path the config was read from, as given */
  char *dir;        /* absolute folder of the file: base of relative paths */
  char *name;
  int log_level;    /* iocphost_log_level_t */
  char *log_file;   /* absolute, or NULL for stderr */
  char *runtime_dir; /* absolute */
  uint32_t drain_timeout_ms;
  /* "work": the pool for plugins' blocking calls (session_work). */
  int work_threads;          /* 0 = one per CPU; default 4 */
  uint32_t work_queue_limit; /* items waiting before E_BUSY; default 1024 */
  /* "watchdog": a plugin callback running longer is logged and counted;
   * 0 = off; default 100. */
  uint32_t stall_warn_ms;
  /* "metrics" (SPEC section 15): the Prometheus endpoint (metrics.c); off
   * when metrics_address_text is NULL. */
  char *metrics_address_text;
  address_t metrics_address;
  uint32_t metrics_max_connections; /* at once, 1..64; default 8 */
  /* A connection's whole life: request in, page out; default 5000. */
  uint32_t metrics_timeout_ms;
  /* One plugin callback in this many (per thread) is timed for the
   * callback-duration histograms, and counts for that many; default 16. */
  uint32_t metrics_callback_sample;
  config_core_t *cores;
  size_t core_count;
  config_plugin_t *plugins;
  size_t plugin_count;
  config_service_t *services;
  size_t service_count;
} config_t;

/* Reads and validates a config file. On success returns 0 and *out owns a
 * config to free with config_free. On failure returns -1 and writes into
 * err one line naming the file, the JSON path (services[1].address) and,
 * for syntax errors, line and column, and what to do about it. */
int config_load(const char *file, config_t **out, char *err, size_t err_len);

/* Reads only the top level: name, log, runtime_dir and shutdown, which is
 * what finds a running instance (its control endpoint) and how long a stop
 * may take. Cores, plugins and services are not read at all, so status,
 * stop and reload still reach the host while a deployed plugin file is
 * missing or a service is being edited: the host validates the whole file
 * itself when it reloads. Errors as config_load. */
int config_load_identity(const char *file, config_t **out, char *err,
                         size_t err_len);

/* The same from text already in memory; file names it in messages and its
 * folder is the base of relative paths. Used by tests and the fuzzer. */
int config_parse(const char *file, const char *text, size_t len,
                 config_t **out, char *err, size_t err_len);

void config_free(config_t *config);

#endif /* IOCPHOST_CONFIG_H */
