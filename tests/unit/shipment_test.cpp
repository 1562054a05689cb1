// SPDX-License-Identifier: Apache-2.0
// Shipping the files a sink lacks: the shipment index (strict, hostile input refused by
// field), seamless-guest's ship (only the pack's own code and mapped files, checked
// against the pack, cached ones listed without contents), the sink's file cache
// (contents checked by SHA-256, one object per content/mode/owner, candidates by
// build-id, layers of hard links, unused objects trimmed) and the template check that
// takes shipped files in place of the sink's own.
#include "pack/shipment.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "common/encoding.h"
#include "common/sys.h"
#include "common/tempdir.h"
#include "guest-agent/gateway.h"
#include "pack/pack.h"
#include "qmp/json.h"
#include "sinkd/file_cache.h"
#include "sinkd/pack_check.h"

namespace seamless {
namespace {

using packfmt::FileIdentity;
using packfmt::ShipmentIndex;
using packfmt::ShippedFile;

ShippedFile shipped(const std::string& path, const std::string& contents, bool included = true) {
  ShippedFile f;
  f.path = path;
  f.sha256 = sha256_hex(contents);
  f.size = contents.size();
  f.mode = 0644;
  f.uid = ::geteuid();
  f.gid = ::getegid();
  f.included = included;
  return f;
}

std::string index_with(const std::string& file_json) { return cat(R"({"shipment":1,"files":[)", file_json, "]}"); }

TEST(ShipmentIndex, RoundTripsAndNamesObjectsByContentModeAndOwner) {
  ShipmentIndex index;
  index.files.push_back(shipped("/usr/sbin/daemon", "code"));
  index.files.push_back(shipped("/usr/lib/libx.so.1", "library", false));
  auto back = ShipmentIndex::parse(index.to_json());
  ASSERT_TRUE(back.ok()) << back.error().message;
  ASSERT_EQ(back->files.size(), 2u);
  EXPECT_EQ(back->files[0].object(), index.files[0].object());
  EXPECT_FALSE(back->files[1].included);
  EXPECT_EQ(index.files[0].object(), cat(sha256_hex("code"), "-0644-", ::geteuid(), "-", ::getegid()));
  EXPECT_TRUE(packfmt::valid_object_name(index.files[0].object()));
  EXPECT_EQ(back->find("/usr/lib/libx.so.1")->sha256, sha256_hex("library"));
  for (const char* bad : {"", "../x", std::string(64, 'a').c_str(), "0000-0644-0-0"})
    EXPECT_FALSE(packfmt::valid_object_name(bad)) << bad;
  EXPECT_FALSE(packfmt::valid_object_name(cat(sha256_hex("x"), "-0644-0-0/../../etc")));
}

TEST(ShipmentIndex, HostileFieldsAreRefusedByName) {
  const std::string sha = sha256_hex("x");
  struct Case {
    std::string json, field;
  };
  for (const Case& c : {
           Case{R"({"path":"relative","sha256":")" + sha + R"(","size":1,"mode":420,"uid":0,"gid":0,"included":true})",
                "path"},
           Case{R"({"path":"/a/../etc/shadow","sha256":")" + sha +
                    R"(","size":1,"mode":420,"uid":0,"gid":0,"included":true})",
                "path"},
           Case{R"({"path":"/a","sha256":"ABC","size":1,"mode":420,"uid":0,"gid":0,"included":true})", "sha256"},
           Case{R"({"path":"/a","sha256":")" + sha + R"(","size":-1,"mode":420,"uid":0,"gid":0,"included":true})",
                "size"},
           Case{R"({"path":"/a","sha256":")" + sha + R"(","size":1,"mode":2541,"uid":0,"gid":0,"included":true})",
                "setuid"},
           Case{R"({"path":"/a","sha256":")" + sha + R"(","size":1,"mode":65535,"uid":0,"gid":0,"included":true})",
                "mode"},
           Case{R"({"path":"/a","sha256":")" + sha +
                    R"(","size":1,"mode":420,"uid":4294967295,"gid":0,"included":true})",
                "uid"},
           Case{R"({"path":"/a","sha256":")" + sha + R"(","size":1,"mode":420,"uid":0,"gid":0})", "included"},
       }) {
    auto r = ShipmentIndex::parse(index_with(c.json));
    ASSERT_FALSE(r.ok()) << c.json;
    EXPECT_NE(r.error().message.find(c.field), std::string::npos) << r.error().message;
  }
  const std::string one =
      R"({"path":"/a","sha256":")" + sha + R"(","size":1,"mode":420,"uid":0,"gid":0,"included":true})";
  auto twice = ShipmentIndex::parse(index_with(one + "," + one));
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.error().message.find("twice"), std::string::npos) << twice.error().message;
  auto other = ShipmentIndex::parse(R"({"shipment":7,"files":[]})");
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.error().message.find("format 7"), std::string::npos) << other.error().message;
}

