// SPDX-License-Identifier: Apache-2.0
// PacketHold over nfnetlink_queue (raw netlink, no library) and an AF_PACKET socket for
// the packets released toward the VM.
#include "sinkd/hold.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <cstring>

#include "common/log.h"
#include "common/process.h"
#include "common/sys.h"

namespace seamless::sink {
namespace {

constexpr std::string_view kModule = "hold";

// Builds one nfnetlink_queue message: header, nfgenmsg, then attributes.
class NlMessage {
 public:
  NlMessage(uint16_t type, uint16_t queue, uint16_t flags) {
    buf_.resize(NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg)));
    auto* h = reinterpret_cast<nlmsghdr*>(buf_.data());
    h->nlmsg_type = uint16_t((NFNL_SUBSYS_QUEUE << 8) | type);
    h->nlmsg_flags = uint16_t(NLM_F_REQUEST | flags);
    auto* g = reinterpret_cast<nfgenmsg*>(buf_.data() + NLMSG_HDRLEN);
    g->nfgen_family = AF_UNSPEC;
    g->version = NFNETLINK_V0;
    g->res_id = htons(queue);
  }
  NlMessage& attr(uint16_t type, const void* data, size_t len) {
    nlattr a{uint16_t(NLA_HDRLEN + len), type};
    const size_t at = buf_.size();
    buf_.resize(at + NLA_ALIGN(a.nla_len), '\0');
    std::memcpy(buf_.data() + at, &a, sizeof a);
    std::memcpy(buf_.data() + at + NLA_HDRLEN, data, len);
    return *this;
  }
  std::string_view finish() {
    reinterpret_cast<nlmsghdr*>(buf_.data())->nlmsg_len = uint32_t(buf_.size());
    return buf_;
  }

 private:
  std::string buf_;
};

