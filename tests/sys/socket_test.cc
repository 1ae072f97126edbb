// Descriptor passing over a Unix socket pair: one descriptor per message, the peer's
// credentials, end of file, and a hostile message carrying two descriptors.
#include "xproc/sys/socket.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>

#include "child_process.h"
#include "xproc/sys/error.h"
#include "xproc/sys/shared_memory.h"

namespace xproc::sys {
namespace {

std::span<const std::byte> bytes(const char* text) {
  return {reinterpret_cast<const std::byte*>(text), std::strlen(text)};
}

TEST(Socket, ADescriptorTravelsWithItsMessageAndRefersToTheSameFile) {
  auto pair = unix_socket_pair().value();
  auto file = create_memory_file("socket-test", 4096).value();
  ASSERT_FALSE(send_with_descriptor(pair.first.get(), bytes("hello"), file.get()));
  std::array<std::byte, 16> buffer{};
  auto received = receive_with_descriptor(pair.second.get(), buffer);
  ASSERT_TRUE(received) << received.error().message();
  EXPECT_EQ(received->size, 5u);
  EXPECT_EQ(std::memcmp(buffer.data(), "hello", 5), 0);
  ASSERT_TRUE(received->fd.valid());
  EXPECT_NE(received->fd.get(), file.get());
  auto mine = file_info(file.get()).value();
  auto theirs = file_info(received->fd.get()).value();
  EXPECT_EQ(mine.inode, theirs.inode);
  EXPECT_EQ(mine.device, theirs.device);
}

TEST(Socket, ArgumentsAreChecked) {
  auto pair = unix_socket_pair().value();
  EXPECT_EQ(send_with_descriptor(pair.first.get(), {}, 0), errc::invalid_argument);
  EXPECT_EQ(send_with_descriptor(pair.first.get(), bytes("x"), -1), errc::invalid_argument);
  EXPECT_EQ(receive_with_descriptor(pair.second.get(), {}).error(), errc::invalid_argument);
}

TEST(Socket, AClosedPeerIsPeerDeadForTheReceiverAndAnErrorForTheSender) {
  auto pair = unix_socket_pair().value();
  pair.first = FileDescriptor();
  std::array<std::byte, 4> buffer{};
  EXPECT_EQ(receive_with_descriptor(pair.second.get(), buffer).error(), errc::peer_dead);
  auto file = create_memory_file("socket-test", 64).value();
  EXPECT_EQ(send_with_descriptor(pair.second.get(), bytes("x"), file.get()),
            std::errc::broken_pipe);  // MSG_NOSIGNAL: an error, not SIGPIPE
}

TEST(Socket, AMessageWithTwoDescriptorsIsRefusedAndBothAreClosed) {
  auto pair = unix_socket_pair().value();
  auto a = create_memory_file("socket-test-a", 64).value();
  auto b = create_memory_file("socket-test-b", 64).value();
  int fds[2] = {a.get(), b.get()};
  alignas(cmsghdr) unsigned char control[CMSG_SPACE(sizeof(fds))] = {};
  char byte = 'x';
  iovec vector{&byte, 1};
  msghdr message{};
  message.msg_iov = &vector;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(fds));
  std::memcpy(CMSG_DATA(header), fds, sizeof(fds));
  ASSERT_EQ(sendmsg(pair.first.get(), &message, 0), 1);
  int before = dup(0);
  close(before);  // the lowest free descriptor number now
  std::array<std::byte, 4> buffer{};
  EXPECT_EQ(receive_with_descriptor(pair.second.get(), buffer).error(), errc::corrupt_state);
  int after = dup(0);
  close(after);
  EXPECT_EQ(after, before);  // nothing leaked
}

TEST(Socket, PeerCredentialsNameTheProcessThatMadeThePair) {
  auto pair = unix_socket_pair().value();
  auto credentials = peer_credentials(pair.second.get());
  ASSERT_TRUE(credentials);
  EXPECT_EQ(credentials->pid, getpid());
  EXPECT_EQ(credentials->uid, geteuid());
  EXPECT_EQ(credentials->gid, getegid());
  // A fork child sees the pair's creator too, not itself.
  auto child = test::Child::start([&] {
    auto seen = peer_credentials(pair.first.get());
    return seen && seen->pid == getppid() ? 0 : 1;
  });
  EXPECT_TRUE(child.wait().ok());
}

}  // namespace
}  // namespace xproc::sys
