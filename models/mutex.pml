/*
 * xproc::sync::Mutex lock-word protocol (docs: models/README.md, protocol: the
 * "Mutex word protocol" brief, include/xproc/sync/mutex.h).
 *
 * Lock word, one 32-bit futex word in the kernel's robust-futex format:
 *   TID | WAITERS | OWNER_DIED, TID 0 = unlocked.
 * Here the TID takes bits 0-1 (threads 1..3), OWNER_DIED is 4, WAITERS is 8.
 *
 * Threads 1..NT each take and release the lock ITERS times. Thread VICTIM may
 * die at ANY step (a Killer process raises `killed` at a nondeterministic moment;
 * the victim's `unless` escape then runs the kernel's robust-list walk in its
 * place). Configuration (spin -D...):
 *   NO_DEATH      nobody dies
 *   NO_BACKSTOP   no liveness backstop (see below)
 *   LIVENESS      add the LTL claim `finish` (run pan with -a -f)
 *   NO_FASTPATH   experiment: no CAS 0 -> tid fast path, every acquire goes
 *                 through the slow path and so keeps WAITERS (see README)
 *   BROKEN_*      deliberately broken protocols; models/check.sh requires that
 *                 each one is caught
 *
 * Futex model: futex_wait(expected) compares the word with `expected` and, if
 * equal, enters the wait set, in one atomic step (the kernel does both under
 * the hash-bucket lock); it returns when a wake removes it from the set.
 * futex_wake(1) removes one (any) sleeper. No spurious wake-ups (they would
 * hide lost wake-ups, and the code loops on every return anyway).
 *
 * Liveness backstop: a waiter parked on the word may time out, but only when
 * nothing else in the whole system can move (Promela `timeout`): that is, only
 * when it would otherwise sleep forever. The assertions there prove that this
 * only ever happens after a death (without deaths every wake-up is delivered
 * by the protocol itself) and only with the lock free.
 */

#ifndef NT
#define NT 3
#endif
#ifndef ITERS
#define ITERS 2
#endif
#define VICTIM 3

#define TIDM 3
#define DIED 4
#define WAITERS 8

byte word;              /* the lock word */
bit sleeping[NT + 1];   /* futex wait set of the lock word, by TID */
bit pending[NT + 1];    /* robust list: list_op_pending names this lock */
bit in_cs[NT + 1];      /* ghost: thread is in its critical section */
bit dead[NT + 1];       /* ghost: thread died */
bit died_holding;       /* ghost: the victim died while the word held its TID */
bit killed;               /* the Killer has fired */
byte finished;          /* ghost: threads that completed all iterations */
byte backstops;         /* ghost: times the liveness backstop fired */

inline futex_wake_one() {
  if
  :: sleeping[1] -> sleeping[1] = 0
  :: sleeping[2] -> sleeping[2] = 0
  :: sleeping[3] -> sleeping[3] = 0
  :: else -> skip
  fi
}

/* futex_wait(word, expected): compare-and-enqueue is one atomic step. */
inline futex_wait(expected) {
  atomic {
#ifdef BROKEN_WAIT_NO_COMPARE
    sleeping[me] = 1
#else
    if
    :: word == (expected) -> sleeping[me] = 1
    :: else -> skip
    fi
#endif
  };
  if
  :: !sleeping[me] -> skip
#ifndef NO_BACKSTOP
  :: timeout ->
     /* Only reachable when this thread would sleep forever. */
     assert(sleeping[me]);
     assert(dead[VICTIM]);          /* no death -> no lost wake-up */
     assert((word & TIDM) == 0);    /* a stranded waiter only ever waits on a free lock */
     backstops++;
     sleeping[me] = 0
#endif
  fi
}

