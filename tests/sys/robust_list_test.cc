#include "xproc/sys/robust_list.h"

#include <gtest/gtest.h>

#include <thread>

#include "child_process.h"

namespace xproc::sys {
namespace {

TEST(RobustList, EachThreadHasGlibcsHead) {
  RobustListHead* head = this_thread_robust_list();
  ASSERT_NE(head, nullptr);
  EXPECT_EQ(head->futex_offset, kGlibcRobustFutexOffset);
  RobustListHead* other = nullptr;
  std::thread([&] { other = this_thread_robust_list(); }).join();
  EXPECT_NE(other, nullptr);
  EXPECT_NE(other, head);
}

TEST(RobustList, AForkChildHasARegisteredHead) {
  auto child = test::Child::start([] {
    RobustListHead* head = this_thread_robust_list();
    return head != nullptr && head->futex_offset == kGlibcRobustFutexOffset ? 0 : 1;
  });
  EXPECT_TRUE(child.wait().ok());
}

}  // namespace
}  // namespace xproc::sys
