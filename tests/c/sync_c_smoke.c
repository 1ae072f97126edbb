/* Compiles the C API as strict C11 and calls it from C: static initializers, constants, and a
 * round trip through each primitive. Exit 0 on success; the failing line otherwise. */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <time.h>

#include "xproc/c/sync.h"

static xproc_mutex_t static_mutex = XPROC_MUTEX_INITIALIZER;
static xproc_cond_t static_cond = XPROC_COND_INITIALIZER;
static xproc_rwlock_t static_rwlock = XPROC_RWLOCK_INITIALIZER;

#define CHECK(expression)                           \
  do {                                              \
    if (!(expression)) {                            \
      fprintf(stderr, "failed: %s\n", #expression); \
      return __LINE__;                              \
    }                                               \
  } while (0)

int main(void) {
  struct timespec past;
  CHECK(clock_gettime(CLOCK_MONOTONIC, &past) == 0);

  CHECK(XPROC_PROCESS_SHARED == 1);
  CHECK(xproc_mutex_lock(&static_mutex) == 0);
  CHECK(xproc_mutex_trylock(&static_mutex) == EBUSY);
  CHECK(xproc_cond_timedwait(&static_cond, &static_mutex, &past) == ETIMEDOUT);
  CHECK(xproc_cond_signal(&static_cond) == 0);
  CHECK(xproc_mutex_unlock(&static_mutex) == 0);

  CHECK(xproc_rwlock_rdlock(&static_rwlock) == 0);
  CHECK(xproc_rwlock_trywrlock(&static_rwlock) == EBUSY);
  CHECK(xproc_rwlock_unlock(&static_rwlock) == 0);
  CHECK(xproc_rwlock_timedwrlock(&static_rwlock, &past) == 0);
  CHECK(xproc_rwlock_unlock(&static_rwlock) == 0);

  xproc_sem_t sem;
  CHECK(xproc_sem_init(&sem, XPROC_PROCESS_PRIVATE, 1) == 0);
  CHECK(xproc_sem_trywait(&sem) == 0);
  CHECK(xproc_sem_trywait(&sem) == -1 && errno == EAGAIN);
  CHECK(xproc_sem_post_multiple(&sem, 2) == 0);
  int value = -1;
  CHECK(xproc_sem_getvalue(&sem, &value) == 0 && value == 2);
  CHECK(xproc_sem_destroy(&sem) == 0);

  xproc_barrier_t barrier;
  CHECK(xproc_barrier_init(&barrier, NULL, 1) == 0);
  CHECK(xproc_barrier_wait(&barrier) == XPROC_BARRIER_SERIAL_THREAD);
  CHECK(xproc_barrier_destroy(&barrier) == 0);

  xproc_spinlock_t spin;
  CHECK(xproc_spin_init(&spin, XPROC_PROCESS_SHARED) == 0);
  CHECK(xproc_spin_lock(&spin) == 0);
  CHECK(xproc_spin_trylock(&spin) == EBUSY);
  CHECK(xproc_spin_unlock(&spin) == 0);
  CHECK(xproc_spin_destroy(&spin) == 0);
  return 0;
}
