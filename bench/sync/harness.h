#pragma once
// The benchmark harness: repeated runs, medians, context switches, one table.
//
// Every row runs `repetitions` times; the table shows the median, the spread (min..max) and the
// ratio to the row's reference (the glibc figure it is compared with). Context switches
// (voluntary + involuntary, from getrusage) are divided by the row's operation count.

#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace xproc::bench {

using Clock = std::chrono::steady_clock;

struct Sample {
  double value = 0;            // the figure (ns/op, Mops/s, us/round trip ...)
  double switches_per_op = 0;  // context switches per operation
};

struct Row {
  std::string group;
  std::string name;
  std::string unit;
  bool higher_is_better = false;
  std::vector<Sample> samples;
  const Row* reference = nullptr;  // the row this one is compared with (ratio column)

  double median() const {
    return median_of([](const Sample& s) { return s.value; });
  }
  double median_switches() const {
    return median_of([](const Sample& s) { return s.switches_per_op; });
  }
  double min() const {
    double m = samples.empty() ? 0 : samples[0].value;
    for (const auto& s : samples) m = std::min(m, s.value);
    return m;
  }
  double max() const {
    double m = 0;
    for (const auto& s : samples) m = std::max(m, s.value);
    return m;
  }

 private:
  template <class Get>
  double median_of(Get get) const {
    std::vector<double> values;
    for (const auto& s : samples) values.push_back(get(s));
    if (values.empty()) return 0;
    std::sort(values.begin(), values.end());
    std::size_t n = values.size();
    return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
  }
};

inline long context_switches(int who = RUSAGE_SELF) {
  rusage usage{};
  getrusage(who, &usage);
  return usage.ru_nvcsw + usage.ru_nivcsw;
}

// An object in anonymous MAP_SHARED memory, for rows that fork.
template <class T>
class Shared {
 public:
  template <class... Args>
  explicit Shared(Args&&... args) {
    void* memory =
        mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) throw std::bad_alloc();
    object_ = new (memory) T(std::forward<Args>(args)...);
  }
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;
  ~Shared() {
    object_->~T();
    munmap(object_, sizeof(T));
  }
  T* operator->() const { return object_; }
  T& operator*() const { return *object_; }

 private:
  T* object_;
};

// Pins the calling thread to the index-th CPU it may run on (modulo their number), so that
// worker i of a run always sits on the same CPU: two workers contend across CPUs as the row
// says, instead of whenever the scheduler happens to separate them.
inline void pin_to_cpu(int index) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
  const int count = CPU_COUNT(&allowed);
  if (count == 0) return;
  int wanted = index % count;
  for (std::size_t cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    if (wanted-- == 0) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      (void)sched_setaffinity(0, sizeof one, &one);  // best effort: unpinned still measures
      return;
    }
  }
}

// Runs `body(index)` in `count` forked children, child i pinned (pin_to_cpu), and waits for
// them; each child's context
// switches are added to the return value (RUSAGE_CHILDREN of the reaped children).
inline long run_processes(int count, const std::function<void(int)>& body) {
  long before = context_switches(RUSAGE_CHILDREN);
  std::vector<pid_t> children;
  std::fflush(nullptr);
  for (int i = 0; i < count; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      pin_to_cpu(i);
      body(i);
      _exit(0);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
    }
  }
  return context_switches(RUSAGE_CHILDREN) - before;
}

// Runs `body(index)` on `count` threads, thread i pinned (pin_to_cpu).
inline void run_threads(int count, const std::function<void(int)>& body) {
  std::vector<std::thread> threads;
  for (int i = 0; i < count; ++i) {
    threads.emplace_back([&body, i] {
      pin_to_cpu(i);
      body(i);
    });
  }
  for (auto& t : threads) t.join();
}

void print_table(const std::vector<Row*>& rows, int repetitions);
void write_markdown(const std::vector<Row*>& rows, int repetitions, const std::string& path);

}  // namespace xproc::bench
