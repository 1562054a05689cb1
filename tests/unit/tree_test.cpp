// SPDX-License-Identifier: Apache-2.0
// The guest's file tree a sink answers look-ups from: what it answers (entries, names
// absent from complete directories, links followed), the checks a tree from a pack
// passes (hostile entries refused by name), the guest's collection (the trees a gateway
// names, bounded, carried files left out) and the sink's layer of it (metadata as
// recorded, complete directories opaque, nothing followed).
#include "pack/tree.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/sys.h"
#include "common/tempdir.h"
#include "guest-agent/file_tree.h"
#include "pack/manifest.h"
#include "pack/pack.h"
#include "sinkd/container.h"

namespace seamless {
namespace {

using packfmt::TreeEntry;
using packfmt::TreeView;
using Kind = TreeEntry::Kind;

TreeEntry entry(const std::string& path, Kind kind, bool complete = false, const std::string& target = "") {
  TreeEntry e;
  e.path = path;
  e.kind = kind;
  e.mode = kind == Kind::Dir ? 0755 : 0644;
  e.size = kind == Kind::File ? 1234 : 0;
  e.mtime_s = 1700000000;
  e.mtime_ns = 5;
  e.complete = complete;
  e.target = target;
  return e;
}

// Tomcat's, as a guest records it.
std::vector<TreeEntry> tomcat_tree() {
  return {entry("/var/lib/tomcat10", Kind::Dir),
          entry("/var/lib/tomcat10/conf", Kind::Link, false, "/etc/tomcat10"),
          entry("/var/lib/tomcat10/logs", Kind::Link, false, "../../log/tomcat10"),
          entry("/var/lib/tomcat10/webapps", Kind::Dir, true),
          entry("/var/lib/tomcat10/webapps/ROOT", Kind::Dir, true),
          entry("/var/lib/tomcat10/webapps/ROOT/index.jsp", Kind::File),
          entry("/etc/tomcat10", Kind::Dir, true),
          entry("/etc/tomcat10/tomcat-users.xml", Kind::File),
          entry("/etc/tomcat10/loop", Kind::Link, false, "loop"),
          entry("/var/log/tomcat10", Kind::Dir, false)};
}

TEST(TreeView, AnswersWhatTheGuestRecorded) {
  TreeView v(tomcat_tree());
  EXPECT_TRUE(v.answers("/var/lib/tomcat10/webapps/ROOT/index.jsp", true));
  EXPECT_TRUE(v.answers("/var/lib/tomcat10/conf/tomcat-users.xml", true)) << "through an absolute link";
  EXPECT_TRUE(v.answers("/var/lib/tomcat10/conf", false)) << "the link itself";
  EXPECT_TRUE(v.answers("/var/lib/tomcat10/logs", true)) << "through a relative link";
  EXPECT_TRUE(v.answers("/var/lib/tomcat10//webapps/./ROOT/../ROOT/index.jsp", true));
  // Absent from a complete directory: the guest has no such name either.
  EXPECT_TRUE(v.answers("/var/lib/tomcat10/webapps/ROOT.war", true));
  EXPECT_TRUE(v.answers("/var/lib/tomcat10/conf/Catalina/localhost/ROOT.xml", true));
  // Not known: an incomplete directory's other names, what the tree passes through,
  // anything elsewhere, relative paths, link loops.
  EXPECT_FALSE(v.answers("/var/lib/tomcat10/work", true));
  EXPECT_FALSE(v.answers("/var/log/tomcat10/catalina.out", true));
  EXPECT_FALSE(v.answers("/var/lib", true));
  EXPECT_TRUE(v.answers("/var/lib", false, true)) << "its type is known: a directory";
  EXPECT_FALSE(v.answers("/etc/passwd", true));
  EXPECT_FALSE(v.answers("var/lib/tomcat10", true));
  EXPECT_FALSE(v.answers("/etc/tomcat10/loop", true));
  EXPECT_TRUE(v.answers("/etc/tomcat10/loop", false));
  EXPECT_FALSE(v.answers("/var/lib/tomcat10/logs/catalina.out", true));
}

TEST(TreeView, ReadsOnlyFilesWhoseContentsCameAlong) {
  auto tree = tomcat_tree();
  tree[7].content = true;  // tomcat-users.xml
  TreeView v(tree);
  EXPECT_TRUE(v.reads("/var/lib/tomcat10/conf/tomcat-users.xml"));
  EXPECT_FALSE(v.reads("/var/lib/tomcat10/webapps/ROOT/index.jsp")) << "an empty stand-in";
  EXPECT_FALSE(v.reads("/var/lib/tomcat10/webapps")) << "a directory";
  EXPECT_FALSE(v.reads("/etc/tomcat10/server.xml")) << "absent";
}

TEST(TreeView, ListsOnlyCompleteDirectories) {
  TreeView v(tomcat_tree());
  EXPECT_TRUE(v.lists("/var/lib/tomcat10/webapps"));
  EXPECT_TRUE(v.lists("/var/lib/tomcat10/conf")) << "a link to a complete directory";
  EXPECT_FALSE(v.lists("/var/lib/tomcat10")) << "not complete";
  EXPECT_FALSE(v.lists("/var/lib/tomcat10/webapps/ROOT/index.jsp"));
  EXPECT_FALSE(v.lists("/var/lib/tomcat10/webapps/nothing"));
  EXPECT_FALSE(TreeView().lists("/var/lib/tomcat10/webapps"));
}

TEST(TreeCheck, RefusesHostileEntriesByName) {
  EXPECT_TRUE(packfmt::check_tree(tomcat_tree()).ok());
  auto refused = [](std::vector<TreeEntry> tree, const std::string& why) {
    auto r = packfmt::check_tree(tree);
    ASSERT_FALSE(r.ok()) << why;
    EXPECT_NE(r.error().message.find(why), std::string::npos) << r.error().message;
  };
  refused({entry("/usr/lib/x86_64-linux-gnu/libc.so.6", Kind::File)}, "part of the system");
  refused({entry("/proc/self/mem", Kind::File)}, "part of the system");
  refused({entry("/etc/ld.so.preload", Kind::File)}, "part of the system");
  refused({entry("/etc/ld.so.conf.d/x.conf", Kind::File)}, "part of the system");
  refused({entry("/etc/criu/default.conf", Kind::File)}, "part of the system");
  refused({entry("/root/.criu/default.conf", Kind::File)}, "part of the system");
  refused({entry("/etc", Kind::Dir, true)}, "top-level");
  refused({entry("/etc/../usr/x", Kind::File)}, "not a plain absolute path");
  refused({entry("/etc/x", Kind::File), entry("/etc/x", Kind::File)}, "twice");
  refused({entry("/etc/a", Kind::Link, false, "/usr"), entry("/etc/a/b", Kind::File)}, "lies below link `/etc/a`");
  auto suid = entry("/etc/x", Kind::File);
  suid.mode = 04755;
  refused({suid}, "no setuid");
  refused({entry("/etc/x", Kind::Link, false, "")}, "bad target");
  refused({entry("/etc/x", Kind::File, true)}, "no directory but complete");
  auto big = entry("/etc/x", Kind::File);
  big.size = packfmt::kMaxTreeContent + 1;
  big.content = true;
  refused({big}, "cannot come with its contents");
  auto dir = entry("/etc/d", Kind::Dir);
  dir.content = true;
  refused({dir}, "cannot come with its contents");
  auto deep = entry("/srv/a/b/c/d/e/f/g/h", Kind::File);
  deep.content = true;
  refused({deep}, "cannot come with its contents");  // no pack entry can hold them
  std::vector<TreeEntry> budget;
  for (int i = 0; i < 40; ++i) {
    budget.push_back(entry(cat("/etc/f", i), Kind::File));
    budget.back().size = packfmt::kMaxTreeContent;
    budget.back().content = true;
  }
  refused(budget, "bytes of contents");
  std::vector<TreeEntry> many(packfmt::kMaxTreeEntries + 1, entry("/etc/x", Kind::File));
  refused(many, "at most");
}

TEST(TreeCheck, TheManifestCarriesTheTreeAndRefusesABadOne) {
  packfmt::Manifest m;
  m.hostname = "guest";
  m.tree = tomcat_tree();
  auto back = packfmt::Manifest::parse(m.to_json());
  ASSERT_TRUE(back.ok()) << back.error().message;
  ASSERT_EQ(back->tree.size(), m.tree.size());
  for (size_t i = 0; i < m.tree.size(); ++i) {
    EXPECT_EQ(back->tree[i].path, m.tree[i].path);
    EXPECT_EQ(back->tree[i].kind, m.tree[i].kind);
    EXPECT_EQ(back->tree[i].target, m.tree[i].target);
    EXPECT_EQ(back->tree[i].complete, m.tree[i].complete);
    EXPECT_EQ(back->tree[i].mtime_ns, m.tree[i].mtime_ns);
  }
  m.tree.push_back(entry("/bin/sh", Kind::File));
  auto bad = packfmt::Manifest::parse(m.to_json());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("`/bin/sh`"), std::string::npos) << bad.error().message;
}

class TreeOnDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = TempDir::create();
    ASSERT_TRUE(t.ok());
    dir_ = std::make_unique<TempDir>(std::move(t).value());
    root_ = dir_->path() + "/root";
    for (const char* d : {"/var/lib/app/webapps/ROOT", "/var/log/app", "/etc/app", "/etc/app/sub/deeper"})
      std::filesystem::create_directories(root_ + d);
    ASSERT_TRUE(sys::write_file(root_ + "/var/lib/app/webapps/ROOT/index.jsp", "<%= 1 %>").ok());
    ASSERT_TRUE(sys::write_file(root_ + "/etc/app/users.xml", "<users/>").ok());
    ASSERT_TRUE(sys::write_file(root_ + "/var/log/app/app.log", "started\n").ok());
    std::filesystem::create_symlink("/etc/app", root_ + "/var/lib/app/conf");
    std::filesystem::create_symlink("../../log/app", root_ + "/var/lib/app/logs");
    ::mkfifo((root_ + "/etc/app/sub/pipe").c_str(), 0600);
  }
  std::string find(const std::vector<TreeEntry>& tree, const std::string& path, TreeEntry* out) {
    for (const auto& e : tree)
      if (e.path == path) {
        *out = e;
        return "found";
      }
    return "missing";
  }
  std::unique_ptr<TempDir> dir_;
  std::string root_;
};

