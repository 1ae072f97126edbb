#include "xproc/shm/segment_transfer.h"

#include <unistd.h>

#include <array>
#include <cstring>
#include <utility>

#include "xproc/sys/error.h"

namespace xproc::shm {
namespace {

constexpr std::array<char, 4> kTag = {'X', 'P', 'S', 'G'};
constexpr std::size_t kMessageSize = 8;  // tag, then the kind (u32, native byte order)

}  // namespace

std::error_code send_segment(int socket, const Segment& segment) {
  if (!segment.valid()) return errc::invalid_argument;
  std::array<std::byte, kMessageSize> message{};
  std::memcpy(message.data(), kTag.data(), kTag.size());
  auto kind = static_cast<std::uint32_t>(segment.kind());
  std::memcpy(message.data() + kTag.size(), &kind, sizeof(kind));
  return sys::send_with_descriptor(socket, message, segment.fd());
}

Result<ReceivedSegment> receive_segment(int socket, SegmentKind kind,
                                        const ReceiveOptions& options) {
  std::array<std::byte, kMessageSize> message{};
  Result<sys::ReceivedData> first = sys::receive_with_descriptor(socket, message);
  if (!first) return first.error();
  sys::FileDescriptor fd = std::move(first->fd);
  std::size_t size = first->size;
  while (size < kMessageSize) {  // a stream socket may deliver the message in parts
    Result<sys::ReceivedData> more =
        sys::receive_with_descriptor(socket, std::span(message).subspan(size));
    if (!more) return more.error();
    if (more->fd.valid() || more->size == 0) return make_error_code(errc::corrupt_segment);
    size += more->size;
  }
  if (!fd.valid() || std::memcmp(message.data(), kTag.data(), kTag.size()) != 0) {
    return make_error_code(errc::corrupt_segment);
  }
  std::uint32_t announced = 0;
  std::memcpy(&announced, message.data() + kTag.size(), sizeof(announced));
  Result<sys::PeerCredentials> peer = sys::peer_credentials(socket);
  if (!peer) return peer.error();
  if (peer->uid != geteuid() && !options.allow_other_uid) {
    return make_error_code(errc::permission_denied);
  }
  if (announced != static_cast<std::uint32_t>(kind)) return make_error_code(errc::wrong_kind);
  Result<Segment> segment = Segment::adopt(std::move(fd), kind, options.segment);
  if (!segment) return segment.error();
  return ReceivedSegment{std::move(*segment), *peer};
}

}  // namespace xproc::shm
