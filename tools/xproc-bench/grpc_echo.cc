#include "grpc_echo.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstring>
#include <stdexcept>

#include "grpc_echo.grpc.pb.h"

namespace xproc::bench {
namespace {

// A call that takes this long is stuck: fail it with a named error rather than wait for the
// supervisor's kill.
constexpr auto kCallDeadline = std::chrono::seconds(10);

[[noreturn]] void throw_status(const char* what, const grpc::Status& status) {
  throw std::runtime_error(std::string(what) + ": " + status.error_message() + " (code " +
                           std::to_string(static_cast<int>(status.error_code())) + ")");
}

// What a user of the synchronous API writes: copy the request's bytes into the response.
class EchoService final : public xproc_bench::Echo::Service {
 public:
  grpc::Status Call(grpc::ServerContext*, const xproc_bench::Body* request,
                    xproc_bench::Body* response) override {
    response->set_data(request->data());
    return grpc::Status::OK;
  }
};

}  // namespace

struct GrpcEchoServer::State {
  EchoService service;
  std::unique_ptr<grpc::Server> server;
};

GrpcEchoServer::GrpcEchoServer(const std::string& address) : state_(std::make_unique<State>()) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials());
  builder.RegisterService(&state_->service);
  state_->server = builder.BuildAndStart();
  if (!state_->server) throw std::runtime_error("gRPC server: cannot listen at " + address);
}

GrpcEchoServer::~GrpcEchoServer() {
  // A deadline of now: calls still in flight are cancelled instead of waited for.
  state_->server->Shutdown(std::chrono::system_clock::now());
  state_->server->Wait();
}

struct GrpcEchoClient::State {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<xproc_bench::Echo::Stub> stub;
  xproc_bench::Body request, response;  // reused from call to call
};

GrpcEchoClient::GrpcEchoClient(const std::string& address) : state_(std::make_unique<State>()) {
  grpc::ChannelArguments arguments;
  arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  state_->channel =
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments);
  state_->stub = xproc_bench::Echo::NewStub(state_->channel);
}

GrpcEchoClient::~GrpcEchoClient() = default;

void GrpcEchoClient::connect(double seconds) {
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            std::chrono::duration<double>(seconds));
  if (!state_->channel->WaitForConnected(deadline))
    throw std::runtime_error("gRPC channel: not connected within the timeout");
}

std::size_t GrpcEchoClient::call(const std::byte* request, std::size_t size, std::byte* response,
                                 std::size_t capacity) {
  state_->request.mutable_data()->assign(reinterpret_cast<const char*>(request), size);
  grpc::ClientContext context;  // one per call, as gRPC requires
  context.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  grpc::Status status = state_->stub->Call(&context, state_->request, &state_->response);
  if (!status.ok()) throw_status("gRPC call", status);
  const std::string& data = state_->response.data();
  if (data.size() > capacity)
    throw std::runtime_error("gRPC response of " + std::to_string(data.size()) + " bytes");
  std::memcpy(response, data.data(), data.size());
  return data.size();
}

}  // namespace xproc::bench
