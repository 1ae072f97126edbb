#include "xproc/sys/futex.h"

#include <gtest/gtest.h>

#include <thread>

#include "xproc/sys/error.h"

namespace xproc::sys {
namespace {

using namespace std::chrono_literals;

TEST(Futex, WaitReturnsWouldBlockWhenTheWordDiffers) {
  std::atomic<std::uint32_t> word{1};
  EXPECT_EQ(futex_wait(word, 0, FutexScope::process_private), errc::would_block);
}

TEST(Futex, WaitWithAPastDeadlineTimesOut) {
  std::atomic<std::uint32_t> word{0};
  auto past = std::chrono::steady_clock::now() - 1s;
  EXPECT_EQ(futex_wait(word, 0, FutexScope::process_private, past), errc::timed_out);
}

TEST(Futex, WaitWithANearDeadlineTimesOutAfterIt) {
  std::atomic<std::uint32_t> word{0};
  auto deadline = std::chrono::steady_clock::now() + 5ms;
  std::error_code result;
  do {
    result = futex_wait(word, 0, FutexScope::process_shared, deadline);
  } while (!result);  // spurious wake-ups are allowed
  EXPECT_EQ(result, errc::timed_out);
  EXPECT_GE(std::chrono::steady_clock::now(), deadline);
}

TEST(Futex, WakeReleasesAWaiter) {
  for (FutexScope scope : {FutexScope::process_private, FutexScope::process_shared}) {
    std::atomic<std::uint32_t> word{0};
    std::thread waiter([&] {
      // release/acquire through `word` itself: the waiter leaves only once it reads 1.
      while (word.load(std::memory_order_acquire) == 0) {
        auto result = futex_wait(word, 0, scope);
        EXPECT_TRUE(!result || result == errc::would_block) << result.message();
      }
    });
    word.store(1, std::memory_order_release);
    EXPECT_TRUE(futex_wake(word, 1, scope).has_value());
    waiter.join();
  }
}

TEST(Futex, WakeWithNoWaitersWakesNobody) {
  std::atomic<std::uint32_t> word{0};
  auto woken = futex_wake(word, 10, FutexScope::process_private);
  ASSERT_TRUE(woken);
  EXPECT_EQ(*woken, 0);
}

TEST(Futex, CmpRequeueRefusesWhenTheWordChanged) {
  std::atomic<std::uint32_t> word{5}, target{0};
  auto moved = futex_cmp_requeue(word, 4, 0, 1, target, FutexScope::process_private);
  EXPECT_EQ(moved.error(), errc::would_block);
}

TEST(Futex, CmpRequeueMovesAWaiterToTheTarget) {
  std::atomic<std::uint32_t> word{0}, target{0};
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    while (!done.load(std::memory_order_acquire)) {
      (void)futex_wait(word, 0, FutexScope::process_private);
    }
  });
  // Requeue until the waiter is parked on `word` and moved to `target`, then wake it there.
  int moved = 0;
  while (moved == 0) {
    auto result = futex_cmp_requeue(word, 0, 0, 1, target, FutexScope::process_private);
    ASSERT_TRUE(result);
    moved = *result;
    std::this_thread::yield();
  }
  done.store(true, std::memory_order_release);
  int woken = 0;
  while (woken == 0) {
    auto result = futex_wake(target, 1, FutexScope::process_private);
    ASSERT_TRUE(result);
    woken = *result;
  }
  waiter.join();
}

TEST(Futex, WakeOpAppliesTheOperationToTheSecondWord) {
  std::atomic<std::uint32_t> word1{0}, word2{7};
  auto result = futex_wake_op(word1, word2, 1, 1, {FutexOp::add, 3, FutexCompare::eq, 7},
                              FutexScope::process_private);
  ASSERT_TRUE(result);
  EXPECT_EQ(word2.load(), 10u);
}

TEST(Futex, WakeOpRejectsArgumentsWiderThanTwelveBits) {
  std::atomic<std::uint32_t> word1{0}, word2{0};
  auto result = futex_wake_op(word1, word2, 1, 1, {FutexOp::set, 0x1000, FutexCompare::eq, 0},
                              FutexScope::process_private);
  EXPECT_EQ(result.error(), errc::invalid_argument);
  EXPECT_EQ(word2.load(), 0u);
}

}  // namespace
}  // namespace xproc::sys