TEST_F(TreeOnDisk, TheGuestRecordsTheTreesAGatewayNamesAndTheirLinks) {
  std::vector<TreeEntry> tree;
  guest::collect_tree(root_, {"/var/lib/app", "/usr/share/app"}, {"/var/log/app/app.log"}, {}, &tree);
  ASSERT_TRUE(packfmt::check_tree(tree).ok()) << packfmt::check_tree(tree).error().message;
  TreeEntry e;
  ASSERT_EQ(find(tree, "/var/lib/app/webapps/ROOT/index.jsp", &e), "found");
  EXPECT_EQ(e.kind, Kind::File);
  EXPECT_EQ(e.size, 8u);
  ASSERT_EQ(find(tree, "/var/lib/app/webapps", &e), "found");
  EXPECT_TRUE(e.complete);
  ASSERT_EQ(find(tree, "/var/lib/app/conf", &e), "found");
  EXPECT_EQ(e.kind, Kind::Link);
  EXPECT_EQ(e.target, "/etc/app");
  ASSERT_EQ(find(tree, "/etc/app/users.xml", &e), "found") << "the tree a link leads to";
  ASSERT_EQ(find(tree, "/etc/app/sub", &e), "found");
  EXPECT_FALSE(e.complete) << "it holds a fifo, which is not recorded";
  ASSERT_EQ(find(tree, "/var/log/app", &e), "found") << "the relative link's tree";
  EXPECT_FALSE(e.complete) << "the log the pack carries is left out";
  EXPECT_EQ(find(tree, "/var/log/app/app.log", &e), "missing");
  EXPECT_EQ(find(tree, "/usr/share/app", &e), "missing") << "the packaged system is not recorded";

  TreeView v(tree);
  EXPECT_TRUE(v.answers("/var/lib/app/conf/users.xml", true));
  EXPECT_TRUE(v.lists("/var/lib/app/webapps/ROOT"));

  std::vector<TreeEntry> small;
  guest::TreeLimits limits;
  limits.max_entries = 3;
  guest::collect_tree(root_, {"/var/lib/app"}, {}, limits, &small);
  EXPECT_EQ(small.size(), 3u);
  limits.max_entries = 100;
  limits.max_depth = 1;
  small.clear();
  guest::collect_tree(root_, {"/etc/app"}, {}, limits, &small);
  ASSERT_EQ(find(small, "/etc/app/sub", &e), "found");
  EXPECT_FALSE(e.complete) << "cut short at the depth limit";
}

