// xproc-sync-bench: xproc's sync primitives side by side with glibc's (and std::mutex), in one
// run, same scenarios, several repetitions, medians, ratios and context switches per operation.
//
//   xproc-sync-bench [--repetitions N] [--quick] [--only TEXT] [--markdown FILE]
//
// --only TEXT runs just the groups whose title contains TEXT (e.g. --only rwlock).

#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "glibc_primitives.h"
#include "harness.h"
#include "scenarios.h"
#include "xproc/sync/rw_lock.h"
#include "xproc_primitives.h"

namespace xproc::bench {
namespace {

struct Options {
  int repetitions = 5;
  double scale = 1.0;
  std::string markdown;
  std::string only;  // run only the groups whose title contains this text
};

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--repetitions" && i + 1 < argc) {
      options.repetitions = std::atoi(argv[++i]);
    } else if (arg == "--quick") {
      options.repetitions = 3;
      options.scale = 0.05;
    } else if (arg == "--markdown" && i + 1 < argc) {
      options.markdown = argv[++i];
    } else if (arg == "--only" && i + 1 < argc) {
      options.only = argv[++i];
    } else {
      std::fprintf(
          stderr,
          "xproc-sync-bench: unknown argument '%s'\n"
          "usage: xproc-sync-bench [--repetitions N] [--quick] [--only TEXT] [--markdown FILE]\n",
          arg.c_str());
      std::exit(2);
    }
  }
  if (options.repetitions < 1) options.repetitions = 1;
  return options;
}

class Suite {
 public:
  explicit Suite(const Options& options) : options_(options) {}

  long n(long base) const {
    long value = static_cast<long>(static_cast<double>(base) * options_.scale);
    return value > 0 ? value : 1;
  }

  // Adds a row measured by `measure` (called once per repetition). The first row of a group
  // is the reference the others are compared with.
  template <class Measure>
  void row(const std::string& group, const std::string& name, const std::string& unit,
           bool higher_is_better, Measure measure) {
    if (group.find(options_.only) == std::string::npos) return;
    auto owned = std::make_unique<Row>();
    Row* r = owned.get();
    r->group = group;
    r->name = name;
    r->unit = unit;
    r->higher_is_better = higher_is_better;
    r->reference = group_reference(group, r);
    std::fprintf(stderr, "  %-42s %-38s", group.c_str(), name.c_str());
    for (int i = 0; i < options_.repetitions; ++i) {
      r->samples.push_back(measure());
      std::fprintf(stderr, ".");
    }
    std::fprintf(stderr, " %.2f %s\n", r->median(), unit.c_str());
    rows_.push_back(std::move(owned));
  }

  std::vector<Row*> rows() const {
    std::vector<Row*> result;
    for (const auto& r : rows_) result.push_back(r.get());
    return result;
  }

 private:
  const Row* group_reference(const std::string& group, const Row* self) const {
    for (const auto& r : rows_) {
      if (r->group == group) return r.get();
    }
    return self;
  }

  Options options_;
  std::vector<std::unique_ptr<Row>> rows_;
};

void uncontended_rows(Suite& suite) {
  const long iterations = suite.n(5'000'000);
  const std::string group = "uncontended lock+unlock";
  suite.row(group, "glibc pthread_mutex (private)", "ns", false, [&] {
    GlibcMutex lock({false, false});
    return uncontended(lock, iterations);
  });
  suite.row(group, "std::mutex", "ns", false, [&] {
    std::mutex lock;
    return uncontended(lock, iterations);
  });
  suite.row(group, "xproc Mutex (thread scope)", "ns", false, [&] {
    sync::Mutex lock(sync::Scope::thread);
    return uncontended(lock, iterations);
  });
  const std::string robust = "uncontended lock+unlock, robust pshared";
  suite.row(robust, "glibc pthread_mutex robust pshared", "ns", false, [&] {
    GlibcMutex lock({true, true});
    return uncontended(lock, iterations);
  });
  suite.row(robust, "xproc Mutex (process scope, robust)", "ns", false, [&] {
    sync::Mutex lock(sync::Scope::process);
    return uncontended(lock, iterations);
  });
}

