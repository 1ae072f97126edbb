#pragma once
// Unix-domain sockets for passing descriptors between processes: a connected pair, one message
// carrying one descriptor (SCM_RIGHTS), and the peer's credentials (SO_PEERCRED).
//
// How anonymous segments travel: the sender's descriptor is duplicated into the receiver by the
// kernel; both then refer to the same open file description.
// Thread- and process-safety: these are system calls; concurrent senders on one stream socket may
// interleave their bytes (use one sender at a time per socket, or SOCK_SEQPACKET).
// Blocking: send blocks while the socket buffer is full; receive blocks until a message arrives
// or the peer closes its end (then errc::peer_dead: a dead peer never blocks a receiver forever).
// Errors: the operating system's (std::system_category); EINTR is retried inside; sending to a
// closed peer returns EPIPE (MSG_NOSIGNAL: no SIGPIPE).
// fork(): the sockets are close-on-exec but inherited by fork() children like any descriptor.

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <system_error>

#include "xproc/sys/file.h"
#include "xproc/sys/result.h"

namespace xproc::sys {

struct SocketPair {
  FileDescriptor first;
  FileDescriptor second;
};

// socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC): two connected ends.
Result<SocketPair> unix_socket_pair() noexcept;

// Sends `data` (1 or more bytes: a stream socket needs a byte to carry the descriptor) with `fd`
// attached as SCM_RIGHTS, in one sendmsg. errc::invalid_argument: empty data or fd < 0.
// A short send (the socket took only part of `data`) sends the rest without the descriptor.
[[nodiscard]] std::error_code send_with_descriptor(int socket, std::span<const std::byte> data,
                                                   int fd) noexcept;

struct ReceivedData {
  std::size_t size = 0;  // bytes stored into the caller's buffer
  FileDescriptor fd;     // the descriptor that came with them (invalid when none came)
};

// Receives up to data.size() bytes (one recvmsg, MSG_CMSG_CLOEXEC) and at most one descriptor.
// errc::peer_dead: the peer closed its end (end of file). errc::invalid_argument: empty buffer.
// errc::corrupt_state: the message carried more than one descriptor or a truncated control
// part (every descriptor that did arrive is closed: an untrusted peer cannot leak them into us).
Result<ReceivedData> receive_with_descriptor(int socket, std::span<std::byte> data) noexcept;

// The credentials of the process that connected the peer end (SO_PEERCRED): for a socketpair,
// the process that created the pair; for connect()/listen(), the one that called it then.
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};
Result<PeerCredentials> peer_credentials(int socket) noexcept;

}  // namespace xproc::sys
