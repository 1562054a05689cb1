// SPDX-License-Identifier: Apache-2.0
// Benchmark: sink memory per gateway. A guest VM of each template (init: the five
// gateways and Tomcat; systemd: the same as Debian units, and memcached, beanstalkd and
// tftpd-hpa, which the sink's template lacks) and one sink VM (init template); per gateway
// kind a pack is dumped in the guest once, what the sink lacks is shipped
// (ctl::ship_missing, as a park does: the first copy brings the files, the others find
// them cached), then 1, 10, 50 copies of it (each with a MAC of its own, as distinct
// parked VMs have; Tomcat up to 10) are added to sinkd. At each count: the PSS of the
// containers' processes (gateways, and the containers' inits) and of sinkd from
// query-metrics, and the drop in the sink's MemAvailable (which also counts kernel memory:
// namespaces, sockets, page tables). Per gateway, against the issues' targets and the seed
// thesis's figures.
//   bench_sink [--json] [--counts 1,10,50] [--gateways dropbear,openssh,...] [--sink-mib N]
//              [--templates init,systemd]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/sys.h"
#include "common/tempdir.h"
#include "common/time.h"
#include "controller/shipping.h"
#include "guest-agent/procfs.h"
#include "pack/manifest.h"
#include "pack/pack.h"
#include "qmp/guest.h"
#include "qmp/json.h"
#include "qmp/socket.h"
#include "sinkd/protocol.h"
#include "tests/support/testbed.h"

using namespace seamless;

