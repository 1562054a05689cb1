#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# journal/standin.pl SOCKET LOG: stands in for systemd's journal in a test guest (which runs
# no systemd). Listens on SOCKET (/run/systemd/journal/stdout), accepts any number of
# streams and appends what each sends to LOG, stream header included.
use strict;
use warnings;
use IO::Select;
use Socket;

my ($path, $log) = @ARGV;
unlink $path;
socket(my $listener, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
bind($listener, pack_sockaddr_un($path)) or die "bind $path: $!";
listen($listener, 64) or die "listen: $!";
open(my $out, '>>', $log) or die "$log: $!";
$out->autoflush(1);
my $select = IO::Select->new($listener);
while (1) {
  for my $fh ($select->can_read) {
    if ($fh == $listener) {
      my $stream;
      $select->add($stream) if accept($stream, $listener);
    } elsif (sysread($fh, my $buf, 65536)) {
      print $out $buf;
    } else {
      $select->remove($fh);
      close $fh;
    }
  }
}
