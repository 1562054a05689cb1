// SPDX-License-Identifier: Apache-2.0
// Benchmark: per gateway, seamless-guest dump, pack transfer out of and into the guest
// through the guest agent, restore, and pack size; medians of N runs in a TCG guest of
// each template (init: the five gateways and Tomcat; systemd: the same as Debian units,
// and three daemons only that template has: memcached, beanstalkd, tftpd-hpa), next to the
// seed thesis's figures (KVM) with ratios. Then the pack encodings side by side (xz or
// gzip, with or without page deltas; the default with the free memory of malloc heaps
// stored as it is): size, time to write, time to restore.
//   bench_gateways [--json] [--json-out FILE] [--runs N] [--templates init,systemd]
//                  [--gateways dropbear,tomcat,...]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/sys.h"
#include "common/time.h"
#include "qmp/guest.h"
#include "qmp/json.h"
#include "tests/support/gateway_client.h"
#include "tests/support/testbed.h"

using namespace seamless;

namespace {

struct Gateway {
  const char* name;
  uint16_t port;
  bool systemd_only;                                               // installed in the systemd template alone
  double thesis_dump, thesis_transfer, thesis_restore, thesis_mb;  // DESIGN.md table (0: not there)
  // A gateway that listens before it is ready (Tomcat binds its port, then deploys its web
  // apps: 1,396 of its 2,617 classes loaded at the first listen): the page it serves once
  // started, asked for before its first dump. Null: ready when it listens.
  const char* started_page = nullptr;
};

const Gateway kGateways[] = {
    {"dropbear", 2222, false, 0.04, 0.12, 0.04, 0.12},
    {"vsftpd", 21, false, 0.12, 0.11, 0.05, 0.11},
    {"openssh", 22, false, 0.13, 0.13, 0.07, 0.13},
    {"lighttpd+php", 80, false, 0.16, 0.29, 0.16, 0.29},
    {"apache2+php", 8080, false, 0.23, 0.43, 0.24, 0.43},
    {"tomcat", 8180, false, 0.46, 1.17, 0.38, 1.17, "/"},
    {"memcached", 11211, true, 0, 0, 0, 0},
    {"beanstalkd", 11300, true, 0, 0, 0, 0},
    {"tftpd-hpa", 69, true, 0, 0, 0, 0},
};

struct Template {
  const char* name;
  int index;
  const char* services;
};
const Template kTemplates[] = {
    {"init", 17, "dropbear,sshd,lighttpd,apache2,vsftpd,tomcat"},
    {"systemd", 27, "dropbear,sshd,lighttpd,apache2,vsftpd,tomcat,memcached,beanstalkd,tftpd"},
};

// Waits (10 minutes at most: a JVM under TCG) until `g` serves its started page from the
// client namespace; the connection is closed again before the dump.
Result<void> wait_started(const test::Testbed& bed, const std::string& ip, const Gateway& g) {
  test::GatewayUse use;
  use.kind = test::GatewayUse::Kind::Http;
  use.port = g.port;
  use.path = g.started_page;
  use.expect = "HTTP/1.1 200";
  Error why = make_error(ErrorKind::Timeout, g.name, " did not serve ", g.started_page, " within 10 minutes");
  for (Deadline d(Millis(600000)); !d.expired(); std::this_thread::sleep_for(Millis(5000))) {
    auto client = test::GatewayClient::open(bed, ip, use);
    if (!client.ok()) {
      why = client.error();
      continue;
    }
    if (auto got = (*client)->exchange("", Millis(300000)); got.ok())
      return ok();
    else
      why = got.error();
  }
  return why.wrap(cat(g.name, " never served ", g.started_page));
}

// "a / b", or "–" where the thesis has no figure.
std::string ratio(double a, double b, const char* format) {
  if (b <= 0) return "–";
  char buf[32];
  std::snprintf(buf, sizeof buf, format, a / b);
  return buf;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

int die(const Error& e) {
  std::fprintf(stderr, "bench_gateways: %s\n", e.message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::string json_out;
  int runs = 3;
  std::vector<std::string> templates = {"init", "systemd"}, only;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json") {
      json = true;
    } else if (a == "--json-out" && i + 1 < argc) {
      json_out = argv[++i];
    } else if (a == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--templates" && i + 1 < argc) {
      templates = test::split_list(argv[++i]);
    } else if (a == "--gateways" && i + 1 < argc) {
      only = test::split_list(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: bench_gateways [--json] [--json-out FILE] [--runs N] [--templates init,systemd]"
                   " [--gateways dropbear,vsftpd,openssh,lighttpd+php,apache2+php,tomcat,memcached,beanstalkd,"
                   "tftpd-hpa]\n");
      return 2;
    }
  }
  for (const auto& t : templates)
    if (t != "init" && t != "systemd") {
      std::fprintf(stderr, "bench_gateways: unknown template `%s` (init, systemd)\n", t.c_str());
      return 2;
    }
  for (const auto& g : only)
    if (std::none_of(std::begin(kGateways), std::end(kGateways), [&](const Gateway& k) { return g == k.name; })) {
      std::fprintf(stderr, "bench_gateways: unknown gateway `%s`\n", g.c_str());
      return 2;
    }
  qmp::RunOptions ro;
  ro.timeout = Millis(600000);

  // The pack encodings compared side by side: the default (xz, pages stored against the
  // mapped libraries), what sinkd's hand-back writes (gzip, for speed on the wake path),
  // both without page deltas (gzip without them is the format before deltas), and the
  // default with the free memory of the gateways' malloc heaps stored as it is.
  struct Encoding {
    const char* label;
    std::vector<std::string> args;
  };
  const Encoding kEncodings[] = {
      {"xz+deltas", {}},
      {"gzip+deltas", {"--compress", "gzip"}},
      {"xz", {"--no-page-deltas"}},
      {"gzip", {"--compress", "gzip", "--no-page-deltas"}},
      {"xz+deltas+heap", {"--keep-free-heap"}},
  };
  constexpr size_t kN = sizeof kEncodings / sizeof kEncodings[0];
  constexpr size_t kGzipDeltas = 1, kGzip = 3, kHeapKept = 4;
  struct Row {
    const Gateway* g;
    const char* templ;
    double dump_s, out_s, in_s, restore_s;
    double mb[kN], write_s[kN], restore_s_by[kN];
    double free_heap_mb;  // free malloc memory the default encoding stored as zeros
  };
  std::vector<Row> rows;
  for (const Template& t : kTemplates) {
    if (std::find(templates.begin(), templates.end(), t.name) == templates.end()) continue;
    auto guest = test::LibvirtGuest::boot(
        test::bench_guest_spec(cat("sl-bench-gw-", t.name), t.index, t.name, t.services, SEAMLESS_GUEST_BIN));
    if (!guest.ok()) return die(guest.error());
    auto& agent = *(*guest)->agent;
    // The first CRIU run in a fresh guest probes the kernel (~1.5 s): not part of a dump.
    (void)qmp::guest_run(agent, "/usr/sbin/criu", {"check"}, ro);
    for (const Gateway& g : kGateways) {
      if (g.systemd_only && std::string(t.name) != "systemd") continue;
      if (!only.empty() && std::find(only.begin(), only.end(), g.name) == only.end()) continue;
      std::vector<double> dump, out, in, restore, mb[kN], write_s[kN], restore_by[kN], free_heap;
      if (g.started_page)
        if (auto r = wait_started((*guest)->bed, (*guest)->bed.guest_ip(t.index), g); !r.ok()) return die(r.error());
      for (int r = 0; r < runs; ++r) {
        for (size_t e = 0; e < kN; ++e) {
          const std::string pack = "/run/bench.pack";
          std::vector<std::string> args = {"dump", "--port", std::to_string(g.port), "--out", pack};
          args.insert(args.end(), kEncodings[e].args.begin(), kEncodings[e].args.end());
          auto t0 = Clock::now();
          auto d = qmp::guest_run_ok(agent, "/usr/sbin/seamless-guest", args, ro);
          // A freshly booted guest's last service (Tomcat's JVM, minutes under TCG) may not
          // listen yet: waited for, and the dump timed from the try that found it.
          for (Deadline up(Millis(600000));
               !d.ok() && d.error().message.find("no gateway listens") != std::string::npos && !up.expired();) {
            std::this_thread::sleep_for(Millis(5000));
            t0 = Clock::now();
            d = qmp::guest_run_ok(agent, "/usr/sbin/seamless-guest", args, ro);
          }
          if (!d.ok()) return die(d.error().wrap(g.name));
          const double dump_s = seconds_since(t0);
          auto parsed = qmp::parse(*d);
          if (!parsed.ok()) return die(parsed.error().wrap(g.name));
          const auto& root = parsed->root();
          if (!root.HasMember("pack_bytes") || !root["pack_bytes"].IsNumber() || !root.HasMember("pack_seconds") ||
              !root["pack_seconds"].IsNumber())
            return die(make_error(ErrorKind::Protocol, g.name, ": dump result without pack_bytes/pack_seconds: ", *d));
          mb[e].push_back(root["pack_bytes"].GetDouble() / 1e6);
          const bool pages = root.HasMember("pages") && root["pages"].IsObject();
          const double zeroed_mb = double(pages ? qmp::opt_int(root["pages"], "free_heap_bytes").value_or(0) : 0) / 1e6;
          std::fprintf(stderr, "bench_gateways: %s (%s) %s: pack %.3f MB, free heap zeroed %.2f MB\n", g.name, t.name,
                       kEncodings[e].label, mb[e].back(), zeroed_mb);
          write_s[e].push_back(root["pack_seconds"].GetDouble());
          if (e == 0) {
            dump.push_back(dump_s);
            free_heap.push_back(zeroed_mb);
            t0 = Clock::now();
            auto bytes = qmp::read_guest_file(agent, pack);
            if (!bytes.ok()) return die(bytes.error().wrap(g.name));
            out.push_back(seconds_since(t0));
            t0 = Clock::now();
            if (auto w = qmp::write_guest_file(agent, pack, *bytes); !w.ok()) return die(w.error().wrap(g.name));
            in.push_back(seconds_since(t0));
          }
          t0 = Clock::now();
          auto rs = qmp::guest_run_ok(agent, "/usr/sbin/seamless-guest", {"restore", pack}, ro);
          if (!rs.ok()) return die(rs.error().wrap(g.name));
          restore_by[e].push_back(seconds_since(t0));
          if (e == 0) restore.push_back(restore_by[e].back());
        }
        std::fprintf(stderr, "bench_gateways: %s (%s) run %d done\n", g.name, t.name, r + 1);
      }
      Row row{&g, t.name, median(dump), median(out), median(in), median(restore), {}, {}, {}, median(free_heap)};
      for (size_t e = 0; e < kN; ++e) {
        row.mb[e] = median(mb[e]);
        row.write_s[e] = median(write_s[e]);
        row.restore_s_by[e] = median(restore_by[e]);
      }
      rows.push_back(row);
    }
  }
  std::string lines;
  for (const auto& r : rows) {
    qmp::ArgWriter w;
    w.str("gateway", r.g->name)
        .str("template", r.templ)
        .raw("dump_s", cat(r.dump_s))
        .raw("transfer_out_s", cat(r.out_s));
    w.raw("transfer_in_s", cat(r.in_s)).raw("restore_s", cat(r.restore_s)).raw("pack_mb", cat(r.mb[0]));
    w.raw("free_heap_mb", cat(r.free_heap_mb));
    for (size_t e = 0; e < kN; ++e) {
      qmp::ArgWriter x;
      x.raw("pack_mb", cat(r.mb[e])).raw("write_s", cat(r.write_s[e])).raw("restore_s", cat(r.restore_s_by[e]));
      const std::string key = cat("encoding_", kEncodings[e].label);
      w.raw(key.c_str(), x.finish());
    }
    w.raw("thesis_dump_s", cat(r.g->thesis_dump)).raw("thesis_restore_s", cat(r.g->thesis_restore));
    w.raw("thesis_image_mb", cat(r.g->thesis_mb));
    lines += w.finish() + "\n";
  }
  if (!json_out.empty())
    if (auto w = sys::write_file(json_out, lines); !w.ok()) return die(w.error());
  if (json) {
    std::fputs(lines.c_str(), stdout);
    return 0;
  }
  std::printf(
      "| gateway | template | dump s | transfer out s | transfer in s | restore s | pack MB | pack / thesis image |"
      " dump / thesis | restore / thesis |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : rows)
    std::printf("| %s | %s | %.2f | %.2f | %.2f | %.2f | %.3f | %s | %s | %s |\n", r.g->name, r.templ, r.dump_s,
                r.out_s, r.in_s, r.restore_s, r.mb[0], ratio(r.mb[0], r.g->thesis_mb, "%.2f").c_str(),
                ratio(r.dump_s, r.g->thesis_dump, "%.1f").c_str(),
                ratio(r.restore_s, r.g->thesis_restore, "%.1f").c_str());
  std::printf(
      "\nPack encodings side by side: MB (seconds to write the pack / to restore it)\n\n| gateway | template |");
  for (const auto& e : kEncodings) std::printf(" %s |", e.label);
  std::printf(
      " thesis MB | xz+deltas / gzip | gzip+deltas / gzip | xz+deltas / xz+deltas+heap | free heap zeroed MB "
      "|\n|---|---|");
  for (size_t e = 0; e < kN; ++e) std::printf("---|");
  std::printf("---|---|---|---|---|\n");
  for (const auto& r : rows) {
    std::printf("| %s | %s |", r.g->name, r.templ);
    for (size_t e = 0; e < kN; ++e) std::printf(" %.3f (%.2f / %.2f) |", r.mb[e], r.write_s[e], r.restore_s_by[e]);
    std::printf(" %s | %.2f | %.2f | %.2f | %.2f |\n", r.g->thesis_mb > 0 ? cat(r.g->thesis_mb).c_str() : "–",
                r.mb[0] / r.mb[kGzip], r.mb[kGzipDeltas] / r.mb[kGzip], r.mb[0] / r.mb[kHeapKept], r.free_heap_mb);
  }
  return 0;
}