Result<void> send_nl(int fd, std::string_view msg) {
  sockaddr_nl to{};
  to.nl_family = AF_NETLINK;
  if (::sendto(fd, msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0)
    return errno_error("sendto(nfnetlink_queue)");
  return ok();
}

Result<void> parse_mac(const std::string& text, uint8_t out[6]) {
  unsigned b[6];
  char extra;
  if (std::sscanf(text.c_str(), "%x:%x:%x:%x:%x:%x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &extra) != 6)
    return make_error(ErrorKind::Invalid, "`", text, "` is not a MAC address");
  for (int i = 0; i < 6; ++i) {
    if (b[i] > 0xff) return make_error(ErrorKind::Invalid, "`", text, "` is not a MAC address");
    out[i] = uint8_t(b[i]);
  }
  return ok();
}

}  // namespace

Result<void> in_netns(const std::string& netns, const std::function<Result<void>()>& fn) {
  Result<void> result = ok();
  // setns() moves only the calling thread: a thread of its own keeps the daemon's other
  // threads where they are.
  std::thread t([&] {
    auto fd = sys::open(netns, O_RDONLY);
    if (!fd.ok()) {
      result = std::move(fd).error();
      return;
    }
    if (::unshare(CLONE_FS) != 0 || ::setns(fd->get(), CLONE_NEWNET) != 0) {
      result = errno_error(cat("setns(CLONE_NEWNET) to `", netns, "`"));
      return;
    }
    result = fn();
  });
  t.join();
  return result;
}

Result<std::vector<QueuedPacket>> parse_queue_messages(std::string_view buffer) {
  std::vector<QueuedPacket> out;
  size_t at = 0;
  while (buffer.size() - at >= NLMSG_HDRLEN) {
    nlmsghdr h;
    std::memcpy(&h, buffer.data() + at, sizeof h);
    if (h.nlmsg_len < NLMSG_HDRLEN || h.nlmsg_len > buffer.size() - at)
      return make_error(ErrorKind::Protocol, "nfnetlink message of ", h.nlmsg_len, " bytes at offset ", at,
                        " overruns the ", buffer.size(), "-byte buffer");
    std::string_view body = buffer.substr(at + NLMSG_HDRLEN, h.nlmsg_len - NLMSG_HDRLEN);
    at += std::min<size_t>(NLMSG_ALIGN(h.nlmsg_len), buffer.size() - at);
    if (h.nlmsg_type == NLMSG_ERROR) {
      nlmsgerr e;
      if (body.size() < sizeof e.error) return make_error(ErrorKind::Protocol, "short NLMSG_ERROR");
      std::memcpy(&e.error, body.data(), sizeof e.error);
      // The kernel's codes are -4095..-1; anything else is no error it sent.
      if (e.error < -4095 || e.error > 0) return make_error(ErrorKind::Protocol, "NLMSG_ERROR with code ", e.error);
      if (e.error != 0) return errno_error("nfnetlink_queue", -e.error);
      continue;
    }
    if (h.nlmsg_type != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)) continue;
    if (body.size() < NLMSG_ALIGN(sizeof(nfgenmsg))) return make_error(ErrorKind::Protocol, "short queue message");
    QueuedPacket p;
    bool have_header = false;
    for (size_t a = NLMSG_ALIGN(sizeof(nfgenmsg)); body.size() - a >= NLA_HDRLEN;) {
      nlattr attr;
      std::memcpy(&attr, body.data() + a, sizeof attr);
      if (attr.nla_len < NLA_HDRLEN || attr.nla_len > body.size() - a)
        return make_error(ErrorKind::Protocol, "queue message attribute of ", attr.nla_len, " bytes overruns it");
      std::string_view data = body.substr(a + NLA_HDRLEN, attr.nla_len - NLA_HDRLEN);
      a += std::min<size_t>(NLA_ALIGN(attr.nla_len), body.size() - a);
      switch (attr.nla_type & NLA_TYPE_MASK) {
        case NFQA_PACKET_HDR: {
          nfqnl_msg_packet_hdr ph;
          if (data.size() < sizeof ph) return make_error(ErrorKind::Protocol, "short packet header");
          std::memcpy(&ph, data.data(), sizeof ph);
          p.id = ntohl(ph.packet_id);
          p.protocol = ntohs(ph.hw_protocol);
          have_header = true;
          break;
        }
        case NFQA_IFINDEX_INDEV: {
          uint32_t v;
          if (data.size() < sizeof v) return make_error(ErrorKind::Protocol, "short interface index");
          std::memcpy(&v, data.data(), sizeof v);
          p.indev = ntohl(v);
          break;
        }
        case NFQA_PAYLOAD: p.payload.assign(data); break;
        default: break;
      }
    }
    if (!have_header) return make_error(ErrorKind::Protocol, "queued packet without a packet header");
    out.push_back(std::move(p));
  }
  return out;
}

Result<std::unique_ptr<PacketHold>> PacketHold::open(const std::string& netns, uint16_t queue, size_t limit) {
  std::unique_ptr<PacketHold> h(new PacketHold(netns, queue, limit));
  auto efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) return errno_error("eventfd");
  h->stop_.reset(efd);
  SL_TRY(in_netns(netns, [&]() -> Result<void> {
    int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (fd < 0) return errno_error("socket(NETLINK_NETFILTER)");
    h->nl_.reset(fd);
    sockaddr_nl self{};
    self.nl_family = AF_NETLINK;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&self), sizeof self) != 0) return errno_error("bind(NETLINK_NETFILTER)");
    // Packets wait in the kernel while the daemon is busy: a large buffer loses none.
    int size = 4 << 20;
    (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
    return ok();
  }));
  SL_TRY_CTX(h->configure(), "binding NFQUEUE ", queue, " in `", netns, "`");
  h->thread_ = std::thread(&PacketHold::reader, h.get());
  if (auto r = h->rules(true); !r.ok()) return std::move(r).error().wrap(cat("holding packets in `", netns, "`"));
  return h;
}

