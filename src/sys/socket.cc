#include "xproc/sys/socket.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "xproc/sys/error.h"

namespace xproc::sys {
namespace {

std::error_code last_error() {
  return {errno, std::system_category()};
}

// Room for the control part of one message with one descriptor; a bigger control part is
// truncated by the kernel (MSG_CTRUNC), which receive_with_descriptor reports.
constexpr std::size_t kControlSize = CMSG_SPACE(sizeof(int));

}  // namespace

Result<SocketPair> unix_socket_pair() noexcept {
  int fds[2] = {-1, -1};
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return last_error();
  return SocketPair{FileDescriptor(fds[0]), FileDescriptor(fds[1])};
}

std::error_code send_with_descriptor(int socket, std::span<const std::byte> data, int fd) noexcept {
  if (data.empty() || fd < 0) return errc::invalid_argument;
  alignas(cmsghdr) unsigned char control[kControlSize] = {};
  iovec vector{const_cast<std::byte*>(data.data()), data.size()};
  msghdr message{};
  message.msg_iov = &vector;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(header), &fd, sizeof(int));
  ssize_t sent = 0;
  while ((sent = sendmsg(socket, &message, MSG_NOSIGNAL)) < 0) {
    if (errno != EINTR) return last_error();
  }
  // The descriptor went with the first byte; the rest, if the socket took only part, goes plain.
  std::size_t done = static_cast<std::size_t>(sent);
  while (done < data.size()) {
    ssize_t more = send(socket, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (more < 0) {
      if (errno == EINTR) continue;
      return last_error();
    }
    done += static_cast<std::size_t>(more);
  }
  return {};
}

Result<ReceivedData> receive_with_descriptor(int socket, std::span<std::byte> data) noexcept {
  if (data.empty()) return make_error_code(errc::invalid_argument);
  alignas(cmsghdr) unsigned char control[kControlSize] = {};
  iovec vector{data.data(), data.size()};
  msghdr message{};
  message.msg_iov = &vector;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  ssize_t received = 0;
  while ((received = recvmsg(socket, &message, MSG_CMSG_CLOEXEC)) < 0) {
    if (errno != EINTR) return last_error();
  }
  ReceivedData result;
  bool malformed = (message.msg_flags & MSG_CTRUNC) != 0;
  for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
       header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    std::size_t bytes = header->cmsg_len - CMSG_LEN(0);
    for (std::size_t offset = 0; offset + sizeof(int) <= bytes; offset += sizeof(int)) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(header) + offset, sizeof(int));
      FileDescriptor owned(fd);
      if (result.fd.valid()) {
        malformed = true;  // a second descriptor: closed by `owned`
      } else {
        result.fd = std::move(owned);
      }
    }
  }
  if (malformed) return make_error_code(errc::corrupt_state);  // result.fd closes on return
  if (received == 0 && !result.fd.valid()) return make_error_code(errc::peer_dead);
  result.size = static_cast<std::size_t>(received);
  return result;
}

Result<PeerCredentials> peer_credentials(int socket) noexcept {
  ucred credentials{};
  socklen_t length = sizeof(credentials);
  if (getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
    return last_error();
  }
  return PeerCredentials{credentials.pid, credentials.uid, credentials.gid};
}

}  // namespace xproc::sys
