// Row "unix-stream": a socketpair(AF_UNIX, SOCK_STREAM), used one way, blocking send/recv.
// One sender and one receiver only: a stream socket does not keep message boundaries between
// several writers or readers.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>

#include "transport.h"

namespace xproc::bench {
namespace {

class SocketSender final : public Sender {
 public:
  explicit SocketSender(int fd) : fd_(fd) {}
  void send(const std::byte* data, std::size_t size) override {
    while (size > 0) {
      ssize_t sent = ::send(fd_, data, size, MSG_NOSIGNAL);
      if (sent < 0) {
        if (errno == EINTR) continue;
        throw_errno("send");
      }
      data += sent;
      size -= static_cast<std::size_t>(sent);
    }
  }

 private:
  int fd_;
};

class SocketReceiver final : public Receiver {
 public:
  SocketReceiver(int fd, std::size_t size) : fd_(fd), size_(size) {}
  std::size_t receive(std::byte* data, std::size_t capacity) override {
    if (capacity < size_) throw std::runtime_error("unix-stream: receive buffer too small");
    std::size_t done = 0;
    while (done < size_) {
      ssize_t got = ::recv(fd_, data + done, size_ - done, MSG_WAITALL);
      if (got < 0) {
        if (errno == EINTR) continue;
        throw_errno("recv");
      }
      if (got == 0) throw std::runtime_error("recv: peer closed");
      done += static_cast<std::size_t>(got);
    }
    return size_;
  }

 private:
  int fd_;
  std::size_t size_;
};

class SocketLink final : public Link {
 public:
  explicit SocketLink(const LinkShape& shape) : size_(shape.message_size) {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds_) != 0) throw_errno("socketpair");
  }
  ~SocketLink() override {
    close(fds_[0]);
    close(fds_[1]);
  }
  std::unique_ptr<Sender> open_sender(int) override {
    return std::make_unique<SocketSender>(fds_[0]);
  }
  std::unique_ptr<Receiver> open_receiver(int) override {
    return std::make_unique<SocketReceiver>(fds_[1], size_);
  }

 private:
  int fds_[2] = {-1, -1};
  std::size_t size_;
};

class SocketTransport final : public Transport {
 public:
  std::string name() const override { return "unix-stream"; }
  std::string description() const override {
    return "Unix stream socketpair, default buffer sizes";
  }
  std::string unsupported(const LinkShape& shape) const override {
    if (shape.senders > 1 || shape.receivers > 1)
      return "a stream socket keeps no message boundaries between several writers/readers";
    return {};
  }
  std::unique_ptr<Link> create_link(const LinkShape& shape) override {
    return std::make_unique<SocketLink>(shape);
  }
};

const TransportRegistration registration{40, [] { return std::make_unique<SocketTransport>(); }};

}  // namespace
}  // namespace xproc::bench
