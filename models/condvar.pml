/*
 * xproc::sync::CondVar protocol over xproc::sync::Mutex (docs: models/README.md,
 * include/xproc/sync/condvar.h, the "Mutex word protocol" brief).
 *
 * CondVar state: `seq` (futex word, bumped by every notify) and `waiters`
 * (number of threads inside wait). Mutex: the lock word of models/mutex.pml
 * (TID | WAITERS | OWNER_DIED; OWNER_DIED only with -DDEATH).
 *
 *   wait(m):      s = seq; waiters++ (seq_cst); unlock(m); futex_wait(seq, s);
 *                 waiters--; lock(m), with the contended path when it slept
 *                 (it may have been requeued onto the mutex word).
 *   notify_one:   seq++; if waiters > 0: futex_wake(seq, 1).
 *   notify_all:   seq++; if waiters > 0: if mark_waiters(m) (WAITERS set on a
 *                 locked word): cmp_requeue(seq, new seq, wake 1, requeue the
 *                 rest onto the mutex word), retry if seq changed; else (the
 *                 mutex is free) futex_wake(seq, all).
 *
 * Scenario: two waiters each take one token (`while (tokens == 0) wait(m);
 * tokens--`), a notifier hands out NTOK tokens, each under the mutex followed
 * by notify_one (default) or notify_all (-DNOTIFY_ALL), nondeterministically
 * before or after its unlock. A lost wake-up leaves a waiter blocked forever:
 * an invalid end state; -DLIVENESS adds the LTL claim that both finish.
 *
 * Deaths (-DDEATH): thread VICTIM (default 2, a waiter; -DVICTIM=3: the
 * notifier) may die at any step, as in models/mutex.pml: the kernel's
 * robust-list walk covers the mutex word (OWNER_DIED, wake on death, the
 * pending-op rule); the condvar words are not robust (a dead waiter stays
 * counted in `waiters`, which only costs a spare wake syscall). Parked
 * threads get the liveness backstop of models/mutex.pml (time out only when
 * nothing else can move; asserted to happen only after a death) unless
 * -DNO_BACKSTOP. -DCV_PENDING: a waiter keeps list_op_pending on the mutex
 * from its unlock in wait() until it has relocked. -DNO_FASTPATH: experiment,
 * every mutex acquire keeps WAITERS (see README).
 *
 * Futex model: wait sets per thread (`waiton`: 0 running, 1 parked on seq,
 * 2 parked on the mutex word). futex_wait compares and enqueues atomically;
 * FUTEX_CMP_REQUEUE compares, wakes and moves atomically. No spurious
 * wake-ups (waiters loop on every return anyway). Woken waiters always return
 * (Mesa semantics).
 */

#define NW 2          /* waiters: TIDs 1, 2; notifier: TID 3 */
#ifndef NTOK
#define NTOK 2
#endif

#define TIDM 3
#define DIED 4
#define WAITERS 8
#ifndef VICTIM
#define VICTIM 2
#endif
#ifdef NO_FASTPATH
#define FASTPATH 0    /* experiment: every acquire keeps WAITERS (see README) */
#else
#define FASTPATH 1
#endif
#ifdef DEATH
#define SET_PENDING(v) pending[me] = v
#else
#define SET_PENDING(v) skip  /* only the robust-list walk reads it */
#endif

byte word;            /* mutex lock word */
byte seq;             /* condvar sequence futex word */
byte waiters;         /* condvar waiter count */
byte waiton[4];       /* futex wait sets: 0 none, 1 seq, 2 mutex word */
bit owns[4];          /* ghost: thread owns the mutex */
bit pending[4];       /* robust list: list_op_pending names the mutex */
bit dead[4];          /* ghost: thread died */
bit died_holding;     /* ghost: a thread died while the mutex word held its TID */
bit killed;             /* the Killer has fired */
byte backstops;       /* ghost: times the liveness backstop fired */
byte tokens;          /* the predicate, protected by the mutex */
byte served;            /* ghost: waiters that got their token */