// A guest's files in a temporary directory, and a pack whose manifest names them.
class GuestShip : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::create();
    ASSERT_TRUE(d.ok());
    dir_.emplace(std::move(d).value());
    root_ = dir_->path();
    std::filesystem::create_directories(root_ + "/usr/sbin");
    std::filesystem::copy_file("/proc/self/exe", root_ + "/usr/sbin/daemon");  // ELF with a build-id
    ASSERT_TRUE(sys::write_file(root_ + "/usr/sbin/data.map", "mapped data", 0640).ok());
    ASSERT_TRUE(sys::write_file(root_ + "/usr/sbin/held.log", "a log", 0644).ok());
    packfmt::Manifest m;
    m.hostname = "vm";
    for (auto [name, role] : {std::pair{"daemon", "exe"}, {"data.map", "map"}, {"held.log", "open"}}) {
      auto id = packfmt::identify(root_ + "/usr/sbin/" + name);
      ASSERT_TRUE(id.ok()) << id.error().message;
      id->role = role;
      m.files.push_back(*id);
    }
    manifest_ = m;
    pack_ = *dir_ / "p.pack";
    ASSERT_TRUE(packfmt::write_pack(pack_, m.to_json(), root_, {}).ok());
  }
  Result<guest::ShipResult> ship(std::vector<std::string> paths = {}, std::vector<std::string> have = {}) {
    guest::Env env;
    guest::ShipRequest req;
    req.pack = pack_;
    req.out = *dir_ / "p.files";
    req.paths = std::move(paths);
    req.have = std::move(have);
    return guest::ship(env, req);
  }
  Result<ShipmentIndex> index() { return ShipmentIndex::parse(SL_TRY(packfmt::read_manifest(*dir_ / "p.files"))); }
  std::optional<TempDir> dir_;
  std::string root_, pack_;
  packfmt::Manifest manifest_;
};

TEST_F(GuestShip, ShipsThePacksCodeAndMappedFilesWithTheirContents) {
  auto r = ship();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->files, 2u) << "the held-open log is not shipped (the sink stands in a dummy)";
  EXPECT_EQ(r->included, 2u);
  auto idx = index();
  ASSERT_TRUE(idx.ok()) << idx.error().message;
  const ShippedFile* data = idx->find(root_ + "/usr/sbin/data.map");
  ASSERT_NE(data, nullptr);
  EXPECT_EQ(data->sha256, sha256_hex("mapped data"));
  EXPECT_EQ(data->mode, 0640u);
  EXPECT_EQ(idx->find(root_ + "/usr/sbin/held.log"), nullptr);
  // The contents travel under their hash.
  auto out = TempDir::create();
  ASSERT_TRUE(out.ok());
  ASSERT_TRUE(packfmt::unpack(*dir_ / "p.files", *out / "x", {}, packfmt::kKeepPageImages).ok());
  auto contents = sys::read_file(*out / ("x/" + data->entry()));
  ASSERT_TRUE(contents.ok());
  EXPECT_EQ(*contents, "mapped data");
}

TEST_F(GuestShip, FilesTheSinkHasCachedAreListedWithoutContents) {
  ShippedFile data = shipped(root_ + "/usr/sbin/data.map", "mapped data");
  data.mode = 0640;
  auto r = ship({root_ + "/usr/sbin/data.map"}, {data.object(), cat(sha256_hex("other"), "-0640-0-0")});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->files, 1u) << "only the path asked for";
  EXPECT_EQ(r->included, 0u);
  EXPECT_EQ(r->content_bytes, 0u);
  auto idx = index();
  ASSERT_TRUE(idx.ok());
  ASSERT_EQ(idx->files.size(), 1u);
  EXPECT_FALSE(idx->files[0].included);
}

TEST_F(GuestShip, OnlyThePacksOwnFilesAndOnlyAsTheyWereAtTheDump) {
  auto not_ours = ship({"/etc/shadow"});
  ASSERT_FALSE(not_ours.ok());
  EXPECT_NE(not_ours.error().message.find("/etc/shadow` is not a code or mapped file"), std::string::npos)
      << not_ours.error().message;
  auto held = ship({root_ + "/usr/sbin/held.log"});
  ASSERT_FALSE(held.ok()) << "a held-open file is not shipped";
  ASSERT_TRUE(sys::write_file(root_ + "/usr/sbin/data.map", "mapped data, changed", 0640).ok());
  auto changed = ship();
  ASSERT_FALSE(changed.ok());
  EXPECT_NE(changed.error().message.find("data.map"), std::string::npos) << changed.error().message;
  EXPECT_FALSE(std::filesystem::exists(*dir_ / "p.files")) << "no shipment half written";
}

