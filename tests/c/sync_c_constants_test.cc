// The C API's constants carry glibc's values wherever pthread has the same constant, so code
// moves over by renaming; its static initializers are all-zero objects.

#include <gtest/gtest.h>
#include <pthread.h>
#include <semaphore.h>

#include <cstring>

#include "xproc/c/sync.h"

namespace {

static_assert(XPROC_PROCESS_PRIVATE == PTHREAD_PROCESS_PRIVATE);
static_assert(XPROC_PROCESS_SHARED == PTHREAD_PROCESS_SHARED);
static_assert(XPROC_MUTEX_NORMAL == PTHREAD_MUTEX_NORMAL);
static_assert(XPROC_MUTEX_RECURSIVE == PTHREAD_MUTEX_RECURSIVE);
static_assert(XPROC_MUTEX_ERRORCHECK == PTHREAD_MUTEX_ERRORCHECK);
static_assert(XPROC_MUTEX_ADAPTIVE == PTHREAD_MUTEX_ADAPTIVE_NP);
static_assert(XPROC_MUTEX_DEFAULT == PTHREAD_MUTEX_DEFAULT);
static_assert(XPROC_MUTEX_STALLED == PTHREAD_MUTEX_STALLED);
static_assert(XPROC_MUTEX_ROBUST == PTHREAD_MUTEX_ROBUST);
static_assert(XPROC_RWLOCK_PREFER_READER == PTHREAD_RWLOCK_PREFER_READER_NP);
static_assert(XPROC_RWLOCK_PREFER_WRITER == PTHREAD_RWLOCK_PREFER_WRITER_NP);
static_assert(XPROC_RWLOCK_PREFER_WRITER_NONRECURSIVE ==
              PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
static_assert(XPROC_RWLOCK_DEFAULT == XPROC_RWLOCK_PHASE_FAIR);  // deliberately not glibc's
static_assert(XPROC_RWLOCK_PHASE_FAIR != PTHREAD_RWLOCK_PREFER_READER_NP &&
              XPROC_RWLOCK_PHASE_FAIR != PTHREAD_RWLOCK_PREFER_WRITER_NP &&
              XPROC_RWLOCK_PHASE_FAIR != PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
static_assert(XPROC_BARRIER_SERIAL_THREAD == PTHREAD_BARRIER_SERIAL_THREAD);
static_assert(XPROC_SEM_VALUE_MAX == SEM_VALUE_MAX);

// The documented ABI sizes and alignments.
static_assert(sizeof(xproc_mutex_t) == 64 && alignof(xproc_mutex_t) == 8);
static_assert(sizeof(xproc_cond_t) == 64 && alignof(xproc_cond_t) == 8);
static_assert(sizeof(xproc_rwlock_t) == 64 && alignof(xproc_rwlock_t) == 8);
static_assert(sizeof(xproc_sem_t) == 32 && alignof(xproc_sem_t) == 8);
static_assert(sizeof(xproc_barrier_t) == 32 && alignof(xproc_barrier_t) == 8);
static_assert(sizeof(xproc_spinlock_t) == 8 && alignof(xproc_spinlock_t) == 8);
static_assert(sizeof(xproc_mutexattr_t) == 16 && sizeof(xproc_condattr_t) == 16);
static_assert(sizeof(xproc_rwlockattr_t) == 16 && sizeof(xproc_barrierattr_t) == 16);

TEST(CSyncConstants, EqualGlibcsValuesAtRunTimeToo) {
  // The same comparisons as the static_asserts, so a failure shows the values.
  EXPECT_EQ(XPROC_PROCESS_SHARED, PTHREAD_PROCESS_SHARED);
  EXPECT_EQ(XPROC_MUTEX_ERRORCHECK, PTHREAD_MUTEX_ERRORCHECK);
  EXPECT_EQ(XPROC_MUTEX_ROBUST, PTHREAD_MUTEX_ROBUST);
  EXPECT_EQ(XPROC_BARRIER_SERIAL_THREAD, PTHREAD_BARRIER_SERIAL_THREAD);
  EXPECT_EQ(XPROC_SEM_VALUE_MAX, SEM_VALUE_MAX);
  EXPECT_EQ(XPROC_SEM_FAILED, nullptr);
}

TEST(CSyncConstants, StaticInitializersGiveAllZeroObjects) {
  const xproc_mutex_t mutex = XPROC_MUTEX_INITIALIZER;
  const xproc_cond_t cond = XPROC_COND_INITIALIZER;
  const xproc_rwlock_t rwlock = XPROC_RWLOCK_INITIALIZER;
  const unsigned char zeros[64] = {};
  EXPECT_EQ(std::memcmp(&mutex, zeros, sizeof mutex), 0);
  EXPECT_EQ(std::memcmp(&cond, zeros, sizeof cond), 0);
  EXPECT_EQ(std::memcmp(&rwlock, zeros, sizeof rwlock), 0);
}

}  // namespace