/* The kernel's robust-list walk when thread `me` dies (exit_robust_list). */
inline robust_death() {
  dead[me] = 1;
  in_cs[me] = 0;
  sleeping[me] = 0;              /* a dying thread leaves the futex wait queue */
  if
  :: (word & TIDM) == me ->
     /* handle_futex_death: owner died; keep WAITERS, set OWNER_DIED, wake one */
     died_holding = 1;
     w = word;
#ifdef BROKEN_KERNEL_KEEPS_TID
     word = w | DIED;
#else
     word = (w & WAITERS) | DIED;
#endif
     if
     :: (w & WAITERS) != 0 -> futex_wake_one()
     :: else -> skip
     fi
  :: else ->
     /* handle_futex_death with pending_op: the thread died inside a lock or
      * unlock of this word and the word holds no TID: it may have consumed a
      * wake-up (woken waiter) or not sent one (unlocker), so wake one. (The
      * first kernels with this rule required the word to be exactly 0.) */
     if
     :: pending[me] && (word & TIDM) == 0 -> futex_wake_one()
     :: else -> skip
     fi
  fi
}

proctype Thread(byte me) {
  byte w;
  byte it;
  bit ok;
  {
    do
    :: it < ITERS ->
       /* ---- lock ---- */
       pending[me] = 1;            /* list_op_pending = this lock, before the first CAS */
       /* fast path (and the bounded spin: more of the same CAS): CAS 0 -> tid */
#if defined(NO_FASTPATH)
       ok = 0;                     /* experiment: every acquire keeps WAITERS */
#elif defined(BROKEN_NONATOMIC_LOCK)
       w = word;
       if
       :: w == 0 -> word = me; ok = 1
       :: else -> ok = 0
       fi;
#else
       atomic {
         if
         :: word == 0 -> word = me; ok = 1
         :: else -> ok = 0
         fi
       };
#endif
       if
       :: ok -> skip
       :: else ->
          /* slow path */
          do
          :: w = word;
             if
             :: (w & TIDM) == 0 ->
                /* free (maybe OWNER_DIED): acquire as a contended owner */
                atomic {
                  if
                  :: word == w ->
#if defined(BROKEN_NO_WAITERS_BIT)
                     word = me | (w & DIED);
#elif defined(BROKEN_DROP_OWNER_DIED)
                     word = me | WAITERS;
#else
                     word = me | WAITERS | (w & DIED);
#endif
                     ok = 1
                  :: else -> ok = 0
                  fi
                };
                if
                :: ok -> break
                :: else -> skip
                fi
             :: else ->
                /* owned: announce (set WAITERS), then park */
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
                :: ok -> futex_wait(w | WAITERS)
                :: else -> skip
                fi
             fi
          od
       fi;
       /* Owned: the node is linked, list_op_pending cleared. The ghost
        * bookkeeping of the critical section rides on the real steps next to
        * it (no death point or interleaving of interest is lost). */
       atomic {
         pending[me] = 0;
         in_cs[me] = 1;
         assert(in_cs[1] + in_cs[2] + in_cs[3] == 1);   /* mutual exclusion */
         assert((word & TIDM) == me);
         /* owner-died delivery: the acquirer sees OWNER_DIED exactly when an
          * owner died holding the lock */
         assert(died_holding == ((word & DIED) != 0))
       };
       if
       :: died_holding ->
          /* lock returned owner_died; make_consistent() clears the bit */
          atomic { word = word & ~DIED; died_holding = 0 }
       :: else -> skip
       fi;

       /* ---- unlock ---- */
       atomic { in_cs[me] = 0; pending[me] = 1 };  /* list_op_pending = this lock, node unlinked */
#ifdef BROKEN_UNLOCK_LOAD_STORE
       w = word;
       word = 0;
#else
       atomic { w = word; word = 0 };  /* exchange(0) */
#endif
       if
       :: (w & WAITERS) != 0 -> atomic { futex_wake_one() }
       :: else -> skip
       fi;
       atomic { pending[me] = 0; it++ }
    :: else -> break
    od;
    finished++
  } unless {
    killed && me == VICTIM && it < ITERS ->
    atomic { robust_death() }
  }
}

#ifndef NO_DEATH
active proctype Killer() {
  killed = 1
}
#endif

init {
  atomic {
    run Thread(1);
    run Thread(2);
    run Thread(3)
  }
}

#ifdef LIVENESS
/* Every live thread completes all its lock/unlock rounds: no waiter is left
 * behind, no live-lock. */
ltl finish { <> (finished == NT - dead[VICTIM]) }
#endif