// A file the gateway writes through a shared mapping (a JVM's hsperfdata) changed after the
// pack identified it: it is the gateway's data, shipped as it is now.
TEST_F(GuestShip, DataTheGatewayWroteThroughASharedMappingShipsAsItIsNow) {
  for (auto& f : manifest_.files)
    if (f.path == root_ + "/usr/sbin/data.map") f.role = "shared";
  ASSERT_TRUE(packfmt::write_pack(pack_, manifest_.to_json(), root_, {}).ok());
  ASSERT_TRUE(sys::write_file(root_ + "/usr/sbin/data.map", "counters 17", 0640).ok());
  auto r = ship();
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto idx = index();
  ASSERT_TRUE(idx.ok());
  const ShippedFile* data = idx->find(root_ + "/usr/sbin/data.map");
  ASSERT_NE(data, nullptr);
  EXPECT_EQ(data->sha256, sha256_hex("counters 17"));
  EXPECT_TRUE(guest::check_files(manifest_).ok()) << "at home it must only be there";
  std::filesystem::remove(root_ + "/usr/sbin/data.map");
  EXPECT_FALSE(guest::check_files(manifest_).ok()) << "a shared file that is gone is refused";
}

// The sink's side: a shipment from the guest above goes into a file cache.
class SinkFileCache : public GuestShip {
 protected:
  void SetUp() override {
    GuestShip::SetUp();
    auto d = TempDir::create();
    ASSERT_TRUE(d.ok());
    state_.emplace(std::move(d).value());
    cache_.emplace(*state_ / "files");
  }
  std::optional<TempDir> state_;
  std::optional<sink::FileCache> cache_;
};

TEST_F(SinkFileCache, KeepsCheckedContentsOnceAndOffersThemToTheNextPack) {
  ASSERT_TRUE(ship().ok());
  auto taken = cache_->take(*dir_ / "p.files", *state_ / "work");
  ASSERT_TRUE(taken.ok()) << taken.error().message;
  auto stats = cache_->stats();
  EXPECT_EQ(stats.objects, 2);
  EXPECT_EQ(stats.in_use, 0);
  const ShippedFile* data = taken->find(root_ + "/usr/sbin/data.map");
  ASSERT_NE(data, nullptr);
  struct stat st {};
  ASSERT_EQ(::stat(cache_->object_path(data->object()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_TRUE(std::filesystem::is_empty(*state_ / "work")) << "the unpacked shipment is gone";

  // The next VM with the same daemon: the sink names the cached objects, the guest checks
  // their hashes against its own files and ships none of them.
  std::vector<std::string> have;
  for (const auto& f : manifest_.files) {
    if (f.role == "open") continue;
    auto c = cache_->candidates(f);
    ASSERT_EQ(c.size(), 1u) << f.path;
    have.push_back(c[0]);
  }
  auto again = ship({}, have);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->included, 0u);
  ASSERT_TRUE(cache_->take(*dir_ / "p.files", *state_ / "work").ok());
  EXPECT_EQ(cache_->stats().objects, 2) << "a second VM adds nothing";
  EXPECT_EQ(cache_->stats().bytes, stats.bytes);
}

TEST_F(SinkFileCache, ContentsThatDoNotHashToTheirNameAreRefused) {
  // A hostile guest claims the hash of one file for the contents of another.
  ShipmentIndex index;
  ShippedFile lie = shipped("/usr/sbin/daemon", "harmless");
  index.files.push_back(lie);
  ASSERT_TRUE(sys::write_file(*dir_ / "evil", "evil!!!!", 0644).ok());  // same size
  ASSERT_TRUE(packfmt::write_plain_pack(*dir_ / "evil.files", index.to_json(), {{lie.entry(), *dir_ / "evil"}},
                                        packfmt::Compression::Gzip)
                  .ok());
  auto r = cache_->take(*dir_ / "evil.files", *state_ / "work");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("do not hash"), std::string::npos) << r.error().message;
  EXPECT_EQ(cache_->stats().objects, 0);
  // Left out, and not cached either.
  index.files[0].included = false;
  ASSERT_TRUE(packfmt::write_plain_pack(*dir_ / "none.files", index.to_json(), {}, packfmt::Compression::Gzip).ok());
  r = cache_->take(*dir_ / "none.files", *state_ / "work");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("neither in it nor cached"), std::string::npos) << r.error().message;
  // Said to be included, but no contents.
  index.files[0].included = true;
  ASSERT_TRUE(packfmt::write_plain_pack(*dir_ / "empty.files", index.to_json(), {}, packfmt::Compression::Gzip).ok());
  r = cache_->take(*dir_ / "empty.files", *state_ / "work");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("not in it"), std::string::npos) << r.error().message;
}

