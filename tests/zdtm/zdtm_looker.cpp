// SPDX-License-Identifier: Apache-2.0
// ZDTM-style housekeeping that looks at files, as Tomcat checks its configuration: every
// 100 ms it stats each PATH (lstat for `l:PATH`), lists each `d:DIR` and reads each
// `r:FILE` (`f:FILE` through stdio); when a byte arrives on FIFO it stats THEN once.
//   zdtm_looker FIFO THEN PATH...   (writes FIFO.ready once it runs)
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: zdtm_looker FIFO THEN PATH...\n");
    return 2;
  }
  int f = open(argv[1], O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (f < 0) return perror("open fifo"), 1;
  close(open((std::string(argv[1]) + ".ready").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  for (;;) {
    for (int i = 3; i < argc; ++i) {
      const std::string a = argv[i];
      struct stat st {};
      if (a.rfind("d:", 0) == 0) {
        if (DIR* d = opendir(a.c_str() + 2)) {
          while (readdir(d)) {
          }
          closedir(d);
        }
      } else if (a.rfind("r:", 0) == 0) {
        int fd = open(a.c_str() + 2, O_RDONLY | O_CLOEXEC);
        char buf[256];
        if (fd >= 0) {
          while (read(fd, buf, sizeof buf) > 0) {
          }
          close(fd);
        }
      } else if (a.rfind("f:", 0) == 0) {
        // Through stdio, as a JVM reads its cgroup's limits: fopen, fstat, read, close.
        if (FILE* file = std::fopen(a.c_str() + 2, "re")) {
          char line[256];
          while (std::fgets(line, sizeof line, file)) {
          }
          std::fclose(file);
        }
      } else if (a.rfind("l:", 0) == 0) {
        lstat(a.c_str() + 2, &st);
      } else {
        stat(a.c_str(), &st);
      }
    }
    pollfd p{f, POLLIN, 0};
    if (poll(&p, 1, 100) == 1) {
      char c;
      if (read(f, &c, 1) == 1) {
        struct stat st {};
        stat(argv[2], &st);
      }
    }
  }
}
