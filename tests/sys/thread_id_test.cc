#include "xproc/sys/thread_id.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <thread>

#include "child_process.h"

namespace xproc::sys {
namespace {

TEST(ThreadId, MatchesTheKernelsTid) {
  EXPECT_EQ(this_thread_id(), gettid());
}

TEST(ThreadId, DiffersBetweenThreadsAndSoDoesTheToken) {
  pid_t other_tid = 0;
  std::uint64_t other_token = 0;
  std::thread([&] {
    other_tid = this_thread_id();
    other_token = this_thread_token();
  }).join();
  EXPECT_NE(other_tid, this_thread_id());
  EXPECT_NE(other_token, this_thread_token());
  EXPECT_NE(this_thread_token(), 0u);
}

TEST(ThreadId, IsRefreshedInAForkChild) {
  const pid_t parent_tid = this_thread_id();
  const std::uint64_t parent_token = this_thread_token();
  auto child = test::Child::start([&] {
    if (this_thread_id() != gettid()) return 1;
    if (this_thread_id() == parent_tid) return 2;
    if (this_thread_token() == parent_token) return 3;
    return 0;
  });
  auto status = child.wait();
  EXPECT_TRUE(status.ok()) << status.exit_code;
}

}  // namespace
}  // namespace xproc::sys
