#pragma once
// Child processes for multi-process tests: fork, run a function, report how it ended.
//
// A test that forks must never hang: Child::wait takes a deadline and SIGKILLs a child that
// outlives it, reporting that as a failure of its own (exit code kChildTimedOut).

#include <sys/types.h>

#include <chrono>
#include <functional>

namespace xproc::test {

inline constexpr int kChildTimedOut = 250;
inline constexpr int kChildThrew = 251;

struct ChildStatus {
  bool exited = false;  // exited normally with exit_code
  int exit_code = -1;
  bool signaled = false;  // killed by term_signal
  int term_signal = 0;
  bool ok() const { return exited && exit_code == 0; }
};

class Child {
 public:
  // Forks; the child runs `body` and exits with its return value (kChildThrew if it throws).
  // The child exits with _exit, so it never runs the parent's gtest teardown.
  static Child start(const std::function<int()>& body);

  Child(Child&& other) noexcept : pid_(other.pid_) { other.pid_ = -1; }
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child();  // kills and reaps a child nobody waited for

  pid_t pid() const { return pid_; }
  void kill(int signal);
  // Waits until the child ends or `timeout` passes (then SIGKILLs it and reports kChildTimedOut).
  ChildStatus wait(std::chrono::milliseconds timeout = std::chrono::seconds(60));

 private:
  explicit Child(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
};

// The same work run by two processes at once (a forked child and the caller), as the mutual
// exclusion tests do: the parent's return value and how the child ended.
struct ParentAndChild {
  int parent = -1;
  ChildStatus child;
  bool ok() const { return parent == 0 && child.ok(); }
};
ParentAndChild run_in_parent_and_child(
    const std::function<int()>& work, std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Scales iteration counts and durations of stress tests: XPROC_TEST_SCALE (default 1; CI uses
// the default, a nightly run sets e.g. 50).
double test_scale();
long scaled(long base);

}  // namespace xproc::test
