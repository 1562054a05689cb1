// SPDX-License-Identifier: Apache-2.0
// Benchmark: QMP round-trip latency, QGA round-trip latency and QGA file transfer
// throughput, direct sockets vs libvirt pass-through, side by side in one run.
//   bench_qmp [--json] [--json-out FILE] [--runs N] [--mib M]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/sys.h"
#include "qmp/guest.h"
#include "tests/support/testbed.h"

using namespace seamless;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Row {
  std::string transport;
  double qmp_rtt_ms, qga_rtt_ms, write_mb_s, read_mb_s;
};

Result<Row> measure(const std::string& name, qmp::Channel& monitor, qmp::Channel& agent, int runs, size_t bytes) {
  Row row{name, 0, 0, 0, 0};
  std::vector<double> qmp_rtt, qga_rtt, wr, rd;
  for (int i = 0; i < runs * 20; ++i) {
    auto t = Clock::now();
    SL_TRY(qmp::execute(monitor, qmp::QueryStatus{}));
    qmp_rtt.push_back(seconds_since(t) * 1000);
  }
  for (int i = 0; i < runs * 5; ++i) {
    auto t = Clock::now();
    SL_TRY(qmp::execute(agent, qmp::GuestPing{}));
    qga_rtt.push_back(seconds_since(t) * 1000);
  }
  std::string data(bytes, '\0');
  std::mt19937_64 rng(1);
  for (size_t i = 0; i + 8 <= bytes; i += 8) {
    uint64_t v = rng();
    std::memcpy(&data[i], &v, 8);
  }
  qmp::TransferOptions opts;
  opts.verify = false;  // measure the transport, not sha256sum under TCG
  for (int i = 0; i < runs; ++i) {
    auto t = Clock::now();
    SL_TRY(qmp::write_guest_file(agent, "/tmp/bench.bin", data, opts));
    wr.push_back(bytes / 1e6 / seconds_since(t));
    t = Clock::now();
    auto back = SL_TRY(qmp::read_guest_file(agent, "/tmp/bench.bin", opts));
    rd.push_back(bytes / 1e6 / seconds_since(t));
    if (back != data) return make_error(ErrorKind::Protocol, name, ": read back differs");
  }
  row.qmp_rtt_ms = median(qmp_rtt);
  row.qga_rtt_ms = median(qga_rtt);
  row.write_mb_s = median(wr);
  row.read_mb_s = median(rd);
  return row;
}

int die(const Error& e) {
  std::fprintf(stderr, "bench_qmp: %s\n", e.message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::string json_out;
  int runs = 5;
  size_t mib = 8;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json")
      json = true;
    else if (a == "--json-out" && i + 1 < argc)
      json_out = argv[++i];
    else if (a == "--runs" && i + 1 < argc)
      runs = std::max(1, std::atoi(argv[++i]));
    else if (a == "--mib" && i + 1 < argc)
      mib = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: bench_qmp [--json] [--json-out FILE] [--runs N] [--mib M]\n");
      return a == "-h" || a == "--help" ? 0 : 2;
    }
  }
  auto bed = test::Testbed::load();
  if (!bed.ok()) return die(bed.error());
  std::vector<Row> rows;

  test::VmSpec spec;
  spec.name = "sl-bench-direct";
  spec.index = 20;
  auto direct = test::DirectVm::boot(*bed, spec);
  if (!direct.ok()) return die(direct.error());
  auto dagent = (*direct)->wait_for_agent();
  if (!dagent.ok()) return die(dagent.error());
  auto dqmp = qmp::QmpSocket::connect((*direct)->qmp_path());
  if (!dqmp.ok()) return die(dqmp.error());
  auto d = measure("direct socket", **dqmp, **dagent, runs, mib << 20);
  if (!d.ok()) return die(d.error());
  rows.push_back(*d);
  direct->reset();

  spec.name = "sl-bench-libvirt";
  spec.index = 21;
  auto lv = test::LibvirtVm::boot(*bed, spec);
  if (!lv.ok()) return die(lv.error());
  if (auto up = (*lv)->wait_for_agent(); !up.ok()) return die(up.error());
  auto lmon = qmp::LibvirtMonitor::attach((*lv)->domain());
  if (!lmon.ok()) return die(lmon.error());
  qmp::LibvirtAgent lagent((*lv)->domain());
  auto l = measure("libvirt pass-through", **lmon, lagent, runs, mib << 20);
  if (!l.ok()) return die(l.error());
  rows.push_back(*l);

  std::string lines;
  for (const auto& r : rows)
    lines +=
        cat("{\"transport\": \"", r.transport, "\", \"qmp_rtt_ms\": ", r.qmp_rtt_ms, ", \"qga_rtt_ms\": ", r.qga_rtt_ms,
            ", \"write_mb_s\": ", r.write_mb_s, ", \"read_mb_s\": ", r.read_mb_s, "}\n");
  if (!json_out.empty()) {
    if (auto w = sys::write_file(json_out, lines); !w.ok()) return die(w.error());
  }
  if (json) {
    std::fputs(lines.c_str(), stdout);
    return 0;
  }
  std::printf("QMP/QGA transports, TCG guest 512 MiB, %zu MiB file, median of %d runs (RTT: %d / %d calls)\n\n", mib,
              runs, runs * 20, runs * 5);
  std::printf("| transport | QMP RTT ms | QGA RTT ms | write MB/s | read MB/s |\n|---|---|---|---|---|\n");
  for (const auto& r : rows)
    std::printf("| %s | %.3f | %.3f | %.2f | %.2f |\n", r.transport.c_str(), r.qmp_rtt_ms, r.qga_rtt_ms, r.write_mb_s,
                r.read_mb_s);
  const Row& a = rows[0];
  const Row& b = rows[1];
  std::printf("| ratio libvirt/direct | %.2f | %.2f | %.2f | %.2f |\n", b.qmp_rtt_ms / a.qmp_rtt_ms,
              b.qga_rtt_ms / a.qga_rtt_ms, b.write_mb_s / a.write_mb_s, b.read_mb_s / a.read_mb_s);
  return 0;
}
