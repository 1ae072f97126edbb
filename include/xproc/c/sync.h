#pragma once
/* The C API of xproc's synchronization layer: pthread's process-shared primitives, renamed.
 *
 * What it defines: xproc_mutex_t, xproc_cond_t, xproc_rwlock_t, xproc_sem_t (unnamed and
 * named), xproc_barrier_t and xproc_spinlock_t with their attribute types, functions and
 * constants. Each function has the name of its pthread (or sem_*) counterpart with the prefix
 * `xproc_`, the same arguments in the same order and the same return convention, so code
 * written for process-shared pthread objects moves over by renaming:
 *   pthread_mutex_lock(&m)  ->  xproc_mutex_lock(&m)
 *   PTHREAD_PROCESS_SHARED  ->  XPROC_PROCESS_SHARED
 * Constants that pthread also has carry glibc's numeric values.
 *
 * THE ONE DELIBERATE DIFFERENCE FROM PTHREAD: every timed function (xproc_mutex_timedlock,
 * xproc_cond_timedwait, xproc_rwlock_timed{rd,wr}lock, xproc_sem_timedwait) takes an ABSOLUTE
 * CLOCK_MONOTONIC deadline, never a CLOCK_REALTIME one, so wall-clock changes never move it.
 * Build deadlines with clock_gettime(CLOCK_MONOTONIC, ...). A timespec whose tv_nsec is outside
 * [0, 999999999] is refused with EINVAL before anything else happens; a deadline already past
 * gives ETIMEDOUT unless the operation completes without waiting. For the same reason
 * xproc_condattr_setclock accepts only CLOCK_MONOTONIC (anything else: EINVAL).
 *
 * Return values: the pthread-style functions return 0 or an errno value (EOWNERDEAD,
 * ENOTRECOVERABLE, ETIMEDOUT, EDEADLK, EPERM, EBUSY, EAGAIN, EINVAL, ENOMEM) and never set
 * errno; the xproc_sem_* functions return 0 or -1 with errno set, exactly as sem_* do
 * (xproc_sem_open returns XPROC_SEM_FAILED). Shared state holding a value no correct
 * participant writes (a peer scribbled on it) gives EINVAL, never undefined behaviour. No C++
 * exception crosses this API. Interrupted waits are resumed, never EINTR.
 *
 * Thread- and process-safety: an object initialized with XPROC_PROCESS_SHARED may live in
 * MAP_SHARED memory and be used by every process that maps it (at any address); one initialized
 * XPROC_PROCESS_PRIVATE (the default, and what the static initializers give) is used by the
 * threads of one process. Attribute objects are plain private data. Blocking: lock, wait,
 * timed* and barrier_wait block (spin briefly, then sleep on a futex); try* never block.
 *
 * Participant death (SIGKILL at any instant; each C++ header has the details per operation):
 *   - mutex: a ROBUST mutex whose owner dies goes to the next locker with EOWNERDEAD (the lock
 *     held); it repairs the data and calls xproc_mutex_consistent(), or unlocks without doing
 *     so, which makes the mutex unusable: every later lock returns ENOTRECOVERABLE. A STALLED
 *     (default) mutex whose owner died stays locked, as with pthread: timedlock gives ETIMEDOUT.
 *   - cond: a waiter or signaller dying never blocks the others; a waiter whose mutex owner died
 *     gets EOWNERDEAD from the wait, with the mutex held.
 *   - semaphore: no owner; a unit taken by a dead process is gone (as with sem_*); waiters never
 *     wait for a dead waiter or poster.
 *   - rwlock, spinlock: a holder's death is NOT recovered: the lock stays held, so use the
 *     timed functions where a peer may die.
 *   - barrier: a participant that dies before arriving leaves the others waiting for good
 *     (pthread's barrier has no timed wait, so neither does this API).
 * fork(): a child inherits the memory; objects in MAP_SHARED memory are shared with it, private
 * ones are copies (lock only those the forking thread held or that were free, as with pthread).
 *
 * Layout (ABI): every object type below is a union of fixed size and alignment into which the
 * C++ object is constructed (src/c/sync_*.cc static_assert that it fits); sizes include
 * headroom and will not change within a major version. The C++ objects use today:
 * Mutex 56 bytes, CondVar 24, RwLock 32, Semaphore 16, Barrier 20, Spinlock 4.
 *   type                 size  align      type                 size  align
 *   xproc_mutex_t          64      8      xproc_sem_t            32      8
 *   xproc_cond_t           64      8      xproc_barrier_t        32      8
 *   xproc_rwlock_t         64      8      xproc_spinlock_t        8      8
 *   xproc_*attr_t          16      4
 * An all-zero mutex, cond or rwlock is a valid unlocked process-private default object: what
 * the XPROC_*_INITIALIZER macros produce and what *_init with a NULL attribute gives, except
 * that the rwlock's default kind is PHASE_FAIR (see below). An all-zero semaphore has value 0
 * and an all-zero spinlock is free, but call their *_init anyway; an all-zero barrier has
 * count 0 and xproc_barrier_wait refuses it with EINVAL.
 * Named semaphores live in POSIX shared memory as /dev/shm/xproc-sem.<name without '/'>.
 */

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h> /* clockid_t */
#include <time.h>      /* struct timespec */