inline wake_one(where) {
  if
  :: waiton[1] == where -> waiton[1] = 0
  :: waiton[2] == where -> waiton[2] = 0
  :: waiton[3] == where -> waiton[3] = 0
  :: else -> skip
  fi
}

/* Parked until woken (or, with deaths, rescued by the backstop). */
inline park(where) {
#if defined(DEATH) && !defined(NO_BACKSTOP)
  if
  :: waiton[me] == 0 -> skip
  :: timeout ->
     assert(waiton[me] != 0);
     assert(dead[VICTIM]);                      /* no death -> no lost wake-up */
     assert(where != 2 || (word & TIDM) == 0);  /* never stranded on a held mutex */
     backstops++;
     waiton[me] = 0
  fi
#else
  waiton[me] == 0
#endif
}

/* The kernel's robust-list walk when thread `me` dies; it also leaves any
 * futex wait queue. */
inline robust_death() {
  dead[me] = 1;
  owns[me] = 0;
  waiton[me] = 0;
  if
  :: (word & TIDM) == me ->
     died_holding = 1;
     w = word;
     word = (w & WAITERS) | DIED;
     if
     :: (w & WAITERS) != 0 -> wake_one(2)
     :: else -> skip
     fi
  :: else ->
     if
     :: pending[me] && (word & TIDM) == 0 -> wake_one(2)
     :: else -> skip
     fi
  fi
}

/* ---- Mutex (the protocol of models/mutex.pml) ---- */
inline mutex_lock(contended) {
  SET_PENDING(1);
  ok = 0;
  if
  :: FASTPATH && !(contended) ->
     atomic {                                   /* fast path: CAS 0 -> tid */
       if
       :: word == 0 -> word = me; ok = 1
       :: else -> skip
       fi
     }
  :: else -> skip
  fi;
  if
  :: ok -> skip
  :: else ->
     do
     :: w = word;
        if
        :: (w & TIDM) == 0 ->
           atomic {                             /* contended acquire keeps WAITERS */
             if
             :: word == w -> word = me | WAITERS | (w & DIED); ok = 1
             :: else -> ok = 0
             fi
           };
           if
           :: ok -> break
           :: else -> skip
           fi
        :: else ->
           if
           :: (w & WAITERS) == 0 ->
              atomic {
                if
                :: word == w -> word = w | WAITERS; ok = 1
                :: else -> ok = 0
                fi
              }
           :: else -> ok = 1
           fi;
           if
           :: ok ->
              ok = 0;
              atomic {                          /* futex_wait(word, w | WAITERS) */
                if
                :: word == (w | WAITERS) -> waiton[me] = 2
                :: else -> skip
                fi
              };
              park(2)
           :: else -> skip
           fi
        fi
     od
  fi;
  atomic {                                       /* ghost bookkeeping rides along */
    SET_PENDING(0);
    owns[me] = 1;
    assert(owns[1] + owns[2] + owns[3] == 1);    /* mutual exclusion */
    assert((word & TIDM) == me)
#ifdef DEATH
    ;
    assert(died_holding == ((word & DIED) != 0)) /* owner-died delivery */
#endif
  }
#ifdef DEATH
  ;
  if
  :: died_holding -> atomic { word = word & ~DIED; died_holding = 0 }  /* make_consistent */
  :: else -> skip
  fi
#endif
}

inline mutex_unlock() {
  atomic { owns[me] = 0; SET_PENDING(1) };
  atomic { w = word; word = 0 };                 /* exchange(0) */
  if
  :: (w & WAITERS) != 0 -> atomic { wake_one(2) }
  :: else -> skip
  fi
#ifdef DEATH
  ;
  pending[me] = 0
#endif
}

