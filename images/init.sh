#!/bin/sh
# /init of the nvme-hotswap test guest: busybox sh, running as PID 1 from the initramfs.
# Contract (see images/README.md): eth0 10.0.2.15/24 via 10.0.2.2 (or DHCP with guest.net=dhcp),
# dropbear on port 22 with root's key only, then exactly "nvme-hotswap: sshd ready" on the console.
# Modules are loaded with kmod's modprobe (by full path, $KMOD/modprobe: Debian's busybox sh prefers its own
# applets over PATH, and there is no /sbin/modprobe, see build-guest.sh), so `module.param=value` on the kernel command line applies
# (e.g. nvme_core.multipath=N). PID 1 must never exit (the kernel would panic): errors are reported
# on the console and the script goes on.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root TERM=linux

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm /tmp /run /var/log
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd

say() { echo "nvme-hotswap: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

hostname nvme-guest
# Writes to /dev/kmsg from user space are rate-limited by default: the harness writes marks there.
echo on > /proc/sys/kernel/printk_devkmsg

# Kernel command line options of our own: guest.net=static|dhcp, guest.ip=A.B.C.D/N, guest.gw=A.B.C.D,
# nvmehs.authorized_key=<base64 of an ed25519 public key>: the only key root's SSH accepts (the
# harness makes one per run; the image carries none).
net=static ip=10.0.2.15/24 gw=10.0.2.2
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    nvmehs.authorized_key=*) echo "ssh-ed25519 ${arg#nvmehs.authorized_key=} nvme-hotswap-run" > /root/.ssh/authorized_keys ;;
    guest.net=*) net=${arg#guest.net=} ;;
    guest.ip=*) ip=${arg#guest.ip=} ;;
    guest.gw=*) gw=${arg#guest.gw=} ;;
  esac
done

# The modules build-guest.sh shipped, in its order (crc helpers, nvme, virtio: the controllers reset
# in the background while the network comes up). One modprobe run for all (each run of kmod costs
# tens of ms under TCG).
KMOD=/usr/lib/nvme-hotswap/kmod
echo "$KMOD/modprobe" > /proc/sys/kernel/modprobe   # the kernel's request_module() from now on
mods=$(cat /etc/guest-modules)
"$KMOD/modprobe" -a $mods || say "modprobe -a $mods failed"
say "modules loaded at $(uptime_s) s"

ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
[ -e /sys/class/net/eth0 ] || say "no eth0 after 5 s"
if [ "$net" = dhcp ]; then
  ip link set eth0 up
  # Busybox udhcpc applies nothing without a script (-s): ours sets address, route and resolver.
  udhcpc -i eth0 -s /etc/udhcpc.script -q -n -t 10 -T 1 || say "udhcpc got no lease"
else
  ip addr add "$ip" dev eth0
  ip link set eth0 up
  ip route add default via "$gw"
  echo "nameserver 10.0.2.3" > /etc/resolv.conf
fi

# Dropbear waits in getrandom() until the kernel's CRNG is ready. With -cpu max (RDRAND) it is at
# once; without it, reading /dev/random here lets the kernel's jitter entropy finish first.
t0=$(uptime_s)
timeout 30 head -c 1 /dev/random >/dev/null || say "CRNG not ready after 30 s"
t1=$(uptime_s)

# sshd: host key made at build time, no password logins (-s), respawned if it ever exits.
( while :; do
    dropbear -F -E -s -p 22 -r /etc/dropbear/dropbear_ed25519_host_key >>/var/log/dropbear.log 2>&1
    say "dropbear exited with $?, restarting"
    sleep 1
  done ) &

# Wait until something listens on port 22 (0016, state 0A) before the marker.
i=0
while ! grep -q '^ *[0-9]*: [0-9A-F]*:0016 [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null \
      && [ $i -lt 200 ]; do
  sleep 0.05; i=$((i+1))
done

# Controllers normally finish their reset while the network comes up; wait for them briefly.
i=0
while [ $i -lt 100 ]; do
  pending=0
  for s in /sys/class/nvme/nvme*/state; do
    [ -e "$s" ] || continue
    [ "$(cat "$s")" = live ] || pending=1
  done
  [ $pending = 0 ] && break
  sleep 0.05; i=$((i+1))
done
ctrls=$(cd /sys/class/nvme 2>/dev/null && echo nvme*)
disks=$(cd /sys/block 2>/dev/null && echo nvme*)
say "uptime $(uptime_s) s, crng wait $t0..$t1, net $net $(ip -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}')"
say "controllers: $ctrls; disks: $disks"
say "sshd ready"

# PID 1 stays here for good; `wait` also reaps orphans that get re-parented to PID 1.
while :; do
  wait
  sleep 1
done