// Two paths with the same contents travel once; with other modes they are objects of
// their own (hard links share a mode).
TEST_F(SinkFileCache, TheSameContentsWithAnotherModeAreAnObjectOfTheirOwn) {
  ShipmentIndex index;
  index.files.push_back(shipped("/usr/lib/a.so", "same bytes"));
  index.files.push_back(shipped("/usr/lib/b.so", "same bytes"));
  index.files[1].mode = 0600;
  ASSERT_TRUE(sys::write_file(*dir_ / "same", "same bytes", 0644).ok());
  ASSERT_TRUE(
      packfmt::write_shipment(*dir_ / "same.files", index, {*dir_ / "same", *dir_ / "same"}, packfmt::Compression::Gzip)
          .ok());
  auto r = cache_->take(*dir_ / "same.files", *state_ / "work");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(cache_->stats().objects, 2);
  struct stat st {};
  ASSERT_EQ(::stat(cache_->object_path(index.files[1].object()).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_nlink, 1u);
}

TEST_F(SinkFileCache, LayersAreHardLinksAndUnusedObjectsAreTrimmed) {
  ASSERT_TRUE(ship().ok());
  auto taken = cache_->take(*dir_ / "p.files", *state_ / "work");
  ASSERT_TRUE(taken.ok()) << taken.error().message;
  std::vector<sink::LayerFile> files;
  for (const auto& f : taken->files) files.emplace_back(f.path, f.object());
  const std::string layer = *state_ / "layer";
  ASSERT_TRUE(cache_->build_layer(layer, files).ok());
  struct stat st {};
  ASSERT_EQ(::stat((layer + root_ + "/usr/sbin/daemon").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 2u);
  EXPECT_EQ(cache_->stats().in_use, 2);
  EXPECT_FALSE(cache_->build_layer(*state_ / "bad", {{"/x", "../../etc/passwd"}}).ok());
  EXPECT_FALSE(cache_->build_layer(*state_ / "bad2", {{"relative/x", files[0].second}}).ok());

  sink::FileCache tight(*state_ / "files", 0);
  tight.trim();
  EXPECT_EQ(tight.stats().objects, 2) << "objects in use stay";
  std::filesystem::remove_all(layer);
  tight.trim();
  EXPECT_EQ(tight.stats().objects, 0) << "unused ones go beyond the budget";
}

TEST_F(SinkFileCache, TheTemplateCheckTakesShippedFilesForTheSinksOwn) {
  ASSERT_TRUE(ship().ok());
  auto taken = cache_->take(*dir_ / "p.files", *state_ / "work");
  ASSERT_TRUE(taken.ok()) << taken.error().message;
  // The sink: an empty root (it has none of the guest's files).
  const std::string sink_root = *state_ / "sink-root";
  std::filesystem::create_directories(sink_root);
  auto without = sink::check_manifest(manifest_, sink_root);
  ASSERT_FALSE(without.ok());
  EXPECT_NE(without.error().message.find("not shipped"), std::string::npos) << without.error().message;
  EXPECT_EQ(sink::missing_files(manifest_, sink_root).size(), 2u);

  auto with = sink::check_manifest(manifest_, sink_root, &*cache_, &*taken);
  ASSERT_TRUE(with.ok()) << with.error().message;
  EXPECT_EQ(with->shipped.size(), 2u);
  EXPECT_EQ(with->dummies.size(), 1u);

  // The gateway's shared data: taken with whatever contents it had at the dump.
  auto shared = manifest_;
  for (auto& f : shared.files)
    if (f.path == root_ + "/usr/sbin/data.map") f.role = "shared", f.sha256 = sha256_hex("before the dump");
  auto data = sink::check_manifest(shared, sink_root, &*cache_, &*taken);
  EXPECT_TRUE(data.ok()) << data.error().message;
  auto code = manifest_;
  for (auto& f : code.files)
    if (f.path == root_ + "/usr/sbin/data.map") f.sha256 = sha256_hex("before the dump");
  EXPECT_FALSE(sink::check_manifest(code, sink_root, &*cache_, &*taken).ok()) << "code must be the very file";

  // A shipment of other contents for a path: refused.
  ShipmentIndex other = *taken;
  for (auto& f : other.files)
    if (f.path == root_ + "/usr/sbin/data.map") f = shipped(f.path, "mapped data"), f.mode = 0644;
  ASSERT_TRUE(sys::write_file(*dir_ / "c", "mapped data", 0644).ok());
  auto wrong = sink::check_manifest(manifest_, sink_root, &*cache_, &other);
  ASSERT_FALSE(wrong.ok()) << "mode 0644 is not the pack's 0640";
  EXPECT_NE(wrong.error().message.find("data.map"), std::string::npos) << wrong.error().message;
}

}  // namespace
}  // namespace seamless
