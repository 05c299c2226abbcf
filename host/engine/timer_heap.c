#include "engine/timer_heap.h"

#include <stdlib.h>

static int earlier(const io_timer_t *a, const io_timer_t *b) {
  return a->due_ms < b->due_ms;
}

static void swap(timer_heap_t *heap, uint32_t i, uint32_t j) {
  io_timer_t *t = heap->items[i];
  heap->items[i] = heap->items[j];
  heap->items[j] = t;
  heap->items[i]->heap_index = i;
  heap->items[j]->heap_index = j;
}

static void sift_up(timer_heap_t *heap, uint32_t i) {
  while (i > 0) {
    uint32_t parent = (i - 1) / 2;
    if (!earlier(heap->items[i], heap->items[parent]))
      break;
    swap(heap, i, parent);
    i = parent;
  }
}

static void sift_down(timer_heap_t *heap, uint32_t i) {
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < heap->count && earlier(heap->items[l], heap->items[m]))
      m = l;
    if (r < heap->count && earlier(heap->items[r], heap->items[m]))
      m = r;
    if (m == i)
      break;
    swap(heap, i, m);
    i = m;
  }
}

int timer_heap_insert(timer_heap_t *heap, io_timer_t *t) {
  if (heap->count == heap->capacity) {
    uint32_t capacity = heap->capacity ? heap->capacity * 2 : 64;
    io_timer_t **grown = realloc(heap->items, capacity * sizeof *grown);
    if (!grown)
      return -1;
    heap->items = grown;
    heap->capacity = capacity;
  }
  t->heap_index = heap->count;
  heap->items[heap->count++] = t;
  sift_up(heap, t->heap_index);
  return 0;
}

void timer_heap_remove(timer_heap_t *heap, io_timer_t *t) {
  uint32_t i = t->heap_index;
  uint32_t last = --heap->count;
  if (i != last) {
    swap(heap, i, last);
    sift_down(heap, i);
    sift_up(heap, i);
  }
  t->heap_index = UINT32_MAX;
}

io_timer_t *timer_heap_first(const timer_heap_t *heap) {
  return heap->count ? heap->items[0] : NULL;
}

void timer_heap_free(timer_heap_t *heap) {
  free(heap->items);
  heap->items = NULL;
  heap->count = heap->capacity = 0;
}
