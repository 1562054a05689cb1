// SPDX-License-Identifier: Apache-2.0
// Benchmark: per gateway of the template, seamless-guest dump, pack transfer out of and
// into the guest through the guest agent, restore, and pack size; medians of N runs in
// one TCG guest, next to the seed thesis's figures (KVM) with ratios.
//   bench_gateways [--json] [--runs N]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/time.h"
#include "qmp/guest.h"
#include "qmp/json.h"
#include "tests/support/testbed.h"

using namespace seamless;

namespace {

struct Gateway {
  const char* name;
  uint16_t port;
  double thesis_dump, thesis_transfer, thesis_restore, thesis_mb;  // DESIGN.md table
};

const Gateway kGateways[] = {
    {"dropbear", 2222, 0.04, 0.12, 0.04, 0.12},    {"vsftpd", 21, 0.12, 0.11, 0.05, 0.11},
    {"openssh", 22, 0.13, 0.13, 0.07, 0.13},       {"lighttpd+php", 80, 0.16, 0.29, 0.16, 0.29},
    {"apache2+php", 8080, 0.23, 0.43, 0.24, 0.43},
};

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
  int runs = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json") {
      json = true;
    } else if (a == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: bench_gateways [--json] [--runs N]\n");
      return 2;
    }
  }
  test::VmSpec spec;
  spec.name = "sl-bench-gw";
  spec.index = 17;
  spec.services = "dropbear,sshd,lighttpd,apache2,vsftpd";
  spec.tools = {SEAMLESS_GUEST_BIN};
  auto guest = test::LibvirtGuest::boot(spec);
  if (!guest.ok()) return die(guest.error());
  auto& agent = *(*guest)->agent;
  qmp::RunOptions ro;
  ro.timeout = Millis(300000);
  // The first CRIU run in a fresh guest probes the kernel (~1.5 s): not part of a dump.
  (void)qmp::guest_run(agent, "/usr/sbin/criu", {"check"}, ro);

  struct Row {
    const Gateway* g;
    double dump_s, out_s, in_s, restore_s, pack_mb;
  };
  std::vector<Row> rows;
  for (const Gateway& g : kGateways) {
    std::vector<double> dump, out, in, restore, size;
    for (int r = 0; r < runs; ++r) {
      const std::string pack = "/run/bench.pack";
      auto t0 = Clock::now();
      auto d = qmp::guest_run_ok(agent, "/usr/sbin/seamless-guest",
                                 {"dump", "--port", std::to_string(g.port), "--out", pack}, ro);
      if (!d.ok()) return die(d.error().wrap(g.name));
      dump.push_back(seconds_since(t0));
      t0 = Clock::now();
      auto bytes = qmp::read_guest_file(agent, pack);
      if (!bytes.ok()) return die(bytes.error().wrap(g.name));
      out.push_back(seconds_since(t0));
      size.push_back(double(bytes->size()) / 1e6);
      t0 = Clock::now();
      if (auto w = qmp::write_guest_file(agent, pack, *bytes); !w.ok()) return die(w.error().wrap(g.name));
      in.push_back(seconds_since(t0));
      t0 = Clock::now();
      auto rs = qmp::guest_run_ok(agent, "/usr/sbin/seamless-guest", {"restore", pack}, ro);
      if (!rs.ok()) return die(rs.error().wrap(g.name));
      restore.push_back(seconds_since(t0));
      std::fprintf(stderr, "bench_gateways: %s run %d done\n", g.name, r + 1);
    }
    rows.push_back({&g, median(dump), median(out), median(in), median(restore), median(size)});
  }
  if (json) {
    for (const auto& r : rows) {
      qmp::ArgWriter w;
      w.str("gateway", r.g->name).raw("dump_s", cat(r.dump_s)).raw("transfer_out_s", cat(r.out_s));
      w.raw("transfer_in_s", cat(r.in_s)).raw("restore_s", cat(r.restore_s)).raw("pack_mb", cat(r.pack_mb));
      w.raw("thesis_dump_s", cat(r.g->thesis_dump)).raw("thesis_restore_s", cat(r.g->thesis_restore));
      w.raw("thesis_image_mb", cat(r.g->thesis_mb));
      std::printf("%s\n", w.finish().c_str());
    }
    return 0;
  }
  std::printf(
      "| gateway | dump s | transfer out s | transfer in s | restore s | pack MB | pack / thesis image |"
      " dump / thesis | restore / thesis |\n|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : rows)
    std::printf("| %s | %.2f | %.2f | %.2f | %.2f | %.3f | %.2f | %.1f | %.1f |\n", r.g->name, r.dump_s, r.out_s,
                r.in_s, r.restore_s, r.pack_mb, r.pack_mb / r.g->thesis_mb, r.dump_s / r.g->thesis_dump,
                r.restore_s / r.g->thesis_restore);
  return 0;
}
