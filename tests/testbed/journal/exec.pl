#!/usr/bin/perl
# SPDX-License-Identifier: Apache-2.0
# journal/exec.pl IDENTIFIER COMMAND...: starts COMMAND the way systemd starts a unit with
# StandardOutput=journal: in a session of its own, stdout and stderr on one stream to
# /run/systemd/journal/stdout that begins with the journal's header.
use strict;
use warnings;
use POSIX ();
use Socket;

my $identifier = shift @ARGV;
socket(my $stream, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
connect($stream, pack_sockaddr_un('/run/systemd/journal/stdout')) or die "journal: $!";
syswrite($stream, "$identifier\n\n6\n0\n0\n0\n0\n");
open(STDIN, '<', '/dev/null') or die;
open(STDOUT, '>&', $stream) or die;
open(STDERR, '>&', $stream) or die;
close $stream;
POSIX::setsid();
exec(@ARGV) or die "exec: $!";