Result<void> PacketHold::configure() {
  nfqnl_msg_config_cmd cmd{};
  cmd.command = NFQNL_CFG_CMD_BIND;
  cmd.pf = htons(AF_UNSPEC);
  // Whole packets; GSO packets reach us segmented, each fits a frame on the way out.
  struct __attribute__((packed)) {
    uint32_t range;
    uint8_t mode;
  } params{htonl(0xffff), NFQNL_COPY_PACKET};
  const uint32_t maxlen = htonl(uint32_t(limit_ + 64));
  NlMessage bind(NFQNL_MSG_CONFIG, queue_, NLM_F_ACK);
  bind.attr(NFQA_CFG_CMD, &cmd, sizeof cmd);
  SL_TRY(send_nl(nl_.get(), bind.finish()));
  NlMessage conf(NFQNL_MSG_CONFIG, queue_, NLM_F_ACK);
  conf.attr(NFQA_CFG_PARAMS, &params, sizeof params).attr(NFQA_CFG_QUEUE_MAXLEN, &maxlen, sizeof maxlen);
  SL_TRY(send_nl(nl_.get(), conf.finish()));
  // Two acks (or the first error).
  for (int acks = 0; acks < 2;) {
    SL_TRY(sys::wait_fd(nl_.get(), POLLIN, Deadline(Millis(5000))));
    char buf[8192];
    ssize_t n = ::recv(nl_.get(), buf, sizeof buf, 0);
    if (n < 0) return errno_error("recv(nfnetlink_queue)");
    SL_TRY(parse_queue_messages(std::string_view(buf, size_t(n))));
    for (size_t at = 0; at + NLMSG_HDRLEN <= size_t(n);) {
      nlmsghdr hdr;
      std::memcpy(&hdr, buf + at, sizeof hdr);
      if (hdr.nlmsg_type == NLMSG_ERROR) ++acks;
      if (hdr.nlmsg_len < NLMSG_HDRLEN) break;
      at += NLMSG_ALIGN(hdr.nlmsg_len);
    }
  }
  return ok();
}

Result<void> PacketHold::rules(bool add) {
  for (const char* tool : {"iptables", "ip6tables"})
    for (const char* proto : {"tcp", "udp"}) {
      auto rule = [&](const char* op) {
        return run_ok({"nsenter", "--net=" + netns_, tool, "-w", "-t", "raw", op, "PREROUTING", "!", "-i", "lo", "-p",
                       proto, "-j", "NFQUEUE", "--queue-num", std::to_string(queue_), "--queue-bypass"});
      };
      // Loopback stays free (CRIU probes TCP repair there). With no daemon bound to the queue
      // (it died holding) packets pass instead of being dropped for ever (--queue-bypass).
      // Rules a previous daemon left go first: one of each, always.
      for (int i = 0; i < 16 && rule("-D").ok(); ++i) {
      }
      if (add) SL_TRY_CTX(rule("-I"), tool, " (", proto, ")");
    }
  return ok();
}

Result<void> PacketHold::verdict(uint32_t id, bool accept) {
  nfqnl_msg_verdict_hdr v{htonl(accept ? NF_ACCEPT : NF_DROP), htonl(id)};
  NlMessage m(NFQNL_MSG_VERDICT, queue_, 0);
  m.attr(NFQA_VERDICT_HDR, &v, sizeof v);
  return send_nl(nl_.get(), m.finish());
}

void PacketHold::reader() {
  std::string buf(256 << 10, '\0');
  for (;;) {
    pollfd fds[2] = {{nl_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents) break;
    ssize_t n = ::recv(nl_.get(), buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      // ENOBUFS: the kernel dropped messages (and their packets); the senders retransmit.
      std::lock_guard<std::mutex> lock(mu_);
      if (errno == ENOBUFS) {
        ++dropped_;
        continue;
      }
      error_ = errno_error("recv(nfnetlink_queue)").message;
      break;
    }
    auto packets = parse_queue_messages(std::string_view(buf.data(), size_t(n)));
    std::lock_guard<std::mutex> lock(mu_);
    if (!packets.ok()) {
      SL_LOG(Warn, kModule, packets.error().message);
      continue;
    }
    for (auto& p : *packets) {
      Result<void> r = ok();
      if (mode_ == Mode::Accept) {
        r = verdict(p.id, true);
      } else if (mode_ == Mode::Forward) {
        (void)send_frame(p);
        r = verdict(p.id, false);
      } else if (held_.size() >= limit_) {
        ++dropped_;
        r = verdict(p.id, false);
      } else {
        held_.push_back(std::move(p));
      }
      if (!r.ok()) SL_LOG(Warn, kModule, r.error().message);
    }
  }
}

PacketHold::~PacketHold() {
  (void)rules(false);
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof one);
    thread_.join();
  }
  // Closing the socket unbinds the queue; the kernel drops what it still holds.
}

