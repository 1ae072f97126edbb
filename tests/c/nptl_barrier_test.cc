// Scenarios of glibc's barrier tests (tst-barrier1..4), ported to xproc's C API. Scenarios
// that could hang on a lost wake-up run in a forked child, so a hang is a timeout.

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <functional>
#include <thread>
#include <vector>

#include "child_process.h"
#include "nptl_test_support.h"
#include "shared_object.h"
#include "xproc/c/sync.h"

namespace xproc::test {
namespace {

void run_in_child(const std::function<int()>& body,
                  std::chrono::milliseconds timeout = kHandshakeTimeout) {
  auto child = Child::start(body);
  const ChildStatus status = child.wait(timeout);
  EXPECT_TRUE(status.ok()) << "exit code " << status.exit_code << " (" << kChildTimedOut
                           << " = timed out), signal " << status.term_signal;
}

// tst-barrier1: a count of 0 is EINVAL; a barrier of one returns SERIAL to its only caller in
// every round.
TEST(NptlBarrier, CountZeroIsInvalidAndABarrierOfOneIsAlwaysSerial) {
  xproc_barrier_t barrier;
  EXPECT_EQ(xproc_barrier_init(&barrier, nullptr, 0), EINVAL);
  ASSERT_EQ(xproc_barrier_init(&barrier, nullptr, 1), 0);
  for (int round = 0; round < 10; ++round) {
    EXPECT_EQ(xproc_barrier_wait(&barrier), XPROC_BARRIER_SERIAL_THREAD);
  }
  EXPECT_EQ(xproc_barrier_destroy(&barrier), 0);
}

// tst-barrier2: attribute pshared getter/setter; a process-shared barrier of two in a
// MAP_SHARED file synchronizes parent and forked child for many rounds, with exactly one SERIAL
// per round and the round's writes visible to both.
struct SharedBarrier {
  xproc_barrier_t barrier;
  long serials = 0;  // incremented by the serial caller of each round only
  long parent_progress = 0;
  long child_progress = 0;
};

TEST(NptlBarrier, ProcessSharedBarrierInAMappedFileSynchronizesParentAndChild) {
  xproc_barrierattr_t attr;
  ASSERT_EQ(xproc_barrierattr_init(&attr), 0);
  int pshared = -1;
  EXPECT_EQ(xproc_barrierattr_getpshared(&attr, &pshared), 0);
  EXPECT_EQ(pshared, XPROC_PROCESS_PRIVATE);
  EXPECT_EQ(xproc_barrierattr_setpshared(&attr, XPROC_PROCESS_SHARED), 0);
  EXPECT_EQ(xproc_barrierattr_getpshared(&attr, &pshared), 0);
  EXPECT_EQ(pshared, XPROC_PROCESS_SHARED);
  EXPECT_EQ(xproc_barrierattr_setpshared(&attr, 5), EINVAL);

  char path[] = "/tmp/xproc-nptl-barrier.XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(unlink(path), 0);
  ASSERT_EQ(ftruncate(fd, sizeof(SharedBarrier)), 0);
  void* memory = mmap(nullptr, sizeof(SharedBarrier), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(memory, MAP_FAILED);
  close(fd);
  auto* shared = new (memory) SharedBarrier;
  ASSERT_EQ(xproc_barrier_init(&shared->barrier, &attr, 2), 0);
  EXPECT_EQ(xproc_barrierattr_destroy(&attr), 0);

  const long rounds = scaled(300);
  // Each side writes its progress before arriving and checks the other's after leaving.
  auto side = [&](long SharedBarrier::*mine, long SharedBarrier::*theirs) {
    for (long round = 1; round <= rounds; ++round) {
      shared->*mine = round;
      const int code = xproc_barrier_wait(&shared->barrier);
      if (code == XPROC_BARRIER_SERIAL_THREAD) {
        ++shared->serials;
      } else if (code != 0) {
        return 1;
      }
      if (shared->*theirs < round) return 2;
      if (xproc_barrier_wait(&shared->barrier) < -1) return 3;  // the serial count settles
    }
    return 0;
  };
  auto child = Child::start(
      [&] { return side(&SharedBarrier::child_progress, &SharedBarrier::parent_progress); });
  EXPECT_EQ(side(&SharedBarrier::parent_progress, &SharedBarrier::child_progress), 0);
  const ChildStatus status = child.wait(kHandshakeTimeout);
  EXPECT_TRUE(status.ok()) << "child exit code " << status.exit_code;
  EXPECT_EQ(shared->serials, rounds);
  EXPECT_EQ(xproc_barrier_destroy(&shared->barrier), 0);
  shared->~SharedBarrier();
  EXPECT_EQ(munmap(memory, sizeof(SharedBarrier)), 0);
}

// tst-barrier3: nested barriers: barrier j has j + 1 participants (threads 0..j). In every
// round each barrier's serial caller sees exactly j + 1 arrivals counted before it, and each
// barrier has exactly one serial caller per round.
TEST(NptlBarrier, NestedBarriersOfEverySizeHaveOneSerialPerRound) {
  constexpr int kThreads = 8;
  const long rounds = scaled(50);
  run_in_child([&] {
    xproc_barrier_t barriers[kThreads];
    std::atomic<int> arrivals[kThreads];
    std::atomic<int> serials[kThreads];
    for (int j = 0; j < kThreads; ++j) {
      if (xproc_barrier_init(&barriers[j], nullptr, static_cast<unsigned>(j + 1)) != 0) return 1;
      arrivals[j].store(0);
      serials[j].store(0);
    }
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int nr = 0; nr < kThreads; ++nr) {
      threads.emplace_back([&, nr] {
        for (long round = 0; round < rounds; ++round) {
          // Everyone joins the largest barrier first, so no one runs a round ahead.
          const int start = xproc_barrier_wait(&barriers[kThreads - 1]);
          if (start != 0 && start != XPROC_BARRIER_SERIAL_THREAD) failures.fetch_add(1);
          // Thread nr takes part in barriers kThreads-1 down to nr (barrier j: threads 0..j),
          // all in the same order, so every barrier gets exactly its members.
          for (int j = kThreads - 1; j >= nr; --j) {
            arrivals[j].fetch_add(1);
            const int code = xproc_barrier_wait(&barriers[j]);
            if (code == XPROC_BARRIER_SERIAL_THREAD) {
              serials[j].fetch_add(1);
              if (arrivals[j].exchange(0) != j + 1) failures.fetch_add(1);
            } else if (code != 0) {
              failures.fetch_add(1);
            }
          }
        }
      });
    }
    for (auto& thread : threads) thread.join();
    if (failures.load() != 0) return 2;
    for (int j = 0; j < kThreads; ++j) {
      if (serials[j].load() != rounds) return 3;
      if (xproc_barrier_destroy(&barriers[j]) != 0) return 4;
    }
    return 0;
  });
}

// tst-barrier4: the serial caller destroys and re-initializes the barrier right after its
// wait returns, while the other participants may still be on their way out of it; two
// barriers alternate so that nobody re-enters the one being re-initialized.
// FINDING (reported to the lead, 2026-11-23): hangs against Barrier as of HEAD (glibc's
// pthread_barrier_* pass the same scenario): a participant still in wait_generation()'s spin
// when the serial caller re-initializes the barrier sees the generation bit back at its
// initial value, takes it for its own generation and waits for good.
TEST(NptlBarrier, SerialCallerReinitializesTheBarrierWhileOthersLeaveIt) {
  constexpr unsigned kParticipants = 8;
  const long rounds = scaled(300);
  run_in_child(
      [&] {
        xproc_barrier_t first;
        xproc_barrier_t second;
        if (xproc_barrier_init(&first, nullptr, kParticipants) != 0) return 1;
        if (xproc_barrier_init(&second, nullptr, kParticipants) != 0) return 1;
        std::atomic<int> failures{0};
        auto pass = [&](xproc_barrier_t* barrier) {
          const int code = xproc_barrier_wait(barrier);
          if (code == XPROC_BARRIER_SERIAL_THREAD) {
            if (xproc_barrier_destroy(barrier) != 0) failures.fetch_add(1);
            if (xproc_barrier_init(barrier, nullptr, kParticipants) != 0) failures.fetch_add(1);
          } else if (code != 0) {
            failures.fetch_add(1);
          }
        };
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < kParticipants; ++t) {
          threads.emplace_back([&] {
            for (long round = 0; round < rounds; ++round) {
              pass(&first);
              pass(&second);
            }
          });
        }
        for (auto& thread : threads) thread.join();
        return failures.load() == 0 ? 0 : 2;
      },
      std::chrono::seconds(10));
}

// Many generations of one barrier across processes: children and parent pass a process-shared
// barrier many times; the serial count is exactly one per generation.
struct SharedGenerations {
  xproc_barrier_t barrier;
  std::atomic<long> serials{0};
};

TEST(NptlBarrier, ProcessesPassManyGenerationsWithOneSerialEach) {
  constexpr int kChildren = 3;
  const long rounds = scaled(500);
  SharedObject<SharedGenerations> shared;
  xproc_barrierattr_t attr;
  ASSERT_EQ(xproc_barrierattr_init(&attr), 0);
  ASSERT_EQ(xproc_barrierattr_setpshared(&attr, XPROC_PROCESS_SHARED), 0);
  ASSERT_EQ(xproc_barrier_init(&shared->barrier, &attr, kChildren + 1), 0);
  EXPECT_EQ(xproc_barrierattr_destroy(&attr), 0);
  auto participate = [&] {
    for (long round = 0; round < rounds; ++round) {
      const int code = xproc_barrier_wait(&shared->barrier);
      if (code == XPROC_BARRIER_SERIAL_THREAD) {
        shared->serials.fetch_add(1);
      } else if (code != 0) {
        return 1;
      }
    }
    return 0;
  };
  std::vector<Child> children;
  for (int c = 0; c < kChildren; ++c) children.push_back(Child::start(participate));
  EXPECT_EQ(participate(), 0);
  for (auto& child : children) EXPECT_TRUE(child.wait(kHandshakeTimeout).ok());
  EXPECT_EQ(shared->serials.load(), rounds);
  EXPECT_EQ(xproc_barrier_destroy(&shared->barrier), 0);
}

}  // namespace
}  // namespace xproc::test