#ifdef __cplusplus
extern "C" {
#endif

/* ---- constants (glibc's values where pthread has the same constant) ---------------------- */

#define XPROC_PROCESS_PRIVATE 0 /* PTHREAD_PROCESS_PRIVATE */
#define XPROC_PROCESS_SHARED 1  /* PTHREAD_PROCESS_SHARED */

/* Mutex types (xproc_mutexattr_settype):
 *   NORMAL      no ownership checks on unlock (unless robust); a blocking relock by the owner
 *               returns EDEADLK instead of hanging. Set explicitly, it parks at once without
 *               spinning (as glibc's normal mutex does).
 *   ADAPTIVE    NORMAL that spins a bounded while before parking (the C++ Mutex default). A
 *               mutex whose type was never set (NULL attribute, fresh attribute, the static
 *               initializer) is this one: DEFAULT is NORMAL's value 0, but xproc's default
 *               behaviour is the adaptive spin. The difference is speed only, never semantics.
 *   ERRORCHECK  relock -> EDEADLK, unlock or consistent by a non-owner -> EPERM.
 *   RECURSIVE   the owner relocks and must unlock as often; unlock by a non-owner -> EPERM.
 * Robustness (xproc_mutexattr_setrobust): STALLED (the default, as pthread) = a dead owner's
 * mutex stays locked; ROBUST = the next locker gets EOWNERDEAD. */
#define XPROC_MUTEX_NORMAL 0     /* PTHREAD_MUTEX_NORMAL */
#define XPROC_MUTEX_RECURSIVE 1  /* PTHREAD_MUTEX_RECURSIVE */
#define XPROC_MUTEX_ERRORCHECK 2 /* PTHREAD_MUTEX_ERRORCHECK */
#define XPROC_MUTEX_ADAPTIVE 3   /* PTHREAD_MUTEX_ADAPTIVE_NP */
#define XPROC_MUTEX_DEFAULT XPROC_MUTEX_NORMAL

#define XPROC_MUTEX_STALLED 0 /* PTHREAD_MUTEX_STALLED */
#define XPROC_MUTEX_ROBUST 1  /* PTHREAD_MUTEX_ROBUST */

/* Reader-writer lock kinds (xproc_rwlockattr_setkind). No kind deadlocks a thread that
 * re-takes a read lock it holds (xproc lets such a reader pass waiting writers), so glibc's
 * PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP (2) is accepted and means PREFER_WRITER.
 * PHASE_FAIR (readers and writers alternate; neither starves) is xproc's default, what
 * xproc_rwlockattr_init and XPROC_RWLOCK_INITIALIZER give: unlike glibc, whose default prefers
 * readers. */
#define XPROC_RWLOCK_PREFER_READER 0              /* PTHREAD_RWLOCK_PREFER_READER_NP */
#define XPROC_RWLOCK_PREFER_WRITER 1              /* PTHREAD_RWLOCK_PREFER_WRITER_NP */
#define XPROC_RWLOCK_PREFER_WRITER_NONRECURSIVE 2 /* accepted as PREFER_WRITER */
#define XPROC_RWLOCK_PHASE_FAIR 16                /* xproc only; glibc uses no such value */
#define XPROC_RWLOCK_DEFAULT XPROC_RWLOCK_PHASE_FAIR

#define XPROC_BARRIER_SERIAL_THREAD (-1) /* PTHREAD_BARRIER_SERIAL_THREAD */

#define XPROC_SEM_VALUE_MAX 2147483647 /* SEM_VALUE_MAX */
#define XPROC_SEM_NAME_MAX 200         /* longest accepted name for xproc_sem_open, '/' included */

/* ---- types ------------------------------------------------------------------------------- */

typedef union xproc_mutex {
  unsigned char xproc_opaque_[64];
  uint64_t xproc_align_;
} xproc_mutex_t;

typedef union xproc_cond {
  unsigned char xproc_opaque_[64];
  uint64_t xproc_align_;
} xproc_cond_t;

typedef union xproc_rwlock {
  unsigned char xproc_opaque_[64];
  uint64_t xproc_align_;
} xproc_rwlock_t;

typedef union xproc_sem {
  unsigned char xproc_opaque_[32];
  uint64_t xproc_align_;
} xproc_sem_t;

typedef union xproc_barrier {
  unsigned char xproc_opaque_[32];
  uint64_t xproc_align_;
} xproc_barrier_t;

typedef union xproc_spinlock {
  unsigned char xproc_opaque_[8];
  uint64_t xproc_align_;
} xproc_spinlock_t;

/* Attribute objects: private to the process; initialize with *_init before use. */
typedef struct xproc_mutexattr {
  uint32_t xproc_opaque_[4];
} xproc_mutexattr_t;
typedef struct xproc_condattr {
  uint32_t xproc_opaque_[4];
} xproc_condattr_t;
typedef struct xproc_rwlockattr {
  uint32_t xproc_opaque_[4];
} xproc_rwlockattr_t;
typedef struct xproc_barrierattr {
  uint32_t xproc_opaque_[4];
} xproc_barrierattr_t;

/* Static initializers: default (normal, stalled, private) objects, as PTHREAD_*_INITIALIZER. */
#define XPROC_MUTEX_INITIALIZER \
  {                             \
    { 0 }                       \
  }
#define XPROC_COND_INITIALIZER \
  {                            \
    { 0 }                      \
  }
#define XPROC_RWLOCK_INITIALIZER \
  {                              \
    { 0 }                        \
  }

#ifdef __cplusplus
#define XPROC_SEM_FAILED (static_cast<xproc_sem_t*>(nullptr))
#else
#define XPROC_SEM_FAILED ((xproc_sem_t*)0) /* SEM_FAILED */
#endif

/* ---- mutex ------------------------------------------------------------------------------- */

int xproc_mutexattr_init(xproc_mutexattr_t* attr);
int xproc_mutexattr_destroy(xproc_mutexattr_t* attr);
int xproc_mutexattr_settype(xproc_mutexattr_t* attr, int type);
int xproc_mutexattr_gettype(const xproc_mutexattr_t* attr, int* type);
int xproc_mutexattr_setpshared(xproc_mutexattr_t* attr, int pshared);
int xproc_mutexattr_getpshared(const xproc_mutexattr_t* attr, int* pshared);
int xproc_mutexattr_setrobust(xproc_mutexattr_t* attr, int robustness);
int xproc_mutexattr_getrobust(const xproc_mutexattr_t* attr, int* robustness);

/* attr may be NULL (defaults). Returns 0 or EINVAL. */
int xproc_mutex_init(xproc_mutex_t* mutex, const xproc_mutexattr_t* attr);
/* EBUSY while locked (by anyone, the caller included). */
int xproc_mutex_destroy(xproc_mutex_t* mutex);
/* 0, EOWNERDEAD (robust: you own it; repair, then consistent), ENOTRECOVERABLE, EDEADLK
 * (errorcheck relock), EAGAIN (recursion count exhausted). */
int xproc_mutex_lock(xproc_mutex_t* mutex);
/* As lock, plus EBUSY when held by someone else (or by the caller, except recursive). */
int xproc_mutex_trylock(xproc_mutex_t* mutex);
/* As lock, plus ETIMEDOUT at the absolute CLOCK_MONOTONIC deadline, EINVAL for a bad timespec. */
int xproc_mutex_timedlock(xproc_mutex_t* mutex, const struct timespec* abstime);
/* 0, EPERM (caller is not the owner; errorcheck, recursive and robust kinds). */
int xproc_mutex_unlock(xproc_mutex_t* mutex);
/* Marks a robust mutex consistent after EOWNERDEAD; EINVAL when it is not in that state. */
int xproc_mutex_consistent(xproc_mutex_t* mutex);

/* ---- condition variable ------------------------------------------------------------------ */

int xproc_condattr_init(xproc_condattr_t* attr);
int xproc_condattr_destroy(xproc_condattr_t* attr);
int xproc_condattr_setpshared(xproc_condattr_t* attr, int pshared);
int xproc_condattr_getpshared(const xproc_condattr_t* attr, int* pshared);
/* Only CLOCK_MONOTONIC is accepted (and is the default); any other clock: EINVAL. */
int xproc_condattr_setclock(xproc_condattr_t* attr, clockid_t clock_id);
int xproc_condattr_getclock(const xproc_condattr_t* attr, clockid_t* clock_id);

int xproc_cond_init(xproc_cond_t* cond, const xproc_condattr_t* attr);
/* Allowed as soon as every waiter was woken, even before they left the wait (POSIX): waits for
 * them to stop using the condvar. EBUSY when a thread is still inside a wait after 1 s (one never
 * woken, or one that died inside its wait). */
int xproc_cond_destroy(xproc_cond_t* cond);
/* Returns what relocking the mutex returned (0, EOWNERDEAD, ENOTRECOVERABLE) or EPERM when the
 * caller does not hold an ownership-checking mutex. */
int xproc_cond_wait(xproc_cond_t* cond, xproc_mutex_t* mutex);
/* As wait, plus ETIMEDOUT (the mutex is held again) and EINVAL for a bad timespec. */
int xproc_cond_timedwait(xproc_cond_t* cond, xproc_mutex_t* mutex, const struct timespec* abstime);
int xproc_cond_signal(xproc_cond_t* cond);
int xproc_cond_broadcast(xproc_cond_t* cond);

/* ---- reader-writer lock ------------------------------------------------------------------ */

int xproc_rwlockattr_init(xproc_rwlockattr_t* attr);
int xproc_rwlockattr_destroy(xproc_rwlockattr_t* attr);
int xproc_rwlockattr_setpshared(xproc_rwlockattr_t* attr, int pshared);
int xproc_rwlockattr_getpshared(const xproc_rwlockattr_t* attr, int* pshared);
/* XPROC_RWLOCK_PREFER_READER, _PREFER_WRITER, _PREFER_WRITER_NONRECURSIVE, _PHASE_FAIR. */
int xproc_rwlockattr_setkind(xproc_rwlockattr_t* attr, int kind);
int xproc_rwlockattr_getkind(const xproc_rwlockattr_t* attr, int* kind);

int xproc_rwlock_init(xproc_rwlock_t* rwlock, const xproc_rwlockattr_t* attr);
int xproc_rwlock_destroy(xproc_rwlock_t* rwlock);
/* 0, EAGAIN (too many reader threads, or this thread read-holds too many locks), ETIMEDOUT,
 * EBUSY (try forms). A thread that holds a read lock may take it again even past waiting
 * writers (no kind deadlocks a recursive reader); a write lock requested by a thread holding a
 * read lock is EDEADLK (no upgrade). A read lock requested by the write holder deadlocks (not
 * detected, as with glibc's default). */
int xproc_rwlock_rdlock(xproc_rwlock_t* rwlock);
int xproc_rwlock_tryrdlock(xproc_rwlock_t* rwlock); /* plus EBUSY */
int xproc_rwlock_timedrdlock(xproc_rwlock_t* rwlock, const struct timespec* abstime);
int xproc_rwlock_wrlock(xproc_rwlock_t* rwlock);
int xproc_rwlock_trywrlock(xproc_rwlock_t* rwlock); /* plus EBUSY */
int xproc_rwlock_timedwrlock(xproc_rwlock_t* rwlock, const struct timespec* abstime);
/* Releases the caller's read or write lock; EPERM when it holds neither (where detectable). */
int xproc_rwlock_unlock(xproc_rwlock_t* rwlock);

/* ---- semaphore (sem_* conventions: 0, or -1 with errno set) ------------------------------ */

/* pshared: 0 private, nonzero shared. value > XPROC_SEM_VALUE_MAX: EINVAL. */
int xproc_sem_init(xproc_sem_t* sem, int pshared, unsigned int value);
int xproc_sem_destroy(xproc_sem_t* sem);
int xproc_sem_wait(xproc_sem_t* sem);
int xproc_sem_trywait(xproc_sem_t* sem);                                   /* EAGAIN */
int xproc_sem_timedwait(xproc_sem_t* sem, const struct timespec* abstime); /* ETIMEDOUT, EINVAL */
int xproc_sem_post(xproc_sem_t* sem); /* EOVERFLOW past XPROC_SEM_VALUE_MAX */
/* Releases `count` units at once (wakes up to `count` waiters); 0 is a no-op; EOVERFLOW when
 * the value would pass XPROC_SEM_VALUE_MAX (then nothing is released). */
int xproc_sem_post_multiple(xproc_sem_t* sem, unsigned int count);
int xproc_sem_getvalue(xproc_sem_t* sem, int* value);

/* Named semaphores, as sem_open: xproc_sem_open(name, oflag) opens an existing one;
 * xproc_sem_open(name, oflag | O_CREAT [| O_EXCL], (mode_t)mode, (unsigned int)value) creates
 * it if absent (mode as for open(2), minus the umask; 0600 keeps it to the owner). The name is
 * '/' followed by 1 to XPROC_SEM_NAME_MAX - 1 characters, none of them '/', not "." or "..":
 * anything else is EINVAL; ENAMETOOLONG when longer. A semaphore appears to other processes
 * only fully initialized. An existing file that is not an xproc semaphore of this layout
 * (wrong size, magic or version) gives EINVAL. Returns XPROC_SEM_FAILED with errno set on
 * failure (EEXIST, ENOENT, EACCES, EINVAL, ENAMETOOLONG, EMFILE, ENOMEM...). Each call maps the
 * semaphore anew: close every pointer returned, with xproc_sem_close, which refuses (EINVAL)
 * any pointer this process's xproc_sem_open did not return or that was closed already.
 * Like sem_open/sem_close, neither is async-signal-safe (a fork child of a multi-threaded
 * parent may call them only after exec). */
xproc_sem_t* xproc_sem_open(const char* name, int oflag, ...);
int xproc_sem_close(xproc_sem_t* sem);
int xproc_sem_unlink(const char* name);

/* ---- barrier ----------------------------------------------------------------------------- */

int xproc_barrierattr_init(xproc_barrierattr_t* attr);
int xproc_barrierattr_destroy(xproc_barrierattr_t* attr);
int xproc_barrierattr_setpshared(xproc_barrierattr_t* attr, int pshared);
int xproc_barrierattr_getpshared(const xproc_barrierattr_t* attr, int* pshared);

/* count == 0: EINVAL. */
int xproc_barrier_init(xproc_barrier_t* barrier, const xproc_barrierattr_t* attr,
                       unsigned int count);
/* EBUSY while participants wait in the current generation. The serial thread may destroy (and
 * re-initialize) the barrier at once: destroy waits for the others to leave xproc_barrier_wait;
 * EBUSY when one is still inside after 1 s (e.g. it died there). */
int xproc_barrier_destroy(xproc_barrier_t* barrier);
/* XPROC_BARRIER_SERIAL_THREAD in exactly one caller of each round, 0 in the others. */
int xproc_barrier_wait(xproc_barrier_t* barrier);

/* ---- spinlock ---------------------------------------------------------------------------- */

int xproc_spin_init(xproc_spinlock_t* lock, int pshared);
int xproc_spin_destroy(xproc_spinlock_t* lock);
int xproc_spin_lock(xproc_spinlock_t* lock);
int xproc_spin_trylock(xproc_spinlock_t* lock); /* EBUSY */
int xproc_spin_unlock(xproc_spinlock_t* lock);

#ifdef __cplusplus
} /* extern "C" */
#endif