// Each localtime() stats /etc/localtime and re-reads the time zone when it seems changed
// (glibc's tzset compares device, inode and time): whatever the gateway names, the link
// and the zone it leads to come along, the zone with its contents, so a sink answers both.
TEST_F(TreeOnDisk, TheTimeZoneTheCLibraryLooksAtComesAlong) {
  std::filesystem::create_directories(root_ + "/usr/share/zoneinfo/Etc");
  std::filesystem::create_directories(root_ + "/usr/share/zoneinfo/Europe");
  ASSERT_TRUE(sys::write_file(root_ + "/usr/share/zoneinfo/Etc/UTC", "TZif2 UTC").ok());
  ASSERT_TRUE(sys::write_file(root_ + "/usr/share/zoneinfo/Europe/Paris", "TZif2 CET").ok());
  std::filesystem::create_symlink("/usr/share/zoneinfo/Etc/UTC", root_ + "/etc/localtime");
  std::vector<TreeEntry> tree;
  guest::collect_tree(root_, {}, {}, {}, &tree);  // a gateway that names no directory
  ASSERT_TRUE(packfmt::check_tree(tree).ok()) << packfmt::check_tree(tree).error().message;
  TreeEntry e;
  ASSERT_EQ(find(tree, "/etc/localtime", &e), "found");
  EXPECT_EQ(e.kind, Kind::Link);
  EXPECT_EQ(e.target, "/usr/share/zoneinfo/Etc/UTC");
  ASSERT_EQ(find(tree, "/usr/share/zoneinfo/Etc/UTC", &e), "found");
  EXPECT_TRUE(e.content);
  EXPECT_EQ(e.data, "TZif2 UTC");
  EXPECT_EQ(find(tree, "/usr/share/zoneinfo/Europe/Paris", &e), "missing") << "only the zone in use";
  EXPECT_EQ(find(tree, "/etc/app", &e), "missing") << "nothing else of /etc";
  TreeView v(tree);
  EXPECT_TRUE(v.answers("/etc/localtime", true));
  EXPECT_TRUE(v.reads("/etc/localtime"));
  EXPECT_FALSE(v.answers("/usr/share/zoneinfo/Europe/Paris", true)) << "another zone wakes the VM";
  EXPECT_FALSE(packfmt::tree_may_hold("/usr/share/zoneinfo")) << "the directory itself is the system's";
  EXPECT_FALSE(packfmt::tree_may_hold("/usr/share/doc/x"));

  // A link that leads into the packaged system elsewhere is recorded; its target is not.
  std::filesystem::remove(root_ + "/etc/localtime");
  std::filesystem::create_symlink("/usr/lib/os-release", root_ + "/etc/localtime");
  std::filesystem::create_directories(root_ + "/usr/lib");
  ASSERT_TRUE(sys::write_file(root_ + "/usr/lib/os-release", "ID=debian").ok());
  tree.clear();
  guest::collect_tree(root_, {}, {}, {}, &tree);
  ASSERT_TRUE(packfmt::check_tree(tree).ok()) << packfmt::check_tree(tree).error().message;
  EXPECT_EQ(find(tree, "/usr/lib/os-release", &e), "missing");
  EXPECT_FALSE(TreeView(tree).reads("/etc/localtime"));
}

