// xproc-inspect: the human-readable output (render.h).
#include <ctime>
#include <iomanip>
#include <sstream>

#include "render.h"
#include "xproc/channel/layout.h"

namespace xproc::inspect {
namespace {

std::string participant_summary(const shm::SegmentReport& report) {
  std::size_t alive = 0;
  for (const shm::ParticipantState& p : report.participants) alive += p.alive ? 1 : 0;
  return std::to_string(alive) + " live, " + std::to_string(report.participants.size() - alive) +
         " dead";
}

std::string id_text(sync::ParticipantId id) {
  return std::to_string(id.slot) + ":" + std::to_string(id.generation);
}

std::string owner_text(const LockOwner& owner) {
  switch (owner.state) {
    case LockOwner::State::free:
      return "free";
    case LockOwner::State::local:
      return "held by a process-local endpoint";
    case LockOwner::State::invalid:
      return "held by an invalid id (word " + std::to_string(owner.word) + ")";
    case LockOwner::State::alive:
    case LockOwner::State::dead:
      return "held by " + id_text(sync::ParticipantId::unpack(owner.word)) +
             (owner.state == LockOwner::State::dead ? " (DEAD: next waiter takes it over)"
                                                    : " (alive)");
  }
  return "?";
}

std::string channel_summary(const SegmentEntry& entry) {
  if (!entry.channel) return "";
  const ChannelView& c = *entry.channel;
  if (c.error) return "channel: " + error_name(c.error);
  std::string text = "depth " + std::to_string(c.statistics.depth_messages) + " msg";
  if (c.statistics.senders_waiting + c.statistics.receivers_waiting > 0) {
    text += ", waiting " + std::to_string(c.statistics.senders_waiting) + "s/" +
            std::to_string(c.statistics.receivers_waiting) + "r";
  }
  for (const LockOwner& owner : c.locks) {
    if (owner.state == LockOwner::State::dead) text += ", " + std::string(owner.lock) + " DEAD";
  }
  if (c.producers.alive == 0 && c.producers.dead != 0) text += ", producers ALL DEAD";
  if (c.consumers.alive == 0 && c.consumers.dead != 0) text += ", consumers ALL DEAD";
  return text;
}

}  // namespace

std::string format_time(std::chrono::system_clock::time_point when) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(when.time_since_epoch()).count();
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  std::ostringstream text;
  text << std::put_time(&utc, "%Y-%m-%dT%H:%M:%S") << '.' << std::setw(3) << std::setfill('0')
       << (ms % 1000 + 1000) % 1000 << 'Z';
  return text.str();
}

void render_list_text(const std::vector<SegmentEntry>& entries, std::string& out) {
  std::ostringstream text;
  text << std::left << std::setw(24) << "NAME" << ' ' << std::setw(8) << "KIND" << ' '
       << std::setw(10) << "SIZE" << ' ' << std::setw(16) << "CREATOR uid/pid" << ' '
       << std::setw(24) << "CREATED (UTC)" << ' ' << std::setw(18) << "PARTICIPANTS" << ' '
       << std::setw(5) << "STALE"
       << " STATE\n";
  for (const SegmentEntry& entry : entries) {
    text << std::left << std::setw(24) << entry.name << ' ';
    if (entry.error) {
      text << "error: " << error_name(entry.error) << " (" << entry.error.message() << ")\n";
      continue;
    }
    const shm::SegmentInfo& info = entry.view.report.info;
    text << std::setw(8) << kind_name(info.kind) << ' ' << std::setw(10) << info.total_size << ' '
         << std::setw(16)
         << (std::to_string(info.creator_uid) + "/" + std::to_string(info.creator_pid)) << ' '
         << std::setw(24) << format_time(info.created_at) << ' ' << std::setw(18)
         << participant_summary(entry.view.report) << ' ' << std::setw(5)
         << (entry.view.stale ? "yes" : "no") << ' ' << channel_summary(entry) << '\n';
  }
  if (entries.empty()) text << "(no xproc segments)\n";
  out += text.str();
}

