#pragma once
// xproc's primitives behind the member names the scenarios use (scenarios.h). Errors abort the
// benchmark: a benchmark of a failing primitive would measure nothing.

#include <cstdio>
#include <cstdlib>

#include "xproc/sync/cond_var.h"
#include "xproc/sync/mutex.h"

namespace xproc::bench {

inline void check(std::error_code error, const char* what) {
  if (error) {
    std::fprintf(stderr, "xproc-sync-bench: %s failed: %s\n", what, error.message().c_str());
    std::abort();
  }
}

// CondVar whose notify_all requeues waiters onto the mutex (the default) or wakes them all.
class XprocCond {
 public:
  struct Options {
    sync::Scope scope;
    bool requeue;
  };
  explicit XprocCond(Options options) : cond_(options.scope), requeue_(options.requeue) {}
  void wait(sync::Mutex& mutex) { check(cond_.wait(mutex), "CondVar::wait"); }
  void notify_one() { cond_.notify_one(); }
  void notify_all(sync::Mutex& mutex) {
    if (requeue_) {
      cond_.notify_all(mutex);
    } else {
      cond_.notify_all();
    }
  }

 private:
  sync::CondVar cond_;
  bool requeue_;
};

struct XprocMutexArgs {
  sync::Scope scope;
  sync::MutexOptions options;
};

// sync::Mutex built from one argument, so the scenarios construct it like GlibcMutex.
class XprocMutex : public sync::Mutex {
 public:
  explicit XprocMutex(XprocMutexArgs args) : sync::Mutex(args.scope, args.options) {}
};

}  // namespace xproc::bench
