/*
 * Metrics a plugin defines (plugin ABI 1.3, SPEC section 15): counters,
 * gauges and histograms with a fixed set of label names, defined in
 * on_load, updated from any thread with atomics, rendered with the labels
 * plugin and generation added.
 *
 * Every family belongs to the generation that defined it and goes with it:
 * generation_close calls plugin_metrics_generation_closed after on_unload,
 * so a plugin's handles stay valid exactly until its on_unload returns.
 * One name has one definition (type and label names) across the host, so
 * the families of every generation and plugin that share a name render
 * under one HELP/TYPE header.
 */
#ifndef IOCPHOST_PLUGIN_METRICS_H
#define IOCPHOST_PLUGIN_METRICS_H

#include "host.h"
#include "iocphost/plugin.h"
#include "prom.h"

struct generation;

/* Puts metric_define ... metric_observe into a generation's table. */
void plugin_metrics_fill_api(iocphost_api_t *api);

/* Forgets and frees every family of g (after its on_unload, or when its
 * on_load failed). Takes host->metrics_lock, so a scrape never sees one
 * half gone. */
void plugin_metrics_generation_closed(struct generation *g);

/* Every plugin-defined family, each once, with the series of every live
 * generation under it: name{<plugin's labels>,plugin="p",generation="n"}.
 * Safe from any thread while the host lives. */
void plugin_metrics_render_metrics(host_t *h, prom_t *p);

#endif
