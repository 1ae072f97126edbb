#pragma once
// Passing a segment to another process over a connected AF_UNIX socket (how anonymous segments
// travel; named ones may travel this way too). One message: 8 bytes ("XPSG" + the kind) with the
// segment's descriptor attached (SCM_RIGHTS).
//
// The receiver checks the sender's credentials (SO_PEERCRED: the process that connected the
// socket, or created the socketpair) and refuses a sender of another uid unless allowed, then
// validates and attaches like Segment::adopt (every adopt error applies).
// Thread-safety: one sender and one receiver at a time per socket. Blocking: send blocks while
// the socket buffer is full; receive blocks until a message comes or the peer closes its end
// (errc::peer_dead), so a dead sender never blocks a receiver forever.
// Failures: errc::peer_dead (the peer closed), errc::corrupt_segment (a message that is not a
// segment message, or no descriptor with it), errc::permission_denied (sender of another uid),
// errc::wrong_kind (the message announces another kind), the adopt errors, the OS's.
// fork(): the sockets and received descriptors are close-on-exec; see segment.h for Segment.

#include <system_error>

#include "xproc/shm/segment.h"
#include "xproc/sys/result.h"
#include "xproc/sys/socket.h"

namespace xproc::shm {

[[nodiscard]] std::error_code send_segment(int socket, const Segment& segment);

struct ReceiveOptions {
  bool allow_other_uid = false;  // accept a sender whose uid differs from our effective uid
  SegmentOptions segment{};      // for the adopt (ready_timeout, populate, ...)
};

struct ReceivedSegment {
  Segment segment;
  sys::PeerCredentials peer;  // SO_PEERCRED of the socket's peer
};

Result<ReceivedSegment> receive_segment(int socket, SegmentKind kind,
                                        const ReceiveOptions& options = {});

}  // namespace xproc::shm
