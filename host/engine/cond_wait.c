#include "engine/cond_wait.h"

#include <time.h>

#include "engine/log.h"

#define SLICE_MS 100

int cond_wait_until_ms(pthread_cond_t *cond, pthread_mutex_t *mutex,
                       uint64_t deadline_ms) {
  uint64_t now = clock_now_ms();
  if (now >= deadline_ms)
    return 1;
  uint64_t slice = deadline_ms - now < SLICE_MS ? deadline_ms - now : SLICE_MS;
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_nsec += (long)slice * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  pthread_cond_timedwait(cond, mutex, &until);
  return 0;
}
