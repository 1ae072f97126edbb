// sys::read_from / write_to / pidfds / ptrace knobs, on this process and on forked children.

#include "xproc/sys/cross_memory.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "child_process.h"
#include "xproc/sys/error.h"
#include "xproc/sys/memory.h"

namespace xproc::sys {
namespace {

std::vector<std::byte> pattern(std::size_t size, std::uint32_t seed) {
  std::vector<std::byte> bytes(size);
  std::uint32_t state = seed * 2654435761u + 1;
  for (auto& byte : bytes) {
    state = state * 1664525u + 1013904223u;
    byte = static_cast<std::byte>(state >> 24);
  }
  return bytes;
}

iovec io(void* base, std::size_t length) {
  return iovec{base, length};
}

TEST(CrossMemory, ReadsOwnMemoryAcrossManyRanges) {
  std::vector<std::byte> source = pattern(1 << 20, 1);
  std::vector<std::byte> target(source.size());
  const iovec local[] = {io(target.data(), target.size())};
  const iovec remote[] = {io(source.data(), source.size())};
  CrossMemoryResult result = read_from(getpid(), local, remote);
  ASSERT_FALSE(result.error) << result.error.message();
  EXPECT_EQ(result.bytes, source.size());
  EXPECT_EQ(source, target);
}

TEST(CrossMemory, SplitsVectorsLongerThanIovMax) {
  // 3000 scattered remote ranges of 7 bytes into 5 local ranges of uneven sizes.
  constexpr std::size_t kRanges = 3 * kIovMax - 72;
  std::vector<std::byte> source = pattern(kRanges * 16, 2);
  std::vector<iovec> remote;
  std::vector<std::byte> expected;
  for (std::size_t i = 0; i < kRanges; ++i) {
    remote.push_back(io(source.data() + i * 16 + 3, 7));
    expected.insert(expected.end(), source.begin() + static_cast<long>(i * 16 + 3),
                    source.begin() + static_cast<long>(i * 16 + 10));
  }
  std::vector<std::byte> target(expected.size());
  std::vector<iovec> local;
  std::size_t sizes[] = {1, 0, 4095, 9000, target.size() - 1 - 4095 - 9000};
  std::size_t at = 0;
  for (std::size_t size : sizes) {
    local.push_back(io(target.data() + at, size));
    at += size;
  }
  CrossMemoryResult result = read_from(getpid(), local, remote);
  ASSERT_FALSE(result.error) << result.error.message();
  EXPECT_EQ(result.bytes, expected.size());
  EXPECT_EQ(target, expected);
}

TEST(CrossMemory, ManyLocalRangesFromOneRemoteRange) {
  std::vector<std::byte> source = pattern(5000, 3);
  std::vector<std::byte> target(5000);
  std::vector<iovec> local;
  for (std::size_t i = 0; i < 5000; ++i) local.push_back(io(target.data() + i, 1));
  const iovec remote[] = {io(source.data(), source.size())};
  CrossMemoryResult result = write_to(getpid(), local, remote);  // writes target into source
  ASSERT_FALSE(result.error);
  EXPECT_EQ(result.bytes, 5000u);
  EXPECT_EQ(source, std::vector<std::byte>(5000));
}

TEST(CrossMemory, StopsAtTheShorterSide) {
  std::vector<std::byte> source = pattern(100, 4);
  std::vector<std::byte> target(60);
  const iovec local[] = {io(target.data(), 60)};
  const iovec remote[] = {io(source.data(), 100)};
  CrossMemoryResult result = read_from(getpid(), local, remote);
  ASSERT_FALSE(result.error);
  EXPECT_EQ(result.bytes, 60u);
  EXPECT_EQ(0, std::memcmp(source.data(), target.data(), 60));
}

TEST(CrossMemory, FaultReportsBadDescriptorAndHowFarItGot) {
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  void* map = mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(map, MAP_FAILED);
  auto* bytes = static_cast<std::byte*>(map);
  std::memset(bytes, 0x5a, page);
  ASSERT_EQ(munmap(bytes + page, page), 0);  // the second page is a hole now
  std::vector<std::byte> target(3 * page);
  const iovec local[] = {io(target.data(), target.size())};
  // Three remote ranges: the first page in two halves (fine), then the hole.
  const iovec remote[] = {io(bytes, page / 2), io(bytes + page / 2, page / 2),
                          io(bytes + page, page)};
  CrossMemoryResult result = read_from(getpid(), local, remote);
  EXPECT_EQ(result.error, errc::bad_descriptor);
  EXPECT_EQ(result.bytes, page);
  EXPECT_EQ(target[page - 1], std::byte{0x5a});
  munmap(bytes, page);
}

TEST(CrossMemory, ReadsAndWritesAChild) {
  // The child's copy of `buffer` sits at the same address (fork), so the parent can name it.
  std::vector<std::byte> buffer = pattern(256 * 1024, 5);
  SharedMapping flag = SharedMapping::anonymous(64).value();
  auto* state = static_cast<std::atomic<std::uint32_t>*>(flag.data());
  test::Child child = test::Child::start([&] {
    for (std::size_t i = 0; i < buffer.size(); ++i) buffer[i] = ~buffer[i];
    state->store(1, std::memory_order_release);
    while (state->load(std::memory_order_acquire) != 2) usleep(100);
    // The parent wrote zeros over the first 1000 bytes.
    for (std::size_t i = 0; i < 1000; ++i) {
      if (buffer[i] != std::byte{0}) return 1;
    }
    return 0;
  });
  while (state->load(std::memory_order_acquire) != 1) usleep(100);
  std::vector<std::byte> copy(buffer.size());
  const iovec local[] = {io(copy.data(), copy.size())};
  const iovec remote[] = {io(buffer.data(), buffer.size())};
  CrossMemoryResult read = read_from(child.pid(), local, remote);
  ASSERT_FALSE(read.error) << read.error.message();
  EXPECT_EQ(read.bytes, buffer.size());
  for (std::size_t i = 0; i < buffer.size(); ++i) ASSERT_EQ(copy[i], ~buffer[i]) << i;
  std::vector<std::byte> zeros(1000);
  const iovec zero_local[] = {io(zeros.data(), zeros.size())};
  const iovec zero_remote[] = {io(buffer.data(), 1000)};
  CrossMemoryResult write = write_to(child.pid(), zero_local, zero_remote);
  ASSERT_FALSE(write.error) << write.error.message();
  EXPECT_EQ(write.bytes, 1000u);
  state->store(2, std::memory_order_release);
  EXPECT_TRUE(child.wait(std::chrono::seconds(30)).ok());
}

TEST(CrossMemory, ReapedChildIsPeerDeadAndItsPidfdReadsExited) {
  test::Child child = test::Child::start([] {
    pause();
    return 0;
  });
  Result<FileDescriptor> pidfd = pidfd_open(child.pid());
  ASSERT_TRUE(pidfd) << pidfd.error().message();
  EXPECT_FALSE(pidfd_exited(pidfd->get()).value());
  pid_t pid = child.pid();
  child.kill(SIGKILL);
  test::ChildStatus status = child.wait(std::chrono::seconds(30));
  EXPECT_TRUE(status.signaled);
  EXPECT_TRUE(pidfd_exited(pidfd->get()).value());
  std::byte byte{};
  const iovec local[] = {io(&byte, 1)};
  const iovec remote[] = {io(&byte, 1)};
  CrossMemoryResult result = read_from(pid, local, remote);
  // The pid could in theory be reused already by an unrelated process of another uid.
  EXPECT_TRUE(result.error == errc::peer_dead || result.error == errc::permission_denied)
      << result.error.message();
  EXPECT_EQ(pidfd_open(pid).error(), errc::peer_dead);
}

TEST(CrossMemory, BadArgumentsAreInvalidArgument) {
  EXPECT_EQ(read_from(0, {}, {}).error, errc::invalid_argument);
  EXPECT_EQ(pidfd_open(-1).error(), errc::invalid_argument);
  EXPECT_EQ(allow_ptracer(0), errc::invalid_argument);
  // Nothing to move is success with zero bytes.
  CrossMemoryResult empty = read_from(getpid(), {}, {});
  EXPECT_FALSE(empty.error);
  EXPECT_EQ(empty.bytes, 0u);
}

TEST(CrossMemory, YamaScopeIsReadOrAbsent) {
  Result<int> scope = yama_ptrace_scope();
  if (scope) {
    EXPECT_GE(*scope, 0);
    EXPECT_LE(*scope, 3);
    EXPECT_FALSE(allow_any_ptracer());
  } else {
    EXPECT_EQ(scope.error(), errc::not_supported);
    EXPECT_EQ(allow_any_ptracer(), errc::not_supported);
  }
  EXPECT_NE(describe_ptrace_permission(getpid()).find("target pid"), std::string::npos);
}

TEST(CrossMemory, OtherUidIsPermissionDenied) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to start a reader with another uid";
  std::vector<std::byte> secret = pattern(4096, 6);
  pid_t self = getpid();
  test::Child child = test::Child::start([&] {
    if (setgid(65534) != 0 || setuid(65534) != 0) return 2;
    std::vector<std::byte> copy(secret.size());
    const iovec local[] = {io(copy.data(), copy.size())};
    const iovec remote[] = {io(secret.data(), secret.size())};
    CrossMemoryResult result = read_from(self, local, remote);
    if (result.error != errc::permission_denied || result.bytes != 0) return 1;
    return describe_ptrace_permission(self).find("euid 0") != std::string::npos ? 0 : 3;
  });
  test::ChildStatus status = child.wait(std::chrono::seconds(30));
  EXPECT_TRUE(status.ok()) << status.exit_code;
}

TEST(CrossMemory, NonDumpableTargetRefusesAnUnprivilegedReader) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop the reader to another uid";
  // Target and reader share a uid (65534) but the target is not dumpable.
  SharedMapping shared = SharedMapping::anonymous(4096).value();
  auto* words = static_cast<std::atomic<std::int32_t>*>(shared.data());
  std::vector<std::byte> secret = pattern(4096, 7);
  test::Child target = test::Child::start([&] {
    if (setgid(65534) != 0 || setuid(65534) != 0) return 2;
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return 3;
    words[0].store(getpid(), std::memory_order_release);
    while (words[1].load(std::memory_order_acquire) == 0) usleep(100);
    return 0;
  });
  test::Child reader = test::Child::start([&] {
    if (setgid(65534) != 0 || setuid(65534) != 0) return 2;
    pid_t pid = 0;
    while ((pid = words[0].load(std::memory_order_acquire)) == 0) usleep(100);
    std::vector<std::byte> copy(secret.size());
    const iovec local[] = {io(copy.data(), copy.size())};
    const iovec remote[] = {io(secret.data(), secret.size())};
    CrossMemoryResult result = read_from(pid, local, remote);
    words[1].store(1, std::memory_order_release);
    return result.error == errc::permission_denied ? 0 : 1;
  });
  EXPECT_TRUE(reader.wait(std::chrono::seconds(30)).ok());
  words[1].store(1, std::memory_order_release);
  EXPECT_TRUE(target.wait(std::chrono::seconds(30)).ok());
}

}  // namespace
}  // namespace xproc::sys