TEST_F(TreeOnDisk, FilesTooDeepForAPackAreRecordedWithoutTheirContents) {
  // A build tree as a test's working directory: deeper than a pack's entry names go.
  const std::string deep = "/srv/a/b/c/d/e/f";
  std::filesystem::create_directories(root_ + deep);
  ASSERT_TRUE(sys::write_file(root_ + deep + "/deep.txt", "x").ok());
  ASSERT_TRUE(sys::write_file(root_ + "/srv/a/shallow.txt", "y").ok());
  std::vector<TreeEntry> tree;
  guest::collect_tree(root_, {"/srv/a"}, {}, {}, &tree);
  ASSERT_TRUE(packfmt::check_tree(tree).ok()) << packfmt::check_tree(tree).error().message;
  TreeEntry e;
  ASSERT_EQ(find(tree, deep + "/deep.txt", &e), "found");
  EXPECT_FALSE(e.content) << "its contents could not be named in a pack";
  ASSERT_EQ(find(tree, "/srv/a/shallow.txt", &e), "found");
  EXPECT_TRUE(e.content);
  EXPECT_FALSE(packfmt::contents_fit_a_pack(deep + "/deep.txt"));
  EXPECT_TRUE(packfmt::contents_fit_a_pack("/srv/a/shallow.txt"));
}

