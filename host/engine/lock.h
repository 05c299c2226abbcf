/*
 * The lock of an engine object that exists by the thousand (a session, a
 * room): 4 bytes on Linux, where a pthread_mutex_t is 40, and a slim
 * reader/writer lock (one pointer) on Windows.
 *
 * Linux: a futex lock (Drepper, "Futexes Are Tricky", mutex 3): 0 free, 1
 * held, 2 held with waiters maybe sleeping. Taking a free lock is one
 * compare-and-swap and releasing it one atomic decrement, as with glibc's
 * default mutex, which works the same way; only a contended lock makes a
 * system call. Not recursive, no owner checks, no condition variables: the
 * objects that use it only guard a few fields for a few instructions. The
 * acquire and release orderings are C11 atomics, so ThreadSanitizer sees
 * the order the lock gives.
 */
#ifndef IOCPHOST_ENGINE_LOCK_H
#define IOCPHOST_ENGINE_LOCK_H

#ifdef _WIN32
#include <windows.h>

typedef struct engine_lock {
  SRWLOCK srw;
} engine_lock_t;

static inline void engine_lock_init(engine_lock_t *l) {
  InitializeSRWLock(&l->srw);
}
static inline void engine_lock_destroy(engine_lock_t *l) { (void)l; }
static inline void engine_lock(engine_lock_t *l) {
  AcquireSRWLockExclusive(&l->srw);
}
static inline void engine_unlock(engine_lock_t *l) {
  ReleaseSRWLockExclusive(&l->srw);
}

#else
#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef struct engine_lock {
  atomic_uint state; /* 0 free, 1 held, 2 held and contended */
} engine_lock_t;

static inline void engine_lock_init(engine_lock_t *l) {
  atomic_init(&l->state, 0);
}
static inline void engine_lock_destroy(engine_lock_t *l) { (void)l; }

/* The slow path: mark the lock contended, sleep until it is released. */
static inline void engine_lock_wait(engine_lock_t *l, unsigned seen) {
  if (seen != 2)
    seen = atomic_exchange_explicit(&l->state, 2, memory_order_acquire);
  while (seen != 0) {
    syscall(SYS_futex, &l->state, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
    seen = atomic_exchange_explicit(&l->state, 2, memory_order_acquire);
  }
}

static inline void engine_lock(engine_lock_t *l) {
  unsigned seen = 0;
  if (!atomic_compare_exchange_strong_explicit(&l->state, &seen, 1,
                                               memory_order_acquire,
                                               memory_order_relaxed))
    engine_lock_wait(l, seen);
}

static inline void engine_unlock(engine_lock_t *l) {
  if (atomic_fetch_sub_explicit(&l->state, 1, memory_order_release) != 1) {
    atomic_store_explicit(&l->state, 0, memory_order_release);
    syscall(SYS_futex, &l->state, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  }
}
#endif

#endif