/* ---- CondVar ---- */
inline cv_wait() {
#ifdef BROKEN_SEQ_AFTER_UNLOCK
  waiters++;
  mutex_unlock();
  s = seq;
#else
  s = seq;
  waiters++;                                     /* seq_cst: announce, pairs with notify's load */
  mutex_unlock();
#endif
#if defined(DEATH) && defined(CV_PENDING)
  ;
  pending[me] = 1;     /* list_op_pending = the mutex across the wait (it may be requeued there) */
#endif
  atomic {                                       /* futex_wait(seq, s) */
    if
    :: seq == s -> waiton[me] = 1; slept = 1
    :: else -> slept = 0
    fi
  };
  park(1);
  waiters--;
#ifdef BROKEN_REQUEUE_PLAIN_LOCK
  mutex_lock(0)
#else
  mutex_lock(slept)
#endif
}

inline notify_one() {
#ifndef BROKEN_NOTIFY_SKIPS_SEQ
  seq++;
#endif
  if
  :: waiters > 0 -> atomic { wake_one(1) }
  :: else -> skip
  fi
}

inline notify_all() {
  atomic { seq++; s = seq };
  if
  :: waiters > 0 ->
     /* mark_waiters(m): set WAITERS if the mutex is locked */
#ifdef BROKEN_NO_MARK_WAITERS
     atomic { ok = ((word & TIDM) != 0) };
#else
     atomic {
       if
       :: (word & TIDM) != 0 -> word = word | WAITERS; ok = 1
       :: else -> ok = 0
       fi
     };
#endif
     if
     :: ok ->
        do
        :: atomic {                              /* cmp_requeue(seq, s, 1, all, word) */
             if
             :: seq == s ->
                wake_one(1);
                if :: waiton[1] == 1 -> waiton[1] = 2 :: else -> skip fi;
                if :: waiton[2] == 1 -> waiton[2] = 2 :: else -> skip fi;
                if :: waiton[3] == 1 -> waiton[3] = 2 :: else -> skip fi;
                ok = 1
             :: else -> s = seq; ok = 0          /* EAGAIN: retry with the new value */
             fi
           };
           if
           :: ok -> break
           :: else -> skip
           fi
        od
     :: else ->
        atomic {                                 /* mutex free: futex_wake(seq, all) */
          if :: waiton[1] == 1 -> waiton[1] = 0 :: else -> skip fi;
          if :: waiton[2] == 1 -> waiton[2] = 0 :: else -> skip fi;
          if :: waiton[3] == 1 -> waiton[3] = 0 :: else -> skip fi
        }
     fi
  :: else -> skip
  fi
}

inline notify() {
#ifdef NOTIFY_ALL
  notify_all()
#else
  notify_one()
#endif
}

proctype Waiter(byte me) {
  byte w, s;
  bit ok, slept, fin;
#ifdef DEATH
  {
#endif
    mutex_lock(0);
    do
    :: tokens == 0 -> cv_wait()
    :: else -> break
    od;
    tokens--;
    mutex_unlock();
    atomic { served++; fin = 1 }
#ifdef DEATH
  } unless {
    killed && me == VICTIM && !fin -> atomic { robust_death() }
  }
#endif
}

proctype Notifier(byte me) {
  byte w, s, k;
  bit ok, fin;
#ifdef DEATH
  {
#endif
    do
    :: k < NTOK ->
       mutex_lock(0);
       tokens++;
       if
       :: notify(); mutex_unlock()               /* notify under the mutex */
       :: mutex_unlock(); notify()               /* notify after the unlock */
       fi;
       k++
    :: else -> break
    od;
    fin = 1
#ifdef DEATH
  } unless {
    killed && me == VICTIM && !fin -> atomic { robust_death() }
  }
#endif
}

#ifdef DEATH
active proctype Killer() {
  killed = 1
}
#endif

init {
  atomic {
    run Waiter(1);
    run Waiter(2);
    run Notifier(3)
  }
}

#ifdef LIVENESS
/* Every waiter that stays alive gets its token (a dead notifier may take its
 * tokens with it, so with -DVICTIM=3 only termination is claimed). */
#if VICTIM == 3
ltl finish { <> (served + dead[1] + dead[2] == NW || (dead[3] && served + dead[1] + dead[2] <= NW)) }
#else
ltl finish { <> (served + dead[1] + dead[2] == NW) }
#endif
#endif