TEST_F(TreeOnDisk, TheDirectoriesAGatewayNames) {
  // A fake /proc/PID: Tomcat's command line and environment.
  const std::string proc = dir_->path() + "/proc";
  std::filesystem::create_directories(proc + "/42");
  auto nul_joined = [](std::vector<std::string> parts) {
    std::string out;
    for (const auto& p : parts) out += p + std::string(1, '\0');
    return out;
  };
  ASSERT_TRUE(sys::write_file(proc + "/42/cmdline",
                              nul_joined({"/usr/lib/jvm/java-17/bin/java", "-Dcatalina.base=/var/lib/tomcat10",
                                          "-Djava.util.logging.config.file=/var/lib/tomcat10/conf/logging.properties",
                                          "-classpath", "/usr/share/tomcat10/bin/bootstrap.jar:/opt/app/lib/x.jar",
                                          "--add-opens=java.base/java.lang=ALL-UNNAMED"}))
                  .ok());
  ASSERT_TRUE(sys::write_file(proc + "/42/environ", nul_joined({"PATH=/usr/local/bin:/srv/bin", "CATALINA_TMPDIR=/tmp",
                                                                "HOME=/var/lib/tomcat"}))
                  .ok());
  std::filesystem::create_symlink("/srv/www", proc + "/42/cwd");
  auto dirs = guest::named_dirs(42, proc);
  std::sort(dirs.begin(), dirs.end());
  EXPECT_EQ(dirs, (std::vector<std::string>{"/opt/app/lib/x.jar", "/srv/www", "/var/lib/tomcat", "/var/lib/tomcat10",
                                            "/var/lib/tomcat10/conf/logging.properties"}));
}

