# SPDX-License-Identifier: Apache-2.0
# Shared settings of the test bed scripts (sourced). Every name the test bed creates
# starts with "sl" so that tear-down can find it all.
SL_BRIDGE=${SEAMLESS_BRIDGE:-slbr0}
SL_NETNS=${SEAMLESS_NETNS:-slclient}
SL_VETH_NS=slc0          # inside the client namespace
SL_VETH_BR=slc0-br       # on the bridge
SL_SUBNET_PREFIX=10.77.0.
SL_CLIENT_IP=10.77.0.1
SL_STATE_DIR=/run/seamless-testbed
SL_RUN_DIR=/var/lib/seamless/testbed
SL_SWAPFILE=/var/lib/seamless/testbed.swap
SL_SWAP_MIB=${SEAMLESS_SWAP_MIB:-6144}
SL_DOMAIN_PREFIX=sl-
VIRSH="virsh -q -c qemu:///system"

log() { echo "testbed: $*" >&2; }
die() { echo "testbed: error: $*" >&2; exit 1; }

need_root() { [[ $(id -u) == 0 ]] || die "must run as root (it starts libvirtd and Open vSwitch and adds swap)"; }

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

libvirt_up() { $VIRSH version >/dev/null 2>&1; }
ovs_up() { ovs-vsctl --timeout=2 show >/dev/null 2>&1; }

swap_active() { swapon --noheadings --show=NAME 2>/dev/null | grep -qx "$SL_SWAPFILE"; }