void contended_rows(Suite& suite) {
  for (bool processes : {false, true}) {
    for (int workers : {2, 4, 8}) {
      const long per_worker = suite.n(400'000) / workers;
      const std::string group =
          "contended " + std::to_string(workers) + (processes ? " processes" : " threads");
      suite.row(group, processes ? "glibc pthread_mutex robust pshared" : "glibc pthread_mutex",
                "Mops/s", true, [&] {
                  return contended<GlibcMutex>(processes, workers, per_worker,
                                               GlibcMutexOptions{processes, processes});
                });
      if (!processes) {
        suite.row(group, "std::mutex", "Mops/s", true,
                  [&] { return contended<std::mutex>(false, workers, per_worker); });
      }
      const sync::Scope scope = processes ? sync::Scope::process : sync::Scope::thread;
      suite.row(group, processes ? "xproc Mutex (process scope, robust)" : "xproc Mutex", "Mops/s",
                true,
                [&] { return contended<sync::Mutex>(processes, workers, per_worker, scope); });
    }
  }
}

void condvar_rows(Suite& suite) {
  const long round_trips = suite.n(100'000);
  const std::string group = "condvar ping-pong, 2 processes";
  suite.row(group, "glibc robust mutex + pthread_cond", "us/rt", false, [&] {
    return condvar_ping_pong<GlibcMutex, GlibcCond>(round_trips, GlibcMutexOptions{true, true},
                                                    true);
  });
  suite.row(group, "xproc Mutex + CondVar (robust)", "us/rt", false, [&] {
    return condvar_ping_pong<XprocMutex, XprocCond>(round_trips,
                                                    XprocMutexArgs{sync::Scope::process, {}},
                                                    XprocCond::Options{sync::Scope::process, true});
  });

  const long rounds = suite.n(10'000);
  const std::string broadcast_group = "broadcast to 8 waiting processes";
  suite.row(broadcast_group, "glibc robust mutex + pthread_cond", "us/round", false, [&] {
    return broadcast<GlibcMutex, GlibcCond>(8, rounds, GlibcMutexOptions{true, true}, true);
  });
  suite.row(broadcast_group, "xproc Mutex + CondVar, requeue", "us/round", false, [&] {
    return broadcast<XprocMutex, XprocCond>(8, rounds, XprocMutexArgs{sync::Scope::process, {}},
                                            XprocCond::Options{sync::Scope::process, true});
  });
  suite.row(broadcast_group, "xproc Mutex + CondVar, wake all", "us/round", false, [&] {
    return broadcast<XprocMutex, XprocCond>(8, rounds, XprocMutexArgs{sync::Scope::process, {}},
                                            XprocCond::Options{sync::Scope::process, false});
  });
}

void rwlock_rows(Suite& suite) {
  const long per_thread = suite.n(1'000'000) / 4;
  const std::string group = "rwlock read-mostly, 4 threads, 5% writes";
  suite.row(group, "glibc pthread_rwlock (prefer reader)", "Mops/s", true, [&] {
    return read_mostly<GlibcRwLock>(4, per_thread, 20, false, PTHREAD_RWLOCK_PREFER_READER_NP);
  });
  suite.row(group, "glibc pthread_rwlock (prefer writer)", "Mops/s", true, [&] {
    return read_mostly<GlibcRwLock>(4, per_thread, 20, false,
                                    PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  });
  const std::pair<sync::RwPolicy, const char*> policies[] = {
      {sync::RwPolicy::prefer_reader, "xproc RwLock (prefer reader)"},
      {sync::RwPolicy::prefer_writer, "xproc RwLock (prefer writer)"},
      {sync::RwPolicy::phase_fair, "xproc RwLock (phase fair)"}};
  for (const auto& [policy, name] : policies) {
    suite.row(group, name, "Mops/s", true, [&, policy = policy] {
      return read_mostly<sync::RwLock>(4, per_thread, 20, sync::Scope::thread, policy);
    });
  }
}

}  // namespace
}  // namespace xproc::bench

int main(int argc, char** argv) {
  using namespace xproc::bench;
  Options options = parse(argc, argv);
  std::fprintf(stderr, "xproc-sync-bench: %d repetitions per row, scale %.2f, %ld CPUs\n",
               options.repetitions, options.scale, sysconf(_SC_NPROCESSORS_ONLN));
  Suite suite(options);
  uncontended_rows(suite);
  contended_rows(suite);
  condvar_rows(suite);
  rwlock_rows(suite);
  print_table(suite.rows(), options.repetitions);
  if (!options.markdown.empty())
    write_markdown(suite.rows(), options.repetitions, options.markdown);
  return 0;
}
