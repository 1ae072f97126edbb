#pragma once
// glibc's primitives behind the same member names as xproc's, so one benchmark template runs
// both. Process-shared attributes where the benchmark is between processes.

#include <pthread.h>
#include <semaphore.h>

#include <cerrno>
#include <cstdlib>
#include <ctime>

namespace xproc::bench {

inline void check(int rc, const char* what) {
  if (rc != 0 && rc != EOWNERDEAD) {
    std::fprintf(stderr, "xproc-sync-bench: %s failed: %d\n", what, rc);
    std::abort();
  }
}

struct GlibcMutexOptions {
  bool process_shared;
  bool robust;
};

class GlibcMutex {
 public:
  explicit GlibcMutex(GlibcMutexOptions options) {
    const bool process_shared = options.process_shared, robust = options.robust;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr,
                                 process_shared ? PTHREAD_PROCESS_SHARED : PTHREAD_PROCESS_PRIVATE);
    if (robust) pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    check(pthread_mutex_init(&mutex_, &attr), "pthread_mutex_init");
    pthread_mutexattr_destroy(&attr);
  }
  ~GlibcMutex() { pthread_mutex_destroy(&mutex_); }
  void lock() { check(pthread_mutex_lock(&mutex_), "pthread_mutex_lock"); }
  void unlock() { check(pthread_mutex_unlock(&mutex_), "pthread_mutex_unlock"); }
  pthread_mutex_t* native() { return &mutex_; }

 private:
  pthread_mutex_t mutex_;
};

class GlibcCond {
 public:
  explicit GlibcCond(bool process_shared) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setpshared(&attr,
                                process_shared ? PTHREAD_PROCESS_SHARED : PTHREAD_PROCESS_PRIVATE);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    check(pthread_cond_init(&cond_, &attr), "pthread_cond_init");
    pthread_condattr_destroy(&attr);
  }
  ~GlibcCond() { pthread_cond_destroy(&cond_); }
  void wait(GlibcMutex& mutex) { check(pthread_cond_wait(&cond_, mutex.native()), "cond_wait"); }
  void notify_one() { pthread_cond_signal(&cond_); }
  void notify_all(GlibcMutex&) { pthread_cond_broadcast(&cond_); }

 private:
  pthread_cond_t cond_;
};

class GlibcRwLock {
 public:
  GlibcRwLock(bool process_shared, int kind) {
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setpshared(
        &attr, process_shared ? PTHREAD_PROCESS_SHARED : PTHREAD_PROCESS_PRIVATE);
    pthread_rwlockattr_setkind_np(&attr, kind);
    check(pthread_rwlock_init(&lock_, &attr), "pthread_rwlock_init");
    pthread_rwlockattr_destroy(&attr);
  }
  ~GlibcRwLock() { pthread_rwlock_destroy(&lock_); }
  void lock() { check(pthread_rwlock_wrlock(&lock_), "wrlock"); }
  void unlock() { check(pthread_rwlock_unlock(&lock_), "unlock"); }
  void lock_shared() { check(pthread_rwlock_rdlock(&lock_), "rdlock"); }
  void unlock_shared() { check(pthread_rwlock_unlock(&lock_), "unlock"); }

 private:
  pthread_rwlock_t lock_;
};

class GlibcSemaphore {
 public:
  explicit GlibcSemaphore(bool process_shared) {
    check(sem_init(&sem_, process_shared ? 1 : 0, 0), "sem_init");
  }
  ~GlibcSemaphore() { sem_destroy(&sem_); }
  void acquire() {
    while (sem_wait(&sem_) != 0) {
    }
  }
  void release() { sem_post(&sem_); }

 private:
  sem_t sem_;
};

}  // namespace xproc::bench