namespace {

struct Gateway {
  const char* name;
  uint16_t port;
  double target_mb, thesis_mb;  // the issues' target (6 MB small daemons, 20 MB PHP, Tomcat
                                // half the thesis's); the thesis's sink MB (0: not there)
  int max_count;                // copies at most (Tomcat's JVM is large)
  bool systemd_only;            // installed in the systemd template alone
};

const Gateway kGateways[] = {
    {"dropbear", 2222, 6, 11.2, 1000, false},     {"openssh", 22, 6, 15.9, 1000, false},
    {"vsftpd", 21, 6, 7.8, 1000, false},          {"lighttpd+php", 80, 20, 46.4, 1000, false},
    {"apache2+php", 8080, 20, 67.5, 1000, false}, {"tomcat", 8180, 103.5, 207.0, 10, false},
    {"memcached", 11211, 6, 0, 1000, true},       {"beanstalkd", 11300, 6, 0, 1000, true},
    {"tftpd-hpa", 69, 6, 0, 1000, true},
};

struct Template {
  const char* name;
  int index;
  const char* services;
};
const Template kTemplates[] = {
    {"init", 18, "dropbear,sshd,lighttpd,apache2,vsftpd,tomcat"},
    {"systemd", 28, "dropbear,sshd,lighttpd,apache2,vsftpd,tomcat,memcached,beanstalkd,tftpd"},
};

int die(const Error& e) {
  std::fprintf(stderr, "bench_sink: %s\n", e.message.c_str());
  return 1;
}

Result<std::unique_ptr<qmp::QmpSocket>> control(const std::string& socket) {
  Result<std::unique_ptr<qmp::QmpSocket>> c = make_error(ErrorKind::Timeout, "not tried");
  for (Deadline d(Millis(60000)); !d.expired(); std::this_thread::sleep_for(Millis(1000))) {
    c = qmp::QmpSocket::connect(socket, Millis(3000));
    if (c.ok()) return c;
  }
  return c.error().wrap("sinkd control channel");
}

struct Memory {
  int64_t gateways_kb = 0, inits_kb = 0, sinkd_kb = 0, available_kb = 0;
};

Result<Memory> measure(qmp::QmpSocket& c) {
  auto m = SL_TRY(c.call("query-metrics", "", Millis(120000)));
  Memory out;
  out.sinkd_kb = SL_TRY(qmp::get_int(m.root(), "sinkd_pss_kb"));
  out.available_kb = SL_TRY(qmp::get_int(m.root(), "mem_available_kb"));
  const auto& list = m.root()["containers"];
  for (rapidjson::SizeType i = 0; i < list.Size(); ++i) {
    out.gateways_kb += SL_TRY(qmp::get_int(list[i], "pss_kb"));
    out.inits_kb += SL_TRY(qmp::get_int(list[i], "init_pss_kb"));
  }
  return out;
}

// Space used on the tmpfs that holds sinkd's state directory, in kB. Memory too; files
// removed while still referenced count, which `du` would miss.
Result<int64_t> state_fs_used_kb(qmp::Channel& agent) {
  auto out = SL_TRY(qmp::guest_run_ok(agent, "/bin/df", {"-k", "--output=used", "/run/seamless-sinkd"}));
  const auto nl = out.find('\n');
  char* end = nullptr;
  const char* num = nl == std::string::npos ? "" : out.c_str() + nl + 1;
  const long long kb = std::strtoll(num, &end, 10);
  if (end == num) return make_error(ErrorKind::Protocol, "df printed `", out, "`");
  return int64_t(kb);
}

// The sink's /proc/meminfo fields that say where MemAvailable went, for stderr.
std::string meminfo_summary(qmp::Channel& agent) {
  auto text = qmp::guest_run_ok(agent, "/bin/cat", {"/proc/meminfo"});  // changes while read: no checksum
  if (!text.ok()) return text.error().message;
  std::string out;
  for (const char* key :
       {"MemAvailable", "AnonPages", "Shmem", "Mapped", "Slab", "SUnreclaim", "PageTables", "KernelStack", "Percpu"}) {
    auto kb = guest::parse_kb_field(*text, key);
    out += cat(key, " ", kb.ok() ? int64_t(*kb) / 1024 : -1, " MB  ");
  }
  return out;
}

// The pack with the interface's MAC made unique (copy `n`), written to `out`.
Result<void> variant(const std::string& dir, const packfmt::Manifest& base, int kind, int n, const std::string& out) {
  packfmt::Manifest m = base;
  char mac[32];
  std::snprintf(mac, sizeof mac, "02:5e:%02x:%02x:%02x:%02x", kind & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
  for (auto& iface : m.interfaces) iface.mac = mac;
  auto files = packfmt::list_pack_files(dir);
  files.erase(std::remove(files.begin(), files.end(), packfmt::kManifestName), files.end());
  return packfmt::write_pack(out, m.to_json(), dir, files);
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::vector<int> counts = {1, 10, 50};
  std::vector<std::string> only;
  int sink_mib = 3072;
  std::vector<std::string> templates = {"init", "systemd"};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json") {
      json = true;
    } else if (a == "--counts" && i + 1 < argc) {
      counts.clear();
      for (const auto& w : test::split_list(argv[++i])) counts.push_back(std::max(1, std::atoi(w.c_str())));
      std::sort(counts.begin(), counts.end());
    } else if (a == "--gateways" && i + 1 < argc) {
      only = test::split_list(argv[++i]);
    } else if (a == "--sink-mib" && i + 1 < argc) {
      sink_mib = std::max(512, std::atoi(argv[++i]));
    } else if (a == "--templates" && i + 1 < argc) {
      templates = test::split_list(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: bench_sink [--json] [--counts 1,10,50] [--gateways dropbear,openssh,vsftpd,"
                   "lighttpd+php,apache2+php,tomcat,memcached,beanstalkd,tftpd-hpa] [--sink-mib N]"
                   " [--templates init,systemd]\n");
      return 2;
    }
  }
  for (const auto& t : templates)
    if (t != "init" && t != "systemd") {
      std::fprintf(stderr, "bench_sink: unknown template `%s` (init, systemd)\n", t.c_str());
      return 2;
    }
  test::VmSpec ss = test::sink_vm_spec("sl-bench-sink", 19, SEAMLESS_SINKD_BIN, SEAMLESS_GUEST_BIN);
  ss.memory_mib = sink_mib;
  auto sink = test::LibvirtGuest::boot(ss);
  if (!sink.ok()) return die(sink.error());
  auto c = control((*sink)->vm->sink_socket());
  if (!c.ok()) return die(c.error());
  sink::proto::Client sinkd([&c](std::string_view command, const std::string& args, Millis timeout) {
    return (*c)->call(command, args, timeout);
  });
  auto work = TempDir::create();
  if (!work.ok()) return die(work.error());
  qmp::RunOptions ro;
  ro.timeout = Millis(300000);

  struct Row {
    const Gateway* g;
    const char* templ;
    int n;
    double gw_mb, init_mb, sinkd_mb, avail_mb, state_mb;  // per gateway
    double add_s;                                         // median add-gateway (container + CRIU restore)
  };
  std::vector<Row> rows;
  int kind = 0;
  for (const Template& t : kTemplates) {
    if (std::find(templates.begin(), templates.end(), t.name) == templates.end()) continue;
    auto guest = test::LibvirtGuest::boot(
        test::bench_guest_spec(cat("sl-bench-sinkg-", t.name), t.index, t.name, t.services, SEAMLESS_GUEST_BIN));
    if (!guest.ok()) return die(guest.error());
    for (const Gateway& g : kGateways) {
      ++kind;
      if (g.systemd_only && std::string(t.name) != "systemd") continue;
      if (!only.empty() && std::find(only.begin(), only.end(), g.name) == only.end()) continue;
      // One pack, no connections in it (copies share the VM's addresses, not its peers).
      // A JVM listens a while after the guest says its services are up: tried again.
      auto d = qmp::guest_run(*(*guest)->agent, "/usr/sbin/seamless-guest",
                              {"dump", "--port", std::to_string(g.port), "--out", "/run/bench.pack"}, ro);
      for (int attempt = 0; attempt < 12 && d.ok() && d->exitcode.value_or(1) != 0; ++attempt) {
        std::this_thread::sleep_for(Millis(10000));
        d = qmp::guest_run(*(*guest)->agent, "/usr/sbin/seamless-guest",
                           {"dump", "--port", std::to_string(g.port), "--out", "/run/bench.pack"}, ro);
      }
      if (!d.ok()) return die(d.error().wrap(g.name));
      if (d->exitcode.value_or(1) != 0) return die(make_error(ErrorKind::Remote, g.name, ": dump: ", d->out, d->err));
      auto bytes = qmp::read_guest_file(*(*guest)->agent, "/run/bench.pack");
      if (!bytes.ok()) return die(bytes.error().wrap(g.name));
      if (auto r = qmp::guest_run_ok(*(*guest)->agent, "/usr/sbin/seamless-guest", {"restore", "/run/bench.pack"}, ro);
          !r.ok())
        return die(r.error().wrap(g.name));
      const std::string base = *work / cat("kind", kind);
      if (auto w = sys::write_file(base + ".pack", *bytes); !w.ok()) return die(w.error());
      // The images go on to the sink as they are: their page deltas are against its files.
      auto text = packfmt::unpack(base + ".pack", base, {}, packfmt::kKeepPageImages);
      if (!text.ok()) return die(text.error());
      auto manifest = packfmt::Manifest::parse(*text);
      if (!manifest.ok()) return die(manifest.error());

      auto before = measure(**c);
      if (!before.ok()) return die(before.error());
      auto state_before = state_fs_used_kb(*(*sink)->agent);
      if (!state_before.ok()) return die(state_before.error());
      std::fprintf(stderr, "bench_sink: sink before %s: %s\n", g.name, meminfo_summary(*(*sink)->agent).c_str());
      int added = 0;
      std::vector<double> add_s;
      for (int n : counts) {
        if (n > g.max_count) break;
        for (; added < n; ++added) {
          const std::string local = *work / "variant.pack";
          if (auto v = variant(base, *manifest, kind, added, local); !v.ok()) return die(v.error());
          auto data = sys::read_file(local);
          if (!data.ok()) return die(data.error());
          const std::string remote = "/run/bench-in.pack";
          if (auto w = qmp::write_guest_file(*(*sink)->agent, remote, *data); !w.ok()) return die(w.error());
          // What the sink lacks comes from the guest (the copies find it cached).
          auto shipped = ctl::ship_missing(sinkd, *(*guest)->agent, *(*sink)->agent,
                                           {"/run/bench.pack", remote, "/run/bench.files", "/run/bench.files"});
          if (!shipped.ok()) return die(shipped.error().wrap(cat(g.name, " copy ", added)));
          auto t0 = Clock::now();
          auto r = sinkd.add_gateway({remote, cat("b", kind, "-", added), false, shipped->sink_path});
          if (!r.ok()) {
            // Where the sink's room went.
            auto df = qmp::guest_run_ok(*(*sink)->agent, "/bin/sh",
                                        {"-c", "df -k /run /tmp; du -xak /run | sort -n | tail -15"});
            std::fprintf(stderr, "%s\n", df.ok() ? df->c_str() : df.error().message.c_str());
            return die(r.error().wrap(cat(g.name, " copy ", added)));
          }
          add_s.push_back(seconds_since(t0));
        }
        // Let the restores' transient memory settle.
        std::this_thread::sleep_for(Millis(3000));
        auto now = measure(**c);
        if (!now.ok()) return die(now.error());
        auto state_kb = state_fs_used_kb(*(*sink)->agent);
        if (!state_kb.ok()) return die(state_kb.error());
        const double mb = 1024.0 * n;
        std::vector<double> sorted = add_s;
        std::sort(sorted.begin(), sorted.end());
        rows.push_back({&g, t.name, n, now->gateways_kb / mb, now->inits_kb / mb,
                        (now->sinkd_kb - before->sinkd_kb) / mb, (before->available_kb - now->available_kb) / mb,
                        (*state_kb - *state_before) / mb, sorted[sorted.size() / 2]});
        std::fprintf(stderr, "bench_sink: %s x%d: %.2f MB PSS per gateway; sink: %s\n", g.name, n, rows.back().gw_mb,
                     meminfo_summary(*(*sink)->agent).c_str());
      }
      for (int i = 0; i < added; ++i)
        if (auto r = sinkd.remove_gateway({cat("b", kind, "-", i)}); !r.ok()) return die(r.error());
    }
  }
  if (json) {
    for (const auto& r : rows) {
      qmp::ArgWriter w;
      w.str("gateway", r.g->name).str("template", r.templ).num("count", r.n).raw("pss_mb_per_gateway", cat(r.gw_mb));
      w.raw("init_pss_mb_per_gateway", cat(r.init_mb)).raw("sinkd_growth_mb_per_gateway", cat(r.sinkd_mb));
      w.raw("memavailable_drop_mb_per_gateway", cat(r.avail_mb)).raw("target_mb", cat(r.g->target_mb));
      w.raw("state_tmpfs_mb_per_gateway", cat(r.state_mb));
      w.raw("thesis_mb", cat(r.g->thesis_mb)).raw("add_gateway_s", cat(r.add_s));
      std::printf("%s\n", w.finish().c_str());
    }
    return 0;
  }
  std::printf(
      "| gateway | template | gateways | PSS per gateway MB | + container init MB | MemAvailable drop per gateway MB |"
      " sinkd's tmpfs per gateway MB | target MB | thesis MB | PSS+init / thesis | gateways per GB (MemAvailable) |"
      " add-gateway s |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : rows) {
    char thesis[32] = "–", ratio[32] = "–";
    if (r.g->thesis_mb > 0) {
      std::snprintf(thesis, sizeof thesis, "%.1f", r.g->thesis_mb);
      std::snprintf(ratio, sizeof ratio, "%.2f", (r.gw_mb + r.init_mb) / r.g->thesis_mb);
    }
    std::printf("| %s | %s | %d | %.2f | %.2f | %.2f | %.3f | %.1f | %s | %s | %.0f | %.1f |\n", r.g->name, r.templ,
                r.n, r.gw_mb, r.init_mb, r.avail_mb, r.state_mb, r.g->target_mb, thesis, ratio,
                r.avail_mb > 0 ? 1024.0 / r.avail_mb : 0.0, r.add_s);
  }
  return 0;
}
