// SPDX-License-Identifier: Apache-2.0
// PacketHold: holds the TCP and UDP packets that reach a network namespace (NFQUEUE in the
// raw table's PREROUTING, before any socket or CRIU's network lock sees them; loopback
// excepted) while its gateways cannot take them: during a restore in the sink (let in
// once the sockets exist) and from the freeze of a hand-back on (released toward the VM
// once its gateways are home, so no client waits for a retransmission timeout or gets
// a reset).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "common/result.h"

namespace seamless::sink {

// One packet as nfnetlink_queue hands it over (the payload starts at the IP header).
struct QueuedPacket {
  uint32_t id = 0;
  uint16_t protocol = 0;  // ethertype, host order
  uint32_t indev = 0;     // ifindex in the held namespace (0 if unknown)
  std::string payload;
};

// Parses one recv() buffer of nfnetlink messages: queued packets, and the error of the
// first NLMSG_ERROR that is not an ack. Exposed for tests.
Result<std::vector<QueuedPacket>> parse_queue_messages(std::string_view buffer);

// Where released packets go: out of `nic` in the namespace `netns` (a path such as
// /proc/self/ns/net), as Ethernet frames from `src_mac` to the MAC of the interface the
// packet came in on (`dst_by_indev`), else `dst_mac`.
struct ForwardTarget {
  std::string netns = "/proc/self/ns/net";
  std::string nic;
  std::string src_mac, dst_mac;
  std::map<uint32_t, std::string> dst_by_indev;
};

class PacketHold {
 public:
  // Binds queue `queue` in the namespace at `netns` (/proc/PID/ns/net or /run/netns/NAME)
  // and adds the rules that queue its TCP and UDP packets. At most `limit` packets are
  // kept; later ones are dropped (their senders retransmit).
  static Result<std::unique_ptr<PacketHold>> open(const std::string& netns, uint16_t queue = 5300, size_t limit = 4096);
  ~PacketHold();  // removes the rules and drops what is still held
  PacketHold(const PacketHold&) = delete;
  PacketHold& operator=(const PacketHold&) = delete;

  size_t held();
  size_t dropped();
  // The ifindex of `name` inside the held namespace.
  Result<uint32_t> ifindex(const std::string& name) const;
  // Lets the held packets, and every later one, on to the namespace's own sockets.
  Result<size_t> accept();
  // Sends the held packets, and every later one, out toward `target`; drops them here.
  Result<size_t> forward(const ForwardTarget& target);

 private:
  PacketHold(std::string netns, uint16_t queue, size_t limit)
      : netns_(std::move(netns)), queue_(queue), limit_(limit) {}
  Result<void> configure();
  Result<void> rules(bool add);
  Result<void> verdict(uint32_t id, bool accept);
  Result<void> send_frame(const QueuedPacket& p);
  void reader();

  std::string netns_;
  uint16_t queue_;
  size_t limit_;
  UniqueFd nl_, stop_;  // the queue's netlink socket; an eventfd that ends the reader
  std::thread thread_;
  std::mutex mu_;  // everything below
  enum class Mode { Hold, Accept, Forward } mode_ = Mode::Hold;
  std::vector<QueuedPacket> held_;
  size_t dropped_ = 0;
  ForwardTarget target_;
  UniqueFd out_;  // AF_PACKET socket on target_.nic
  int out_ifindex_ = 0;
  uint8_t src_[6] = {};
  std::string error_;  // the reader's first failure
};

// Runs `fn` on a thread that has joined the network namespace at `netns`; sockets it
// makes belong there.
Result<void> in_netns(const std::string& netns, const std::function<Result<void>()>& fn);

}  // namespace seamless::sink
