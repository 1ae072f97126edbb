#include "child_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

namespace xproc::test {

Child Child::start(const std::function<int()>& body) {
  std::fflush(nullptr);  // or buffered output would be written twice
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    std::abort();
  }
  if (pid == 0) {
    int code = kChildThrew;
    try {
      code = body();
    } catch (const std::exception& error) {
      std::fprintf(stderr, "child %d threw: %s\n", getpid(), error.what());
    } catch (...) {
      std::fprintf(stderr, "child %d threw\n", getpid());
    }
    std::fflush(nullptr);
    _exit(code);
  }
  return Child(pid);
}

Child::~Child() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

void Child::kill(int signal) {
  if (pid_ > 0) ::kill(pid_, signal);
}

ChildStatus Child::wait(std::chrono::milliseconds timeout) {
  ChildStatus result;
  if (pid_ <= 0) return result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  auto pause = std::chrono::microseconds(50);
  for (;;) {
    pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) break;
    if (done < 0 && errno != EINTR) return result;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid_, SIGKILL);
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      pid_ = -1;
      result.exited = true;
      result.exit_code = kChildTimedOut;
      return result;
    }
    std::this_thread::sleep_for(pause);
    if (pause < std::chrono::milliseconds(5)) pause *= 2;
  }
  pid_ = -1;
  if (WIFEXITED(status)) {
    result.exited = true;
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.signaled = true;
    result.term_signal = WTERMSIG(status);
  }
  return result;
}

double test_scale() {
  const char* text = std::getenv("XPROC_TEST_SCALE");
  if (text == nullptr) return 1.0;
  double scale = std::strtod(text, nullptr);
  return scale > 0 ? scale : 1.0;
}

long scaled(long base) {
  long value = static_cast<long>(static_cast<double>(base) * test_scale());
  return value > 0 ? value : 1;
}

ParentAndChild run_in_parent_and_child(const std::function<int()>& work,
                                       std::chrono::milliseconds timeout) {
  Child child = Child::start(work);
  ParentAndChild result;
  result.parent = work();
  result.child = child.wait(timeout);
  return result;
}

}  // namespace xproc::test