TEST_F(TreeOnDisk, TheCgroupsAGatewayIsInWithWhatTheirFilesRead) {
  const std::string proc = dir_->path() + "/proc";
  std::filesystem::create_directories(proc + "/42");
  // cgroup v2 as systemd mounts it, and a v1 hierarchy mounted from a sub-tree.
  ASSERT_TRUE(sys::write_file(proc + "/42/cgroup",
                              "0::/system.slice/tomcat10.service\n"
                              "3:cpu,cpuacct:/guests/tomcat\n"
                              "2:pids:/\n")
                  .ok());
  ASSERT_TRUE(sys::write_file(proc + "/42/mountinfo",
                              "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
                              "30 22 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
                              "31 22 0:27 /guests /sys/fs/cgroup/cpu rw shared:5 - cgroup cgroup rw,cpu,cpuacct\n"
                              "32 22 0:28 / /sys/fs/cgroup/pids rw shared:6 - cgroup cgroup rw,pids\n")
                  .ok());
  EXPECT_EQ(guest::cgroup_dirs(42, proc),
            (std::vector<std::string>{"/sys/fs/cgroup/system.slice/tomcat10.service", "/sys/fs/cgroup/cpu/tomcat"}))
      << "the root of the pids hierarchy is the mount itself: not recorded";

  const std::string unit = "/sys/fs/cgroup/system.slice/tomcat10.service";
  std::filesystem::create_directories(root_ + unit + "/child");
  ASSERT_TRUE(sys::write_file(root_ + unit + "/cpu.max", "max 100000\n").ok());
  ASSERT_TRUE(sys::write_file(root_ + unit + "/memory.max", "max\n").ok());
  std::vector<TreeEntry> tree;
  guest::collect_cgroups(root_, {unit, "/sys/fs/cgroup"}, {}, &tree);
  ASSERT_TRUE(packfmt::check_tree(tree).ok()) << packfmt::check_tree(tree).error().message;
  TreeEntry e;
  ASSERT_EQ(find(tree, unit + "/cpu.max", &e), "found");
  EXPECT_TRUE(e.content);
  EXPECT_EQ(e.data, "max 100000\n");
  EXPECT_EQ(e.size, 11u);
  ASSERT_EQ(find(tree, unit, &e), "found");
  EXPECT_FALSE(e.complete) << "its subdirectories are not recorded";
  EXPECT_EQ(find(tree, unit + "/child", &e), "missing");
  // Without a child cgroup the directory is complete: a limit file it lacks (cpu.weight
  // without the cpu controller) is absent in the sink too, a look for it needs no VM.
  std::filesystem::remove(root_ + unit + "/child");
  ASSERT_EQ(::mkfifo((root_ + unit + "/cgroup.kill").c_str(), 0200), 0);  // not a regular file: skipped
  std::filesystem::remove(root_ + unit + "/cgroup.kill");
  ASSERT_TRUE(sys::write_file(root_ + unit + "/cgroup.kill", "").ok());
  ::chmod((root_ + unit + "/cgroup.kill").c_str(), 0200);
  std::vector<TreeEntry> whole;
  guest::collect_cgroups(root_, {unit}, {}, &whole);
  ASSERT_EQ(find(whole, unit, &e), "found");
  EXPECT_TRUE(e.complete);
  ASSERT_EQ(find(whole, unit + "/cgroup.kill", &e), "found");
  TreeView cg(whole);
  EXPECT_TRUE(cg.absent(unit + "/cpu.weight"));
  EXPECT_FALSE(cg.absent(unit + "/cpu.max"));
  EXPECT_TRUE(cg.reads(unit + "/cpu.max"));
  EXPECT_FALSE(cg.absent("/sys/fs/cgroup/system.slice/other.service/cpu.max")) << "not the guest's word";
  EXPECT_EQ(find(tree, "/sys/fs/cgroup", &e), "missing") << "the mount itself is not recorded";
  EXPECT_TRUE(packfmt::tree_may_hold(unit + "/cpu.max"));
  EXPECT_FALSE(packfmt::tree_may_hold("/sys/kernel/notes"));
  EXPECT_FALSE(packfmt::tree_may_hold("/sys/fs/cgroup"));
}

TEST_F(TreeOnDisk, TheTreesPidAndLogFilesGoInThePack) {
  const std::string images = dir_->path() + "/images";
  std::filesystem::create_directories(images + "/gw/7");
  std::filesystem::create_directories(images + "/tree/run/apache2");
  for (const char* f : {"/gw/7/dump.log", "/gw/7/restore.pid", "/gw/7/core-7.img", "/tree/run/apache2/apache2.pid"})
    ASSERT_TRUE(sys::write_file(images + f, "x").ok());
  EXPECT_EQ(packfmt::list_pack_files(images),
            (std::vector<std::string>{"gw/7/core-7.img", "tree/run/apache2/apache2.pid"}))
      << "CRIU's logs and pid files stay behind, the guest's own come along";
}

