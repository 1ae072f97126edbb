#pragma once
// The wire format of an rpc server segment (a shm::Segment of kind rpc) and of the frames that
// travel in its channels (docs/layout/rpc.md draws it; docs/decisions/0050-rpc.md says why).
//
// Segment body (every offset 64-byte aligned, every size fixed by the header's config):
//   +0                 ServerHeader (128 bytes): magic, version, config, offsets, the server word
//   +slots_offset      ClientSlot[max_clients] (64 bytes each): owner word, generation word
//   +request_offset    the request channel (channel::format; clients send, server workers receive)
//   +response_offset   max_clients response channels, response_stride bytes apart (the server
//                      sends, the slot's owner receives)
// Frames: every channel message is a frame header followed by body_length body bytes; the
// message length must equal header + body_length. Both directions are untrusted input: a frame
// that fails a check is dropped and counted (Server/Client statistics), never delivered.
//
// Thread- and process-safety: plain layout types; the protocol that reads and writes them is in
// src/rpc/server.cc and src/rpc/client.cc (numbered steps in docs/decisions/0050-rpc.md).
// Nothing here blocks. validate_layout() returns errc::layout_mismatch (magic, version) or
// errc::corrupt_segment (sizes and offsets no correct creator writes). Deaths, fork(): server.h,
// client.h.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <system_error>
#include <type_traits>

namespace xproc::rpc {

// What an rpc server segment holds; the creator chooses it, openers read it from the header.
struct ServerConfig {
  std::uint32_t max_clients = 16;               // client slots (1..kMaxClients)
  std::uint32_t request_capacity = 1u << 18;    // request ring bytes (power of two)
  std::uint32_t response_capacity = 1u << 16;   // each response ring's bytes (power of two)
  std::uint32_t max_request_body = 16u << 10;   // largest request body (bytes)
  std::uint32_t max_response_body = 16u << 10;  // largest response body (bytes)
};

namespace detail {

inline constexpr std::uint32_t kMagic = 0x43525058;  // "XPRC" in memory order
inline constexpr std::uint32_t kLayoutVersion = 1;
inline constexpr std::uint32_t kMaxClients = 1024;
inline constexpr std::size_t kAlign = 64;

// The server header at body offset 0. Written once by the creator before the segment is
// published, except `server` and `server_epoch`.
struct ServerHeader {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint32_t max_clients;
  std::uint32_t request_capacity;
  std::uint32_t response_capacity;
  std::uint32_t max_request_body;
  std::uint32_t max_response_body;
  std::uint32_t reserved0;
  std::uint64_t slots_offset;
  std::uint64_t request_offset;
  std::uint64_t request_size;
  std::uint64_t response_offset;
  std::uint64_t response_stride;  // bytes between two response channels (>= channel size)
  std::uint64_t response_size;
  std::uint64_t body_size;  // the whole body: response_offset + max_clients * stride
  // The serving process: its packed sync::ParticipantId, 0 while no server is attached (after a
  // clean shutdown, or before the first takeover). Changed only by CAS: 0 or a dead id -> the
  // new server's id (Server::create), its own id -> 0 (Server destructor).
  std::atomic<std::uint32_t> server;
  // Bumped by every server that takes the segment over: a client compares it to tell a
  // restarted server from the one its in-flight calls went to.
  std::atomic<std::uint32_t> server_epoch;
  std::uint8_t reserved1[32];
};
static_assert(std::is_standard_layout_v<ServerHeader>);
static_assert(sizeof(ServerHeader) == 128);

// One client slot. owner: packed ParticipantId of the claiming client, 0 = free. generation:
// bumped by each claim (never 0 once claimed); requests carry it, responses echo it, so a
// response meant for a slot's previous owner is recognized and dropped.
//   claim (client): 1) CAS owner 0-or-dead -> self; 2) generation += 1 (skipping 0);
//     3) drain the response channel (stale responses of the previous owner).
//   free: the owner (Client destructor) or anybody who finds the owner dead (server sweep,
//     next claimer): CAS owner id -> 0.
struct ClientSlot {
  std::atomic<std::uint32_t> owner;
  std::atomic<std::uint32_t> generation;
  std::uint8_t reserved[56];
};
static_assert(std::is_standard_layout_v<ClientSlot>);
static_assert(sizeof(ClientSlot) == 64);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

// Frame headers, copied out of a message with memcpy (no alignment assumed).
inline constexpr std::uint16_t kFrameVersion = 1;
// Request flags; any other bit is rejected (bad_flags).
// kFlagCancel: not a request but the notice that the client cancelled call `correlation` (no
// body, method 0). The server marks that request's Responder cancelled if it is still being
// handled (ServerOptions::track_cancellation), and otherwise ignores it (counted).
inline constexpr std::uint16_t kFlagCancel = 1;
inline constexpr std::uint16_t kKnownRequestFlags = kFlagCancel;

struct RequestFrame {
  std::uint16_t version;      // kFrameVersion
  std::uint16_t flags;        // kKnownRequestFlags
  std::uint32_t client_slot;  // < max_clients
  std::uint32_t generation;   // the slot's generation when the client claimed it
  std::uint32_t method;       // the application's method id
  std::uint64_t correlation;  // the client's id for this call (nonzero)
  std::uint32_t body_length;  // bytes after the header
  std::uint32_t reserved;     // 0
};
static_assert(std::is_standard_layout_v<RequestFrame>);
static_assert(sizeof(RequestFrame) == 32);

struct ResponseFrame {
  std::uint16_t version;      // kFrameVersion
  std::uint16_t flags;        // 0
  std::uint32_t status;       // the application's status; kStatus* below are the library's
  std::uint64_t correlation;  // the request's correlation id
  std::uint32_t generation;   // the request's slot generation
  std::uint32_t body_length;  // bytes after the header
};
static_assert(std::is_standard_layout_v<ResponseFrame>);
static_assert(sizeof(ResponseFrame) == 24);

// Every offset and size of a segment for `config`; valid false for a config out of range.
struct Layout {
  bool valid = false;
  std::uint64_t slots_offset = 0;
  std::uint64_t request_offset = 0;
  std::uint64_t request_size = 0;
  std::uint64_t response_offset = 0;
  std::uint64_t response_stride = 0;
  std::uint64_t response_size = 0;
  std::uint64_t body_size = 0;
};
Layout layout_for(const ServerConfig& config) noexcept;

// Formats a zero-filled body of layout_for(config).body_size bytes: header, slots, channels.
[[nodiscard]] std::error_code format(std::span<std::byte> body, const ServerConfig& config);

// Checks the header of an opened body against itself and the body's size and recomputes the
// config it describes. {} or errc::layout_mismatch / corrupt_segment.
[[nodiscard]] std::error_code validate(std::span<const std::byte> body, ServerConfig& config);

}  // namespace detail

// Library-defined response statuses (the top of the range; applications use the rest).
inline constexpr std::uint32_t kStatusAbandoned = 0xffffffffu;  // the handler dropped its
                                                                // Responder without responding
inline constexpr std::uint32_t kStatusFirstReserved = 0xffffff00u;

}  // namespace xproc::rpc
