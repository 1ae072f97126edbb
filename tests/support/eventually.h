#pragma once
// Polls a condition that another thread or process will make true, with a guard so that a
// test fails (rather than hangs) when it never does. For handshakes, not for ordering by time.

#include <chrono>
#include <thread>

namespace xproc::test {

template <class Ready>
bool eventually(Ready ready, std::chrono::milliseconds guard = std::chrono::seconds(10)) {
  const auto limit = std::chrono::steady_clock::now() + guard;
  while (!ready()) {
    if (std::chrono::steady_clock::now() > limit) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace xproc::test