TEST_F(TreeOnDisk, TheSinkLaysTheTreeOutAsRecorded) {
  if (::geteuid() != 0) GTEST_SKIP() << "owners and trusted.* attributes need root";
  std::vector<TreeEntry> tree;
  guest::collect_tree(root_, {"/var/lib/app"}, {}, {}, &tree);
  // The small files' contents go in the pack as tree/PATH (as the dump writes them).
  const std::string unpacked = dir_->path() + "/unpacked";
  size_t with_contents = 0;
  for (const auto& e : tree)
    if (e.content) {
      ++with_contents;
      std::filesystem::create_directories(std::filesystem::path(unpacked + "/tree" + e.path).parent_path());
      ASSERT_TRUE(sys::write_file(unpacked + "/tree" + e.path, e.data).ok());
    }
  EXPECT_EQ(with_contents, 3u) << "index.jsp, users.xml and app.log";
  const std::string layer = dir_->path() + "/layer";
  auto built = sink::build_tree_layer(layer, tree, unpacked, root_);
  ASSERT_TRUE(built.ok()) << built.error().message;
  EXPECT_EQ(sys::read_file(layer + "/etc/app/users.xml").value(), "<users/>") << "its contents came along";
  for (const auto& e : tree) {
    SCOPED_TRACE(e.path);
    struct stat st {};
    ASSERT_EQ(::lstat((layer + e.path).c_str(), &st), 0);
    EXPECT_EQ(st.st_mtim.tv_sec, e.mtime_s);
    EXPECT_EQ(uint32_t(st.st_mtim.tv_nsec), e.mtime_ns);
    EXPECT_EQ(st.st_uid, e.uid);
    if (e.kind == Kind::File) {
      EXPECT_TRUE(S_ISREG(st.st_mode));
      EXPECT_EQ(uint64_t(st.st_size), e.size);
      if (!e.content) {
        EXPECT_EQ(st.st_blocks, 0) << "empty: no contents come along";
      }
      EXPECT_EQ(st.st_mode & 07777, e.mode);
    } else if (e.kind == Kind::Link) {
      EXPECT_EQ(std::filesystem::read_symlink(layer + e.path).string(), e.target);
    } else {
      char v[4] = {};
      const bool opaque = ::getxattr((layer + e.path).c_str(), "trusted.overlay.opaque", v, sizeof v) == 1;
      EXPECT_EQ(opaque, e.complete);
    }
  }
  // Nothing is followed: a hostile tree cannot write through a link it planted.
  std::vector<TreeEntry> hostile = {entry("/etc/planted", Kind::Link, false, dir_->path()),
                                    entry("/etc/planted/escaped", Kind::File)};
  auto refused = sink::build_tree_layer(dir_->path() + "/hostile", hostile, unpacked, root_);
  ASSERT_FALSE(refused.ok());
  EXPECT_FALSE(std::filesystem::exists(dir_->path() + "/escaped"));
  // Contents the pack claims but lacks, or of another size, are refused by name.
  auto claimed = entry("/etc/app/claimed", Kind::File);
  claimed.content = true;
  auto lacking = sink::build_tree_layer(dir_->path() + "/lacking", {claimed}, unpacked, root_);
  ASSERT_FALSE(lacking.ok());
  EXPECT_NE(lacking.error().message.find("the contents of `/etc/app/claimed`"), std::string::npos)
      << lacking.error().message;
  std::filesystem::create_directories(unpacked + "/tree/etc/app");
  ASSERT_TRUE(sys::write_file(unpacked + "/tree/etc/app/claimed", "short").ok());
  auto shorter = sink::build_tree_layer(dir_->path() + "/shorter", {claimed}, unpacked, root_);
  ASSERT_FALSE(shorter.ok());
  EXPECT_NE(shorter.error().message.find("are not 1234 bytes"), std::string::npos) << shorter.error().message;
}

}  // namespace
// A container sees nothing of the sink's own root but its /usr (with the merged-usr
// links), what CRIU's helpers read, and the sink's copies of the files its pack needs:
// the sink's /etc/shadow, /root and other top-level entries are gone, through a real overlay.
TEST_F(TreeOnDisk, TheBaseLayerHidesTheSinksRootButItsUsr) {
  if (::geteuid() != 0) GTEST_SKIP() << "overlay mounts, whiteouts and trusted.* attributes need root";
  const std::string sink = dir_->path() + "/sink";
  for (const char* d : {"/usr/bin", "/usr/lib64", "/etc/alternatives", "/root/.ssh", "/var/lib/app", "/boot"})
    std::filesystem::create_directories(sink + d);
  ::chmod((sink + "/root").c_str(), 0700);
  for (const auto& [path, text] : std::vector<std::pair<std::string, std::string>>{{"/usr/bin/tool", "tool"},
                                                                                   {"/etc/shadow", "root:secret"},
                                                                                   {"/etc/ld.so.cache", "cache"},
                                                                                   {"/etc/keep.conf", "kept"},
                                                                                   {"/root/.ssh/id_ed25519", "key"},
                                                                                   {"/var/lib/app/data.bin", "data"},
                                                                                   {"/boot/vmlinuz", "kernel"}})
    ASSERT_TRUE(sys::write_file(sink + path, text).ok());
  ::chmod((sink + "/etc/keep.conf").c_str(), 0640);
  std::filesystem::create_symlink("usr/bin", sink + "/bin");
  std::filesystem::create_symlink("usr/lib64", sink + "/lib64");
  std::filesystem::create_symlink("boot/vmlinuz", sink + "/vmlinuz");
  std::filesystem::create_symlink("../../usr/bin/tool", sink + "/etc/alternatives/tool");
  ASSERT_EQ(::mkfifo((sink + "/etc/fifo").c_str(), 0600), 0);

  EXPECT_EQ(sink::shown_top_level(sink).size(), 3u) << "usr, bin, lib64";
  const std::string base = dir_->path() + "/base";
  // Named twice, or inside what every container gets anyway: copied once.
  auto built = sink::build_base_layer(base, sink,
                                      {"/etc/keep.conf", "/usr/bin/tool", "/var/lib/app/data.bin", "/etc/keep.conf",
                                       "/etc/ld.so.cache", "/etc/alternatives/tool"});
  ASSERT_TRUE(built.ok()) << built.error().message;
  EXPECT_FALSE(std::filesystem::exists(base + "/usr")) << "the sink's /usr shows as it is";
  struct stat st {};
  ASSERT_EQ(::lstat((base + "/root").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u) << "hidden directories keep their mode";
  ASSERT_EQ(::lstat((base + "/vmlinuz").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) << "a whiteout";
  ASSERT_EQ(::lstat((base + "/etc/keep.conf").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);

  const std::string mnt = dir_->path() + "/mnt", upper = dir_->path() + "/upper", work = dir_->path() + "/work";
  for (const auto& d : {mnt, upper, work}) std::filesystem::create_directories(d);
  const std::string opts = "lowerdir=" + base + ":" + sink + ",upperdir=" + upper + ",workdir=" + work;
  ASSERT_EQ(::mount("overlay", mnt.c_str(), "overlay", 0, opts.c_str()), 0) << std::strerror(errno);
  struct Unmount {
    std::string at;
    ~Unmount() { ::umount2(at.c_str(), MNT_DETACH); }
  } unmount{mnt};
  for (const char* hidden : {"/etc/shadow", "/root/.ssh/id_ed25519", "/boot/vmlinuz", "/vmlinuz", "/etc/fifo"})
    EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(mnt + hidden))) << hidden;
  EXPECT_TRUE(std::filesystem::is_empty(mnt + "/root"));
  for (const auto& [path, text] : std::vector<std::pair<std::string, std::string>>{{"/usr/bin/tool", "tool"},
                                                                                   {"/bin/tool", "tool"},
                                                                                   {"/etc/alternatives/tool", "tool"},
                                                                                   {"/etc/ld.so.cache", "cache"},
                                                                                   {"/etc/keep.conf", "kept"},
                                                                                   {"/var/lib/app/data.bin", "data"}}) {
    auto got = sys::read_file(mnt + path);
    EXPECT_TRUE(got.ok() && *got == text) << path;
  }
  // A write goes to the container's own layer, never to the sink's file.
  ASSERT_TRUE(sys::write_file(mnt + "/etc/keep.conf", "changed").ok());
  EXPECT_EQ(sys::read_file(sink + "/etc/keep.conf").value(), "kept");

  // What cannot be copied is refused by name: a FIFO, a file beyond the budget.
  auto fifo = sink::build_base_layer(dir_->path() + "/base2", sink, {"/etc/fifo"});
  ASSERT_FALSE(fifo.ok());
  EXPECT_NE(fifo.error().message.find("`/etc/fifo` is neither"), std::string::npos) << fifo.error().message;
  ASSERT_EQ(::truncate((sink + "/var/lib/app/data.bin").c_str(), off_t(65) << 20), 0);
  auto big = sink::build_base_layer(dir_->path() + "/base3", sink, {"/var/lib/app/data.bin"});
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.error().message.find("exceed 64 MiB (at `/var/lib/app/data.bin`)"), std::string::npos)
      << big.error().message;
}

}  // namespace seamless