void render_detail_text(const SegmentEntry& entry, std::string& out) {
  std::ostringstream text;
  const shm::SegmentInfo& info = entry.view.report.info;
  text << "segment       " << entry.name << " (/dev/shm/" << shm::kNamePrefix << entry.name
       << ")\n";
  text << "kind          " << kind_name(info.kind) << "\n";
  text << "layout        version " << info.layout_version << ", flags";
  if (info.flags == 0) text << " none";
  if ((info.flags & shm::kFlagUnlinkWhenLastDetaches) != 0) text << " unlink_when_last_detaches";
  if ((info.flags & shm::kFlagAnonymous) != 0) text << " anonymous";
  text << "\n";
  text << "size          " << info.total_size << " bytes (body " << info.body_size
       << " bytes at offset " << info.body_offset << ")\n";
  text << "creator       uid " << info.creator_uid << ", pid " << info.creator_pid
       << ", participant " << id_text(info.creator) << " ("
       << (entry.creator_alive ? (*entry.creator_alive ? "alive" : "dead") : "unknown") << ")\n";
  text << "created       " << format_time(info.created_at) << "\n";
  text << "stale         " << (entry.view.stale ? "yes (xproc-inspect --gc removes it)" : "no")
       << "\n";
  text << "lock bytes    gc " << (entry.view.locks.gc_held ? "held" : "free") << ", init "
       << (entry.view.locks.init_held ? "held (a creator is initializing)" : "free") << "\n";
  text << "participants  " << participant_summary(entry.view.report) << " (capacity "
       << info.participant_capacity << ")\n";
  for (const shm::ParticipantState& p : entry.view.report.participants) {
    text << "  slot " << std::left << std::setw(5) << p.id.slot << " generation " << std::setw(8)
         << p.id.generation << (p.alive ? "alive" : "dead") << "\n";
  }
  if (entry.channel) {
    const ChannelView& c = *entry.channel;
    if (c.error) {
      text << "channel       unreadable: " << error_name(c.error) << " (" << c.error.message()
           << ")\n";
    } else {
      const channel::Statistics& s = c.statistics;
      text << "channel       capacity " << c.capacity << " bytes, max message " << c.max_message
           << " bytes, " << ((c.flags & channel::detail::kFlagSpsc) != 0 ? "spsc" : "mpmc")
           << ", redelivery " << ((c.flags & channel::detail::kFlagRedelivery) != 0 ? "on" : "off")
           << "\n";
      text << "  depth       " << s.depth_messages << " messages, " << s.depth_bytes
           << " bytes (claimed, not reclaimed yet: " << s.claimed_bytes << " bytes)\n";
      text << "  waiting     " << s.senders_waiting << " senders, " << s.receivers_waiting
           << " receivers\n";
      text << "  totals      reserved " << s.reserved_total << ", claimed " << s.claimed_total
           << ", abandoned " << s.abandoned << "\n";
      text << "  dead peers  producer_died " << s.producer_died << ", consumer_died "
           << s.consumer_died << ", redelivered " << s.redelivered << ", lock_takeovers "
           << s.lock_takeovers << "\n";
      if (c.roles_tracked) {
        text << "  roles       producers " << c.producers.alive << " alive " << c.producers.dead
             << " dead, consumers " << c.consumers.alive << " alive " << c.consumers.dead
             << " dead\n";
      }
      for (const LockOwner& owner : c.locks) {
        text << "  " << std::left << std::setw(7) << owner.lock << " lock " << owner_text(owner)
             << "\n";
      }
    }
  }
  out += text.str();
}

void render_gc_text(const std::vector<GcOutcome>& outcomes, bool dry_run, std::string& out) {
  std::ostringstream text;
  std::size_t removed = 0;
  for (const GcOutcome& outcome : outcomes) {
    text << (outcome.removed ? (dry_run ? "would remove " : "removed      ") : "kept         ")
         << outcome.name << ": " << outcome.reason << "\n";
    removed += outcome.removed ? 1 : 0;
  }
  text << (dry_run ? "dry run: " : "") << removed << (dry_run ? " to remove, " : " removed, ")
       << outcomes.size() - removed << " kept\n";
  out += text.str();
}

}  // namespace xproc::inspect