size_t PacketHold::held() {
  std::lock_guard<std::mutex> lock(mu_);
  return held_.size();
}

size_t PacketHold::dropped() {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

Result<uint32_t> PacketHold::ifindex(const std::string& name) const {
  uint32_t index = 0;
  SL_TRY(in_netns(netns_, [&]() -> Result<void> {
    index = ::if_nametoindex(name.c_str());
    if (index == 0) return errno_error(cat("if_nametoindex(`", name, "`)"));
    return ok();
  }));
  return index;
}

Result<size_t> PacketHold::accept() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!error_.empty()) return make_error(ErrorKind::System, "the packet hold failed: ", error_);
  mode_ = Mode::Accept;
  const size_t n = held_.size();
  for (const auto& p : held_) SL_TRY(verdict(p.id, true));
  held_.clear();
  return n;
}

Result<size_t> PacketHold::forward(const ForwardTarget& target) {
  uint8_t src[6];
  SL_TRY(parse_mac(target.src_mac, src));
  uint8_t dst[6];
  SL_TRY(parse_mac(target.dst_mac, dst));
  for (const auto& [index, mac] : target.dst_by_indev) SL_TRY(parse_mac(mac, dst));
  UniqueFd out;
  int ifindex = 0;
  SL_TRY(in_netns(target.netns, [&]() -> Result<void> {
    ifindex = int(::if_nametoindex(target.nic.c_str()));
    if (ifindex == 0) return errno_error(cat("if_nametoindex(`", target.nic, "`)"));
    int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno_error("socket(AF_PACKET)");
    out.reset(fd);
    return ok();
  }));
  std::lock_guard<std::mutex> lock(mu_);
  if (!error_.empty()) return make_error(ErrorKind::System, "the packet hold failed: ", error_);
  target_ = target;
  out_ = std::move(out);
  out_ifindex_ = ifindex;
  std::memcpy(src_, src, 6);
  mode_ = Mode::Forward;
  size_t sent = 0;
  for (const auto& p : held_) {
    auto r = send_frame(p);
    if (r.ok())
      ++sent;
    else
      SL_LOG(Warn, kModule, r.error().message);
    SL_TRY(verdict(p.id, false));
  }
  held_.clear();
  return sent;
}

Result<void> PacketHold::send_frame(const QueuedPacket& p) {
  if (p.payload.empty()) return make_error(ErrorKind::Invalid, "queued packet ", p.id, " has no payload");
  uint8_t dst[6];
  auto it = target_.dst_by_indev.find(p.indev);
  SL_TRY(parse_mac(it != target_.dst_by_indev.end() ? it->second : target_.dst_mac, dst));
  uint16_t proto = p.protocol;
  if (proto == 0) proto = (uint8_t(p.payload[0]) >> 4) == 6 ? ETH_P_IPV6 : ETH_P_IP;
  std::string frame(14 + p.payload.size(), '\0');
  std::memcpy(frame.data(), dst, 6);
  std::memcpy(frame.data() + 6, src_, 6);
  const uint16_t be = htons(proto);
  std::memcpy(frame.data() + 12, &be, 2);
  std::memcpy(frame.data() + 14, p.payload.data(), p.payload.size());
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_ifindex = out_ifindex_;
  to.sll_halen = 6;
  std::memcpy(to.sll_addr, dst, 6);
  if (::sendto(out_.get(), frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0)
    return errno_error(cat("sending a held packet out of `", target_.nic, "`"));
  return ok();
}

}  // namespace seamless::sink
